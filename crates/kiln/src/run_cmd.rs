//! `kiln run -- CMD...`: one command as a job, built into kiln's own format,
//! followed like `srun` follows its step.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use kiln_server::api::views::JobView;
use serde_json::{json, Map, Value};

use crate::client::{enc, Client};

#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(long)]
    pub gpus: Option<u32>,
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory, e.g. 4Gi (a bare number is MiB).
    #[arg(long)]
    pub memory: Option<String>,
    /// Shared memory (/dev/shm), e.g. 1Gi.
    #[arg(long)]
    pub shm: Option<String>,
    #[arg(long)]
    pub gpu_type: Option<String>,
    #[arg(long)]
    pub image: Option<String>,
    /// SRC:DST (a folder of your space, or dataset:NAME, at DST).
    #[arg(long = "mount", value_name = "SRC:DST")]
    pub mounts: Vec<String>,
    /// K=V, repeatable.
    #[arg(long = "env", value_name = "K=V")]
    pub envs: Vec<String>,
    /// Job name (default: run-<time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Maximum run time, e.g. 2h.
    #[arg(long)]
    pub max_duration: Option<String>,
    /// Print the job id and return at once.
    #[arg(short, long)]
    pub detach: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Quotes one word for bash, only when it needs it.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The job in kiln's native format (JSON), from the flags.
pub fn spec(a: &RunArgs, default_name: &str) -> Result<Value> {
    let mut job = Map::new();
    job.insert(
        "name".into(),
        json!(a.name.as_deref().unwrap_or(default_name)),
    );
    let command: Vec<String> = a.command.iter().map(|w| quote(w)).collect();
    job.insert("command".into(), json!(command.join(" ")));
    if let Some(v) = a.gpus {
        job.insert("gpus".into(), json!(v));
    }
    if let Some(v) = a.cpus {
        job.insert("cpus".into(), json!(v));
    }
    for (key, v) in [
        ("memory", &a.memory),
        ("shm", &a.shm),
        ("gpuType", &a.gpu_type),
        ("image", &a.image),
        ("maxDuration", &a.max_duration),
    ] {
        if let Some(v) = v {
            job.insert(key.into(), json!(v));
        }
    }
    if !a.envs.is_empty() {
        let mut env = Map::new();
        for kv in &a.envs {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--env {kv}: expected K=V");
            };
            env.insert(k.to_owned(), json!(v));
        }
        job.insert("env".into(), Value::Object(env));
    }
    if !a.mounts.is_empty() {
        let mut mounts = Vec::new();
        for m in &a.mounts {
            let Some((src, dst)) = m.rsplit_once(':') else {
                bail!("--mount {m}: expected SRC:DST");
            };
            let mut entry = Map::new();
            match src.strip_prefix("dataset:") {
                Some(ds) => entry.insert("dataset".into(), json!(ds)),
                None => entry.insert("space".into(), json!(src)),
            };
            entry.insert("target".into(), json!(dst));
            mounts.push(Value::Object(entry));
        }
        job.insert("mounts".into(), Value::Array(mounts));
    }
    Ok(Value::Object(job))
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let body = serde_json::to_vec(&spec(&a, &format!("run-{now}"))?)?;
    let bytes = c.ok("POST", "/jobs", Some(body))?;
    let job: JobView = serde_json::from_slice(&bytes)?;
    if a.detach {
        println!("{}", job.id);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("kiln: {} submitted", job.id);
    let path = format!("/jobs/{}", enc(&job.id));
    // Until it runs: say why it waits, once per new reason.
    let mut said = String::new();
    let mut pause = Duration::from_millis(10);
    let job = loop {
        let j: JobView = c.json("GET", &path, None)?;
        if j.state != "WAITING" {
            break j;
        }
        let reason = j.pending_reason.clone().unwrap_or_default();
        if reason != said {
            eprintln!("kiln: waiting: {reason}");
            said = reason;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    if let Some(t) = job.tasks.first() {
        c.stream_to(
            &format!("{path}/tasks/{}/logs?follow=true", enc(&t.id)),
            &mut std::io::stdout().lock(),
        )?;
    }
    // The log ends with the task; the job's final state follows at once.
    let mut pause = Duration::from_millis(5);
    loop {
        let j: JobView = c.json("GET", &path, None)?;
        match j.state.as_str() {
            "SUCCEEDED" => return Ok(ExitCode::SUCCESS),
            "FAILED" | "STOPPED" => {
                eprintln!(
                    "kiln: {} {}: {}",
                    j.id,
                    j.state,
                    j.reason.unwrap_or_default()
                );
                return Ok(ExitCode::from(1));
            }
            _ => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &[&str]) -> RunArgs {
        RunArgs {
            gpus: Some(2),
            cpus: None,
            memory: Some("4Gi".into()),
            shm: None,
            gpu_type: None,
            image: None,
            mounts: vec!["mnist:/mnt/mnist".into(), "dataset:imagenet:/data".into()],
            envs: vec!["A=1=2".into()],
            name: None,
            max_duration: None,
            detach: false,
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_command_is_quoted_word_by_word() {
        let s = spec(
            &args(&["python", "train.py", "--msg", "it's a test", "$HOME"]),
            "run-1",
        )
        .expect("spec");
        assert_eq!(
            s["command"],
            r#"python train.py --msg 'it'\''s a test' '$HOME'"#
        );
        assert_eq!(s["name"], "run-1");
        assert_eq!(s["gpus"], 2);
        assert_eq!(s["memory"], "4Gi");
        assert_eq!(s["env"]["A"], "1=2");
        assert_eq!(s["mounts"][0]["space"], "mnist");
        assert_eq!(s["mounts"][1]["dataset"], "imagenet");
        assert_eq!(s["mounts"][1]["target"], "/data");
        // What it builds is a valid kiln job.
        let job = kiln_spec::parse(s.to_string().as_bytes())
            .expect("valid")
            .job;
        assert_eq!(job.mounts.len(), 2);
        assert_eq!(job.roles[0].gpus, 2);
        assert_eq!(job.roles[0].env.get("A").map(String::as_str), Some("1=2"));
    }

    #[test]
    fn malformed_flags_are_named() {
        let mut a = args(&["true"]);
        a.envs = vec!["NOEQUALS".into()];
        assert!(spec(&a, "x")
            .expect_err("bad env")
            .to_string()
            .contains("--env NOEQUALS"));
        let mut a = args(&["true"]);
        a.mounts = vec!["nodest".into()];
        assert!(spec(&a, "x")
            .expect_err("bad mount")
            .to_string()
            .contains("--mount nodest"));
    }
}
