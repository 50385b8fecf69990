//! What the local engine can honour of a valid job, decided at submission:
//! fields it cannot honour yet are refused with their path, fields that do
//! not apply on this engine are accepted with a warning. Nothing is dropped
//! silently.

use kiln_spec::{Issue, JobSpec};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admission {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

pub fn admit(spec: &JobSpec) -> Admission {
    let mut a = Admission::default();
    if !spec.mounts.is_empty() {
        a.errors.push(Issue::new(
            "mounts",
            "the local engine cannot mount spaces or datasets yet; submit without mounts \
             (tasks run in the job's output folder, KILN_OUTPUT_DIR)",
        ));
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
        assert_eq!(
            admit(&spec("name: a\ncommand: 'true'\n")),
            Admission::default()
        );
    }

    #[test]
    fn mounts_are_refused_and_images_are_remarked() {
        let a = admit(&spec(
            "name: a\nimage: pytorch/pytorch\ncommand: 'true'\nmounts: [mnist]\n",
        ));
        assert_eq!(a.errors.len(), 1);
        assert_eq!(a.errors[0].path, "mounts");
        assert_eq!(a.warnings.len(), 1);
        assert_eq!(a.warnings[0].path, "image");
    }
}
