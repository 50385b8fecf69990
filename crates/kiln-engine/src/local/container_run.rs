//! The container engine's side of a supervisor's life: the image pulled
//! (once, then cached by the engine) with its progress in `image.json` for
//! the server to turn into job events, the client's command with the
//! task's environment in a file only root reads, and the container removed
//! once the task ended.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::container::{
    auth_json, client_env, env_file_text, parse_auth_file, plan_env, qualified, Container, Runtime,
};
use super::files::{write_atomic, TaskDir};
use crate::engine::ImageAuth;

/// What `image.json` says while and after the image is pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageProgress {
    /// The words for the job's event ("pulling …", "pulled …").
    pub message: String,
    /// The pull ended (well or not).
    pub done: bool,
}

/// The progress file of a task run.
pub fn progress_file(dir: &TaskDir) -> PathBuf {
    dir.path().join("image.json")
}

pub(super) enum Pulled {
    /// Here already, or pulled now.
    Ready,
    /// A stop came while pulling.
    Stopped,
}

fn gb(bytes: u64) -> String {
    let g = bytes as f64 / 1e9;
    if g >= 0.1 {
        format!("{g:.1} GB")
    } else {
        format!("{:.0} MB", (bytes as f64 / 1e6).max(1.0))
    }
}

/// "pulling IMAGE (1.2 of 3.4 GB)", from what has been downloaded and the
/// layers' total where the registry said it.
pub fn pulling_words(image: &str, done: u64, total: Option<u64>) -> String {
    match (done, total) {
        (0, None) => format!("pulling {image}"),
        (0, Some(t)) => format!("pulling {image} ({})", gb(t)),
        (d, Some(t)) if t >= d => {
            // "1.2 of 3.4 GB": the unit once, where both have it.
            let (done, total) = (gb(d), gb(t));
            match (done.rsplit_once(' '), total.rsplit_once(' ')) {
                (Some((n, u)), Some((_, tu))) if u == tu => {
                    format!("pulling {image} ({n} of {total})")
                }
                _ => format!("pulling {image} ({done} of {total})"),
            }
        }
        (d, _) => format!("pulling {image} ({} so far)", gb(d)),
    }
}

/// The registry's words from the engine's output: its last `Error:` line
/// (podman), or `Error response from daemon:` (docker), else the last line.
pub fn pull_error(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find_map(|l| {
            l.strip_prefix("Error: ")
                .or_else(|| l.strip_prefix("Error response from daemon: "))
        })
        .or_else(|| lines.last().copied())
        .unwrap_or("the engine said nothing")
        .to_owned()
}

/// The compressed size of the image's layers, where skopeo is installed
/// and the registry answers at once; None otherwise (progress then counts
/// what arrived).
fn layers_total(ct: &Container, auth: Option<&Path>) -> Option<u64> {
    let skopeo = super::sandbox::find_program("skopeo")?;
    let mut cmd = Command::new(skopeo);
    cmd.arg("inspect");
    if let Some(f) = auth {
        cmd.arg("--authfile").arg(f);
    }
    let mut child = cmd
        .arg(format!("docker://{}", ct.image))
        .env_clear()
        .envs(client_env(std::env::vars()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // A size is worth a short wait only: a registry that never answers
    // leaves no skopeo behind.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let sizes = v.get("LayersData")?.as_array()?;
    Some(
        sizes
            .iter()
            .filter_map(|l| l.get("Size").and_then(serde_json::Value::as_u64))
            .sum(),
    )
}

/// Bytes downloaded so far: the engine writes each blob into a temporary
/// file under the pull's TMPDIR and removes it once stored, so the largest
/// size seen of each file, summed, is what arrived.
fn downloaded(tmp: &Path, seen: &mut HashMap<PathBuf, u64>) -> u64 {
    fn walk(dir: &Path, seen: &mut HashMap<PathBuf, u64>, depth: u8) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() && depth < 4 {
                walk(&e.path(), seen, depth + 1);
            } else if meta.is_file() {
                let size = seen.entry(e.path()).or_default();
                *size = (*size).max(meta.len());
            }
        }
    }
    walk(tmp, seen, 0);
    seen.values().sum()
}

