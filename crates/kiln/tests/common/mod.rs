//! A real `kiln server` on a free port with a temporary data folder, and the
//! real CLI against it. Dropping the server kills it and every supervisor
//! and task it started, so no test leaves processes behind.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn kiln_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

/// What `Server::start` passes: see there.
pub const DEFAULT_ARGS: &[&str] = &[
    "--fake-gpus",
    "4",
    "--cpus",
    "16",
    "--memory",
    "64Gi",
    "--stop-grace",
    "1",
    "--no-sandbox",
    "--restart-backoff",
    "100ms",
];

pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub data: tempfile::TempDir,
    pub args: Vec<String>,
    /// Extra environment for the server (and so for its tasks).
    pub envs: Vec<(String, String)>,
    /// Start the server from the data folder's parent with a relative
    /// `--data`, as a person typing `--data d` would.
    pub relative: bool,
    /// The admin's token.
    pub token: String,
}

impl Server {
    /// 16 CPUs and 64 GiB declared so tests are not limited by this
    /// machine's 2 cores; 4 fake GPUs. Unsandboxed, so tasks can reach the
    /// marker files tests keep in the host's /tmp (tests/sandbox.rs covers
    /// the sandbox). Restarts in place first wait 100 ms, not 10 s.
    pub fn start() -> Server {
        Self::start_env(DEFAULT_ARGS, &[])
    }

    pub fn start_with(args: &[&str]) -> Server {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::launch(args, envs, false)
    }

    pub fn start_relative(args: &[&str]) -> Server {
        Self::launch(args, &[], true)
    }

    /// A server on a data folder the test made (and may have put things in).
    pub fn start_in(data: tempfile::TempDir, args: &[&str]) -> Server {
        Self::start_in_env(data, args, &[])
    }

    /// The same, with extra environment for the server (and its tasks).
    pub fn start_in_env(data: tempfile::TempDir, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut s = Server {
            child: None,
            url: String::new(),
            data,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            relative: false,
            token: String::new(),
        };
        s.boot();
        s
    }

