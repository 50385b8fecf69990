//! The seed jobs from examples/, on every engine: Crater MNIST (one task),
//! the OpenPAI 2-role job with ports, the Kubeflow PyTorchJob with real DDP
//! over gloo (master + 2 workers) and the AI Lab distributed job. On Slurm,
//! the OpenPAI and AI Lab jobs are sized so their tasks must span both nodes,
//! and the cases check that they did.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{hosts, Eng};
use crate::common::{self, env_of, task};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

pub fn make_dataset(bin: &Path, data: &Path, name: &str) {
    let status = std::process::Command::new(bin.join("python3"))
        .arg(examples().join("mnist/make_mnist.py"))
        .arg(data)
        .args(["--name", name])
        .status()
        .expect("generator ran");
    assert!(status.success());
}

/// Crater's layout in the server's space: train.py in `mnist`, a small
/// generated MNIST in `data`. The local copy is kept in the returned folder.
pub fn upload_mnist(s: &crate::common::Server, bin: &Path) -> tempfile::TempDir {
    let local = tempfile::tempdir().expect("tmp");
    let mnist = local.path().join("mnist");
    std::fs::create_dir(&mnist).expect("mkdir");
    std::fs::copy(examples().join("mnist/train.py"), mnist.join("train.py")).expect("copy");
    make_dataset(bin, &local.path().join("data"), "MNIST");
    s.ok(&["files", "put", mnist.to_str().expect("utf8"), "mnist"]);
    s.ok(&[
        "files",
        "put",
        local.path().join("data").to_str().expect("utf8"),
        "data",
    ]);
    local
}

/// A task's command that joins the job's gloo group with `python`, all-reduces
/// rank + 1 and prints `MASTER_PORT=… rank=… world=… sum=…` (a heredoc,
/// indented for a role's `command: |`).
pub fn allreduce_command(python: &str) -> String {
    let script = "import os, torch, torch.distributed as dist\n\
        dist.init_process_group('gloo')\n\
        t = torch.tensor([float(dist.get_rank() + 1)])\n\
        dist.all_reduce(t)\n\
        print(f'MASTER_PORT={os.environ[\"MASTER_PORT\"]} rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item():.0f}')\n\
        dist.barrier()\n\
        dist.destroy_process_group()\n";
    let indented: String = script.lines().map(|l| format!("      {l}\n")).collect();
    format!("      {python} - <<'PY'\n{indented}      PY\n")
}

/// The model Crater's train.py saved beside itself, fetched back from the
/// space into `local`.
pub fn assert_model_in_space(s: &crate::common::Server, local: &Path) {
    let back = local.join("model.pt");
    s.ok(&[
        "files",
        "get",
        "mnist/mnist_cnn.pt",
        back.to_str().expect("utf8"),
    ]);
    assert!(back.metadata().expect("downloaded").len() > 100_000);
}

fn assert_spans_both_nodes(e: &Eng, j: &serde_json::Value) {
    if e.slurm() {
        let h: Vec<String> = hosts(j).into_iter().collect();
        assert_eq!(h, ["n1", "n2"], "the tasks span both nodes: {j:#}");
    }
}

pub fn crater_mnist(e: &Eng) {
    let Some((s, bin)) = e.torch_server() else {
        return;
    };
    // The seed's layout: the code in a folder `mnist`, the data in ../data.
    let work = tempfile::tempdir().expect("tmp");
    let mnist = work.path().join("mnist");
    std::fs::create_dir(&mnist).expect("mkdir");
    std::fs::copy(examples().join("mnist/train.py"), mnist.join("train.py")).expect("copy");
    make_dataset(&bin, &work.path().join("data"), "MNIST");
    common::open_tree(work.path());
    let id = s.submit(
        "crater",
        &format!(
            "name: crater-mnist\ncpus: 2\nmemory: 4Gi\ncommand: |\n  cd {}; python3 train.py --epochs 1\n",
            mnist.display()
        ),
    );
    let j = s.wait_state(&id, "SUCCEEDED", 600);
    assert_eq!(task(&j, "main-0")["exitCode"], 0);
    if e.slurm() {
        let host = task(&j, "main-0")["host"].as_str().unwrap_or_default();
        assert!(host == "n1" || host == "n2", "{j:#}");
    }
    let log = s.logs(&id, "main-0");
    assert!(log.contains("Train Epoch: 1"), "{log}");
    assert!(log.contains("Test set: Average loss"), "{log}");
    assert!(
        mnist
            .join("mnist_cnn.pt")
            .metadata()
            .expect("model saved")
            .len()
            > 100_000
    );
}