/// The pull's credentials file (`registry/config.json` in the task's
/// folder, root's alone, removed after the pull), from the user's stored
/// credential or their authFile, read now beneath their space.
fn auth_file(ct: &Container, dir: &TaskDir) -> Result<Option<PathBuf>, String> {
    let (registry, username, secret) = match &ct.pull.auth {
        None => return Ok(None),
        Some(ImageAuth::Stored {
            registry,
            username,
            secret,
        }) => (registry.clone(), username.clone(), secret.clone()),
        Some(ImageAuth::SpaceFile { space, path }) => {
            let text = read_auth_file(space, path)
                .map_err(|e| format!("cannot read the authFile {}: {e}", path.display()))?;
            parse_auth_file(&text).map_err(|e| format!("authFile {}: {e}", path.display()))?
        }
    };
    let folder = dir.path().join("registry");
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let file = folder.join("config.json");
    write_private(&file, auth_json(&registry, &username, &secret).as_bytes())?;
    Ok(Some(file))
}

/// A pull that gets neither a byte nor a word from the engine for this long
/// is given up (a registry that accepts connections and never answers).
const PULL_STALL: Duration = Duration::from_secs(600);

/// Removes a folder and what is in it when dropped.
struct ForgetDir(PathBuf);

impl Drop for ForgetDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of the task folder only root reads (it holds the task's
/// secrets or a registry credential).
fn write_private(file: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    std::io::Write::write_all(&mut f, bytes)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Removes the pull's credentials file when dropped.
struct Forget(Option<PathBuf>);

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The most of an authFile read: three short lines.
const AUTH_FILE_MAX: u64 = 64 * 1024;

/// An authFile of the user's space, opened beneath it without following a
/// link out, as root: a plain file only (a FIFO would hang the start), and
/// no more than `AUTH_FILE_MAX` of it.
fn read_auth_file(space: &Path, path: &Path) -> Result<String, String> {
    use std::io::Read;
    let fd = super::binds::open_beneath(space, path).map_err(|e| e.to_string())?;
    let magic = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let meta = std::fs::metadata(&magic).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a plain file".into());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&magic)
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(AUTH_FILE_MAX)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Makes sure the image is here, pulling it when it is not; `ct.image`
/// becomes the name it is found by. `stopped`
/// says whether a stop came meanwhile: the pull is then ended.
pub(super) fn ensure_image(
    ct: &mut Container,
    dir: &TaskDir,
    stopped: &mut dyn FnMut() -> bool,
) -> Result<Pulled, String> {
    let here = |ct: &Container| {
        engine(ct)
            .args(ct.exists_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .map_err(|e| format!("cannot run {}: {e}", ct.program.display()))
    };
    // By its full name only: a short one would also match another
    // registry's image here by its tail, or an image id.
    ct.image = qualified(&ct.image);
    if !ct.pull.always && here(ct)? {
        return Ok(Pulled::Ready);
    }
    let ct: &Container = ct;
    let auth = auth_file(ct, dir)?;
    // The credentials live as long as the pull, however it ends.
    let _forget = Forget(auth.clone());
    let progress = progress_file(dir);
    let say = |message: String, done: bool| {
        let _ = write_atomic(&progress, &ImageProgress { message, done });
    };
    say(pulling_words(&ct.image, 0, None), false);
    let started = Instant::now();
    let tmp = dir.path().join("pull");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    // Partial layers (GBs, perhaps) go however the pull ends.
    let _partial = ForgetDir(tmp.clone());
    let mut pull = engine(ct);
    pull.args(ct.pull_args(auth.as_deref()));
    if let (Some(f), Runtime::Docker) = (&auth, ct.runtime) {
        if let Some(d) = f.parent() {
            pull.env("DOCKER_CONFIG", d);
        }
    }
    let mut child = pull
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", ct.program.display()))?;
    let output = Arc::new(Mutex::new(String::new()));
    let reader = child.stderr.take().map(|err| {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut o) = output.lock() {
                    o.push_str(&line);
                    o.push('\n');
                }
            }
        })
    });
    // The total is asked for beside the pull, so a slow answer never
    // delays it.
    let total: Arc<Mutex<Option<u64>>> = Arc::default();
    {
        let (ct, total, auth) = (ct.clone(), Arc::clone(&total), auth.clone());
        std::thread::spawn(move || {
            let t = layers_total(&ct, auth.as_deref());
            if let Ok(mut slot) = total.lock() {
                *slot = t;
            }
        });
    }
    let mut seen = HashMap::new();
    let mut last = String::new();
    let (mut got, mut moved) = (0u64, Instant::now());
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if stopped() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            say(format!("pulling {} stopped", ct.image), true);
            return Ok(Pulled::Stopped);
        }
        let t = total.lock().ok().and_then(|t| *t);
        let now_got = downloaded(&tmp, &mut seen) + output.lock().map_or(0, |o| o.len() as u64);
        if now_got != got {
            (got, moved) = (now_got, Instant::now());
        } else if moved.elapsed() > PULL_STALL {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            let why = format!(
                "cannot pull image {}: nothing came from the registry for {} s",
                ct.image,
                PULL_STALL.as_secs()
            );
            say(why.clone(), true);
            return Err(why);
        }
        let words = pulling_words(&ct.image, downloaded(&tmp, &mut seen), t);
        if words != last {
            say(words.clone(), false);
            last = words;
        }
        // A timer: how often progress is looked at.
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(r) = reader {
        let _ = r.join();
    }

    let text = output.lock().map(|o| o.clone()).unwrap_or_default();
    match status {
        Ok(s) if s.success() => {
            let size = total.lock().ok().and_then(|t| *t);
            let size = size.map(|b| format!(" ({})", gb(b))).unwrap_or_default();
            say(
                format!(
                    "pulled {}{size} in {:.1} s",
                    ct.image,
                    started.elapsed().as_secs_f64()
                ),
                true,
            );
            Ok(Pulled::Ready)
        }
        Ok(_) => {
            let why = format!("cannot pull image {}: {}", ct.image, pull_error(&text));
            say(why.clone(), true);
            Err(why)
        }
        Err(e) => Err(format!("lost the pull of {}: {e}", ct.image)),
    }
}

