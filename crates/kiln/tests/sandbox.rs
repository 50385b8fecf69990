//! Tasks under bubblewrap: the user's space at /mnt, the host read-only,
//! kiln's data folder hidden, a private /tmp, /dev/shm of the job's size,
//! mounts where the job asks, and SIGTERM still reaching the task first.
//! scripts/test installs bubblewrap and sets KILN_REQUIRE_BWRAP, so these
//! never skip there.

mod common;

use common::{task, Server};

fn sandboxed() -> Option<Server> {
    if kiln_engine::local::sandbox::find_bwrap().is_none() {
        assert!(
            std::env::var_os("KILN_REQUIRE_BWRAP").is_none(),
            "KILN_REQUIRE_BWRAP is set but bwrap is not installed"
        );
        eprintln!("SKIPPED: bubblewrap is not installed");
        return None;
    }
    Some(Server::start_with(&[
        "--cpus",
        "8",
        "--memory",
        "16Gi",
        "--stop-grace",
        "5",
    ]))
}

#[test]
fn a_task_sees_its_space_at_mnt_and_little_else() {
    let Some(s) = sandboxed() else { return };
    let data = s.data.path().display().to_string();
    let id = s.submit(
        "view",
        &format!(
            "name: view\nshm: 128Mi\ncommand: |\n  echo \"pwd=$(pwd)\"\n  echo \"out=$KILN_OUTPUT_DIR\"\n  echo \"tmp=$TMPDIR\"\n  echo hello > /mnt/hello.txt\n  echo scratch > /tmp/scratch && echo tmp-ok\n  touch /etc/kiln-test 2>/dev/null || echo etc-read-only\n  ls {data} >/dev/null 2>&1 || echo data-hidden\n  df -m /dev/shm | tail -1 | awk '{{print \"shm=\" $2}}'\n"
        ),
    );
    s.wait_state(&id, "SUCCEEDED", 30);
    let log = s.logs(&id, "main-0");
    for want in [
        "pwd=/mnt/Output/view",
        "out=/mnt/Output/view",
        "tmp=/tmp",
        "tmp-ok",
        "etc-read-only",
        "data-hidden",
        "shm=128",
    ] {
        assert!(
            log.lines().any(|l| l == want),
            "{want} missing from:\n{log}"
        );
    }
    // What it wrote in /mnt is in the space.
    let (status, text) = s.api("GET", "/files/hello.txt", None);
    assert_eq!((status, text.as_str()), (200, Some("hello\n")));
    assert!(s.ok(&["files", "ls", "Output"]).contains("view/"));
}

#[test]
fn mounts_bind_space_folders_where_the_job_says() {
    let Some(s) = sandboxed() else { return };
    s.ok(&["files", "mkdir", "datasets/toy"]);
    let (status, _) = s.api("PUT", "/files/datasets/toy/a.txt", Some("42"));
    assert_eq!(status, 201);
    let id = s.submit(
        "mounted",
        "name: mounted\nmounts:\n  - {space: datasets/toy, target: /data, readOnly: true}\ncommand: |\n  cat /data/a.txt; echo\n  touch /data/b 2>/dev/null || echo read-only\n",
    );
    s.wait_state(&id, "SUCCEEDED", 30);
    assert_eq!(s.logs(&id, "main-0"), "42\nread-only\n");
    // A folder that is not there is named at submission.
    let (status, p) = s.api(
        "POST",
        "/jobs",
        Some("name: nothere\nmounts:\n  - {space: nope, target: /data}\ncommand: 'true'\n"),
    );
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["errors"][0]["path"], "mounts[0].space");
}

#[test]
fn a_stopped_task_gets_sigterm_and_its_grace_period_in_the_sandbox() {
    let Some(s) = sandboxed() else { return };
    let id = s.submit(
        "graceful",
        "name: graceful\ncommand: |\n  trap 'echo got TERM; sleep 0.5; echo cleaned up; exit 0' TERM\n  echo ready\n  while true; do sleep 0.05; done\n",
    );
    s.wait_job(&id, 30, "ready", |j| {
        j["state"] == "RUNNING" && s.logs(&id, "main-0").contains("ready")
    });
    s.ok(&["stop", &id]);
    let j = s.wait_state(&id, "STOPPED", 30);
    assert_eq!(task(&j, "main-0")["state"], "STOPPED");
    let log = s.logs(&id, "main-0");
    assert!(
        log.contains("got TERM") && log.contains("cleaned up"),
        "{log}"
    );
}

