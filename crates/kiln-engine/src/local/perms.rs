//! Owners and modes of the folders kiln makes for tasks.

use std::path::Path;

use crate::engine::RunAs;

/// Gives one folder (not what is in it, never a link's target) to `id`
/// with `mode`.
pub fn give(path: &Path, id: RunAs, mode: u32) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(id.uid), Some(id.gid))
        .map_err(|e| format!("cannot give {} to uid {}: {e}", path.display(), id.uid))?;
    set_mode(path, mode);
    Ok(())
}

/// Sets a folder's mode; where it cannot, the folder keeps its own.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}