    fn launch(args: &[&str], envs: &[(&str, &str)], relative: bool) -> Server {
        let mut s = Server {
            child: None,
            url: String::new(),
            data: tempfile::tempdir().expect("tmp"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            relative,
            token: String::new(),
        };
        s.boot();
        s
    }

    /// Starts the server process (again) on the same data folder.
    pub fn boot(&mut self) {
        let mut cmd = Command::new(kiln_exe());
        if self.relative {
            let path = self.data.path();
            cmd.current_dir(path.parent().expect("parent"));
            cmd.args(["server", "--data"]);
            cmd.arg(path.file_name().expect("name"));
        } else {
            cmd.arg("server").arg("--data").arg(self.data.path());
        }
        // Jobs of the seeds name images no registry here has: they run on
        // the host's software unless a test asks for a container engine.
        if !self.args.iter().any(|a| a == "--containers") {
            cmd.args(["--containers", "none"]);
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server started");
        self.url = listening_url(&mut child);
        self.child = Some(child);
        self.token = std::fs::read_to_string(self.data.path().join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned();
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(kiln_exe())
            .args(args)
            .env("KILN_URL", &self.url)
            .env("KILN_DATA", self.data.path())
            .env_remove("KILN_TOKEN")
            .output()
            .expect("cli ran")
    }

    /// The CLI with another user's token.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(kiln_exe())
            .args(args)
            .env("KILN_URL", &self.url)
            .env("KILN_DATA", self.data.path())
            .env("KILN_TOKEN", token)
            .output()
            .expect("cli ran")
    }

    /// Submits a spec with another user's token; returns the job's id.
    pub fn submit_as(&self, token: &str, name: &str, text: &str) -> String {
        let spec = self.write_spec(name, text);
        let out = self.cli_as(token, &["submit", spec.to_str().expect("utf8")]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits for the job to end, however it ends.
    pub fn ended(&self, id: &str, secs: u64) -> Value {
        self.wait_job(id, secs, "the job to end", |j| {
            matches!(
                j["state"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "STOPPED")
            )
        })
    }

    /// Runs the CLI, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write_spec(&self, name: &str, text: &str) -> PathBuf {
        let p = self.data.path().join(format!("{name}.spec"));
        std::fs::write(&p, text).expect("spec written");
        p
    }

    /// Submits a spec text; returns the job id.
    pub fn submit(&self, name: &str, text: &str) -> String {
        let p = self.write_spec(name, text);
        self.ok(&["submit", p.to_str().expect("utf8")])
            .trim()
            .to_owned()
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let token = self.token.clone();
        self.api_as(&token, method, path, body)
    }

    /// An API call with `token` (empty: no Authorization header at all).
    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}/api/v1{path}", self.url);
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Bearer {token}")
        };
        let resp = match method {
            "GET" => agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            "POST" => agent
                .post(&url)
                .header("Authorization", &auth)
                .send(body.unwrap_or_default()),
            "PUT" => agent
                .put(&url)
                .header("Authorization", &auth)
                .send(body.unwrap_or_default()),
            "PATCH" => agent
                .patch(&url)
                .header("Authorization", &auth)
                .send(body.unwrap_or_default()),
            m => panic!("method {m}"),
        };
        let mut resp = resp.expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn job(&self, id: &str) -> Value {
        let (status, v) = self.api("GET", &format!("/jobs/{id}"), None);
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Polls the job until `pred` holds, or fails the test after `secs`.
    pub fn wait_job(
        &self,
        id: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = self.job(id);
            if pred(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {id} to be {what}: {j:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_state(&self, id: &str, state: &str, secs: u64) -> Value {
        self.wait_job(id, secs, state, |j| j["state"] == state)
    }

    pub fn logs(&self, id: &str, task: &str) -> String {
        self.ok(&["logs", id, "--task", task])
    }

    pub fn kill_everything(&self) {
        kill_processes_mentioning(self.data.path());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        self.kill_everything();
    }
}

/// SIGKILLs every process whose command line mentions `path` (supervisors
/// carry their task folder there), then their tasks via the process groups.
pub fn kill_processes_mentioning(path: &Path) {
    let want = path.as_os_str().as_encoded_bytes();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmd.windows(want.len()).any(|w| w == want) {
            // The supervisor's SIGTERM path kills its task group too.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// `KEY=VALUE` lines of `env` output.
pub fn env_of(log: &str) -> std::collections::BTreeMap<String, String> {
    log.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn task<'a>(job: &'a Value, id: &str) -> &'a Value {
    job["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("no task {id} in {job:#}"))
}

pub fn events(job: &Value) -> Vec<(String, String)> {
    job["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or_default().to_owned(),
                        e["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `root`, by relative path, with its bytes, sorted.
pub fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("under").display().to_string();
                out.push((rel, std::fs::read(&p).expect("file")));
            }
        }
    }
    out.sort();
    out
}

/// Whether an outside program is on PATH. When `require` names a set
/// environment variable (scripts/test sets them after installing the
/// program), a missing program fails the test instead of skipping it.
pub fn have_program(name: &str, require: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()));
    if !found {
        assert!(
            std::env::var_os(require).is_none(),
            "{require} is set but {name} is not installed"
        );
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

/// The bin folder of the venv with torch, tensorboardX and tensorboard that
/// scripts/test prepares (KILN_TEST_PYTHON), or None, after saying so, when
/// there is none; with KILN_REQUIRE_TORCH set, none is a failure.
pub fn torch_bin() -> Option<PathBuf> {
    match std::env::var_os("KILN_TEST_PYTHON") {
        Some(py) => Some(PathBuf::from(py).parent().expect("bin folder").to_owned()),
        None => {
            assert!(
                std::env::var_os("KILN_REQUIRE_TORCH").is_none(),
                "KILN_REQUIRE_TORCH is set but KILN_TEST_PYTHON is not"
            );
            eprintln!("SKIPPED: set KILN_TEST_PYTHON to a python with torch (scripts/test does)");
            None
        }
    }
}

/// Polls `f` until it gives a value, failing with `what` and its last
/// word after `secs`.
pub fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The URL a starting server says it listens on (its first line).
pub fn listening_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    line.trim()
        .strip_prefix("kiln listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned()
}

/// A temporary folder every uid may use. Run as root, kiln runs each user's
/// tasks as that user's own uid, not as the test's; tests that hand tasks
/// marker files or scripts in the host's /tmp keep them here.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    open_tree(dir.path());
    dir
}

/// Opens a tree the test made to every uid (folders 0777, files 0666, both
/// keeping execute bits), so tasks can read and write in it.
pub fn open_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = if meta.is_dir() {
        0o777
    } else {
        0o666 | (meta.permissions().mode() & 0o111)
    };
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode));
    if meta.is_dir() {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            open_tree(&e.path());
        }
    }
}
