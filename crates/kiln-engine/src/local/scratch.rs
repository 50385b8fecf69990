//! A task run's folders after it ends: its scratch space emptied, and of a
//! task restarting in place only the first and the last few runs' folders
//! kept. Disk work that may take long runs on threads of its own, never on
//! the control loop.

use std::path::{Path, PathBuf};

use kiln_spec::TaskId;
use tracing::warn;

/// Restart folders kept after a task's first: the last runs' logs are the
/// ones that explain a crash loop, and the first shows how it began.
pub const KEEP_LAST_FOLDERS: usize = 3;

/// Of a task's folders, by generation, those to remove: all but the first
/// and the last `keep_last`, so a crash loop leaves a few, not thousands.
pub fn folders_to_remove(gens: &[u32], keep_last: usize) -> Vec<u32> {
    let mut sorted = gens.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let keep_from = sorted.len().saturating_sub(keep_last).max(1);
    sorted
        .get(1..keep_from)
        .map(<[u32]>::to_vec)
        .unwrap_or_default()
}

/// Empties a finished task's scratch folder (its /tmp) and keeps the folder
/// itself with the task's logs. Most tasks leave it empty, and then nothing
/// is removed: no thread, and no freed inode, which ext4 without a journal
/// refuses to reuse for a minute or more and scans past on every later file
/// creation, so a freed folder per job made each next job's files slower.
/// A full one is emptied on a thread of its own: a big scratch folder must
/// not hold up the loop.
pub(crate) fn empty_scratch(tmp: PathBuf) {
    if !scratch_to_clear(&tmp) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("kiln-cleanup".into())
        .spawn(move || clear_scratch(&tmp));
}

/// Whether `tmp` is a real folder with something in it. A task without a
/// sandbox may have replaced its scratch folder with a link to a folder of
/// its own choosing (`ln -s /big/scratch $TMPDIR`): only the link goes, and
/// nothing it points to is touched.
fn scratch_to_clear(tmp: &Path) -> bool {
    match std::fs::symlink_metadata(tmp) {
        Ok(m) if m.file_type().is_symlink() => {
            let _ = std::fs::remove_file(tmp);
            false
        }
        Ok(m) if m.is_dir() => std::fs::read_dir(tmp).is_ok_and(|mut d| d.next().is_some()),
        _ => false,
    }
}

/// Removes what is in the scratch folder; links in it are removed as links
/// (`remove_dir_all` does not follow them either).
fn clear_scratch(tmp: &Path) {
    // Looked at again: it may have changed since the check on the loop.
    if !std::fs::symlink_metadata(tmp).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let res = if is_dir {
            std::fs::remove_dir_all(e.path())
        } else {
            std::fs::remove_file(e.path())
        };
        if let Err(err) = res {
            warn!(path = %e.path().display(), error = %err, "cannot clear a task's scratch folder");
        }
    }
}

/// Removes a task's folders of this attempt but the first and the last
/// few (layout: `<task>` is the first run, `<task>.<n>` the restarts). On
/// a thread of its own: old runs' logs and scratch may be big, and the loop
/// must not wait for the disk.
pub(crate) fn prune_folders(attempt_dir: PathBuf, task: &TaskId) {
    let name = task.to_string();
    let Ok(entries) = std::fs::read_dir(&attempt_dir) else {
        return;
    };
    let gens: Vec<u32> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            if n == name {
                return Some(0);
            }
            n.strip_prefix(&name)?.strip_prefix('.')?.parse().ok()
        })
        .collect();
    let gone = folders_to_remove(&gens, KEEP_LAST_FOLDERS);
    if gone.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("kiln-prune".into())
        .spawn(move || {
            for gen in gone {
                let dir = attempt_dir.join(format!("{name}.{gen}"));
                // remove_dir_all removes links as links, never what they
                // point to.
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    warn!(path = %dir.display(), error = %e, "cannot remove an old restart's folder");
                }
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start a thread to remove old restarts' folders");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_scratch_folder_is_emptied_and_a_link_in_its_place_only_unlinked() {
        let d = tempfile::tempdir().expect("tmp");
        let outside = d.path().join("shared-scratch");
        std::fs::create_dir_all(outside.join("keep")).expect("mkdir");
        std::fs::write(outside.join("data.bin"), b"x").expect("write");

        // A real folder with files, a subfolder and a link to the outside.
        let tmp = d.path().join("task/tmp");
        std::fs::create_dir_all(tmp.join("sub")).expect("mkdir");
        std::fs::write(tmp.join("sub/a.txt"), b"a").expect("write");
        std::os::unix::fs::symlink(&outside, tmp.join("link")).expect("symlink");
        assert!(scratch_to_clear(&tmp));
        clear_scratch(&tmp);
        assert!(tmp.is_dir());
        assert_eq!(std::fs::read_dir(&tmp).expect("read").count(), 0);
        assert!(outside.join("data.bin").exists() && outside.join("keep").is_dir());

        // Empty: nothing to do.
        assert!(!scratch_to_clear(&tmp));

        // The folder itself replaced by a link: the link goes, the target stays.
        std::fs::remove_dir(&tmp).expect("rmdir");
        std::os::unix::fs::symlink(&outside, &tmp).expect("symlink");
        assert!(!scratch_to_clear(&tmp));
        assert!(std::fs::symlink_metadata(&tmp).is_err());
        clear_scratch(&tmp);
        assert!(outside.join("data.bin").exists() && outside.join("keep").is_dir());
    }
    #[test]
    fn the_first_folder_and_the_last_three_are_kept() {
        assert_eq!(folders_to_remove(&[0, 1, 2, 3], 3), Vec::<u32>::new());
        assert_eq!(folders_to_remove(&[5, 0, 4, 1, 3, 2], 3), [1, 2]);
        // Generations skipped after a crash of kiln: by order, not number.
        assert_eq!(folders_to_remove(&[0, 2, 7, 9, 11], 3), [2]);
        assert!(folders_to_remove(&[], 3).is_empty());
        assert!(folders_to_remove(&[4], 3).is_empty());
    }

    proptest! {
        #[test]
        fn pruning_keeps_the_first_and_the_last_few(
            gens in proptest::collection::btree_set(0u32..1000, 0..40),
            keep in 0usize..6,
        ) {
            let gens: Vec<u32> = gens.into_iter().collect();
            let gone = folders_to_remove(&gens, keep);
            let kept: Vec<u32> = gens.iter().copied().filter(|g| !gone.contains(g)).collect();
            prop_assert!(gone.iter().all(|g| gens.contains(g)));
            prop_assert_eq!(kept.len(), gens.len().min(keep + 1));
            if let Some(first) = gens.first() {
                prop_assert!(kept.contains(first));
            }
            for last in gens.iter().rev().take(keep) {
                prop_assert!(kept.contains(last));
            }
        }
    }
}