#[test]
fn datasets_are_shared_read_only_and_managed_by_the_admin() {
    let Some(s) = sandboxed() else { return };
    // The admin turns a folder of their space into a dataset.
    s.ok(&["files", "mkdir", "toy"]);
    assert_eq!(
        s.api("PUT", "/files/toy/labels.txt", Some("cat,dog")).0,
        201
    );
    let out = s.ok(&["dataset", "add", "toy", "toy"]);
    assert!(out.contains("dataset:toy"), "{out}");
    assert!(s.ok(&["dataset", "ls"]).contains("toy"));
    assert!(
        !s.ok(&["files", "ls"]).contains("toy/"),
        "moved out of the space"
    );

    // A user mounts it by name: at /mnt/toy, read-only.
    let alice = {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&["user", "add", "alice", "-o", "json"])).expect("json");
        v["token"].as_str().expect("token").to_owned()
    };
    let spec = s.write_spec(
        "uses",
        "name: uses\nmounts: [dataset:toy]\ncommand: |\n  cat /mnt/toy/labels.txt; echo\n  touch /mnt/toy/x 2>/dev/null || echo read-only\n",
    );
    let out = s.cli_as(&alice, &["submit", spec.to_str().expect("utf8"), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, log) = s.api("GET", "/jobs/alice~uses/tasks/main-0/logs", None);
    assert_eq!(log.as_str(), Some("cat,dog\nread-only\n"));

    // Unknown datasets are named at submission; only the admin manages them.
    let (status, p) = s.api_as(
        &alice,
        "POST",
        "/jobs",
        Some("name: nope\nmounts: [dataset:nope]\ncommand: 'true'\n"),
    );
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["errors"][0]["path"], "mounts[0].dataset");
    assert_eq!(
        s.api_as(
            &alice,
            "POST",
            "/datasets",
            Some(r#"{"name": "x", "fromSpace": "a"}"#)
        )
        .0,
        404
    );
    assert_eq!(s.api_as(&alice, "DELETE", "/datasets/toy", None).0, 404);
    s.ok(&["dataset", "rm", "toy"]);
    assert!(!s.ok(&["dataset", "ls"]).contains("toy"));
}

/// OpenPAI v1's codeDir, dataDir and outputDir, written the OpenPAI way,
/// become folders of the space: the code as it was at submission and
/// read-only, the data in place, the outputs where the job says.
#[test]
fn openpai_code_data_and_output_folders_map_onto_the_space() {
    let Some(s) = sandboxed() else { return };
    for (path, body) in [
        (
            "/files/proj/code/run.sh",
            "echo original; cat $PAI_DATA_DIR/in.txt > $PAI_OUTPUT_DIR/out.txt\n",
        ),
        ("/files/proj/data/in.txt", "input-data"),
    ] {
        assert_eq!(s.api("PUT", path, Some(body)).0, 201);
    }
    let spec = |code: &str| {
        format!(
            r#"{{"jobName": "pai", "image": "ubuntu",
                "codeDir": "{code}", "dataDir": "$PAI_DEFAULT_FS_URI/proj/data",
                "outputDir": "$PAI_DEFAULT_FS_URI/results/$jobName",
                "taskRoles": [{{"name": "main", "taskNumber": 1, "cpuNumber": 1,
                  "memoryMB": 256, "gpuNumber": 0,
                  "command": "while [ ! -e /mnt/go ]; do sleep 0.05; done; echo code=$PAI_CODE_DIR; sh $PAI_CODE_DIR/run.sh; touch $PAI_CODE_DIR/x 2>/dev/null || echo code-read-only"}}]}}"#
        )
    };
    // A folder that is not there is named at submission.
    let p = s.write_spec("missing", &spec("$PAI_DEFAULT_FS_URI/proj/nocode"));
    let out = s.cli(&["submit", p.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("codeDir") && err.contains("no folder proj/nocode"),
        "{err}"
    );

    let id = s.submit("pai", &spec("hdfs://namenode:9000/proj/code"));
    // Edits after submission do not reach the job: it runs the copy.
    assert_eq!(
        s.api("PUT", "/files/proj/code/run.sh", Some("echo edited\n"))
            .0,
        201
    );
    assert_eq!(s.api("PUT", "/files/go", Some("")).0, 201);
    s.wait_state(&id, "SUCCEEDED", 30);
    let log = s.logs(&id, "main-0");
    for want in ["code=/mnt/proj/code", "original", "code-read-only"] {
        assert!(
            log.lines().any(|l| l == want),
            "{want} missing from:\n{log}"
        );
    }
    assert!(!log.contains("edited"), "{log}");
    let (status, text) = s.api("GET", "/files/results/pai/out.txt", None);
    assert_eq!((status, text.as_str()), (200, Some("input-data")));
}

