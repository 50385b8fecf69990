//! A task's image, made sure of before its container starts: looked up by
//! its full name, pulled when missing (or afresh, when private) with the
//! user's credentials, its progress in `image.json` for the server to turn
//! into job events, and the registry's own words when it refuses.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::container::{auth_json, client_env, parse_auth_file, qualified, Container, Runtime};
use super::container_run::{engine, write_private};
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
