//! What the local engine can honour of a valid job, decided at submission:
//! fields it cannot honour yet are refused with their path, fields that do
//! not apply on this engine are accepted with a warning. Nothing is dropped
//! silently.

use kiln_sched::{Capacity, Node, DEFAULT_QUEUE};
use kiln_spec::model::MountSource;
use kiln_spec::validate::Field;
use kiln_spec::{Format, Issue, JobSpec};
use kiln_store::QueueRecord;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admission {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

const NEEDS_SANDBOX: &str = "folders of your space are mounted with bubblewrap on the kiln \
     server's machine: install it (apt-get install bubblewrap) and restart kiln, or submit \
     without this field";

/// What this server's local engine can do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Engine {
    /// Tasks run under bubblewrap, which mounts are made with.
    pub sandboxed: bool,
    /// Tasks with an image run in it (docker or podman).
    pub containers: bool,
    /// The engine adds nodes on demand (a cloud or Slurm cluster), so the
    /// nodes known now do not bound what a job may ask for.
    pub capacity_can_grow: bool,
}

const FAKE_GPUS_HINT: &str = "run kiln server --fake-gpus N to try GPU jobs without one";

/// A job no node could ever hold, refused at submission rather than left
/// waiting forever: each field that asks for too much, with what the
/// cluster has. `nodes` are the engine's nodes as last described.
pub fn admit_size(spec: &JobSpec, nodes: &[Node], engine: Engine) -> Vec<Issue> {
    let capacity = Capacity {
        nodes,
        can_grow: engine.capacity_can_grow,
    };
    let no_gpus = nodes.iter().all(|n| n.gpus.is_empty());
    kiln_sched::never_fits(spec, capacity)
        .iter()
        .map(|why| {
            let message = if no_gpus && why.wants_gpus() {
                format!("{why} ({FAKE_GPUS_HINT})")
            } else {
                why.to_string()
            };
            Issue::new(why.path(), message)
        })
        .collect()
}

pub fn admit(spec: &JobSpec, engine: Engine) -> Admission {
    let sandboxed = engine.sandboxed;
    let mut a = Admission::default();
    if !spec.mounts.is_empty() && !sandboxed {
        a.errors.push(Issue::new("mounts", NEEDS_SANDBOX));
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
            // ':' and ',' would read as options in a container engine's
            // `--volume SOURCE:TARGET:OPTIONS`.
            if !m.target.starts_with('/')
                || m.target.split('/').any(|c| c == "..")
                || m.target.contains([':', ','])
            {
                a.errors.push(Issue::new(
                    format!("mounts[{i}].target"),
                    format!(
                        "must be an absolute path without '..', ':' or ',', got {}",
                        m.target
                    ),
                ));
            }
        }
    }
    let ignored = |what: &str| {
        format!("{what}: the local engine runs tasks directly on this machine, without containers")
    };
    if !engine.containers {
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
    }
    if let Some(f) = &spec.auth_file {
        if crate::control::auth_file_in_space(f).is_none() {
            a.errors.push(Issue::new(
                "authFile",
                format!(
                    "must be a file of your space (/mnt/PATH or PATH), got {f}; \
                     or store the credential once with `kiln registry login`"
                ),
            ));
        } else if !engine.containers {
            a.warnings.push(Issue::new(
                "authFile",
                ignored("the registry credentials are not used"),
            ));
        }
    }
    // codeDir and dataDir are folders of the space: they need it at /mnt.
    for (field, value) in [("codeDir", &spec.code_dir), ("dataDir", &spec.data_dir)] {
        if value.is_some() && !sandboxed {
            a.errors.push(Issue::new(field, NEEDS_SANDBOX));
        }
    }
    if spec.output_dir.is_some() && !sandboxed {
        a.warnings.push(Issue::new(
            "outputDir",
            "without the sandbox outputs go to the job's own folder (KILN_OUTPUT_DIR), not your space",
        ));
    }
    a
}

