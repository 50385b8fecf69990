//! `kiln-sim`: replays pod lists of the Alibaba GPU trace through FIFO and
//! kiln's scheduler and prints a markdown table per pod list.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use kiln_sim::recipe::{self, RecipeStats};
use kiln_sim::report::{self, Outcome};
use kiln_sim::sim::{self, Config, Policy};
use kiln_sim::trace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Fifo,
    Kiln,
    Both,
}

#[derive(Debug, Parser)]
#[command(about = "Replay the Alibaba GPU trace through kiln's scheduler and a FIFO baseline")]
struct Args {
    /// Folder of cluster-trace-gpu-v2023 (node and pod lists).
    #[arg(long)]
    trace: PathBuf,
    /// Pod list file(s) in that folder; give several to get a table each.
    #[arg(long, required = true, num_args = 1..)]
    pods: Vec<String>,
    #[arg(long, value_enum, default_value = "both")]
    policy: Which,
    /// Node list file in the trace folder.
    #[arg(long, default_value = "openb_node_list_gpu_node.csv")]
    nodes: String,
    /// Pod list that lends its times to lists without (multigpu50).
    #[arg(long, default_value = "openb_pod_list_default.csv")]
    times_from: String,
    /// Divide arrival times by this (run times stay): more load.
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Keep every N-th node of each node shape: a smaller cluster.
    #[arg(long, default_value_t = 1)]
    node_every: usize,
    /// Pass at most this many waiting jobs (oldest first) to kiln's plan().
    #[arg(long)]
    waiting_cap: Option<usize>,
    /// kiln's drain patience in seconds (how long a job lets opportunistic
    /// jobs of its own standing finish before preempting them).
    #[arg(long, default_value_t = kiln_sched::DRAIN_PATIENCE_MS / 1000)]
    drain_patience: u64,
    /// Write the markdown here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write `<pods>-<policy>-hourly.csv` (allocation per hour) here.
    #[arg(long)]
    csv_dir: Option<PathBuf>,
}

fn stats_line(s: &RecipeStats) -> String {
    format!(
        "{} pods: {} fractional-GPU pods given a whole GPU; {} multi-model constraints kept exactly by a shared substring, {} narrowed to their first model; \
         {} pods never ran in the trace (run for as long as they were around); {} pods took their times from the reference list by name, {} by hash; \
         gangs: {} of 2×8 GPUs, {} of {} 2-/4-GPU pods of one arrival minute; {} jobs state a run-time bound",
        s.pods, s.fractional, s.spec_exact, s.spec_narrowed, s.never_scheduled, s.times_by_name, s.times_by_hash,
        s.gangs_of_8x2, s.gangs_grouped, s.grouped_pods, s.bounded
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.speedup.is_nan() || args.speedup <= 0.0 {
        bail!("--speedup must be positive");
    }
    let trace_nodes = trace::read_nodes(&args.trace.join(&args.nodes))?;
    let nodes = recipe::nodes(&trace_nodes, args.node_every);
    let total_gpus: usize = nodes.iter().map(|n| n.gpus.len()).sum();
    let policies: Vec<Policy> = match args.policy {
        Which::Fifo => vec![Policy::Fifo],
        Which::Kiln => vec![Policy::Kiln],
        Which::Both => vec![Policy::Fifo, Policy::Kiln],
    };
    let mut md = String::new();
    let mut bad = Vec::new();
    for pods_file in &args.pods {
        let pods = trace::read_pods(&args.trace.join(pods_file))?;
        let reference = if pods.iter().any(|p| p.times.is_none()) {
            trace::read_pods(&args.trace.join(&args.times_from))
                .context("pods without times need --times-from")?
        } else {
            Vec::new()
        };
        let work = recipe::build(&pods, &reference, &nodes, args.speedup)?;
        let started = std::time::Instant::now();
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = policies
                .iter()
                .map(|p| {
                    let mut cfg = Config::new(*p);
                    cfg.waiting_cap = args.waiting_cap;
                    cfg.drain_patience_secs = args.drain_patience;
                    let (nodes, work) = (&nodes, &work);
                    s.spawn(move || sim::run(nodes, work, cfg))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        if outcomes.len() != policies.len() {
            bail!("a simulation thread panicked");
        }
        let _ = writeln!(
            md,
            "#### {pods_file}\n\n{} nodes, {} GPUs ({}); {} jobs; arrivals ÷ {}; {} jobs no empty node set can hold left out. {}.\n",
            nodes.len(),
            total_gpus,
            sampled(args.node_every),
            work.jobs.len(),
            args.speedup,
            outcomes.first().map_or(0, |o| o.never_fit),
            stats_line(&work.stats)
        );
        md += &report::table(&outcomes);
        let _ = writeln!(
            md,
            "\n(simulated in {:.1} s)\n",
            started.elapsed().as_secs_f64()
        );
        for o in &outcomes {
            if o.partial_gangs + o.over_allocations + o.stalls > 0 || o.stuck > 0 {
                bad.push(format!("{pods_file} / {}: {} partial gangs, {} over-allocations, {} stalls, {} jobs never started; {:?}", o.policy, o.partial_gangs, o.over_allocations, o.stalls, o.stuck, o.faults));
            }
            if let Some(dir) = &args.csv_dir {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let stem = pods_file.trim_end_matches(".csv");
                let tag = if o.policy == Policy::Kiln.name() {
                    "kiln"
                } else {
                    "fifo"
                };
                let path = dir.join(format!("{stem}-{tag}-hourly.csv"));
                std::fs::write(&path, o.hourly_csv())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    print!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    if !bad.is_empty() {
        bail!("checks failed:\n{}", bad.join("\n"));
    }
    Ok(())
}

fn sampled(n: usize) -> String {
    match n {
        0 | 1 => "the whole cluster".into(),
        n => format!("every {n}th node of each shape"),
    }
}
