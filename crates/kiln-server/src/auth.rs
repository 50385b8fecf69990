//! API tokens: random, shown once, stored only as a SHA-256 hash. The admin
//! gets one on first start, written to a 0600 file in the data folder so the
//! CLI on the same machine works with no set-up.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use kiln_store::{Store, User};
use sha2::{Digest, Sha256};

use crate::error::ServerError;

pub const ADMIN: &str = "admin";

pub fn new_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::Random(e.to_string()))?;
    Ok(format!("kiln_{}", hex::encode(bytes)))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates the admin on first start, and a fresh admin token whenever the
/// token file is missing (a lost file must not lock the owner out).
pub fn bootstrap_admin(
    store: &dyn Store,
    token_file: &Path,
    now_ms: u64,
) -> Result<(), ServerError> {
    if store.user(ADMIN)?.is_none() {
        store.add_user(&User {
            name: ADMIN.into(),
            is_admin: true,
            password_hash: None,
            created_at_ms: now_ms,
        })?;
    }
    if token_file.exists() {
        return Ok(());
    }
    let token = new_token()?;
    store.add_token(ADMIN, &hash_token(&token))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(token_file)
        .map_err(|e| ServerError::io("create", token_file, e))?;
    f.write_all(token.as_bytes())
        .map_err(|e| ServerError::io("write", token_file, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn the_admin_token_file_is_private_and_works() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = kiln_store::SqliteStore::in_memory().expect("store");
        let file = tmp.path().join("admin.token");
        bootstrap_admin(&store, &file, 1).expect("bootstrap");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = std::fs::read_to_string(&file).expect("read");
        let user = store.user_by_token(&hash_token(&token)).expect("lookup");
        assert!(user.is_some_and(|u| u.is_admin));
        // A second start keeps the token.
        bootstrap_admin(&store, &file, 2).expect("again");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), token);
    }
}
