//! OpenPAI's `codeDir`, `dataDir` and `outputDir` name HDFS folders,
//! usually as `$PAI_DEFAULT_FS_URI/Output/$jobName`. In kiln the user's
//! space plays HDFS's part, so these read what people wrote for OpenPAI as
//! a folder of the space, and refuse what cannot be one.

/// The folder of the space that `value` names, as a clean relative path
/// (empty: the space itself). `$jobName` becomes `job_name`.
pub fn space_dir(value: &str, job_name: &str) -> Result<String, String> {
    let mut v = value
        .replace("${jobName}", job_name)
        .replace("$jobName", job_name);
    for var in ["${PAI_DEFAULT_FS_URI}", "$PAI_DEFAULT_FS_URI"] {
        if let Some(rest) = v.strip_prefix(var) {
            v = rest.to_owned();
        }
    }
    if let Some((scheme, rest)) = v.split_once("://") {
        // The path after the authority (hdfs://namenode:9000/path).
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        v = match scheme {
            "hdfs" => path.to_owned(),
            // kiln's own PAI_DEFAULT_FS_URI is file:///mnt: the space.
            "file" => match path.strip_prefix("/mnt") {
                Some(p) if p.is_empty() || p.starts_with('/') => p.to_owned(),
                _ => {
                    return Err(format!(
                        "{value:?} is outside your space; file:// paths must be under /mnt"
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "{value:?}: only folders of your space can be used \
                     (hdfs://host/path and $PAI_DEFAULT_FS_URI/path are read as paths in it)"
                ))
            }
        };
    }
    if v.contains('$') {
        return Err(format!(
            "{value:?}: only $PAI_DEFAULT_FS_URI and $jobName are expanded here"
        ));
    }
    if v.contains('\0') || v.chars().any(char::is_control) {
        return Err(format!("{value:?} contains a control character"));
    }
    let mut parts = Vec::new();
    for part in v.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{value:?} must not contain '..'")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::space_dir;
    use proptest::prelude::*;

    #[test]
    fn openpai_spellings_become_space_folders() {
        for (given, want) in [
            ("$PAI_DEFAULT_FS_URI/Output/$jobName", "Output/mnist"),
            ("${PAI_DEFAULT_FS_URI}/data/mnist", "data/mnist"),
            ("hdfs://10.0.0.1:9000/user/code", "user/code"),
            ("hdfs://namenode/", ""),
            ("file:///mnt/code", "code"),
            ("/code/./v2/", "code/v2"),
            ("code", "code"),
            ("", ""),
        ] {
            assert_eq!(space_dir(given, "mnist").as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn what_is_not_a_space_folder_is_refused() {
        for bad in [
            "s3://bucket/x",
            "file:///etc",
            "file:///mntx",
            "$HOME/code",
            "../other",
            "hdfs://n/a/../../b",
            "a\0b",
        ] {
            assert!(space_dir(bad, "j").is_err(), "{bad} accepted");
        }
    }

    proptest! {
        /// Reading a result again gives it back: stored specs re-parse the same.
        #[test]
        fn clean_paths_are_fixed_points(s in "[a-zA-Z0-9._/:$ -]{0,40}") {
            if let Ok(p) = space_dir(&s, "job") {
                prop_assert_eq!(space_dir(&p, "job"), Ok(p.clone()));
                prop_assert!(!p.split('/').any(|c| c == ".." || c.is_empty() && !p.is_empty()));
            }
        }
    }
}
