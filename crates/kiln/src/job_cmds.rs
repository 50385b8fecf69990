//! The CLI verbs that work on jobs through a server: submit, ls, show, logs,
//! wait, stop, rm, clone, extend, events, nodes. Tables for people, `-o json`
//! for scripts (the API's own objects).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kiln_server::api::views::{EventView, JobList, JobView};

use crate::client::{enc, Client};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ago(ms: u64) -> String {
    short(now_ms().saturating_sub(ms) / 1000) + " ago"
}

fn short(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// Prints rows with columns padded to their widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn read_file(file: &str) -> Result<Vec<u8>> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        return Ok(buf);
    }
    std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))
}

pub fn submit(file: &str, json: bool, wait: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let body = read_file(file)?;
    let bytes = c.ok("POST", "/jobs", Some(body))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)?;
    if let Some(w) = value.get("warnings").and_then(|w| w.as_array()) {
        for w in w {
            eprintln!(
                "warning: {}: {}",
                w["path"].as_str().unwrap_or_default(),
                w["message"].as_str().unwrap_or_default()
            );
        }
    }
    let job: JobView = serde_json::from_value(value)?;
    if !wait {
        if json {
            return print_json(&job);
        }
        println!("{}", job.id);
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!("submitted {}; waiting for it to finish", job.id);
    }
    wait_for(&c, &job.id, None, json)
}

