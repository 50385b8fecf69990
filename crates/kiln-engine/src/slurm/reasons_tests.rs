//! The words, over jobs and nodes captured on the test cluster (testdata/README.md).

use super::*;
use crate::slurm::parse::{parse_sinfo, parse_squeue};

const QUEUED: &str = include_str!("testdata/squeue-22.05-queued.json");
const ALLOCATED: &str = include_str!("testdata/sinfo-22.05-allocated.json");
const RUNNING: &str = include_str!("testdata/squeue-22.05-running.json");
const MIXED: &str = include_str!("testdata/sinfo-22.05-mixed.json");
const NEW_NODES: &str = include_str!("testdata/sinfo-23.02-shape.json");

struct Snapshot {
    jobs: Vec<SlurmJob>,
    nodes: Vec<SlurmNode>,
    names: BTreeMap<u64, String>,
}

impl Snapshot {
    fn new(squeue: &str, sinfo: &str) -> Self {
        Snapshot {
            jobs: parse_squeue(squeue).unwrap(),
            nodes: parse_sinfo(sinfo).unwrap(),
            names: BTreeMap::new(),
        }
    }

    fn job(&self, id: u64) -> SlurmJob {
        self.jobs.iter().find(|j| j.id == id).unwrap().clone()
    }

    fn words(&self, job: &SlurmJob, ask: &Ask, heterogeneous: bool) -> PendingWords {
        pending_words(&PendingFacts {
            job,
            heterogeneous,
            ask,
            nodes: &self.nodes,
            jobs: &self.jobs,
            kiln_names: &self.names,
        })
    }
}

fn gpus(n: u64, cpus: u64) -> Ask {
    Ask {
        gpus: n,
        gpu_type: Some("fake".into()),
        cpus,
        memory_mb: 100,
    }
}

#[test]
fn resources_names_the_gpus_and_who_holds_them() {
    let mut s = Snapshot::new(RUNNING, MIXED);
    let mut job = s.job(59);
    job.state = vec!["PENDING".into()];
    let w = s.words(&job, &gpus(2, 1), false);
    assert_eq!(w.code, "slurm.resources");
    assert_eq!(
        w.message,
        "waiting for 2 GPUs (fake) on one node in partition debug; \
         2 running jobs hold them: Slurm job 56 (root), Slurm job 64 (root)"
    );
    assert_eq!(w.params["slurmReason"], "Resources");
    assert_eq!(w.params["slurmJob"], 59);
    assert_eq!(w.params["resource"], "gpus");
    assert_eq!(
        (w.params["need"].clone(), w.params["free"].clone()),
        (2.into(), 1.into())
    );
    assert!(!w.never_runs);

    s.names.insert(56, "alice~bert".into());
    let w = s.words(&job, &gpus(2, 1), false);
    assert!(
        w.message
            .ends_with("hold them: alice~bert, Slurm job 64 (root)"),
        "{}",
        w.message
    );
}

#[test]
fn resources_says_cpus_when_the_gpus_are_free_but_the_cpus_are_not() {
    // Captured: 59 asks a node with 2 fake GPUs; n2 has them, but all its CPUs are taken.
    let s = Snapshot::new(QUEUED, ALLOCATED);
    let w = s.words(&s.job(59), &gpus(2, 1), false);
    assert_eq!(
        w.message,
        "waiting for 1 CPU on one node in partition debug; 4 running jobs hold them: \
         Slurm job 54 (root), Slurm job 55 (root), Slurm job 58 (root), …"
    );
    assert_eq!(w.params["resource"], "cpus");
    assert_eq!(w.params["holders"].as_array().unwrap().len(), 4);

    let one_holder = s.words(&s.job(59), &gpus(3, 1), false);
    assert_eq!(
        one_holder.message,
        "waiting for 3 GPUs (fake) on one node in partition debug; \
         1 running job holds them: Slurm job 55 (root)"
    );
}

#[test]
fn priority_counts_the_jobs_ahead() {
    let s = Snapshot::new(QUEUED, ALLOCATED);
    let w = s.words(&s.job(56), &Ask::default(), false);
    assert_eq!(w.code, "slurm.priority");
    // 59 and the hetjob 64+65 rank above 56 (nice 10); the held 57 does not.
    assert_eq!(
        w.message,
        "2 jobs ahead of it in partition debug (Slurm's priority order)"
    );
    assert_eq!(w.params["ahead"], 2);
}

#[test]
fn held_jobs_say_how_to_release_them() {
    let s = Snapshot::new(QUEUED, ALLOCATED);
    let w = s.words(&s.job(57), &Ask::default(), false);
    assert_eq!(
        (w.code.as_str(), w.message.as_str()),
        ("slurm.held", "held in Slurm (scontrol release 57)")
    );
}

#[test]
fn every_reason_has_words() {
    let s = Snapshot::new(QUEUED, NEW_NODES);
    let mut job = s.job(64);
    job.partition = "gpu".into();
    job.nodes = vec!["gpu01".into(), "gpu02".into()];
    job.time_limit_min = Some(3 * 1440);
    // (reason, heterogeneous, code, message, never runs)
    let cases = [
        ("None", false, "slurm.notConsidered", "submitted to Slurm as job 64, not yet considered", false),
        ("None", true, "slurm.notConsidered", "submitted to Slurm as job 64, not yet considered (waits for the backfill pass)", false),
        ("ReqNodeNotAvail, UnavailableNodes:gpu02", false, "slurm.nodesDown", "the nodes it needs are down or drained: gpu02 (bad GPU)", false),
        ("NodeDown", false, "slurm.nodesDown", "the nodes it needs are down or drained: gpu02 (bad GPU)", false),
        ("PartitionDown", false, "slurm.partitionDown", "partition gpu is down", false),
        ("PartitionInactive", false, "slurm.partitionDown", "partition gpu is inactive", false),
        ("PartitionTimeLimit", false, "slurm.partitionTimeLimit", "its time limit of 3 days is over partition gpu's limit", false),
        ("PartitionNodeLimit", false, "slurm.partitionNodeLimit", "it needs more nodes than partition gpu allows a job", true),
        ("BadConstraints", false, "slurm.badConstraints", "no node in partition gpu can ever give what it asks for", true),
        ("QOSMaxGRESPerUser", false, "slurm.accountLimit", "over a Slurm limit on your account (QOSMaxGRESPerUser); it starts when your other jobs end", false),
        ("AssocGrpGRES", false, "slurm.accountLimit", "over a Slurm limit on your account (AssocGrpGRES); it starts when your other jobs end", false),
        ("JobHeldAdmin", false, "slurm.held", "held in Slurm (scontrol release 64)", false),
        ("Prolog", false, "slurm.starting", "starting on gpu01, gpu02", false),
        ("Configuring", false, "slurm.starting", "starting on gpu01, gpu02", false),
        ("Dependency", false, "slurm.other", "Slurm: Dependency", false),
    ];
    for (reason, het, code, message, never) in cases {
        job.state_reason = reason.into();
        let w = s.words(&job, &Ask::default(), het);
        assert_eq!(
            (w.code.as_str(), w.message.as_str(), w.never_runs),
            (code, message, never),
            "{reason}"
        );
        assert_eq!(w.params["slurmReason"], reason);
        assert_eq!(w.params["partition"], "gpu");
    }
}

#[test]
fn durations_in_their_largest_unit() {
    assert_eq!(minutes(2880), "2 days");
    assert_eq!(minutes(60), "1 hour");
    assert_eq!(minutes(90), "90 minutes");
    assert_eq!(minutes(1), "1 minute");
}