/// On an engine that binds GPUs to the step (Slurm), the container gets
/// the devices bound here, numbered from 0 inside.
pub(super) fn gpus_of_step(ct: &mut Container, env: &mut [(String, String)]) {
    // The machine's own indices: with ConstrainDevices Slurm numbers
    // CUDA_VISIBLE_DEVICES from 0 within the step.
    let bound = std::env::var("SLURM_STEP_GPUS")
        .or_else(|_| std::env::var("SLURM_JOB_GPUS"))
        .ok()
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_default();
    ct.gpus = bound
        .split(',')
        .filter_map(|g| g.trim().parse::<u32>().ok())
        .filter(|g| Path::new(&format!("/dev/nvidia{g}")).exists())
        .collect();
    if !ct.gpus.is_empty() {
        super::container::renumber_gpus(env, ct.gpus.len());
    }
}

/// A command of the container engine's client, with only the part of the
/// supervisor's environment that configures the engine (see
/// `container::client_env`).
fn engine(ct: &Container) -> Command {
    let mut c = Command::new(&ct.program);
    c.env_clear().envs(client_env(std::env::vars()));
    c
}

/// How long a started container may take to show its init's pid.
const SESSION_WAIT: Duration = Duration::from_secs(120);

/// Adds the container's session to `started.json` once the engine shows
/// its init's pid, so its processes' CPU and memory count as the task's.
pub(super) fn record_session(
    ct: &Container,
    dir: &TaskDir,
    mut started: super::files::Started,
    task_done: Arc<AtomicBool>,
    oom_seen: Arc<AtomicBool>,
) {
    let (ct, dir) = (ct.clone(), dir.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + SESSION_WAIT;
        while Instant::now() < deadline && !task_done.load(Ordering::SeqCst) {
            let pid = engine(&ct)
                .args(ct.pid_args())
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse::<i32>()
                        .ok()
                })
                .filter(|p| *p > 0);
            if let Some(pid) = pid {
                started.container_sid = Some(pid);
                let _ = write_atomic(&dir.started(), &started);
                watch_v1_oom(pid, &task_done, &oom_seen);
                return;
            }
            // A timer: how often the engine is asked while it starts it.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

/// cgroup v1 counts an OOM kill only in the killed process's own group:
/// the container's, below kiln's, gone with the container. While the task
/// runs, that group's counter is looked at, so a kill is seen (one that
/// ends the container can still go unseen: the supervisor then judges by
/// kiln's group, see `TaskGroup::v1_limit_hit`). v2 counts kills in kiln's
/// group too, and needs none of this.
fn watch_v1_oom(pid: i32, task_done: &AtomicBool, oom_seen: &AtomicBool) {
    let Some(group) = v1_memory_group(pid) else {
        return;
    };
    let file = group.join("memory.oom_control");
    while !task_done.load(Ordering::SeqCst) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            return;
        };
        let kills = text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        if kills.is_some_and(|n| n > 0) {
            oom_seen.store(true, Ordering::SeqCst);
            return;
        }
        // A timer: how often the counter is read.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The v1 memory group of a process, as a folder.
fn v1_memory_group(pid: i32) -> Option<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mount = mounts.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(f[1]))
    })?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// The client's command for the task: everything but the task's own
