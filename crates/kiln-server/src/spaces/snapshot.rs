//! Copies of a space folder taken when a job is submitted: OpenPAI's
//! codeDir is the code as it was at submission, read-only, whatever the
//! user edits while the job runs or retries.

use std::path::Path;

use cap_std::fs::Dir;

use super::{SpaceError, SpacePath, Spaces};

/// OpenPAI's limit for codeDir: code, not data.
pub const CODE_LIMIT: u64 = 200 * 1024 * 1024;

impl Spaces {
    /// Copies the folder `p` of the user's space to `dest` (a new folder
    /// outside any space), refusing once more than `limit` bytes would be
    /// copied. Symlinks are left out: they could lead anywhere. Returns the
    /// bytes copied.
    pub fn snapshot(
        &self,
        user: &str,
        p: &SpacePath,
        dest: &Path,
        limit: u64,
    ) -> Result<u64, SpaceError> {
        let src = self
            .dir(user)?
            .open_dir(p.rel())
            .map_err(SpaceError::io("open", p))?;
        let mut copied = 0;
        let r = copy_tree(&src, dest, p, limit, &mut copied).and_then(|within| {
            if within {
                Ok(copied)
            } else {
                Err(SpaceError::Invalid(format!(
                    "{} holds more than {}; code folders are limited to that \
                     (keep data in dataDir or a mount)",
                    if p.is_root() {
                        "your space".into()
                    } else {
                        p.display()
                    },
                    if limit >= 1 << 20 {
                        format!("{} MiB", limit >> 20)
                    } else {
                        format!("{limit} bytes")
                    }
                )))
            }
        });
        if r.is_err() {
            let _ = std::fs::remove_dir_all(dest);
        }
        r
    }
}

/// Copies `src` into `dest`; Ok(false) once past `limit` bytes.
fn copy_tree(
    src: &Dir,
    dest: &Path,
    at: &SpacePath,
    limit: u64,
    copied: &mut u64,
) -> Result<bool, SpaceError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| SpaceError::Io {
            action: what,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dest).map_err(io("create", dest))?;
    for entry in src.entries().map_err(SpaceError::io("list", at))? {
        let entry = entry.map_err(SpaceError::io("list", at))?;
        let name = entry.file_name();
        let kind = entry.file_type().map_err(SpaceError::io("read", at))?;
        let to = dest.join(&name);
        let child = SpacePath::parse(&format!("{}/{}", at.display(), name.to_string_lossy()))
            .map_err(SpaceError::Invalid)?;
        if kind.is_dir() {
            let sub = entry.open_dir().map_err(SpaceError::io("open", &child))?;
            if !copy_tree(&sub, &to, &child, limit, copied)? {
                return Ok(false);
            }
        } else if kind.is_file() {
            let mut from = entry.open().map_err(SpaceError::io("open", &child))?;
            let mut out = std::fs::File::create(&to).map_err(io("create", &to))?;
            *copied += std::io::copy(&mut from, &mut out).map_err(io("write", &to))?;
            if *copied > limit {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_copies_files_skips_links_and_keeps_to_the_limit() {
        let root = tempfile::tempdir().expect("tmp");
        let spaces = Spaces::new(root.path().join("spaces"), None);
        let space = spaces.folder("alice").expect("space");
        std::fs::create_dir_all(space.join("code/pkg")).expect("mkdir");
        std::fs::write(space.join("code/train.py"), "print(1)\n").expect("write");
        std::fs::write(space.join("code/pkg/m.py"), "x = 1\n").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", space.join("code/passwd")).expect("link");
        let code = SpacePath::parse("code").expect("path");
        let dest = root.path().join("snap");
        let n = spaces
            .snapshot("alice", &code, &dest, CODE_LIMIT)
            .expect("copied");
        assert_eq!(n, 15);
        assert_eq!(
            std::fs::read_to_string(dest.join("pkg/m.py")).expect("read"),
            "x = 1\n"
        );
        assert!(!dest.join("passwd").exists());

        let small = root.path().join("small");
        let e = spaces
            .snapshot("alice", &code, &small, 10)
            .expect_err("too big");
        assert!(
            e.to_string().contains("code holds more than 10 bytes"),
            "{e}"
        );
        assert!(!small.exists(), "nothing half-copied is left");
    }
}
