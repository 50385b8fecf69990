//! Every job under examples/ parses, and says what the seed it came from says.

use std::path::{Path, PathBuf};

use kiln_spec::env::{example_context, render_env};
use kiln_spec::{parse, Format, Parsed};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn load(rel: &str) -> Parsed {
    let path = examples_dir().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&bytes).unwrap_or_else(|e| panic!("{rel}: {:?}", e.issues()))
}

/// Each example with the format it must be detected as.
const EXAMPLES: &[(&str, Format)] = &[
    ("crater/mnist.yaml", Format::Kiln),
    ("openpai/pytorch-ddp.json", Format::OpenpaiV1),
    ("openpai/mnist-v2.yaml", Format::OpenpaiV2),
    ("kubeflow/pytorch-simple.yaml", Format::KubeflowPytorchjob),
    (
        "kubeflow/pytorch-simple-exported.yaml",
        Format::KubeflowPytorchjob,
    ),
    ("ailab/pytorch-single.yaml", Format::Kiln),
    ("ailab/pytorch-distributed.yaml", Format::Kiln),
    ("local/hello.yaml", Format::Kiln),
    ("local/hello-distributed.yaml", Format::Kiln),
];

#[test]
fn every_example_file_is_listed_and_valid() {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(examples_dir()).expect("examples/") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("example folder") {
            let f = f.expect("entry").path();
            if matches!(
                f.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            ) {
                let rel = f.strip_prefix(examples_dir()).expect("under examples");
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|(p, _)| p.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "every example needs a line in EXAMPLES");
    for (rel, format) in EXAMPLES {
        let p = load(rel);
        assert_eq!(p.format, *format, "{rel}");
        let ctx = example_context(&p.job, "alice").expect("context");
        let envs = render_env(&p.job, &ctx).expect("renders");
        assert_eq!(envs.len() as u64, p.job.total_tasks(), "{rel}");
    }
}

#[test]
fn crater_mnist_runs_the_seed_command_from_the_space() {
    let j = load("crater/mnist.yaml").job;
    assert_eq!(j.roles.len(), 1);
    let r = &j.roles[0];
    assert_eq!(r.command, "cd /mnt/mnist;\npython train.py\n");
    assert_eq!((r.gpus, r.cpus, r.memory_mb, r.shm_mb), (1, 4, 8192, 1024));
    assert_eq!(j.max_duration_secs, Some(7200));
    // The seed's training code is shipped beside it.
    let train = std::fs::read_to_string(examples_dir().join("mnist/train.py")).expect("train.py");
    assert!(train.contains("torch.save(model.state_dict(), \"mnist_cnn.pt\")"));
}

#[test]
fn openpai_v1_example_has_two_roles_with_ports() {
    let j = load("openpai/pytorch-ddp.json").job;
    let names: Vec<&str> = j.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["master", "worker"]);
    assert_eq!(j.roles[0].ports.len(), 2);
    assert_eq!(j.roles[1].replicas, 2);
    assert!(j.is_debug());
    assert_eq!(j.retry_count, 1);
}

#[test]
fn kubeflow_examples_are_the_seed_job_and_its_export() {
    let a = load("kubeflow/pytorch-simple.yaml");
    let b = load("kubeflow/pytorch-simple-exported.yaml");
    assert_eq!(a.job, b.job, "kubectl's export describes the same job");
    let j = a.job;
    assert_eq!(j.name, "pytorch-simple");
    assert_eq!(
        j.image.as_deref(),
        Some("docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727")
    );
    assert_eq!(
        j.roles[0].command,
        "python3 /opt/pytorch-mnist/mnist.py --epochs=1"
    );
    assert_eq!((j.roles[0].replicas, j.roles[1].replicas), (1, 1));
    assert!(b.warnings.iter().any(|w| w.path == "status"));
}

#[test]
fn openpai_v2_example_keeps_its_secret_out_of_the_command() {
    let j = load("openpai/mnist-v2.yaml").job;
    let cmd = &j.roles[0].command;
    assert!(cmd.starts_with("cd /mnt/mnist\n"), "{cmd}");
    assert!(cmd.contains("--epochs 2 --lr 0.01"), "{cmd}");
    assert!(!cmd.contains("not-a-real-key"));
    assert_eq!(j.roles[0].gpu_type.as_deref(), Some("V100"));
}

#[test]
fn ailab_examples_are_single_and_one_master_two_workers() {
    let single = load("ailab/pytorch-single.yaml").job;
    assert_eq!(single.total_tasks(), 1);
    assert!(single.roles[0].command.contains("Training finished."));
    let dist = load("ailab/pytorch-distributed.yaml").job;
    let shape: Vec<(&str, u32)> = dist
        .roles
        .iter()
        .map(|r| (r.name.as_str(), r.replicas))
        .collect();
    assert_eq!(shape, [("master", 1), ("worker", 2)]);
    assert_eq!(dist.roles[0].command, dist.roles[1].command);
    assert!(dist.roles[0].command.contains("'gloo'"));
    assert!(dist.pytorch.is_some());
}
