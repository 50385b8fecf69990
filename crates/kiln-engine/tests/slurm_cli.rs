//! The Slurm engine's shell against a real cluster (`scripts/slurm-cluster
//! up DIR`, which `scripts/test` starts and points `SLURM_CONF` at): the
//! argument lists the pure core writes are accepted by Slurm 22.05, a gang
//! that cannot fit on one node spans both, and what kiln reads back agrees.
//! Without `SLURM_CONF` the tests are skipped, unless `KILN_REQUIRE_SLURM=1`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_engine::local::RunAs;
use kiln_engine::slurm::{
    group_by_shape, job_view, sbatch_args, Cli, JobView, SlurmApi, SubmitRequest, TaskRequest,
};

fn cluster() -> Option<Cli> {
    match std::env::var_os("SLURM_CONF") {
        Some(conf) => Some(Cli::new(
            Some(&PathBuf::from(conf)),
            Duration::from_secs(30),
        )),
        None => {
            assert!(
                std::env::var_os("KILN_REQUIRE_SLURM").is_none(),
                "KILN_REQUIRE_SLURM is set but SLURM_CONF is not"
            );
            eprintln!("SKIPPED: no Slurm cluster (scripts/slurm-cluster up DIR sets SLURM_CONF)");
            None
        }
    }
}

fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn task(id: &str, cpus: u32, gpus: u32) -> TaskRequest {
    TaskRequest {
        task: id.to_owned(),
        cpus,
        memory_mb: 512,
        gpus,
        gpu_type: None,
    }
}

#[test]
fn a_gang_too_big_for_one_node_spans_two_and_can_be_cancelled() {
    let Some(slurm) = cluster() else { return };
    let nodes = slurm.nodes().expect("sinfo");
    assert!(nodes.len() >= 2, "{nodes:?}");
    let per_node = nodes.iter().map(|n| n.cpus).min().expect("a node") as u32;
    let types: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.gpu_types().map(str::to_owned))
        .collect();

    // Two tasks, each taking a whole node's CPUs and a GPU.
    let tasks = [task("master-0", per_node, 1), task("worker-0", per_node, 1)];
    let groups = group_by_shape(&tasks, false);
    let tmp = tempfile::tempdir().expect("tmp");
    let output = tmp.path().join("launcher.log");
    let instance = format!("t{}", std::process::id());
    let launcher = ["sleep".to_owned(), "300".to_owned()];
    let req = SubmitRequest {
        instance: &instance,
        key: "admin~span",
        attempt: 0,
        partition: "debug",
        partition_nodes: nodes.len(),
        output: &output,
        launcher: &launcher,
        max_duration: Some(Duration::from_secs(600)),
        grace: Duration::from_secs(10),
        priority: 0,
        extra_args: &[],
        gpu_types: &types,
    };
    let args = sbatch_args(&req, &groups).expect("args");
    let id = slurm.submit(&args, None).expect("sbatch");

    let job = until(30, "the job to run", || {
        let jobs = slurm.jobs().map_err(|e| e.to_string())?;
        let j = jobs.into_iter().find(|j| j.id == id).ok_or("not listed")?;
        match job_view(&j.name, &j.state).map_err(|e| e.to_string())? {
            JobView::Running => Ok(j),
            other => Err(format!("{other:?} ({})", j.state_reason)),
        }
    });
    assert!(
        job.name.starts_with(&format!("kiln-{instance}-")),
        "{job:?}"
    );
    let mut on = job.nodes.clone();
    on.sort();
    assert_eq!(on.len(), 2, "the gang spans two nodes: {job:?}");
    assert_eq!(
        job.gpus.iter().map(|g| g.count).sum::<u64>(),
        2,
        "a GPU on each: {job:?}"
    );

    slurm.set_time_limit(id, 30).expect("scontrol update");
    let limit = until(10, "the new time limit", || {
        let jobs = slurm.jobs().map_err(|e| e.to_string())?;
        let j = jobs.into_iter().find(|j| j.id == id).ok_or("gone")?;
        match j.time_limit_min {
            Some(30) => Ok(30),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(limit, 30);

    slurm.cancel(id, None).expect("scancel");
    until(30, "the job to end cancelled", || {
        let jobs = slurm.jobs().map_err(|e| e.to_string())?;
        match jobs.into_iter().find(|j| j.id == id) {
            None => Ok(()),
            Some(j) => match job_view(&j.name, &j.state).map_err(|e| e.to_string())? {
                JobView::Ended(_) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        }
    });
}

/// A job submitted as a user's uid is that user's in Slurm.
#[test]
fn a_job_submitted_as_a_user_is_theirs() {
    let Some(slurm) = cluster() else { return };
    if !nix_is_root() {
        eprintln!("SKIPPED: submitting as another uid needs root");
        return;
    }
    // nobody: an account every node knows.
    let nobody = RunAs {
        uid: 65534,
        gid: 65534,
    };
    let args = vec![
        "--job-name=kiln-user-test".to_owned(),
        "--output=/dev/null".to_owned(),
        "--mem=64".to_owned(),
        "--wrap=sleep 60".to_owned(),
    ];
    let id = slurm.submit(&args, Some(nobody)).expect("sbatch as nobody");
    let job = until(10, "the job to be listed", || {
        let jobs = slurm.jobs().map_err(|e| e.to_string())?;
        jobs.into_iter()
            .find(|j| j.id == id)
            .ok_or("not listed".into())
    });
    assert_eq!(job.user, "nobody", "{job:?}");
    slurm.cancel(id, None).expect("scancel");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
