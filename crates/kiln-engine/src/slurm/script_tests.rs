use std::path::PathBuf;

use super::*;

fn task(id: &str, cpus: u32, memory_mb: u64, gpus: u32, gpu_type: Option<&str>) -> TaskRequest {
    TaskRequest {
        task: id.into(),
        cpus,
        memory_mb,
        gpus,
        gpu_type: gpu_type.map(Into::into),
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

struct Fixture {
    output: PathBuf,
    launcher: Vec<String>,
    types: Vec<String>,
    extra: Vec<String>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            output: PathBuf::from("/shared/jobs/k/attempt-0/launcher.log"),
            launcher: strings(&[
                "/shared/bin/kiln-abc",
                "__slurm-launch",
                "/shared/jobs/alice~bert/attempt-0",
            ]),
            types: strings(&["fake", "a100", "nvidia_a100_80gb"]),
            extra: strings(&["--account=lab"]),
        }
    }

    fn request(&self) -> SubmitRequest<'_> {
        SubmitRequest {
            instance: "k1",
            key: "alice~bert",
            attempt: 2,
            partition: "debug",
            partition_nodes: 2,
            output: &self.output,
            launcher: &self.launcher,
            max_duration: Some(Duration::from_secs(3600)),
            grace: Duration::from_secs(30),
            priority: 5,
            extra_args: &self.extra,
            gpu_types: &self.types,
        }
    }
}

const WRAP: &str =
    "--wrap=exec /shared/bin/kiln-abc __slurm-launch '/shared/jobs/alice~bert/attempt-0'";

#[test]
fn one_shape_is_one_plain_job() {
    // A PyTorchJob: master and workers alike.
    let tasks = [
        task("master-0", 2, 1000, 1, Some("FAKE")),
        task("worker-0", 2, 1000, 1, Some("FAKE")),
        task("worker-1", 2, 1000, 1, Some("FAKE")),
    ];
    let groups = group_by_shape(&tasks, false);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].tasks, ["master-0", "worker-0", "worker-1"]);
    let f = Fixture::new();
    let args = sbatch_args(&f.request(), &groups).unwrap();
    let want = [
        "--parsable",
        "--no-requeue",
        "--job-name=kiln-k1-alice~bert-a2",
        "--output=/shared/jobs/k/attempt-0/launcher.log",
        "--partition=debug",
        "--time=62",
        "--ntasks=3",
        "--cpus-per-task=2",
        "--mem-per-cpu=500M",
        "--gpus-per-task=fake:1",
        "--account=lab",
        WRAP,
    ];
    assert_eq!(args, want);
}

#[test]
fn several_shapes_are_a_heterogeneous_job() {
    // An OpenPAI job: a CPU-only parameter server and GPU workers; 0 CPUs ask for 1.
    let tasks = [
        task("ps-0", 0, 1001, 0, Some("a100")),
        task("worker-0", 4, 8192, 2, None),
        task("worker-1", 4, 8192, 2, None),
    ];
    let groups = group_by_shape(&tasks, false);
    assert_eq!(groups.len(), 2);
    let mut f = Fixture::new();
    f.extra.clear();
    let mut req = f.request();
    req.max_duration = None;
    req.priority = 0;
    let args = sbatch_args(&req, &groups).unwrap();
    let common = [
        "--parsable",
        "--no-requeue",
        "--job-name=kiln-k1-alice~bert-a2",
        "--output=/shared/jobs/k/attempt-0/launcher.log",
    ];
    let first = [
        "--partition=debug",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--mem-per-cpu=1001M",
    ];
    let second = [
        "--partition=debug",
        "--ntasks=2",
        "--cpus-per-task=4",
        "--mem-per-cpu=2048M",
        "--gpus-per-task=2",
    ];
    let mut want: Vec<&str> = common.to_vec();
    want.extend(first);
    want.push(":");
    want.extend(second);
    want.push(WRAP);
    assert_eq!(args, want);

    // More shapes than nodes is refused, and says why.
    req.partition_nodes = 1;
    let err = sbatch_args(&req, &groups).unwrap_err().to_string();
    assert!(err.contains("2 shapes"), "{err}");
    assert!(err.contains("partition debug has 1 node;"), "{err}");
}

