//! User-given paths inside a space, checked as text before any file system
//! call: no `..`, no NUL, nothing absolute reaches the disk. (Symlinks that
//! point out of a space are refused by the capability-based file system
//! calls in `store.rs`.)

use std::path::PathBuf;

const MAX_COMPONENT: usize = 255;
const MAX_DEPTH: usize = 64;

/// A relative path in a space, already checked. Empty means the space itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpacePath(Vec<String>);

impl SpacePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains('\0') {
            return Err("a path must not contain NUL bytes".into());
        }
        let mut parts = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => continue,
                ".." => return Err(format!("'..' is not allowed in a path ({text})")),
                p if p.len() > MAX_COMPONENT => {
                    return Err(format!(
                        "a path component is longer than {MAX_COMPONENT} bytes"
                    ))
                }
                p => parts.push(p.to_owned()),
            }
        }
        if parts.len() > MAX_DEPTH {
            return Err(format!("a path must be at most {MAX_DEPTH} folders deep"));
        }
        Ok(SpacePath(parts))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn name(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }

    pub fn parent(&self) -> SpacePath {
        SpacePath(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }

    /// As a relative path for the capability calls; `.` for the root.
    pub fn rel(&self) -> PathBuf {
        if self.0.is_empty() {
            PathBuf::from(".")
        } else {
            self.0.iter().collect()
        }
    }

    pub fn display(&self) -> String {
        format!("/{}", self.0.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_paths_normalise() {
        assert_eq!(
            SpacePath::parse("a/b/c.txt").expect("ok").display(),
            "/a/b/c.txt"
        );
        assert_eq!(SpacePath::parse("/a//./b/").expect("ok").display(), "/a/b");
        assert!(SpacePath::parse("").expect("ok").is_root());
        assert!(SpacePath::parse("/").expect("ok").is_root());
        assert_eq!(
            SpacePath::parse("a/b").expect("ok").parent().display(),
            "/a"
        );
    }

    #[test]
    fn escapes_are_refused() {
        for bad in ["..", "../x", "a/../../etc/passwd", "a/..", "x\0y"] {
            assert!(SpacePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SpacePath::parse(&"a/".repeat(100)).is_err());
        assert!(SpacePath::parse(&"x".repeat(300)).is_err());
    }

    proptest! {
        /// Whatever the text, an accepted path never climbs out and never
        /// names the root as anything but itself.
        #[test]
        fn accepted_paths_stay_inside(text in "[a-z./\\\\%]{0,40}") {
            if let Ok(p) = SpacePath::parse(&text) {
                let rel = p.rel();
                prop_assert!(rel.is_relative());
                prop_assert!(rel.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)));
            }
        }
    }
}