/// `--containers docker` on a machine without a Docker engine (podman is
/// tested for real in tests/containers.rs); as root it is refused. Not as
/// root, a stand-in `docker` on PATH
/// answers `info` as a daemon would, records what kiln asks of it and runs
/// the command with bash, so docker's path (server → supervisor → client →
/// cleanup) runs; only the engine is missing.
#[test]
fn jobs_with_an_image_go_to_the_container_runtime() {
    if kiln_engine::local::sandbox::running_as_root() {
        // As root kiln refuses docker (its daemon binds folders by path,
        // unpinned): the server says so and does not start.
        let out = std::process::Command::new(common::kiln_exe())
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--containers",
                "docker",
                "--data",
            ])
            .arg(tempfile::tempdir().expect("tmp").path())
            .output()
            .expect("server ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("podman only"), "{err}");
        return;
    }
    if !common::have_program("bwrap", "KILN_REQUIRE_BWRAP") {
        return;
    }
    let bin = tempfile::tempdir().expect("tmp");
    let calls = bin.path().join("calls");
    let docker = bin.path().join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/bash\nprintf '%s\\n' \"$*\" >> {calls}\ncase \"$1\" in\n  info) echo '{{\"ServerVersion\": \"28.2.2\", \"DefaultRuntime\": \"runc\", \"CgroupDriver\": \"systemd\"}}' ;;\n  run) prev=; for a; do [ \"$prev\" = --env-file ] && env_file=$a; prev=$a; last=$a; done; while IFS= read -r l; do export \"$l\"; done < \"$env_file\"; exec bash -c \"$last\" ;;\nesac\n",
            calls = calls.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let s = Server::start_env(
        &[
            "--cpus",
            "8",
            "--memory",
            "16Gi",
            "--fake-gpus",
            "2",
            "--containers",
            "docker",
        ],
        &[("PATH", &path)],
    );
    assert!(s
        .ok(&["nodes"])
        .contains("containers: docker 28.2.2 (runc)"));
    let id = s.submit(
        "img",
        "name: img\nimage: pytorch/pytorch:2.4.0\nshm: 256Mi\ngpus: 1\nsecrets: {TOKEN: s3cret}\ncommand: echo in-container rank=$RANK token=$KILN_SECRET_TOKEN\n",
    );
    s.wait_state(&id, "SUCCEEDED", 30);
    let log = s.logs(&id, "main-0");
    assert!(log.contains("in-container rank=0 token=s3cret"), "{log}");
    let text = std::fs::read_to_string(&calls).expect("docker was called");
    assert!(
        text.lines()
            .any(|l| l == "image inspect --format {{.Id}} -- pytorch/pytorch:2.4.0"),
        "{text}"
    );
    let run = text.lines().find(|l| l.starts_with("run ")).expect("run");
    for want in [
        "--network host",
        "--shm-size 256m",
        "--pull never",
        "--cap-drop all",
        "--env-file ",
        ":/mnt ",
        "--workdir /mnt/Output/img",
        "pytorch/pytorch:2.4.0 /bin/sh -c ",
    ] {
        assert!(run.contains(want), "{want} missing from: {run}");
    }
    // Fake GPUs have no devices to hand in.
    assert!(!run.contains("--gpus"), "{run}");
    assert!(
        !run.contains("s3cret"),
        "secret values stay off the command line"
    );
    let name = run
        .split("--name ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("a container name");
    assert!(
        text.lines().any(|l| l == format!("rm --force {name}")),
        "the container is removed after the task: {text}"
    );
    // Jobs without an image still run in the sandbox.
    let plain = s.submit("plain", "name: plain\ncommand: echo sandboxed\n");
    s.wait_state(&plain, "SUCCEEDED", 30);
    let runs = std::fs::read_to_string(&calls).expect("calls");
    assert_eq!(runs.lines().filter(|l| l.starts_with("run ")).count(), 1);
}
