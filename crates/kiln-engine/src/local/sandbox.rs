//! The task's view of the file system on the local engine, made with
//! bubblewrap: the host's folders read-only on a fresh root (so its Python,
//! CUDA and libraries work as they do for the user, and mount targets such
//! as /data can be made), kiln's data folder hidden, the user's space
//! read-write at /mnt, extra mounts where the job asks, a private /tmp, a
//! /dev/shm of the job's size, and only the task's own GPU device files.
//! Building the command line is pure; the supervisor runs it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the task.
    pub target: PathBuf,
    pub read_only: bool,
    /// When set, `source` is relative to this folder and is resolved
    /// beneath it by the supervisor when the task starts (see
    /// `local::binds`), never followed out of it through a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneath: Option<PathBuf>,
}

/// One entry of the host's `/`, rebuilt read-only on a fresh root so that
/// mount targets anywhere at the top (`/data`) can be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RootEntry {
    Dir(String),
    /// A symlink such as `/lib -> usr/lib`, kept as a symlink.
    Link {
        name: String,
        target: String,
    },
}

/// The host's `/` as bwrap should rebuild it: folders and symlinks, without
/// the ones the sandbox makes itself.
pub fn host_root() -> Vec<RootEntry> {
    let Ok(rd) = std::fs::read_dir("/") else {
        return Vec::new();
    };
    let mut out: Vec<RootEntry> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if matches!(name.as_str(), "proc" | "dev" | "tmp") {
                return None;
            }
            let ft = e.file_type().ok()?;
            if ft.is_symlink() {
                let target = std::fs::read_link(e.path()).ok()?;
                Some(RootEntry::Link {
                    name,
                    target: target.display().to_string(),
                })
            } else if ft.is_dir() {
                Some(RootEntry::Dir(name))
            } else {
                None
            }
        })
        .collect();
    out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// The bwrap binary.
    pub bwrap: PathBuf,
    /// The host's top-level folders and links, bound read-only.
    pub root: Vec<RootEntry>,
    /// Host folders the task must not see (kiln's data folder).
    pub hide: Vec<PathBuf>,
    /// Folders made (0711) inside hidden ones, on the way to binds there:
    /// bwrap makes them 0700, which a task's own uid could not pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<PathBuf>,
    /// In order: later binds go on top of earlier ones.
    pub binds: Vec<Bind>,
    /// Host folder that becomes the task's private /tmp.
    pub tmp: PathBuf,
    pub shm_mb: u64,
    /// Device files passed through (the task's GPUs and their control nodes).
    pub devices: Vec<PathBuf>,
    /// Working folder inside the task.
    pub workdir: PathBuf,
    /// Drop every capability (bwrap runs as root).
    pub drop_caps: bool,
    /// The task's own uid (kiln as root): bwrap builds the sandbox as root,
    /// then setpriv becomes the task's uid and gid for good before the
    /// task's command runs, with no capabilities and no_new_privs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_user: Option<SwitchUser>,
}

/// Who the task becomes inside the sandbox, and the program that does it.
///
/// bwrap cannot drop to another uid without a user namespace, and in one
/// the task's files would be root's outside; bwrap run as the task's uid
/// could not reach a data folder under /root. So bwrap stays root for the
/// setup, keeping only the capabilities setpriv (util-linux) needs to
/// change uid, and setpriv drops those with the uid change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchUser {
    pub uid: u32,
    pub gid: u32,
    pub setpriv: PathBuf,
}

