//! `kiln validate` and `kiln render`: offline checks of a job spec.

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_spec::env::{example_context, render_env};
use kiln_spec::formats::MAX_SPEC_BYTES;
use kiln_spec::quantity::{format_duration_secs, format_memory_mib};
use kiln_spec::{parse, Issue, Parsed, SpecError};
use serde_json::json;

/// Reads at most one byte past the limit, so a huge file is refused without
/// being loaded.
fn read_spec(file: &str) -> Result<Vec<u8>> {
    let limit = MAX_SPEC_BYTES as u64 + 1;
    let mut buf = Vec::new();
    if file == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut buf)
            .context("cannot read the job spec from standard input")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {file}"))?
            .take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {file}"))?;
    }
    Ok(buf)
}

fn print_warnings(warnings: &[Issue]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Parses, printing every problem on its own line; None when invalid.
fn parse_or_report(file: &str) -> Result<Option<Parsed>> {
    let bytes = read_spec(file)?;
    match parse(&bytes) {
        Ok(parsed) => Ok(Some(parsed)),
        Err(e @ (SpecError::Invalid { .. } | SpecError::Syntax { .. })) => {
            for issue in e.issues() {
                eprintln!("error: {issue}");
            }
            Ok(None)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(None)
        }
    }
}

pub fn validate(file: &str) -> Result<ExitCode> {
    let Some(parsed) = parse_or_report(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    print_warnings(&parsed.warnings);
    let job = &parsed.job;
    use kiln_spec::words::count;
    println!(
        "valid {} job {:?}: {}, {}, {}{}",
        parsed.format,
        job.name,
        count(job.roles.len() as u64, "role"),
        count(job.total_tasks(), "task"),
        count(job.total_gpus(), "GPU"),
        match parsed.warnings.len() {
            0 => String::new(),
            n => format!(", {}", count(n as u64, "warning")),
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub enum Export {
    KilnYaml,
    OpenpaiV1,
}

/// Prints the job converted to another format. Secrets are redacted: a
/// conversion printed to a terminal must not reveal them.
pub fn export(file: &str, to: Export) -> Result<ExitCode> {
    let Some(parsed) = parse_or_report(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    print_warnings(&parsed.warnings);
    let job = parsed.job.redacted();
    let text = match to {
        Export::KilnYaml => kiln_spec::export::to_yaml(&job),
        Export::OpenpaiV1 => kiln_spec::export::to_openpai_v1(&job)
            .and_then(|v| {
                serde_json::to_string_pretty(&v).map_err(|e| SpecError::Encode {
                    format: "JSON",
                    message: e.to_string(),
                })
            })
            .map(|s| s + "\n"),
    };
    match text {
        Ok(text) => {
            emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for issue in e.issues() {
                eprintln!("error: {issue}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

pub fn render(file: &str, as_json: bool, user: Option<&str>) -> Result<ExitCode> {
    let Some(parsed) = parse_or_report(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    print_warnings(&parsed.warnings);
    let job = parsed.job.redacted();
    let os_user = std::env::var("USER").ok();
    let user = user
        .or(job.user.as_deref())
        .or(os_user.as_deref())
        .unwrap_or("kiln");
    let ctx = example_context(&job, user)?;
    let tasks = render_env(&job, &ctx)?;

    if as_json {
        let out = json!({
            "format": parsed.format,
            "job": job,
            "warnings": parsed.warnings,
            "masterPort": ctx.master_port,
            "tasks": tasks.iter().zip(&ctx.placement).map(|(t, p)| json!({
                "id": t.task,
                "placement": p,
                "env": t.env,
            })).collect::<Vec<_>>(),
        });
        emit(&(serde_json::to_string_pretty(&out)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut out = String::new();
    writeln!(out, "job {} ({} format)", ctx.job_id, parsed.format)?;
    if let Some(image) = &job.image {
        writeln!(out, "  image        {image}")?;
    }
    writeln!(
        out,
        "  queue        {}",
        job.queue
            .as_deref()
            .unwrap_or(kiln_spec::model::DEFAULT_QUEUE)
    )?;
    if let Some(secs) = job.max_duration_secs {
        writeln!(out, "  max duration {}", format_duration_secs(secs))?;
    }
    writeln!(out, "  retries      {}", job.retry_count)?;
    for role in &job.roles {
        writeln!(
            out,
            "  role {:<8} ×{}  cpus {}  memory {}  shm {}  gpus {}  minFailed {}  minSucceeded {}",
            role.name,
            role.replicas,
            role.cpus,
            format_memory_mib(role.memory_mb),
            format_memory_mib(role.shm_mb),
            role.gpus,
            role.min_failed.map_or("null".into(), |n| n.to_string()),
            role.min_succeeded.map_or("null".into(), |n| n.to_string()),
        )?;
    }
    writeln!(
        out,
        "example placement: one host 127.0.0.1, GPUs numbered from 0, MASTER_PORT {}",
        ctx.master_port
    )?;
    for (t, p) in tasks.iter().zip(&ctx.placement) {
        out.push('\n');
        writeln!(
            out,
            "task {}  host {}  gpus [{}]",
            t.task,
            p.host_ip,
            t.env.get("CUDA_VISIBLE_DEVICES").map_or("", String::as_str)
        )?;
        if let Some(role) = job.role(t.task.role()) {
            for line in role.command.lines() {
                writeln!(out, "  $ {line}")?;
            }
        }
        for (k, v) in &t.env {
            writeln!(out, "  {k}={v}")?;
        }
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a reader that went away (`kiln render | head`) is not an
/// error worth a message.
pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}
