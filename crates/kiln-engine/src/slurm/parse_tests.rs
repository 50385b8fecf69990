//! Table tests of the parsers over output captured from Slurm (see testdata/README.md).

use super::*;
use crate::slurm::state::{job_view, EndKind, JobView};

const QUEUED: &str = include_str!("testdata/squeue-22.05-queued.json");
const RUNNING: &str = include_str!("testdata/squeue-22.05-running.json");
const ENDED: &str = include_str!("testdata/squeue-22.05-ended.json");
const NEW_JOBS: &str = include_str!("testdata/squeue-23.02-shape.json");
const IDLE: &str = include_str!("testdata/sinfo-22.05-idle.json");
const MIXED: &str = include_str!("testdata/sinfo-22.05-mixed.json");
const ALLOCATED: &str = include_str!("testdata/sinfo-22.05-allocated.json");
const NEW_NODES: &str = include_str!("testdata/sinfo-23.02-shape.json");

fn job(json: &str, id: u64) -> SlurmJob {
    let jobs = parse_squeue(json).unwrap();
    jobs.into_iter().find(|j| j.id == id).unwrap()
}

fn view(j: &SlurmJob) -> JobView {
    job_view(&j.id.to_string(), &j.state).unwrap()
}

#[test]
fn every_captured_job_has_a_known_state() {
    for json in [QUEUED, RUNNING, ENDED, NEW_JOBS] {
        for j in parse_squeue(json).unwrap() {
            view(&j);
        }
    }
}

