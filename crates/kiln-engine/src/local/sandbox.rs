//! The task's view of the file system on the local engine, made with
//! bubblewrap: the host's folders read-only on a fresh root (so its Python,
//! CUDA and libraries work as they do for the user, and mount targets such
//! as /data can be made), kiln's data folder hidden, the user's space
//! read-write at /mnt, extra mounts where the job asks, a private /tmp, a
//! /dev/shm of the job's size, and only the task's own GPU device files.
//! Building the command line is pure; the supervisor runs it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the task.
    pub target: PathBuf,
    pub read_only: bool,
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
    /// In order: later binds go on top of earlier ones.
    pub binds: Vec<Bind>,
    /// Host folder that becomes the task's private /tmp.
    pub tmp: PathBuf,
    pub shm_mb: u64,
    /// Device files passed through (the task's GPUs and their control nodes).
    pub devices: Vec<PathBuf>,
    /// Working folder inside the task.
    pub workdir: PathBuf,
    /// Drop every capability (the server runs as root).
    pub drop_caps: bool,
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl Sandbox {
    /// bwrap's arguments, up to and including `--`.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["--tmpfs".into(), "/".into()];
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
        a.extend([
            "--size".into(),
            self.shm_mb.saturating_mul(1 << 20).to_string(),
            "--tmpfs".into(),
            "/dev/shm".into(),
        ]);
        for d in &self.devices {
            a.extend(["--dev-bind".into(), s(d), s(d)]);
        }
        for b in &self.binds {
            let kind = if b.read_only { "--ro-bind" } else { "--bind" };
            a.extend([kind.into(), s(&b.source), s(&b.target)]);
        }
        if self.drop_caps {
            a.extend(["--cap-drop".into(), "ALL".into()]);
        }
        a.extend([
            "--die-with-parent".into(),
            "--chdir".into(),
            s(&self.workdir),
            "--".into(),
        ]);
        a
    }
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
            binds: vec![
                Bind {
                    source: "/srv/kiln/spaces/alice".into(),
                    target: "/mnt".into(),
                    read_only: false,
                },
                Bind {
                    source: "/srv/kiln/spaces/alice/data".into(),
                    target: "/data".into(),
                    read_only: true,
                },
            ],
            tmp: "/srv/kiln/jobs/1/attempt-0/main-0/tmp".into(),
            shm_mb: 64,
            devices: vec!["/dev/nvidia1".into()],
            workdir: "/mnt/Output/train".into(),
            drop_caps: true,
        };
        let a = sb.args().join(" ");
        assert_eq!(
            a,
            "--tmpfs / --ro-bind /usr /usr --symlink usr/lib /lib \
             --dev /dev --proc /proc --tmpfs /srv/kiln \
             --bind /srv/kiln/jobs/1/attempt-0/main-0/tmp /tmp --size 67108864 --tmpfs /dev/shm \
             --dev-bind /dev/nvidia1 /dev/nvidia1 \
             --bind /srv/kiln/spaces/alice /mnt --ro-bind /srv/kiln/spaces/alice/data /data \
             --cap-drop ALL --die-with-parent --chdir /mnt/Output/train --"
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
