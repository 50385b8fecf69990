//! The seeds' jobs with real PyTorch on the CPU (gloo backend), through the
//! real server and CLI. PyTorch comes from the virtual environment that
//! `scripts/test` prepares and names in KILN_TEST_PYTHON; a run without it
//! skips these tests loudly, and `scripts/test` (KILN_REQUIRE_TORCH=1) makes
//! that a failure instead.

mod common;
#[macro_use]
mod cases;

use cases::seeds::{allreduce_command, assert_model_in_space, upload_mnist};

use std::collections::BTreeSet;
use std::path::Path;

use common::{env_of, torch_bin, Server};

/// A server whose tasks find the venv's python3, torchrun and packages first.
fn torch_server(bin: &Path) -> Server {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Server::start_env(
        &[
            "--cpus",
            "8",
            "--memory",
            "32Gi",
            "--stop-grace",
            "2",
            "--no-sandbox",
        ],
        &[("PATH", &path)],
    )
}

/// Crater's workflow as the seed describes it: upload the code into the
/// space folder `mnist`, run `cd /mnt/mnist; python train.py` in the
/// sandbox, and find the model back in the space.
#[test]
fn crater_workflow_in_the_sandbox_leaves_the_model_in_the_space() {
    let Some(bin) = torch_bin() else { return };
    if kiln_engine::local::sandbox::find_bwrap().is_none() {
        assert!(
            std::env::var_os("KILN_REQUIRE_BWRAP").is_none(),
            "KILN_REQUIRE_BWRAP is set but bwrap is not installed"
        );
        eprintln!("SKIPPED: bubblewrap is not installed");
        return;
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let s = Server::start_env(
        &["--cpus", "8", "--memory", "32Gi", "--stop-grace", "2"],
        &[("PATH", &path)],
    );
    let local = upload_mnist(&s, &bin);
    let id = s.submit(
        "crater-sandbox",
        "name: crater-sandbox\ncpus: 2\nmemory: 4Gi\nshm: 256Mi\ncommand: |\n  cd /mnt/mnist; python3 train.py --epochs 1\n",
    );
    s.wait_state(&id, "SUCCEEDED", 600);
    assert!(s.logs(&id, "main-0").contains("Test set: Average loss"));
    assert_model_in_space(&s, local.path());
}

/// A master and a worker that join one gloo group and all-reduce their ranks.
fn allreduce_job(name: &str) -> String {
    let command = allreduce_command("python3");
    format!(
        "name: {name}\npytorch: {{}}\nroles:\n  - name: master\n    memory: 1Gi\n    command: |\n{command}  - name: worker\n    memory: 1Gi\n    command: |\n{command}"
    )
}

#[test]
fn two_distributed_jobs_at_once_get_their_own_rendezvous() {
    let Some(bin) = torch_bin() else { return };
    let s = torch_server(&bin);
    let a = s.submit("a", &allreduce_job("ddp-a"));
    let b = s.submit("b", &allreduce_job("ddp-b"));
    s.wait_state(&a, "RUNNING", 30);
    s.wait_state(&b, "RUNNING", 30);
    let mut ports = BTreeSet::new();
    for id in [&a, &b] {
        s.wait_state(id, "SUCCEEDED", 300);
        for t in ["master-0", "worker-0"] {
            let log = s.logs(id, t);
            assert!(log.contains("sum=3"), "{id} {t}: {log}");
            let line = log
                .lines()
                .find(|l| l.starts_with("MASTER_PORT="))
                .expect("port line");
            ports.insert(env_of(line.split(' ').next().expect("first"))["MASTER_PORT"].clone());
        }
    }
    assert_eq!(
        ports.len(),
        2,
        "each job has its own MASTER_PORT: {ports:?}"
    );
}

#[test]
fn torchrun_inside_tasks_takes_the_pet_variables() {
    let Some(bin) = torch_bin() else { return };
    let s = torch_server(&bin);
    let work = tempfile::tempdir().expect("tmp");
    let script = work.path().join("worker.py");
    std::fs::write(
        &script,
        "import os, torch, torch.distributed as dist\n\
         dist.init_process_group('gloo')\n\
         t = torch.ones(1)\n\
         dist.all_reduce(t)\n\
         print(f\"rank={os.environ['RANK']} local={os.environ['LOCAL_RANK']} world={os.environ['WORLD_SIZE']} sum={t.item():.0f}\", flush=True)\n\
         dist.barrier()\n\
         dist.destroy_process_group()\n",
    )
    .expect("script");
    // No arguments: torchrun reads PET_NNODES, PET_NODE_RANK,
    // PET_NPROC_PER_NODE, PET_MASTER_ADDR and PET_MASTER_PORT.
    let cmd = format!("torchrun {}", script.display());
    common::open_tree(work.path());
    let id = s.submit(
        "torchrun",
        &format!(
            "name: torchrun\npytorch: {{nprocPerNode: 2}}\nroles:\n  - name: master\n    cpus: 2\n    memory: 2Gi\n    command: {cmd}\n  - name: worker\n    cpus: 2\n    memory: 2Gi\n    command: {cmd}\n"
        ),
    );
    s.wait_state(&id, "SUCCEEDED", 300);
    // Two processes share each task's stdout, unbuffered (PYTHONUNBUFFERED):
    // their lines may interleave mid-line, so count reports, not lines.
    let mut ranks = BTreeSet::new();
    for t in ["master-0", "worker-0"] {
        let log = s.logs(&id, t);
        let reports: Vec<&str> = log.split("rank=").skip(1).collect();
        assert_eq!(reports.len(), 2, "{t}: two processes report:\n{log}");
        for r in reports {
            let rank: String = r.chars().take_while(char::is_ascii_digit).collect();
            ranks.insert(rank);
        }
        assert_eq!(log.matches("world=4").count(), 2, "{t}: {log}");
        assert_eq!(log.matches("sum=4").count(), 2, "{t}: {log}");
    }
    assert_eq!(ranks.len(), 4, "four processes across two tasks: {ranks:?}");
}

/// A real PyTorch training loop printing its loss and accuracy (key=value
/// and Katib's form) and writing them as TensorBoard scalars: both reach
/// the metrics API with the values it printed.
#[test]
fn training_metrics_come_from_printed_lines_and_tensorboard_files() {
    let Some(bin) = torch_bin() else { return };
    let s = torch_server(&bin);
    let work = tempfile::tempdir().expect("tmp");
    let script = work.path().join("fit.py");
    std::fs::write(
        &script,
        r#"import os, torch
from tensorboardX import SummaryWriter
torch.manual_seed(0)
x = torch.randn(256, 4)
y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
writer = SummaryWriter(os.environ["KILN_TENSORBOARD_DIR"])
for epoch in range(1, 6):
    opt.zero_grad()
    loss = ((model(x).squeeze(1) - y) ** 2).mean()
    loss.backward()
    opt.step()
    acc = float(((model(x).squeeze(1) - y).abs() < 1.0).float().mean())
    print(f"epoch={epoch} loss={loss.item():.6f}")
    print(f"{{metricName: accuracy, metricValue: {acc:.4f}}}")
    writer.add_scalar("loss", loss.item(), epoch)
    writer.add_scalar("accuracy", acc, epoch)
writer.close()
"#,
    )
    .expect("script");
    common::open_tree(work.path());
    let id = s.submit(
        "fit",
        &format!("name: fit\ncommand: python3 {}\n", script.display()),
    );
    s.wait_state(&id, "SUCCEEDED", 120);
    // What the job printed, read back from its log.
    let log = s.logs(&id, "main-0");
    let printed = |key: &str| -> Vec<f64> {
        log.lines()
            .filter_map(|l| l.split(key).nth(1))
            .filter_map(|v| v.trim_end_matches('}').trim().parse().ok())
            .collect()
    };
    let (losses, accs) = (printed("loss="), printed("metricValue: "));
    assert_eq!((losses.len(), accs.len()), (5, 5), "{log}");

    let (status, v) = s.api("GET", &format!("/jobs/{id}/metrics"), None);
    assert_eq!(status, 200, "{v}");
    let series = |task: &str, name: &str| -> Vec<(Option<f64>, f64)> {
        v["series"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["task"] == task && s["name"] == name))
            .and_then(|s| s["points"].as_array())
            .map(|p| {
                p.iter()
                    .map(|p| (p["step"].as_f64(), p["value"].as_f64().unwrap_or(f64::NAN)))
                    .collect()
            })
            .unwrap_or_else(|| panic!("no {task}/{name} series: {v}"))
    };
    // From the printed lines: the same values, with the epoch as the step.
    let line_loss = series("main-0", "loss");
    assert_eq!(
        line_loss.iter().map(|p| p.1).collect::<Vec<_>>(),
        losses,
        "{v}"
    );
    assert_eq!(line_loss[4].0, Some(5.0), "{v}");
    assert_eq!(
        series("main-0", "accuracy")
            .iter()
            .map(|p| p.1)
            .collect::<Vec<_>>(),
        accs
    );
    assert!(losses[4] < losses[0], "it trained: {losses:?}");
    // From the TensorBoard file: float32 of the same numbers, by step.
    for (name, want) in [("loss", &losses), ("accuracy", &accs)] {
        let tb = series("tensorboard", name);
        assert_eq!(
            tb.iter().map(|p| p.0).collect::<Vec<_>>(),
            (1..=5).map(|e| Some(f64::from(e))).collect::<Vec<_>>()
        );
        for (got, want) in tb.iter().zip(want.iter()) {
            assert!((got.1 - want).abs() < 1e-4, "{name}: {got:?} vs {want}");
        }
    }
}

/// The seed jobs, shared with the Slurm engine (tests/slurm_seeds.rs).
mod local {
    engine_cases!(Local: crater_mnist, kubeflow_ddp, ailab_distributed);
}