#[test]
fn jobs_in_22_05_read_as_slurm_showed_them() {
    use EndKind::*;
    use JobView::*;
    // (file, id, view, reason, nodes, time limit)
    type Case<'a> = (&'a str, u64, JobView, &'a str, &'a [&'a str], Option<u64>);
    let cases: &[Case] = &[
        (QUEUED, 54, Running, "None", &["n1"], None),
        (QUEUED, 56, Pending, "Priority", &[], Some(5)),
        (QUEUED, 57, Pending, "JobHeldUser", &[], None),
        (QUEUED, 58, Running, "None", &["n1", "n2"], None),
        (QUEUED, 59, Pending, "Resources", &[], None),
        (QUEUED, 60, Ended(Completed), "None", &["n2"], Some(525600)),
        (
            QUEUED,
            61,
            Ended(Failed),
            "NonZeroExitCode",
            &["n2"],
            Some(525600),
        ),
        (QUEUED, 64, Pending, "Resources", &[], None),
        (RUNNING, 56, Running, "None", &["n1", "n2"], Some(5)),
        (RUNNING, 59, Ended(Cancelled), "Resources", &[], None),
        (ENDED, 62, Ended(Timeout), "TimeLimit", &["n2"], Some(1)),
        (ENDED, 65, Ended(Cancelled), "None", &["n1"], None),
    ];
    for &(json, id, want, reason, nodes, limit) in cases {
        let j = job(json, id);
        assert_eq!(view(&j), want, "{id}");
        assert_eq!(j.state_reason, reason, "{id}");
        assert_eq!(j.nodes, nodes, "{id}");
        assert_eq!(j.time_limit_min, limit, "{id}");
        assert_eq!(j.partition, "debug");
        assert_eq!(j.user, "root");
        assert!(j.name.starts_with("slurmcore-"));
    }
}

#[test]
fn a_job_on_two_nodes_holds_one_gpu_on_each() {
    let j = job(RUNNING, 56);
    assert_eq!(j.name, "slurmcore-span");
    let gpus: Vec<(&str, u64, &[u32])> = j
        .gpus
        .iter()
        .map(|g| (g.node.as_str(), g.count, g.indices.as_slice()))
        .collect();
    assert_eq!(gpus, [("n1", 1, &[1][..]), ("n2", 1, &[0][..])]);
    assert!(j.gpus.iter().all(|g| g.gpu_type.as_deref() == Some("fake")));
    assert_eq!(j.start_time, Some(1796425795));
    assert!(j.het_job_id.is_none());
}

#[test]
fn a_heterogeneous_job_is_one_entry_per_component() {
    let first = job(RUNNING, 64);
    let second = job(RUNNING, 65);
    assert_eq!(
        (first.het_job_id, first.het_job_offset),
        (Some(64), Some(0))
    );
    assert_eq!(
        (second.het_job_id, second.het_job_offset),
        (Some(64), Some(1))
    );
    assert_eq!(first.nodes, ["n2"]);
    assert!(first.gpus.is_empty());
    assert_eq!(second.gpus[0].node, "n1");
    assert_eq!(second.gpus[0].indices, [0]);
}

#[test]
fn nodes_in_22_05_read_as_sinfo_showed_them() {
    // (file, node, state, alloc cpus, alloc MiB, free GPUs)
    let cases = [
        (IDLE, "n1", "idle", 0, 0, 2),
        (ALLOCATED, "n1", "allocated", 4, 400, 1),
        (ALLOCATED, "n2", "allocated", 4, 350, 2),
        (MIXED, "n1", "mixed", 3, 300, 0),
        (MIXED, "n2", "mixed", 3, 250, 1),
    ];
    for (json, name, state, cpus, mem, free) in cases {
        let nodes = parse_sinfo(json).unwrap();
        assert_eq!(nodes.len(), 2);
        let n = nodes.iter().find(|n| n.name == name).unwrap();
        assert_eq!(n.state, state, "{name}");
        assert_eq!(n.alloc_cpus, cpus, "{name}");
        assert_eq!(n.alloc_memory_mb, mem, "{name}");
        assert_eq!(n.free_gpus(None), free, "{name}");
        assert_eq!(n.free_gpus(Some("fake")), free, "{name}");
        assert_eq!(n.free_gpus(Some("a100")), 0, "{name}");
        assert_eq!((n.cpus, n.real_memory_mb), (4, 4096));
        assert_eq!(n.address, "127.0.0.1");
        assert_eq!(n.partitions, ["debug"]);
        assert_eq!(n.gpu_types().collect::<Vec<_>>(), ["fake"]);
        assert!(!n.unavailable());
    }
    let n1 = &parse_sinfo(MIXED).unwrap()[0];
    assert_eq!(n1.gres_used[0].indices, [0, 1]);
    assert_eq!((n1.free_cpus(), n1.free_memory_mb()), (1, 3796));
}

#[test]
fn the_23_02_shape_reads_into_the_same_structs() {
    let j = job(NEW_JOBS, 4711);
    assert_eq!(view(&j), JobView::Running);
    assert_eq!(j.nodes, ["gpu01", "gpu02"]);
    assert_eq!(j.gpus[1].indices, [2, 3]);
    assert_eq!(j.time_limit_min, Some(125));
    assert_eq!(j.start_time, Some(1700000000));
    assert_eq!(j.priority, Some(4294901757));
    assert_eq!(j.het_job_id, None);

    let pending = job(NEW_JOBS, 4712);
    assert_eq!(view(&pending), JobView::Pending);
    assert_eq!((pending.time_limit_min, pending.start_time), (None, None));
    assert_eq!(view(&job(NEW_JOBS, 4713)), JobView::Running);
    assert_eq!(
        view(&job(NEW_JOBS, 4714)),
        JobView::Ended(EndKind::NodeFail)
    );

    let nodes = parse_sinfo(NEW_NODES).unwrap();
    assert_eq!(nodes[0].state, "mixed");
    assert_eq!(nodes[0].free_gpus(Some("a100")), 2);
    assert!(!nodes[0].unavailable());
    assert_eq!(nodes[1].state_flags, ["DRAIN"]);
    assert!(nodes[1].unavailable());
    assert_eq!(nodes[1].reason, "bad GPU");
    assert_eq!(nodes[1].partitions, ["gpu", "debug"]);
}

#[test]
fn errors_from_slurm_fail_the_poll() {
    let json =
        r#"{"jobs": [], "errors": [{"error": "Unable to contact slurm controller", "errno": 1}]}"#;
    let err = parse_squeue(json).unwrap_err().to_string();
    assert_eq!(
        err,
        "squeue --json reported: Unable to contact slurm controller"
    );
    assert!(parse_sinfo("not json").is_err());
    assert!(parse_squeue(r#"{"jobs": [{"name": "x"}]}"#).is_err());
}

#[test]
fn sentinels_and_nulls_are_none() {
    let json = r#"{"jobs": [{"job_id": 1, "time_limit": 4294967295, "priority": null,
        "nodes": null, "job_state": "PENDING", "start_time": 0}]}"#;
    let j = &parse_squeue(json).unwrap()[0];
    assert_eq!(
        (j.time_limit_min, j.priority, j.start_time),
        (None, None, None)
    );
    assert!(j.nodes.is_empty());
}