/// Three tasks with a GPU each: more than one Slurm node has, so on Slurm
/// they span both nodes.
pub fn openpai_ports(e: &Eng) {
    let _whole = e.whole();
    let s = e.server();
    let id = s.submit(
        "ports",
        r#"{
          "jobName": "ports",
          "image": "ubuntu",
          "jobEnvs": {"LR": "0.1"},
          "taskRoles": [
            {"name": "master", "taskNumber": 1, "cpuNumber": 1, "memoryMB": 256, "gpuNumber": 1,
             "portList": [{"label": "http", "beginAt": 0, "portNumber": 2}],
             "command": "env | sort"},
            {"name": "worker", "taskNumber": 2, "cpuNumber": 1, "memoryMB": 256, "gpuNumber": 1,
             "portList": [{"label": "ssh", "beginAt": 0, "portNumber": 1}],
             "command": "env | sort"}
          ]
        }"#,
    );
    assert_eq!(id, "admin~ports");
    let job = s.wait_state(&id, "SUCCEEDED", e.secs(30));
    assert_spans_both_nodes(e, &job);
    let mut gpus = BTreeSet::new();
    let mut master_ports = BTreeSet::new();
    for (t, rank) in [("master-0", "0"), ("worker-0", "1"), ("worker-1", "2")] {
        let env = env_of(&s.logs(&id, t));
        let (role, index) = t.split_once('-').expect("task id");
        assert_eq!(env["PAI_JOB_NAME"], "admin~ports");
        assert_eq!(env["PAI_USER_NAME"], "admin");
        assert_eq!(env["PAI_TASK_ROLE_COUNT"], "2");
        assert_eq!(env["PAI_TASK_ROLE_LIST"], "master,worker");
        assert_eq!(env["PAI_TASK_ROLE_TASK_COUNT_worker"], "2");
        assert_eq!(env["PAI_RESOURCE_worker"], "1,1,256,64");
        assert_eq!(env["PAI_MIN_FAILED_TASK_COUNT_worker"], "1");
        assert_eq!(env["PAI_CURRENT_TASK_ROLE_NAME"], role);
        assert_eq!(env["PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX"], index);
        assert_eq!(env["PAI_HOST_IP_worker_1"], "127.0.0.1");
        assert_eq!(env["LR"], "0.1");
        assert_eq!(env["RANK"], rank);
        assert_eq!(env["WORLD_SIZE"], "3");
        assert_eq!(env["MASTER_ADDR"], "127.0.0.1");
        assert_eq!(env["PET_MASTER_PORT"], env["MASTER_PORT"]);
        assert_eq!(env["PYTHONUNBUFFERED"], "1");
        assert_eq!(env["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
        assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]);
        assert_eq!(env["KILN_JOB_ID"], "admin~ports");
        assert_eq!(env["KILN_TASK_ID"], t);
        assert_eq!(env["KILN_ATTEMPT"], "0");
        assert!(env["KILN_TENSORBOARD_DIR"].starts_with(&env["KILN_OUTPUT_DIR"]));
        // The ports in the environment are the ones the API reports.
        let label = if role == "master" { "http" } else { "ssh" };
        let listed = &task(&job, t)["ports"][label];
        let from_env: Vec<String> = env[&format!("PAI_PORT_LIST_{role}_{index}_{label}")]
            .split(',')
            .map(str::to_owned)
            .collect();
        let from_api: Vec<String> = listed
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(from_env, from_api);
        assert_eq!(from_env.len(), if role == "master" { 2 } else { 1 });
        // A GPU is one node's: distinct per (host, index).
        let host = task(&job, t)["host"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        gpus.insert((host, env["CUDA_VISIBLE_DEVICES"].clone()));
        if !e.slurm() {
            // Slurm binds GPUs when each step starts; kiln knows the count.
            assert_eq!(
                task(&job, t)["gpus"][0].to_string(),
                env["CUDA_VISIBLE_DEVICES"]
            );
        }
        master_ports.insert(env["MASTER_PORT"].clone());
    }
    assert_eq!(gpus.len(), 3, "one distinct GPU per task: {gpus:?}");
    assert_eq!(master_ports.len(), 1, "one rendezvous port per job");
    // Nothing of the server's own environment leaks in beyond the basics.
    let env = env_of(&s.logs(&id, "master-0"));
    assert!(!env.contains_key("KILN_URL") && !env.contains_key("RUST_LOG"));
}