/// Whether `user` may submit to `queue`: everyone may use `default`, the
/// admin any queue, others the queues granted them.
pub fn may_use(queue: &str, users: &[String], user: &str, is_admin: bool) -> bool {
    queue == DEFAULT_QUEUE || is_admin || users.iter().any(|u| u == user)
}

/// The queues `user` may submit to, by name, `default` first.
pub fn usable_queues(queues: &[QueueRecord], user: &str, is_admin: bool) -> Vec<String> {
    let mut names = vec![DEFAULT_QUEUE.to_owned()];
    names.extend(
        queues
            .iter()
            .filter(|q| q.name != DEFAULT_QUEUE && may_use(&q.name, &q.users, user, is_admin))
            .map(|q| q.name.clone()),
    );
    names
}

/// A job may only go to a queue that exists and that its user may use; the
/// error names the queue field as the job's format spells it.
pub fn admit_queue(
    spec: &JobSpec,
    format: Format,
    user: &str,
    is_admin: bool,
    queues: &[QueueRecord],
) -> Option<Issue> {
    let name = spec.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
    if name == DEFAULT_QUEUE {
        return None;
    }
    let usable = || usable_queues(queues, user, is_admin).join(", ");
    let message = match queues.iter().find(|q| q.name == name) {
        None => format!(
            "queue \"{name}\" does not exist; queues you may use: {}",
            usable()
        ),
        Some(q) if !may_use(name, &q.users, user, is_admin) => format!(
            "you may not use queue \"{name}\"; queues you may use: {}",
            usable()
        ),
        Some(_) => return None,
    };
    Some(Issue::new(format.job_field_path(Field::Queue), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: Engine = Engine {
        sandboxed: false,
        containers: false,
        capacity_can_grow: false,
    };
    const ON: Engine = Engine {
        sandboxed: true,
        containers: false,
        capacity_can_grow: false,
    };

    fn cpu_only() -> Vec<Node> {
        vec![Node {
            name: "here".into(),
            cpus: 4,
            memory_mb: 8192,
            gpus: Vec::new(),
        }]
    }

    #[test]
    fn a_gpu_job_without_gpus_is_refused_with_the_way_to_try_one() {
        let s = spec("name: a\nroles: [{name: main, gpus: 1, command: x}]\n");
        let refused = admit_size(&s, &cpu_only(), OFF);
        assert_eq!(
            refused.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "roles[0].gpus: needs 1 GPU on one node; the largest node has 0 \
              (run kiln server --fake-gpus N to try GPU jobs without one)"
            ]
        );
        let grows = Engine {
            capacity_can_grow: true,
            ..OFF
        };
        assert!(admit_size(&s, &cpu_only(), grows).is_empty());
        let small = spec("name: a\ncommand: x\ncpus: 2\n");
        assert!(admit_size(&small, &cpu_only(), OFF).is_empty());
    }

    #[test]
    fn with_containers_images_are_used_not_remarked() {
        let s = spec("name: a\nimage: pytorch/pytorch\ncommand: 'true'\n");
        let a = admit(
            &s,
            Engine {
                sandboxed: true,
                containers: true,
                capacity_can_grow: false,
            },
        );
        assert_eq!(a, Admission::default());
    }

    fn spec(text: &str) -> JobSpec {
        kiln_spec::parse(text.as_bytes()).expect("valid").job
    }

    #[test]
    fn mount_targets_and_auth_files_that_would_read_as_options_are_refused() {
        let bad = spec("name: a\ncommand: 'true'\nmounts:\n  - {space: w, target: '/data:U'}\n  - {space: w, target: '/d,z'}\n");
        let a = admit(&bad, ON);
        assert_eq!(
            a.errors.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["mounts[0].target", "mounts[1].target"]
        );
        let hdfs = spec("name: a\nimage: x/y\nauthFile: hdfs://nn/auth\ncommand: 'true'\n");
        let a = admit(
            &hdfs,
            Engine {
                containers: true,
                ..ON
            },
        );
        assert_eq!(a.errors[0].path, "authFile");
        let space = spec("name: a\nimage: x/y\nauthFile: /mnt/auth\ncommand: 'true'\n");
        assert_eq!(
            admit(
                &space,
                Engine {
                    containers: true,
                    ..ON
                }
            ),
            Admission::default()
        );
    }

    #[test]
    fn a_plain_job_is_admitted_without_remarks() {
        let plain = spec("name: a\ncommand: 'true'\n");
        assert_eq!(admit(&plain, OFF), Admission::default());
        assert_eq!(admit(&plain, ON), Admission::default());
    }

    #[test]
    fn mounts_need_a_sandbox_and_images_are_remarked() {
        let s = spec("name: a\nimage: pytorch/pytorch\ncommand: 'true'\nmounts: [mnist]\n");
        let a = admit(&s, OFF);
        assert_eq!(a.errors.len(), 1);
        assert_eq!(a.errors[0].path, "mounts");
        assert!(a.errors[0].message.contains("apt-get install bubblewrap"));
        assert_eq!(a.warnings.len(), 1);
        assert_eq!(a.warnings[0].path, "image");
        assert!(admit(&s, ON).errors.is_empty());
        let ds = spec("name: a\ncommand: 'true'\nmounts: [dataset:imagenet]\n");
        assert!(admit(&ds, ON).errors.is_empty());
        assert_eq!(admit(&ds, OFF).errors[0].path, "mounts");
    }

    #[test]
    fn openpai_folders_need_the_sandbox_except_the_output() {
        let s = spec(
            r#"{"jobName": "a", "image": "x", "codeDir": "$PAI_DEFAULT_FS_URI/code",
                "dataDir": "data", "outputDir": "out",
                "taskRoles": [{"name": "m", "taskNumber": 1, "cpuNumber": 1,
                  "memoryMB": 100, "gpuNumber": 0, "command": "true"}]}"#,
        );
        let paths = |v: &[Issue]| v.iter().map(|i| i.path.clone()).collect::<Vec<_>>();
        let off = admit(&s, OFF);
        assert_eq!(paths(&off.errors), ["codeDir", "dataDir"]);
        assert!(off.errors[0].message.contains("apt-get install bubblewrap"));
        assert!(paths(&off.warnings).contains(&"outputDir".to_owned()));
        let on = admit(&s, ON);
        assert!(on.errors.is_empty(), "{:?}", on.errors);
        assert!(!paths(&on.warnings).contains(&"outputDir".to_owned()));
    }

    fn queue(name: &str, users: &[&str]) -> QueueRecord {
        QueueRecord {
            name: name.into(),
            quota: kiln_sched::Quota::default(),
            user_max_gpus: None,
            users: users.iter().map(|u| u.to_string()).collect(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn queues_are_for_those_granted_them_and_default_for_everyone() {
        let queues = [queue("nlp", &["bob"]), queue("vision", &["carol"])];
        let kiln = |q: &str| spec(&format!("name: a\ncommand: x\nqueue: {q}\n"));
        let check = |s: &JobSpec, f, user, admin| {
            admit_queue(s, f, user, admin, &queues).map(|i| i.to_string())
        };
        assert_eq!(
            check(&spec("name: a\ncommand: x\n"), Format::Kiln, "bob", false),
            None
        );
        assert_eq!(check(&kiln("default"), Format::Kiln, "bob", false), None);
        assert_eq!(check(&kiln("nlp"), Format::Kiln, "bob", false), None);
        assert_eq!(check(&kiln("vision"), Format::Kiln, "root", true), None);
        assert_eq!(
            check(&kiln("vision"), Format::Kiln, "bob", false).as_deref(),
            Some("queue: you may not use queue \"vision\"; queues you may use: default, nlp")
        );
        assert_eq!(
            check(&kiln("speech"), Format::OpenpaiV1, "alice", false).as_deref(),
            Some("virtualCluster: queue \"speech\" does not exist; queues you may use: default")
        );
        assert_eq!(
            usable_queues(&queues, "root", true),
            ["default", "nlp", "vision"]
        );
    }
}
