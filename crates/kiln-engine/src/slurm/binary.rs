//! The server's own kiln binary, copied to the shared path at start
//! (`<shared>/bin/kiln-<build>`), so the nodes need nothing installed: the
//! batch script and every step run that copy (docs/engines.md 3.6).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::EngineError;

/// The build's name: the version, the binary's size and its modification
/// time, so a rebuilt or upgraded binary gets a copy of its own while running
/// jobs keep theirs.
pub fn build_id(exe: &Path) -> Result<String, EngineError> {
    let meta = std::fs::metadata(exe).map_err(EngineError::io("read", exe))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    Ok(format!(
        "{}-{:x}-{:x}.{:09}",
        env!("CARGO_PKG_VERSION"),
        meta.len(),
        mtime.as_secs(),
        mtime.subsec_nanos()
    ))
}

/// Copies `exe` to `<shared>/bin/kiln-<build>` unless it is there, and
/// returns that path. The copy is written beside it under a name of its own
/// and renamed into place, so a node never runs half a binary; `bin/` and
/// the copy are root's (or the server's), 0755, read and run by everyone.
pub fn place(exe: &Path, shared: &Path) -> Result<PathBuf, EngineError> {
    let bin = shared.join("bin");
    std::fs::create_dir_all(&bin).map_err(EngineError::io("create", &bin))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .map_err(EngineError::io("chmod", &bin))?;
    let target = bin.join(format!("kiln-{}", build_id(exe)?));
    if std::fs::metadata(&target).is_ok_and(|m| m.is_file()) {
        return Ok(target);
    }
    let tmp = bin.join(format!(
        ".kiln-{}.{}.tmp",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let copied = (|| -> std::io::Result<()> {
        let mut from = std::fs::File::open(exe)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.flush()?;
        to.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(EngineError::io("copy the kiln binary to", &target)(e));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_copied_once_whole_and_runnable() {
        let t = tempfile::tempdir().expect("tmp");
        let exe = t.path().join("kiln");
        std::fs::write(&exe, b"#!/bin/sh\necho hi\n").expect("write");
        let shared = t.path().join("shared");
        let placed = place(&exe, &shared).expect("placed");
        assert_eq!(placed.parent(), Some(shared.join("bin").as_path()));
        assert!(placed
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kiln-")));
        assert_eq!(
            std::fs::read(&placed).expect("read"),
            b"#!/bin/sh\necho hi\n"
        );
        let mode = std::fs::metadata(&placed)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // Again: the same path, no temporary left behind.
        assert_eq!(place(&exe, &shared).expect("again"), placed);
        let names: Vec<_> = std::fs::read_dir(shared.join("bin"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