/// The seed's PyTorchJob, master + 2 workers, real DDP over gloo.
pub fn kubeflow_ddp(e: &Eng) {
    let Some((s, bin)) = e.torch_server() else {
        return;
    };
    let work = tempfile::tempdir().expect("tmp");
    let kf = work.path().join("kf");
    std::fs::create_dir(&kf).expect("mkdir");
    make_dataset(&bin, &work.path().join("data"), "FashionMNIST");
    // The manifest as the seed has it, with the image's script path pointed
    // at a copy of examples/kubeflow/mnist.py (from a folder every uid can
    // read: tasks run as their user's uid) and a working folder (no
    // containers here), and two workers.
    let script = work.path().join("mnist.py");
    std::fs::copy(examples().join("kubeflow/mnist.py"), &script).expect("copy");
    let manifest = std::fs::read_to_string(examples().join("kubeflow/pytorch-simple.yaml"))
        .expect("manifest")
        .replace("/opt/pytorch-mnist/mnist.py", &script.display().to_string())
        .replace(
            "imagePullPolicy: Always",
            &format!(
                "imagePullPolicy: Always\n              workingDir: {}",
                kf.display()
            ),
        )
        .replace(
            "\"--epochs=1\"",
            "\"--epochs=1\"\n                - \"--save-model\"",
        )
        .replace(
            "    Worker:\n      replicas: 1",
            "    Worker:\n      replicas: 2",
        );
    assert!(manifest.contains("replicas: 2"), "{manifest}");
    common::open_tree(work.path());
    let id = s.submit("kubeflow", &manifest);
    assert_eq!(id, "admin~pytorch-simple");
    let j = s.wait_state(&id, "SUCCEEDED", 600);
    assert_eq!(task(&j, "master-0")["state"], "SUCCEEDED");
    let master = s.logs(&id, "master-0");
    assert!(master.contains("World Size: 3. Rank: 0"), "{master}");
    for (w, rank) in [("worker-0", 1), ("worker-1", 2)] {
        let log = s.logs(&id, w);
        assert!(
            log.contains(&format!("World Size: 3. Rank: {rank}")),
            "{log}"
        );
    }
    assert!(master.contains("accuracy="), "{master}");
    assert!(kf.join("mnist_cnn.pt").exists());

    // The example's loss and accuracy, as series: from what the master
    // printed (`loss=…`, `accuracy=…`) and from the TensorBoard files every
    // rank wrote to KILN_TENSORBOARD_DIR (one series: a step's value is one
    // of the ranks').
    let printed = |log: &str, key: &str| -> Vec<f64> {
        log.lines()
            .filter_map(|l| l.split(key).nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let (losses, accs) = (printed(&master, "loss="), printed(&master, "accuracy="));
    assert!(!losses.is_empty() && accs.len() == 1, "{master}");
    let mut any_loss = losses.clone();
    let mut any_acc = accs.clone();
    for w in ["worker-0", "worker-1"] {
        let log = s.logs(&id, w);
        any_loss.extend(printed(&log, "loss="));
        any_acc.extend(printed(&log, "accuracy="));
    }
    let (status, v) = s.api("GET", &format!("/jobs/{id}/metrics"), None);
    assert_eq!(status, 200, "{v}");
    let values = |task: &str, name: &str| -> Vec<f64> {
        v["series"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["task"] == task && s["name"] == name))
            .and_then(|s| s["points"].as_array())
            .map(|p| p.iter().filter_map(|p| p["value"].as_f64()).collect())
            .unwrap_or_else(|| panic!("no {task}/{name} series: {v}"))
    };
    assert_eq!(values("master-0", "loss"), losses);
    assert_eq!(values("master-0", "accuracy"), accs);
    let near = |x: f64, of: &[f64]| of.iter().any(|y| (x - y).abs() < 1e-4);
    let tb_acc = values("tensorboard", "accuracy");
    assert!(
        !tb_acc.is_empty() && tb_acc.iter().all(|a| near(*a, &any_acc)),
        "{tb_acc:?} vs {any_acc:?}"
    );
    let tb_loss = values("tensorboard", "loss");
    assert!(
        !tb_loss.is_empty() && tb_loss.iter().all(|l| near(*l, &any_loss)),
        "{tb_loss:?} vs {any_loss:?}"
    );
}

/// The AI Lab job (1 master + 2 workers), each task given 3 CPUs: on Slurm's
/// 8-CPU nodes no more than two fit on one, so the gloo group spans both nodes.
pub fn ailab_distributed(e: &Eng) {
    let Some((s, _bin)) = e.torch_server() else {
        return;
    };
    let _whole = e.whole();
    let spec = std::fs::read_to_string(examples().join("ailab/pytorch-distributed.yaml"))
        .expect("seed")
        .replace("    cpus: 1\n", "    cpus: 3\n");
    assert_eq!(spec.matches("cpus: 3").count(), 2, "{spec}");
    let id = s.submit("ailab", &spec);
    assert_eq!(id, "admin~ailab-pytorch-distributed");
    let j = s.wait_job(&id, 300, "finished", |j| {
        j["state"] == "SUCCEEDED" || j["state"] == "FAILED"
    });
    if j["state"] != "SUCCEEDED" {
        // Every task's log, to tell a gloo abort from a kiln fault.
        let logs: Vec<String> = ["master-0", "worker-0", "worker-1"]
            .iter()
            .map(|t| format!("== {t}\n{}", s.logs(&id, t)))
            .collect();
        panic!("{j:#}\n{}", logs.join("\n"));
    }
    assert_spans_both_nodes(e, &j);
    let master = s.logs(&id, "master-0");
    assert!(master.contains("Rank: 0, World Size: 3"), "{master}");
    assert!(
        master.contains("Distributed process group initialized successfully"),
        "{master}"
    );
    assert!(master.contains("Epoch 9, Loss:"), "{master}");
    for w in ["worker-0", "worker-1"] {
        let log = s.logs(&id, w);
        assert!(
            log.contains("Distributed process group initialized successfully"),
            "{w}: {log}"
        );
        assert!(log.contains("DDP model created successfully"), "{w}: {log}");
    }
}
