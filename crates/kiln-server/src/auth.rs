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

/// An argon2id hash in PHC form. Slow on purpose: call it off the async
/// threads.
pub fn hash_password(password: &str) -> Result<String, ServerError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ServerError::Random(format!("cannot hash a password: {e}")))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{phc::PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The user, when `password` is theirs. Slow on purpose (argon2): call it
/// off the async threads.
pub fn check_password(
    store: &dyn Store,
    name: &str,
    password: &str,
) -> Result<Option<User>, kiln_store::StoreError> {
    let Some(user) = store.user(name)? else {
        // Same work as a real check, so timing does not tell who exists.
        let _ = verify_password(password, dummy_hash());
        return Ok(None);
    };
    let good = user
        .password_hash
        .as_deref()
        .is_some_and(|h| verify_password(password, h));
    Ok(good.then_some(user))
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not anyone's password").unwrap_or_default())
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
            identity: None,
        })?;
    }
    if token_file.exists() {
        return Ok(());
    }
    let token = new_token()?;
    store.add_token(
        ADMIN,
        &hash_token(&token),
        kiln_store::TokenLife::until_revoked(now_ms),
    )?;
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
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
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
        let user = store.user_by_token(&hash_token(&token), 3).expect("lookup");
        assert!(user.is_some_and(|u| u.is_admin));
        // A second start keeps the token.
        bootstrap_admin(&store, &file, 2).expect("again");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), token);
    }
}
