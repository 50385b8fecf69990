//! What the local engine can honour of a valid job, decided at submission:
//! fields it cannot honour yet are refused with their path, fields that do
//! not apply on this engine are accepted with a warning. Nothing is dropped
//! silently.

use kiln_spec::model::MountSource;
use kiln_spec::{Issue, JobSpec};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admission {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

/// `sandboxed`: tasks run under bubblewrap, which mounts are made with.
pub fn admit(spec: &JobSpec, sandboxed: bool) -> Admission {
    let mut a = Admission::default();
    if !spec.mounts.is_empty() && !sandboxed {
        a.errors.push(Issue::new(
            "mounts",
            "mounts need bubblewrap on the kiln server's machine: install it \
             (apt-get install bubblewrap) and restart kiln, or submit without mounts",
        ));
    }
    if sandboxed {
        for (i, m) in spec.mounts.iter().enumerate() {
            match &m.source {
                // Whether it exists is checked where the datasets are.
                MountSource::Dataset(_) => {}
                MountSource::Space(rel) => {
                    if let Err(e) = crate::spaces::SpacePath::parse(rel) {
                        a.errors.push(Issue::new(format!("mounts[{i}].space"), e));
                    }
                }
            }
            if !m.target.starts_with('/') || m.target.split('/').any(|c| c == "..") {
                a.errors.push(Issue::new(
                    format!("mounts[{i}].target"),
                    format!("must be an absolute path without '..', got {}", m.target),
                ));
            }
        }
    }
    let ignored = |what: &str| {
        format!("{what}: the local engine runs tasks directly on this machine, without containers")
    };
    if let Some(image) = &spec.image {
        a.warnings.push(Issue::new(
            "image",
            ignored(&format!("image {image} is not used")),
        ));
    }
    for (i, r) in spec.roles.iter().enumerate() {
        if let Some(image) = &r.image {
            a.warnings.push(Issue::new(
                format!("roles[{i}].image"),
                ignored(&format!("image {image} is not used")),
            ));
        }
    }
    if spec.auth_file.is_some() {
        a.warnings.push(Issue::new(
            "authFile",
            ignored("the registry credentials are not used"),
        ));
    }
    for (field, value) in [
        ("codeDir", &spec.code_dir),
        ("dataDir", &spec.data_dir),
        ("outputDir", &spec.output_dir),
    ] {
        if value.is_some() {
            a.warnings.push(Issue::new(
                field,
                "not mapped on the local engine yet; outputs go to KILN_OUTPUT_DIR",
            ));
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> JobSpec {
        kiln_spec::parse(text.as_bytes()).expect("valid").job
    }

    #[test]
    fn a_plain_job_is_admitted_without_remarks() {
        let plain = spec("name: a\ncommand: 'true'\n");
        assert_eq!(admit(&plain, false), Admission::default());
        assert_eq!(admit(&plain, true), Admission::default());
    }

    #[test]
    fn mounts_need_a_sandbox_and_images_are_remarked() {
        let s = spec("name: a\nimage: pytorch/pytorch\ncommand: 'true'\nmounts: [mnist]\n");
        let a = admit(&s, false);
        assert_eq!(a.errors.len(), 1);
        assert_eq!(a.errors[0].path, "mounts");
        assert!(a.errors[0].message.contains("apt-get install bubblewrap"));
        assert_eq!(a.warnings.len(), 1);
        assert_eq!(a.warnings[0].path, "image");
        assert!(admit(&s, true).errors.is_empty());
        let ds = spec("name: a\ncommand: 'true'\nmounts: [dataset:imagenet]\n");
        assert!(admit(&ds, true).errors.is_empty());
        assert_eq!(admit(&ds, false).errors[0].path, "mounts");
    }
}
