//! `kiln queue add|set|rm|ls|show`: queues with a guaranteed share, which
//! the admin makes and grants to users.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use kiln_server::api::queues::{GpuQuotaView, QueueLiveView, QueueView};
use kiln_spec::quantity::{format_memory_mib, parse_memory_mib, BareUnit};
use serde_json::{json, Map, Value};

use crate::client::{enc, Client};
use crate::job_cmds::{print_json, table};
use crate::Format;

/// The quota and limit flags `add` and `set` share.
#[derive(Args, Debug, Default)]
pub struct QuotaArgs {
    /// Guaranteed GPUs: a count of any model (`--gpus 4`) or of one model
    /// (`--gpus A100=4`, a case-insensitive part of the model name); repeat
    /// for several models.
    #[arg(long = "gpus", value_name = "[MODEL=]N", value_parser = parse_gpus)]
    pub gpus: Vec<GpuQuotaView>,
    /// Guaranteed CPUs. Default: the GPUs' share of the cluster's CPUs.
    #[arg(long)]
    pub cpus: Option<u64>,
    /// Guaranteed memory, e.g. 256Gi (a bare number is MiB). Default: the
    /// GPUs' share of the cluster's memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// At most this many GPUs running per user in the queue (`none`
    /// removes the limit).
    #[arg(long, value_name = "N|none", value_parser = parse_limit)]
    pub user_max_gpus: Option<Limit>,
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Make a queue (admin only).
    Add {
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
        /// A user who may submit to it (repeatable).
        #[arg(long = "user", value_name = "USER")]
        users: Vec<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Change a queue's quota, user limit or users (admin only); flags left
    /// out keep their value.
    Set {
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
        /// Let this user submit to it (repeatable).
        #[arg(long = "add-user", value_name = "USER")]
        add_users: Vec<String>,
        /// Take it away from this user (repeatable).
        #[arg(long = "rm-user", value_name = "USER")]
        remove_users: Vec<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Remove a queue (admin only); refused while jobs wait or run in it.
    Rm {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// List queues: their guaranteed share, user limit and users.
    Ls {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// One queue in full.
    Show {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
}

/// A per-user GPU limit, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    At(u64),
    None,
}

/// `4` (any model) or `A100=4`.
fn parse_gpus(text: &str) -> Result<GpuQuotaView, String> {
    let (model, count) = match text.rsplit_once('=') {
        Some((m, n)) => (Some(m.trim()), n.trim()),
        None => (None, text.trim()),
    };
    if model == Some("") {
        return Err(format!(
            "{text:?}: the model before '=' is empty; write e.g. A100=4, or 4 for any model"
        ));
    }
    let count = count
        .parse::<u64>()
        .map_err(|_| format!("{text:?}: expected a GPU count, e.g. 4 or A100=4"))?;
    Ok(GpuQuotaView {
        model: model.map(str::to_owned),
        count,
    })
}

fn parse_memory(text: &str) -> Result<u64, String> {
    parse_memory_mib(text, BareUnit::Mebibytes)
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit::None);
    }
    text.parse::<u64>()
        .map(Limit::At)
        .map_err(|_| format!("{text:?}: expected a GPU count or none"))
}

fn gpus_text(gpus: &[GpuQuotaView]) -> String {
    if gpus.is_empty() {
        return "0".into();
    }
    gpus.iter()
        .map(|g| match &g.model {
            Some(m) => format!("{m}={}", g.count),
            None => g.count.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn users_text(q: &QueueView) -> String {
    if q.name == kiln_spec::model::DEFAULT_QUEUE {
        "everyone".into()
    } else if q.users.is_empty() {
        "-".into()
    } else {
        q.users.join(",")
    }
}

fn print_queue(q: &QueueView, json: bool) -> Result<ExitCode> {
    if json {
        return print_json(q);
    }
    let share = if q.explicit {
        ""
    } else {
        " (what the other queues leave)"
    };
    println!("Queue:     {}", q.name);
    println!("GPUs:      {}{share}", gpus_text(&q.quota.gpus));
    println!("CPUs:      {}", q.quota.cpus);
    println!("Memory:    {}", format_memory_mib(q.quota.memory_mb));
    println!(
        "User max:  {}",
        q.user_max_gpus
            .map(|n| format!("{n} GPUs per user"))
            .unwrap_or_else(|| "-".into())
    );
    println!("Users:     {}", users_text(q));
    println!(
        "You:       {}",
        if q.may_use {
            "may use it"
        } else {
            "may not use it"
        }
    );
    if let Some(l) = &q.live {
        print_live(q, l);
    }
    Ok(ExitCode::SUCCESS)
}

/// "In use: 6 GPUs (2 borrowed), 2 lent to nlp", each user's share and
/// usage, and the waiting jobs in order with their reasons.
fn print_live(q: &QueueView, l: &QueueLiveView) {
    let mut line = format!("{} GPUs, {} CPUs", l.used_gpus, l.used_cpus);
    if l.borrowed_gpus > 0 {
        line += &format!(" ({} GPUs borrowed from other queues)", l.borrowed_gpus);
    }
    if l.lent_gpus > 0 {
        line += &format!(
            "; {} of its GPUs lent to {} until it needs them",
            l.lent_gpus,
            l.lent_to.join(", ")
        );
    }
    println!("In use:    {line}");
    if !l.users.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = l
            .users
            .iter()
            .map(|u| {
                vec![
                    u.user.clone(),
                    format!("{:.0}%", u.share * 100.0),
                    format!("{:.2}", u.usage_gpu_hours),
                    u.running_gpus.to_string(),
                ]
            })
            .collect();
        table(&["USER", "SHARE", "USAGE (GPU-H)", "RUNNING GPUS"], &rows);
    }
    println!();
    if l.waiting.is_empty() {
        println!("Waiting:   none in queue {}", q.name);
        return;
    }
    println!("Waiting ({} in order):", l.waiting_total);
    for (i, w) in l.waiting.iter().enumerate() {
        println!(
            "{:>4}. {}  {}",
            i + 1,
            w.job,
            w.reason.as_deref().unwrap_or("-")
        );
    }
}

/// The quota as a request body, with values from `current` where no flag
/// gave one (for `set`); None when nothing about the quota changes.
fn quota_body(a: &QuotaArgs, current: Option<&QueueView>) -> Option<Value> {
    if a.gpus.is_empty() && a.cpus.is_none() && a.memory.is_none() {
        return None;
    }
    let mut q = Map::new();
    let gpus = if a.gpus.is_empty() {
        current.map(|c| c.quota.gpus.clone()).unwrap_or_default()
    } else {
        a.gpus.clone()
    };
    q.insert("gpus".into(), json!(gpus));
    if let Some(c) = a.cpus.or(current.map(|c| c.quota.cpus)) {
        q.insert("cpus".into(), json!(c));
    }
    if let Some(m) = a.memory.or(current.map(|c| c.quota.memory_mb)) {
        q.insert("memoryMb".into(), json!(m));
    }
    Some(Value::Object(q))
}

fn limit_value(l: Limit) -> Value {
    match l {
        Limit::At(n) => json!(n),
        Limit::None => Value::Null,
    }
}

pub fn run(cmd: QueueCommand) -> Result<ExitCode> {
    let json = |f: Format| f == Format::Json;
    let c = Client::from_env()?;
    match cmd {
        QueueCommand::Add {
            name,
            quota,
            users,
            output,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert(
                "quota".into(),
                quota_body(&quota, None).unwrap_or_else(|| json!({})),
            );
            if let Some(l) = quota.user_max_gpus {
                body.insert("userMaxGpus".into(), limit_value(l));
            }
            body.insert("users".into(), json!(users));
            let q: QueueView = c.json("POST", "/queues", Some(serde_json::to_vec(&body)?))?;
            print_queue(&q, json(output))
        }
        QueueCommand::Set {
            name,
            quota,
            add_users,
            remove_users,
            output,
        } => {
            let path = format!("/queues/{}", enc(&name));
            let mut body = Map::new();
            if !quota.gpus.is_empty() || quota.cpus.is_some() || quota.memory.is_some() {
                // Some of the quota changes: the rest stays as it is.
                let current: QueueView = c.json("GET", &path, None)?;
                if let Some(q) = quota_body(&quota, Some(&current)) {
                    body.insert("quota".into(), q);
                }
            }
            if let Some(l) = quota.user_max_gpus {
                body.insert("userMaxGpus".into(), limit_value(l));
            }
            if !add_users.is_empty() {
                body.insert("addUsers".into(), json!(add_users));
            }
            if !remove_users.is_empty() {
                body.insert("removeUsers".into(), json!(remove_users));
            }
            if body.is_empty() {
                bail!("kiln queue set {name}: nothing to change; give --gpus, --cpus, --memory, --user-max-gpus, --add-user or --rm-user");
            }
            let q: QueueView = c.json("PATCH", &path, Some(serde_json::to_vec(&body)?))?;
            print_queue(&q, json(output))
        }
        QueueCommand::Rm { name, output } => {
            let v: Value = c.json("DELETE", &format!("/queues/{}", enc(&name)), None)?;
            if json(output) {
                return print_json(&v);
            }
            eprintln!("queue {name} removed");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Ls { output } => {
            let queues: Vec<QueueView> = c.json("GET", "/queues", None)?;
            if json(output) {
                return print_json(&queues);
            }
            let rows: Vec<Vec<String>> = queues
                .iter()
                .map(|q| {
                    vec![
                        q.name.clone(),
                        gpus_text(&q.quota.gpus),
                        q.quota.cpus.to_string(),
                        format_memory_mib(q.quota.memory_mb),
                        q.user_max_gpus
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        users_text(q),
                        q.live.as_ref().map_or("-".into(), |l| {
                            let mut t = l.used_gpus.to_string();
                            if l.borrowed_gpus > 0 {
                                t += &format!(" ({} borrowed)", l.borrowed_gpus);
                            }
                            t
                        }),
                        q.live
                            .as_ref()
                            .map_or("-".into(), |l| l.lent_gpus.to_string()),
                        q.live
                            .as_ref()
                            .map_or("-".into(), |l| l.waiting_total.to_string()),
                    ]
                })
                .collect();
            table(
                &[
                    "QUEUE",
                    "GPUS",
                    "CPUS",
                    "MEMORY",
                    "USER MAX GPUS",
                    "USERS",
                    "GPUS USED",
                    "LENT",
                    "WAITING",
                ],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Show { name, output } => {
            let q: QueueView = c.json("GET", &format!("/queues/{}", enc(&name)), None)?;
            print_queue(&q, json(output))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_take_a_count_or_a_model_and_a_count() {
        let any = parse_gpus("4").expect("count");
        assert_eq!((any.model, any.count), (None, 4));
        let a100 = parse_gpus("A100=4").expect("model");
        assert_eq!((a100.model.as_deref(), a100.count), (Some("A100"), 4));
        // A model name with '=' in it keeps all but the last part.
        let odd = parse_gpus("H100 SXM=2").expect("spaces");
        assert_eq!(odd.model.as_deref(), Some("H100 SXM"));
        assert!(parse_gpus("=4")
            .unwrap_err()
            .contains("model before '=' is empty"));
        assert!(parse_gpus("A100=four")
            .unwrap_err()
            .contains("expected a GPU count"));
        assert!(parse_gpus("A100").is_err());
        assert!(parse_gpus("-1").is_err());
    }

    #[test]
    fn limits_and_sizes_parse_as_the_flags_document() {
        assert_eq!(parse_limit("2"), Ok(Limit::At(2)));
        assert_eq!(parse_limit("none"), Ok(Limit::None));
        assert!(parse_limit("lots").is_err());
        assert_eq!(parse_memory("64Gi"), Ok(65536));
        assert_eq!(parse_memory("512"), Ok(512));
    }

    #[test]
    fn set_keeps_what_no_flag_changes() {
        let current = QueueView {
            name: "vision".into(),
            quota: kiln_server::api::queues::QuotaView {
                cpus: 32,
                memory_mb: 1024,
                gpus: vec![GpuQuotaView {
                    model: Some("A100".into()),
                    count: 4,
                }],
            },
            user_max_gpus: None,
            users: vec![],
            may_use: true,
            explicit: true,
            created_at_ms: None,
            live: None,
        };
        let only_cpus = QuotaArgs {
            cpus: Some(8),
            ..Default::default()
        };
        assert_eq!(
            quota_body(&only_cpus, Some(&current)),
            Some(json!({"cpus": 8, "memoryMb": 1024, "gpus": [{"model": "A100", "count": 4}]}))
        );
        assert_eq!(quota_body(&QuotaArgs::default(), Some(&current)), None);
        let gpus_only = QuotaArgs {
            gpus: vec![parse_gpus("2").expect("gpus")],
            ..Default::default()
        };
        assert_eq!(
            quota_body(&gpus_only, None),
            Some(json!({"gpus": [{"count": 2}]}))
        );
    }
}