impl SwitchUser {
    /// Becoming `run_as` with `setpriv`; None when either is missing (the
    /// supervisor then refuses a task that has a uid as root).
    pub fn of(run_as: Option<super::files::RunAs>, setpriv: Option<&Path>) -> Option<Self> {
        let (id, setpriv) = (run_as?, setpriv?);
        Some(SwitchUser {
            uid: id.uid,
            gid: id.gid,
            setpriv: setpriv.to_owned(),
        })
    }
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl Sandbox {
    /// bwrap's arguments, up to and including `--`.
    pub fn args(&self) -> Vec<String> {
        // Its own PID, IPC and UTS namespaces: a task sees and signals only
        // its own processes. The network stays shared, for DDP across tasks.
        let mut a: Vec<String> = Vec::new();
        a.extend([
            "--unshare-pid".into(),
            "--unshare-ipc".into(),
            "--unshare-uts".into(),
            "--tmpfs".into(),
            "/".into(),
        ]);
        for e in &self.root {
            match e {
                RootEntry::Dir(name) => {
                    let p = format!("/{name}");
                    a.extend(["--ro-bind".into(), p.clone(), p]);
                }
                RootEntry::Link { name, target } => {
                    a.extend(["--symlink".into(), target.clone(), format!("/{name}")]);
                }
            }
        }
        a.extend([
            "--dev".into(),
            "/dev".into(),
            "--proc".into(),
            "/proc".into(),
        ]);
        for h in &self.hide {
            a.extend(["--tmpfs".into(), s(h)]);
        }
        a.extend(["--bind".into(), s(&self.tmp), "/tmp".into()]);
        // Anyone's, as on a host: the task's uid makes its semaphores and
        // DataLoader buffers there.
        a.extend([
            "--perms".into(),
            "1777".into(),
            "--size".into(),
            self.shm_mb.saturating_mul(1 << 20).to_string(),
            "--tmpfs".into(),
            "/dev/shm".into(),
        ]);
        for d in &self.devices {
            a.extend(["--dev-bind".into(), s(d), s(d)]);
        }
        // After /tmp, which may hold the data folder (and so these).
        for d in &self.dirs {
            a.extend(["--perms".into(), "0711".into(), "--dir".into(), s(d)]);
        }
        for b in &self.binds {
            let kind = if b.read_only { "--ro-bind" } else { "--bind" };
            a.extend([kind.into(), s(&b.source), s(&b.target)]);
        }
        if self.drop_caps || self.switch_user.is_some() {
            a.extend(["--cap-drop".into(), "ALL".into()]);
        }
        if self.switch_user.is_some() {
            // bwrap enters the working folder (the user's, mode 0700) after
            // dropping to these; setpriv's change of uid clears them all.
            for cap in [
                "CAP_SETUID",
                "CAP_SETGID",
                "CAP_SETPCAP",
                "CAP_DAC_READ_SEARCH",
            ] {
                a.extend(["--cap-add".into(), cap.into()]);
            }
        }
        a.extend([
            "--die-with-parent".into(),
            "--chdir".into(),
            s(&self.workdir),
            "--".into(),
        ]);
        if let Some(u) = &self.switch_user {
            a.extend([
                s(&u.setpriv),
                format!("--reuid={}", u.uid),
                format!("--regid={}", u.gid),
                "--clear-groups".into(),
                "--inh-caps=-all".into(),
                "--bounding-set=-all".into(),
                "--no-new-privs".into(),
                "--".into(),
            ]);
        }
        a
    }
}

/// Where `setpriv` (util-linux) is, to drop to a task's uid in the sandbox.
pub fn find_setpriv() -> Option<PathBuf> {
    find_program("setpriv")
}

/// Whether this process runs as root (then bwrap must drop capabilities).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where `bwrap` is, if it is installed.
pub fn find_bwrap() -> Option<PathBuf> {
    find_program("bwrap")
}

/// A program on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_space_is_mounted_over_a_read_only_host_with_the_data_folder_hidden() {
        let sb = Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            root: vec![
                RootEntry::Dir("usr".into()),
                RootEntry::Link {
                    name: "lib".into(),
                    target: "usr/lib".into(),
                },
            ],
            hide: vec!["/srv/kiln".into()],
            dirs: Vec::new(),
            binds: vec![
                Bind {
                    source: "/srv/kiln/spaces/alice".into(),
                    target: "/mnt".into(),
                    read_only: false,
                    beneath: None,
                },
                Bind {
                    source: "/srv/kiln/spaces/alice/data".into(),
                    target: "/data".into(),
                    read_only: true,
                    beneath: None,
                },
            ],
            tmp: "/srv/kiln/jobs/1/attempt-0/main-0/tmp".into(),
            shm_mb: 64,
            devices: vec!["/dev/nvidia1".into()],
            workdir: "/mnt/Output/train".into(),
            drop_caps: true,
            switch_user: None,
        };
        let a = sb.args().join(" ");
        assert_eq!(
            a,
            "--unshare-pid --unshare-ipc --unshare-uts --tmpfs / --ro-bind /usr /usr --symlink usr/lib /lib \
             --dev /dev --proc /proc --tmpfs /srv/kiln \
             --bind /srv/kiln/jobs/1/attempt-0/main-0/tmp /tmp --perms 1777 --size 67108864 --tmpfs /dev/shm \
             --dev-bind /dev/nvidia1 /dev/nvidia1 \
             --bind /srv/kiln/spaces/alice /mnt --ro-bind /srv/kiln/spaces/alice/data /data \
             --cap-drop ALL --die-with-parent --chdir /mnt/Output/train --"
        );
        // As root for another user: setpriv becomes them before the command.
        let mut as_alice = sb.clone();
        as_alice.switch_user = Some(SwitchUser {
            uid: 1_500_000_001,
            gid: 1_500_000_001,
            setpriv: "/usr/bin/setpriv".into(),
        });
        let a = as_alice.args().join(" ");
        assert!(
            a.ends_with(
                "--cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_SETPCAP \
                 --cap-add CAP_DAC_READ_SEARCH --die-with-parent --chdir /mnt/Output/train -- /usr/bin/setpriv \
                 --reuid=1500000001 --regid=1500000001 --clear-groups --inh-caps=-all \
                 --bounding-set=-all --no-new-privs --"
            ),
            "{a}"
        );
        // The hidden data folder is masked before the binds that come from it.
        let args = sb.args();
        let hide = args.iter().position(|x| x == "/srv/kiln").expect("hidden");
        let space = args
            .iter()
            .position(|x| x == "/srv/kiln/spaces/alice")
            .expect("bound");
        assert!(hide < space);
    }
}
