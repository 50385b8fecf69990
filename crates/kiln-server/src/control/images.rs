//! How each task's image is pulled: with the job's OpenPAI `authFile` (a
//! file of the user's space), else the user's credential stored in kiln
//! for the image's registry; and afresh at every start once anyone pulled
//! that repository with credentials, so an image one user could pull is
//! never run by another because it was already on the machine.

use std::path::{Path, PathBuf};

use kiln_engine::engine::{ImageAuth, ImagePull};
use kiln_engine::local::container::{qualified, registry_of, repository_of};
use tracing::warn;

use super::*;

/// An `authFile` as a path in the space: `/mnt/x`, `file:///mnt/x` or `x`.
/// None for what is not a file of the space (an HDFS URI, a `..`).
pub fn auth_file_in_space(text: &str) -> Option<PathBuf> {
    let t = text.strip_prefix("file://").unwrap_or(text);
    let rel = t
        .strip_prefix(crate::layout::SPACE_INSIDE)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(t);
    let p = Path::new(rel);
    let plain = p
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (!rel.is_empty() && !t.contains("://") && plain).then(|| p.to_owned())
}

impl Loop {
    pub(super) fn image_pull(
        &self,
        user: &str,
        image: Option<&str>,
        auth_file: Option<&str>,
        space: Option<&Path>,
    ) -> ImagePull {
        let Some(image) = image else {
            return ImagePull::default();
        };
        let full = qualified(image);
        let registry = registry_of(&full);
        let from_file = match (auth_file.and_then(auth_file_in_space), space) {
            (Some(path), Some(space)) => Some(ImageAuth::SpaceFile {
                space: space.to_owned(),
                path,
            }),
            _ => None,
        };
        let stored = || match self.store.credentials(user) {
            Ok(all) => {
                all.into_iter()
                    .find(|c| c.registry == registry)
                    .map(|c| ImageAuth::Stored {
                        registry: c.registry,
                        username: c.username,
                        secret: c.secret,
                    })
            }
            Err(e) => {
                warn!(error = %e, user, "cannot read registry credentials");
                None
            }
        };
        let auth = from_file.or_else(stored);
        let repository = repository_of(&full);
        if auth.is_some() {
            if let Err(e) = self.store.mark_private_image(repository, crate::now_ms()) {
                warn!(error = %e, repository, "cannot record a private image");
            }
        }
        // Unknown: pulled afresh, the safe way.
        let private = self.store.is_private_image(repository).unwrap_or(true);
        ImagePull {
            always: private || auth.is_some(),
            auth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auth_file_is_a_file_of_the_space() {
        for (text, want) in [
            ("/mnt/secrets/registry", Some("secrets/registry")),
            ("file:///mnt/auth", Some("auth")),
            ("auth/registry.txt", Some("auth/registry.txt")),
        ] {
            assert_eq!(auth_file_in_space(text), want.map(PathBuf::from), "{text}");
        }
        for text in [
            "hdfs://nn:9000/user/a/auth",
            "/mnt/../bob/auth",
            "../x",
            "/etc/shadow",
            "",
            "/mnt",
        ] {
            assert_eq!(auth_file_in_space(text), None, "{text}");
        }
    }
}