#[test]
fn padding_makes_one_shape_of_the_largest() {
    let tasks = [
        task("ps-0", 1, 500, 0, None),
        task("worker-0", 4, 8192, 2, Some("a100")),
        task("worker-1", 2, 9000, 1, Some("a100")),
    ];
    let groups = group_by_shape(&tasks, true);
    assert_eq!(
        groups,
        [ShapeGroup {
            shape: Shape {
                cpus: 4,
                memory_mb: 9000,
                gpus: 2,
                gpu_type: Some("a100".into())
            },
            tasks: strings(&["ps-0", "worker-0", "worker-1"]),
        }]
    );
    // Different GPU types cannot share a shape.
    let mixed = [
        task("a-0", 1, 500, 1, Some("a100")),
        task("b-0", 1, 500, 1, Some("h100")),
    ];
    assert_eq!(group_by_shape(&mixed, true).len(), 2);
}

#[test]
fn gpu_types_match_as_substrings_and_must_be_one() {
    let types = strings(&["a100", "nvidia_a100_80gb", "h100", "fake"]);
    let cases = [
        ("A100", Ok("a100")),
        ("80GB", Ok("nvidia_a100_80gb")),
        ("h1", Ok("h100")),
        ("100", Err("gpuType 100 matches several GPU types in Slurm (a100, h100, nvidia_a100_80gb); name one of them")),
        ("v100", Err("no GPU type in Slurm matches gpuType v100; the types are a100, fake, h100, nvidia_a100_80gb")),
    ];
    for (wanted, want) in cases {
        let got = match_gpu_type(wanted, &types).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(String::from), "{wanted}");
    }
    let err = match_gpu_type("a100", &[]).unwrap_err().to_string();
    assert!(err.contains("no GPU types here"), "{err}");

    let f = Fixture::new();
    let groups = group_by_shape(&[task("main-0", 1, 100, 1, Some("v100"))], false);
    assert!(sbatch_args(&f.request(), &groups).is_err());
}

#[test]
fn time_limits_round_up_to_minutes() {
    let s = Duration::from_secs;
    assert_eq!(time_limit_minutes(s(3600), s(30)), 62);
    assert_eq!(time_limit_minutes(s(3600), s(31)), 63);
    assert_eq!(time_limit_minutes(s(1), Duration::ZERO), 2);
    assert_eq!(time_limit_minutes(Duration::ZERO, Duration::ZERO), 1);
}

#[test]
fn a_step_runs_one_task_on_its_node() {
    let output = PathBuf::from("/shared/jobs/k/attempt-0/worker-0/srun.log");
    let command = strings(&[
        "/shared/bin/kiln-abc",
        "__supervise",
        "/shared/jobs/k/attempt-0/worker-0",
    ]);
    let mut step = StepRequest {
        het_group: Some(1),
        node: "n2",
        cpus: 4,
        memory_mb: 8192,
        gpus: 2,
        gpu_type: None,
        job_name: "worker-0.0",
        output: &output,
        command: &command,
    };
    let want = [
        "--het-group=1",
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=n2",
        "--exact",
        "--cpus-per-task=4",
        "--mem=8192M",
        "--gres=gpu:2",
        "--kill-on-bad-exit=0",
        "--input=none",
        "--export=NONE",
        "--job-name=worker-0.0",
        "--output=/shared/jobs/k/attempt-0/worker-0/srun.log",
        "/shared/bin/kiln-abc",
        "__supervise",
        "/shared/jobs/k/attempt-0/worker-0",
    ];
    assert_eq!(srun_args(&step), want);

    // A job that named its GPU type: the step names it too.
    step.gpu_type = Some("fake");
    assert!(srun_args(&step).contains(&"--gres=gpu:fake:2".to_string()));

    step.het_group = None;
    step.gpus = 0;
    let args = srun_args(&step);
    assert_eq!(args[0], "--nodes=1");
    assert!(args.contains(&"--gres=none".to_string()));
}

#[test]
fn quotes_words_for_the_wrap_shell() {
    assert_eq!(sh_quote("/a/b-c_d.e"), "/a/b-c_d.e");
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
    assert_eq!(sh_quote("a b"), "'a b'");
    assert_eq!(sh_quote("~x"), "'~x'");
    assert_eq!(sh_quote(""), "''");
}

/// A higher priority is not passed on (only Slurm's operators may set a
/// negative nice, and the job is the user's); a lower one becomes a nice.
#[test]
fn only_a_lower_priority_becomes_a_nice() {
    let tasks = [task("main-0", 1, 100, 0, None)];
    let groups = group_by_shape(&tasks, false);
    let f = Fixture::new();
    let mut req = f.request();
    req.priority = 7;
    let args = sbatch_args(&req, &groups).unwrap();
    assert!(!args.iter().any(|a| a.starts_with("--nice")), "{args:?}");
    req.priority = -3;
    let args = sbatch_args(&req, &groups).unwrap();
    assert!(args.contains(&"--nice=3".to_string()), "{args:?}");
}