pub fn list(
    state: Option<String>,
    user: Option<String>,
    limit: u32,
    json: bool,
) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let mut q = format!("?limit={limit}");
    if let Some(s) = state {
        q.push_str(&format!("&state={}", enc(&s)));
    }
    if let Some(u) = user {
        q.push_str(&format!("&user={}", enc(&u)));
    }
    let list: JobList = c.json("GET", &format!("/jobs{q}"), None)?;
    if json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|j| {
            let ran = match (j.started_at_ms, j.finished_at_ms) {
                (Some(s), Some(f)) => short(f.saturating_sub(s) / 1000),
                (Some(s), None) => short(now_ms().saturating_sub(s) / 1000),
                _ => "-".into(),
            };
            let note = j
                .pending_reason
                .clone()
                .or_else(|| j.reason.clone())
                .unwrap_or_default();
            vec![
                j.id.clone(),
                j.state.clone(),
                ago(j.submitted_at_ms),
                ran,
                j.queue.clone(),
                note,
            ]
        })
        .collect();
    table(
        &["JOB", "STATE", "SUBMITTED", "RAN", "QUEUE", "REASON"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn job_path(job: &str) -> String {
    format!("/jobs/{}", enc(job))
}

pub fn show(job: &str, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let j: JobView = c.json("GET", &job_path(job), None)?;
    if json {
        return print_json(&j);
    }
    println!("Job:       {}", j.id);
    println!("State:     {}", j.state);
    if let Some(r) = &j.pending_reason {
        println!("Waiting:   {r}");
    }
    if let Some(r) = &j.reason {
        println!("Reason:    {r}");
    }
    println!("Attempt:   {} ({} failed)", j.attempt, j.failed_attempts);
    println!("Queue:     {} (priority {})", j.queue, j.priority);
    println!("Submitted: {} ({})", ago(j.submitted_at_ms), j.format);
    if let Some(d) = j.deadline_at_ms {
        println!("Deadline:  in {}", short(d.saturating_sub(now_ms()) / 1000));
    }
    for n in &j.notices {
        println!("Notice:    {n}");
    }
    if !j.tasks.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = j
            .tasks
            .iter()
            .map(|t| {
                let gpus: Vec<String> = t.gpus.iter().map(u32::to_string).collect();
                let ports: Vec<String> = t
                    .ports
                    .iter()
                    .map(|(l, p)| {
                        let p: Vec<String> = p.iter().map(u16::to_string).collect();
                        format!("{l}={}", p.join(","))
                    })
                    .collect();
                vec![
                    t.id.clone(),
                    t.state.clone(),
                    t.exit_code.map_or("-".into(), |c| c.to_string()),
                    if gpus.is_empty() {
                        "-".into()
                    } else {
                        gpus.join(",")
                    },
                    if ports.is_empty() {
                        "-".into()
                    } else {
                        ports.join(" ")
                    },
                    match (&t.reason, t.restart_at_ms) {
                        (Some(r), Some(at)) => format!(
                            "{r}; restarts in {}",
                            short(at.saturating_sub(now_ms()).div_ceil(1000))
                        ),
                        (r, _) => r.clone().unwrap_or_default(),
                    },
                ]
            })
            .collect();
        table(&["TASK", "STATE", "EXIT", "GPUS", "PORTS", "REASON"], &rows);
    }
    if let Some(events) = &j.events {
        println!();
        print_events(events);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_events(events: &[EventView]) {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| vec![ago(e.at_ms), e.kind.clone(), e.message.clone()])
        .collect();
    table(&["WHEN", "EVENT", "MESSAGE"], &rows);
}

pub fn events(job: &str, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let events: Vec<EventView> = c.json("GET", &format!("{}/events", job_path(job)), None)?;
    if json {
        return print_json(&events);
    }
    print_events(&events);
    Ok(ExitCode::SUCCESS)
}

/// One line per task: CPU in cores, memory, each GPU's use and memory,
/// then its training metrics.
pub fn top(job: &str, json: bool) -> Result<ExitCode> {
    #[derive(Default)]
    struct Row {
        cpu: String,
        memory: String,
        /// GPU → (utilisation %, memory bytes).
        gpus: std::collections::BTreeMap<String, (Option<f64>, Option<f64>)>,
        metrics: Vec<String>,
    }
    let c = Client::from_env()?;
    let v: serde_json::Value =
        c.json("GET", &format!("{}/metrics?last=true", job_path(job)), None)?;
    if json {
        return print_json(&v);
    }
    let mut rows: std::collections::BTreeMap<String, Row> = Default::default();
    for s in v["series"].as_array().into_iter().flatten() {
        let (Some(task), Some(name), Some(value)) = (
            s["task"].as_str(),
            s["name"].as_str(),
            s["points"][0]["value"].as_f64(),
        ) else {
            continue;
        };
        let row = rows.entry(task.to_owned()).or_default();
        match name.split_once('.') {
            _ if name == "cpu" => row.cpu = format!("{value:.2}"),
            _ if name == "memory" => row.memory = human_bytes(value),
            Some((gpu, "utilization")) if gpu.starts_with("gpu") => {
                row.gpus.entry(gpu.to_owned()).or_default().0 = Some(value)
            }
            Some((gpu, "memory")) if gpu.starts_with("gpu") => {
                row.gpus.entry(gpu.to_owned()).or_default().1 = Some(value)
            }
            _ => row.metrics.push(format!("{name}={value:.4}")),
        }
    }
    if rows.is_empty() {
        println!("no samples yet (tasks are sampled every few seconds while they run)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(task, r)| {
            let gpus: Vec<String> = r
                .gpus
                .iter()
                .map(|(g, (u, m))| {
                    let u = u.map_or("-".into(), |u| format!("{u:.0}%"));
                    let m = m.map_or("-".into(), human_bytes);
                    format!("{g} {u} {m}")
                })
                .collect();
            let gpus = if gpus.is_empty() {
                "-".into()
            } else {
                gpus.join(", ")
            };
            vec![task, r.cpu, r.memory, gpus, r.metrics.join(" ")]
        })
        .collect();
    table(&["TASK", "CPU", "MEMORY", "GPUS", "METRICS"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// Starts (or stops) a job's TensorBoard; prints the sign-in link.
pub fn tensorboard(job: &str, stop: bool, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let path = format!("{}/tensorboard", job_path(job));
    let v: serde_json::Value = c.json(if stop { "DELETE" } else { "POST" }, &path, None)?;
    if json {
        return print_json(&v);
    }
    if stop {
        println!("TensorBoard for {job} stopped");
        return Ok(ExitCode::SUCCESS);
    }
    // The board's own origin (another port than the API's), as the server
    // saw the host we reached it by.
    println!("{}", v["url"].as_str().unwrap_or_default());
    eprintln!(
        "(the link signs a browser in once, within 5 minutes; TensorBoard stops when unused)"
    );
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

pub fn logs(
    job: &str,
    task: Option<String>,
    tail: Option<usize>,
    stream: &str,
    follow: bool,
) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let task = match task {
        Some(t) => t,
        None => {
            let j: JobView = c.json("GET", &job_path(job), None)?;
            match j.tasks.as_slice() {
                [] => bail!("job {} has no tasks yet ({})", j.id, j.state),
                [only] => only.id.clone(),
                many => bail!(
                    "job {} has {} tasks; pick one with --task ({})",
                    j.id,
                    many.len(),
                    many.iter()
                        .map(|t| t.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let mut q = format!("?stream={}", enc(stream));
    if let Some(n) = tail {
        q.push_str(&format!("&tail={n}"));
    }
    let path = format!("{}/tasks/{}/logs{q}", job_path(job), enc(&task));
    if follow {
        c.stream_to(
            &format!("{path}&follow=true"),
            &mut std::io::stdout().lock(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let bytes = c.ok("GET", &path, None)?;
    std::io::stdout().write_all(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 SUCCEEDED, 1 FAILED or STOPPED, 2 timeout.
fn wait_for(c: &Client, job: &str, timeout: Option<u64>, json: bool) -> Result<ExitCode> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t));
    // Polls the job with a growing interval (10 ms up to 500 ms): short jobs
    // answer fast, long ones cost the server little.
    let mut interval = Duration::from_millis(10);
    loop {
        let j: JobView = c.json("GET", &job_path(job), None)?;
        let code = match j.state.as_str() {
            "SUCCEEDED" => Some(0),
            "FAILED" | "STOPPED" => Some(1),
            _ => None,
        };
        if let Some(code) = code {
            if json {
                print_json(&j)?;
            } else {
                match &j.reason {
                    Some(r) => println!("{} {}: {r}", j.id, j.state),
                    None => println!("{} {}", j.id, j.state),
                }
            }
            return Ok(ExitCode::from(code));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!("{} is still {} after the timeout", j.id, j.state);
            return Ok(ExitCode::from(2));
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

pub fn wait(job: &str, timeout: Option<u64>, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    wait_for(&c, job, timeout, json)
}

pub fn stop(job: &str, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let j: JobView = c.json("POST", &format!("{}/stop", job_path(job)), None)?;
    if json {
        return print_json(&j);
    }
    println!("{} {}", j.id, j.state);
    Ok(ExitCode::SUCCESS)
}

pub fn remove(job: &str) -> Result<ExitCode> {
    let c = Client::from_env()?;
    c.ok("DELETE", &job_path(job), None)?;
    println!("deleted {job}");
    Ok(ExitCode::SUCCESS)
}

pub fn clone(job: &str, name: Option<String>, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let body = match name {
        Some(n) => serde_json::to_vec(&serde_json::json!({ "name": n }))?,
        None => Vec::new(),
    };
    let j: JobView = c.json("POST", &format!("{}/clone", job_path(job)), Some(body))?;
    if json {
        return print_json(&j);
    }
    println!("{}", j.id);
    Ok(ExitCode::SUCCESS)
}

pub fn extend(job: &str, by: &str, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let body = serde_json::to_vec(&serde_json::json!({ "extendBy": by }))?;
    let j: JobView = c.json("PATCH", &job_path(job), Some(body))?;
    if json {
        return print_json(&j);
    }
    match j.deadline_at_ms {
        Some(d) => println!(
            "{} now ends in {} at the latest",
            j.id,
            short(d.saturating_sub(now_ms()) / 1000)
        ),
        None => println!("{} has no max duration", j.id),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn nodes(json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let v: serde_json::Value = c.json("GET", "/nodes", None)?;
    if json {
        return print_json(&v);
    }
    for n in v["nodes"].as_array().into_iter().flatten() {
        println!(
            "Node {}: {} ({} allocated), {} MiB memory ({} MiB allocated)",
            n["name"].as_str().unwrap_or("?"),
            kiln_spec::words::count(n["cpus"].as_u64().unwrap_or(0), "CPU"),
            n["cpusAllocated"],
            n["memoryMb"],
            n["memoryMbAllocated"]
        );
        println!("  limits: {}", n["limits"].as_str().unwrap_or("?"));
        for c in n["controllers"].as_array().into_iter().flatten() {
            let held = if c["enforced"].as_bool() == Some(true) {
                "enforced"
            } else {
                "NOT enforced"
            };
            println!(
                "    {}: {held}: {}",
                c["controller"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("?")
            );
        }
        println!("  processes: {}", n["pidsLimit"].as_str().unwrap_or("?"));
        println!(
            "  isolation: {}",
            n["isolation"]["note"].as_str().unwrap_or("?")
        );
        if let Some(c) = n["containers"].as_str() {
            println!("  containers: {c}");
        }
        let gpus = n["gpus"].as_array().cloned().unwrap_or_default();
        if gpus.is_empty() {
            println!("  {}", no_gpus(n["gpuSource"].as_str().unwrap_or_default()));
        }
        for g in gpus {
            let idx = g["index"].to_string();
            let holder = n["gpuJobs"][&idx].as_str().unwrap_or("free");
            println!(
                "  GPU {idx}: {} ({} MiB) {holder}",
                g["model"].as_str().unwrap_or("?"),
                g["memoryMb"]
            );
        }
        for note in n["notes"].as_array().into_iter().flatten() {
            println!("  note: {}", note.as_str().unwrap_or_default());
        }
    }
    println!("{} running, {} waiting", v["running"], v["waiting"]);
    Ok(ExitCode::SUCCESS)
}

/// The line `kiln nodes` prints for a node without GPUs, in words: the API's
/// `gpuSource` is an enum name (`None`), which printed as is read like a
/// placeholder. Says how to try GPU jobs anyway.
fn no_gpus(source: &str) -> String {
    match source {
        "Fake" => "no GPUs (--fake-gpus 0)".into(),
        "Nvml" | "NvidiaSmi" => "no GPUs: the NVIDIA driver lists none".into(),
        _ => "no GPUs found (no NVIDIA driver); `kiln server --fake-gpus 4` declares fake ones to try GPU jobs".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::no_gpus;

    #[test]
    fn a_node_without_gpus_is_said_in_words() {
        for source in ["None", "Fake", "Nvml", "NvidiaSmi", ""] {
            let line = no_gpus(source);
            assert!(line.starts_with("no GPUs"), "{line}");
            assert!(!line.contains("(None)") && !line.contains("()"), "{line}");
        }
        assert!(no_gpus("None").contains("--fake-gpus"));
    }
}
