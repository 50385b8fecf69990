use super::*;
use crate::model::Gpu;

fn node(name: &str, cpus: u32, memory_mb: u64, gpus: &[&str]) -> Node {
    Node {
        name: name.into(),
        cpus,
        memory_mb,
        gpus: gpus
            .iter()
            .enumerate()
            .map(|(i, m)| Gpu {
                index: i as u32,
                model: (*m).into(),
                memory_mb: 80_000,
            })
            .collect(),
    }
}

fn spec(yaml: &str) -> JobSpec {
    kiln_spec::parse(yaml.as_bytes()).expect("valid spec").job
}

fn fixed(nodes: &[Node]) -> Capacity<'_> {
    Capacity {
        nodes,
        can_grow: false,
    }
}

/// `path: message` of every reason, as the server's 422 lists them.
fn said(spec: &JobSpec, nodes: &[Node]) -> Vec<String> {
    never_fits(spec, fixed(nodes))
        .iter()
        .map(|t| format!("{}: {t}", t.path()))
        .collect()
}

const ONE_GPU: &str = "name: a\nroles:\n  - name: main\n    gpus: 1\n    command: x\n";

#[test]
fn a_gpu_job_on_a_machine_without_gpus_names_the_role_field() {
    let cpu_only = [node("here", 16, 64_000, &[])];
    assert_eq!(
        said(&spec(ONE_GPU), &cpu_only),
        ["roles[0].gpus: needs 1 GPU on one node; the largest node has 0"]
    );
    assert!(never_fits(&spec(ONE_GPU), fixed(&cpu_only))[0].wants_gpus());
}

#[test]
fn a_job_that_fits_or_a_cluster_that_grows_is_never_refused() {
    let gpu_node = [node("here", 16, 64_000, &["NVIDIA H200"])];
    assert!(said(&spec(ONE_GPU), &gpu_node).is_empty());
    let cpu_only = [node("here", 16, 64_000, &[])];
    let grows = Capacity {
        nodes: &cpu_only,
        can_grow: true,
    };
    assert!(never_fits(&spec(ONE_GPU), grows).is_empty());
    // Nothing known yet: nothing to measure against.
    assert!(said(&spec(ONE_GPU), &[]).is_empty());
}

#[test]
fn a_gpu_model_no_node_has_is_named_once_where_it_was_set() {
    let h200 = [node("here", 16, 64_000, &["NVIDIA H200", "NVIDIA H200"])];
    let role_wide = spec(
        "name: a\nroles:\n  - name: main\n    gpus: 1\n    gpuType: generic\n    command: x\n",
    );
    assert_eq!(
        said(&role_wide, &h200),
        ["roles[0].gpuType: no node has a generic GPU; the models here are NVIDIA H200"]
    );
    let job_wide = spec(
        "name: a\ngpuType: V100\nroles:\n  - name: master\n    gpus: 1\n    command: x\n  - name: worker\n    gpus: 1\n    command: x\n",
    );
    assert_eq!(
        said(&job_wide, &[node("here", 16, 64_000, &[])]),
        ["gpuType: no node has a V100 GPU; this cluster has no GPUs"]
    );
    // Matched as the scheduler matches: case-insensitive substring.
    let h =
        spec("name: a\nroles:\n  - name: main\n    gpus: 2\n    gpuType: h200\n    command: x\n");
    assert!(said(&h, &h200).is_empty());
    // A model without GPUs asked for does not matter.
    let none =
        spec("name: a\nroles:\n  - name: main\n    gpus: 0\n    gpuType: V100\n    command: x\n");
    assert!(said(&none, &h200).is_empty());
}

#[test]
fn each_resource_too_big_for_every_node_is_named_with_plural_forms() {
    let nodes = [node("a", 1, 1024, &["A100"]), node("b", 8, 4096, &[])];
    let big = spec(
        "name: a\nroles:\n  - name: main\n    gpus: 2\n    cpus: 64\n    memory: 8Gi\n    command: x\n",
    );
    assert_eq!(
        said(&big, &nodes),
        [
            "roles[0].gpus: needs 2 GPUs on one node; the largest node has 1",
            "roles[0].cpus: needs 64 CPUs on one node; the largest node has 8",
            "roles[0].memory: needs 8192 MiB memory on one node; the largest node has 4096 MiB",
        ]
    );
    let typed =
        spec("name: a\nroles:\n  - name: main\n    gpus: 2\n    gpuType: A100\n    command: x\n");
    assert_eq!(
        said(&typed, &nodes),
        ["roles[0].gpus: needs 2 A100 GPUs on one node; the largest node has 1"]
    );
    let one_cpu = spec("name: a\nroles:\n  - name: main\n    cpus: 9\n    command: x\n");
    assert_eq!(
        said(&one_cpu, &[node("a", 1, 8192, &[])]),
        ["roles[0].cpus: needs 9 CPUs on one node; the largest node has 1"]
    );
}

#[test]
fn a_task_whose_resources_are_on_different_nodes_is_named_by_its_id() {
    let nodes = [
        node("gpus", 2, 4096, &["A100", "A100", "A100", "A100"]),
        node("cpus", 64, 4096, &[]),
    ];
    let s = spec("name: a\nroles:\n  - name: main\n    gpus: 4\n    cpus: 32\n    memory: 1Gi\n    command: x\n");
    assert_eq!(
        said(&s, &nodes),
        ["roles: task main-0 needs 4 GPUs, 32 CPUs and 1024 MiB memory on one node, and no node has all of that"]
    );
}

#[test]
fn the_whole_job_against_the_whole_cluster() {
    let nodes = [
        node("a", 8, 8192, &["A100", "A100"]),
        node("b", 8, 8192, &["A100", "A100"]),
    ];
    let s = spec("name: a\nroles:\n  - name: worker\n    replicas: 3\n    gpus: 2\n    cpus: 1\n    command: x\n");
    assert_eq!(
        said(&s, &nodes),
        ["roles: the tasks need 6 GPUs in all; the cluster has 4"]
    );
    // Totals fit (6 of 6), but two tasks of 2 never share a node of 3.
    let three = [
        node("a", 8, 8192, &["A100"; 3]),
        node("b", 8, 8192, &["A100"; 3]),
    ];
    assert_eq!(
        said(&s, &three),
        ["roles: the 3 tasks cannot be placed together on the 2 nodes, however long the job waits"]
    );
    let one =
        spec("name: a\nroles:\n  - name: worker\n    replicas: 1\n    cpus: 9\n    command: x\n");
    assert_eq!(
        said(&one, &[node("a", 8, 8192, &[]), node("b", 8, 8192, &[])]),
        ["roles[0].cpus: needs 9 CPUs on one node; the largest node has 8"]
    );
}

#[test]
fn refusals_are_data_for_the_readers_language() {
    let cpu_only = [node("here", 16, 64_000, &[])];
    let why = never_fits(&spec(ONE_GPU), fixed(&cpu_only));
    assert_eq!(
        serde_json::to_value(&why[0]).expect("json"),
        serde_json::json!({"code": "taskGpus", "role": 0, "task": "main-0", "need": 1, "gpuType": null, "largest": 0})
    );
}