/// command. The task's environment goes into `container.env` (root's
/// alone), the client's own environment stays the supervisor's.
pub(super) fn command(
    ct: &Container,
    env: &[(String, String)],
    dir: &TaskDir,
) -> Result<Command, String> {
    let plan = plan_env(env)?;
    let file = dir.path().join("container.env");
    write_private(&file, env_file_text(&plan.file).as_bytes())?;
    let names: Vec<String> = plan.by_name.iter().map(|(k, _)| k.clone()).collect();
    let mut cmd = engine(ct);
    cmd.args(ct.run_args(&file, &names, &rlimits()));
    cmd.envs(plan.by_name.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// The supervisor's own open-file and process limits, for the task: what
/// a task outside a container gets. The engine's default would raise
/// them past what a host without CAP_SYS_RESOURCE may give, and fail.
fn rlimits() -> Vec<(&'static str, u64, u64)> {
    let get = |r| nix::sys::resource::getrlimit(r).ok();
    let cap = |v: u64| v.min(1 << 20);
    let mut out = Vec::new();
    if let Some((s, h)) = get(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        out.push(("nofile", cap(s), cap(h)));
    }
    if let Some((s, h)) = get(nix::sys::resource::Resource::RLIMIT_NPROC) {
        // conmon, which starts the container, runs with podman's own
        // process limit (32768), above which it cannot raise the task's.
        out.push(("nproc", s.min(32768), h.min(32768)));
    }
    out
}

/// Removes the container once the task ended, and the engine's `conmon`
/// groups inside kiln's, so kiln's can go; returns the engine's word on an
/// OOM kill (asked only where kiln's group cannot tell).
pub(super) fn finish(ct: &Container) -> bool {
    let quiet = |args: Vec<String>| {
        engine(ct)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
    };
    let oom = ct.cgroup_parent.is_none()
        && quiet(ct.oom_args())
            .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true");
    let _ = quiet(ct.cleanup_args());
    if let Some(parent) = &ct.cgroup_parent {
        for dir in engine_groups(parent) {
            remove_child_groups(&dir);
        }
    }
    oom
}

/// Removes the engine's groups below kiln's (`conmon`, a `libpod-*` its
/// cleanup has not removed yet): the kernel frees a group a moment after
/// its last process, and the engine's own cleanup may still run. Looked at
/// again for up to a second.
fn remove_child_groups(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut wait = Duration::from_millis(2);
    loop {
        let left: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .filter(|p| std::fs::remove_dir(p).is_err())
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        // A timer: the kernel's release of the groups has no event to wait on.
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}

/// The container of a run whose supervisor died without an exit record
/// (killed with SIGKILL): removed, so it runs on unwatched no longer.
pub(crate) fn remove_orphan(dir: &TaskDir) {
    if let Ok(Some(ct)) = dir.read_launch().map(|l| l.container) {
        let _ = finish(&ct);
        remove_parents(&ct);
    }
}

/// The engine makes the parent in every cgroup hierarchy it uses, not
/// only in those kiln holds: once kiln removed its own, the rest go.
pub(super) fn remove_parents(ct: &Container) {
    if let Some(parent) = &ct.cgroup_parent {
        for dir in engine_groups(parent) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn engine_groups(parent: &str) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 3 && matches!(f[2], "cgroup" | "cgroup2"))
                .then(|| Path::new(f[1]).join(parent.trim_start_matches('/')))
        })
        .filter(|d| d.is_dir())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_sizes_once_known() {
        assert_eq!(
            pulling_words("pytorch/pytorch:2.4.0", 0, None),
            "pulling pytorch/pytorch:2.4.0"
        );
        assert_eq!(
            pulling_words("pytorch/pytorch:2.4.0", 1_200_000_000, Some(3_400_000_000)),
            "pulling pytorch/pytorch:2.4.0 (1.2 of 3.4 GB)"
        );
        assert_eq!(
            pulling_words("x", 30_000_000, None),
            "pulling x (30 MB so far)"
        );
    }

    #[test]
    fn the_registrys_words_are_kept() {
        let podman = "Trying to pull 127.0.0.1:5077/kiln/nope:1...\nError: initializing source docker://127.0.0.1:5077/kiln/nope:1: reading manifest 1 in 127.0.0.1:5077/kiln/nope: manifest unknown: manifest unknown\n";
        assert!(pull_error(podman).ends_with("manifest unknown: manifest unknown"));
        assert!(!pull_error(podman).starts_with("Error"));
        let docker =
            "Error response from daemon: pull access denied for nope, repository does not exist\n";
        assert_eq!(
            pull_error(docker),
            "pull access denied for nope, repository does not exist"
        );
        assert_eq!(pull_error(""), "the engine said nothing");
    }
}
