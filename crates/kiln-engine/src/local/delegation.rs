//! Making kiln's own cgroup v2 group able to hold its tasks to limits.
//!
//! On v2 a group's children get `memory.max`, `cpu.max` and `pids.max` only
//! when the group lists those controllers in its `cgroup.subtree_control`,
//! and the kernel accepts that only from a group with no processes of its
//! own ("no internal processes"). So the server moves the processes of its
//! group into a leaf, [`SERVER_LEAF`], enables what its group is offered,
//! and puts each task's group beside that leaf. A later start finds itself
//! in the leaf and uses the parent again, so restarts never nest deeper.
//!
//! Which controllers a group is offered is decided above it: under systemd,
//! by `Delegate=yes` on kiln's unit. Each controller's outcome is kept with
//! the reason, so `kiln nodes` and job events can say exactly what holds.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The leaf the server's own processes live in, beside its tasks' groups.
pub const SERVER_LEAF: &str = "kiln-server";

/// The controllers kiln sets limits with, in the order they are reported.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// One controller's outcome: whether kiln's tasks are held by it here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerState {
    /// `memory`, `cpu` or `pids`.
    pub controller: String,
    pub enforced: bool,
    /// What holds (`memory.max and memory.swap.max per task`) or why not.
    pub detail: String,
}

impl ControllerState {
    pub fn held(controller: &str, detail: impl Into<String>) -> ControllerState {
        ControllerState {
            controller: controller.to_owned(),
            enforced: true,
            detail: detail.into(),
        }
    }

    pub fn not_held(controller: &str, detail: impl Into<String>) -> ControllerState {
        ControllerState {
            controller: controller.to_owned(),
            enforced: false,
            detail: detail.into(),
        }
    }
}

/// One line for a job's events: each controller, and why one does not hold.
pub fn summary(version: Option<u8>, controllers: &[ControllerState]) -> String {
    let parts: Vec<String> = controllers
        .iter()
        .map(|c| match c.enforced {
            true => format!("{} enforced", c.controller),
            false => format!("{} not enforced ({})", c.controller, c.detail),
        })
        .collect();
    match version {
        Some(v) => format!("limits with cgroup v{v}: {}", parts.join("; ")),
        None => format!("no usable cgroups: {}", parts.join("; ")),
    }
}

/// The words of a `cgroup.controllers` or `cgroup.subtree_control` file.
/// The kernel ends the list with a newline, which is not part of a name.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// What the server did to its v2 group, and what its tasks get from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Setup {
    /// Where the tasks' groups go.
    pub group: PathBuf,
    /// One entry per controller in [`CONTROLLERS`].
    pub controllers: Vec<ControllerState>,
    /// How many processes were moved into [`SERVER_LEAF`].
    pub moved: usize,
    /// Whether kiln can create groups in `group` at all.
    pub writable: bool,
}

/// What each controller gives a task's group once it is enabled.
fn what_holds(controller: &str, group: &Path) -> String {
    match controller {
        // Without swap accounting a task could run past memory.max into
        // swap, slowly; say whether that is closed too.
        "memory" if group.join("memory.swap.max").exists() => {
            "memory.max per task, swap off (memory.swap.max 0); OOM kills read from memory.events"
                .into()
        }
        "memory" => {
            "memory.max per task; swap not limited (no memory.swap.max: swap accounting is off)"
                .into()
        }
        "cpu" => "cpu.max per task (its CPUs' worth of time per 100 ms)".into(),
        "pids" => "pids.max per task".into(),
        other => format!("{other} limits per task"),
    }
}

/// Prepares the v2 group at `mount` + `own` (the server's path from
/// `/proc/self/cgroup`) for tasks' groups. Never fails: what cannot be done
/// is reported per controller.
pub fn delegate(mount: &Path, own: &str) -> V2Setup {
    delegate_with(mount, own, &CONTROLLERS)
}

/// [`delegate`] for any list of controllers: tests prove the steps with
/// a controller a machine has free on v2 when its memory, cpu and pids
/// are bound to v1.
pub fn delegate_with(mount: &Path, own: &str, wanted_here: &[&str]) -> V2Setup {
    let mut group = mount.join(own.trim_start_matches('/'));
    if group.file_name().is_some_and(|n| n == SERVER_LEAF) {
        if let Some(parent) = group.parent().filter(|p| p.starts_with(mount)) {
            group = parent.to_owned();
        }
    }
    let read = |name: &str| parse_list(&fs::read_to_string(group.join(name)).unwrap_or_default());
    let offered = read("cgroup.controllers");
    let mut enabled = read("cgroup.subtree_control");
    let all = |why: &str| V2Setup {
        group: group.clone(),
        controllers: wanted_here
            .iter()
            .map(|c| ControllerState::not_held(c, why))
            .collect(),
        moved: 0,
        writable: false,
    };
    if !super::resources::writable(&group) {
        return all(&format!(
            "kiln cannot create groups in its cgroup {} (run it from a systemd unit with Delegate=yes, see docs/install.md)",
            group.display()
        ));
    }
    let wanted: Vec<&str> = wanted_here
        .iter()
        .copied()
        .filter(|c| offered.iter().any(|o| o == c) && !enabled.iter().any(|e| e == c))
        .collect();
    let mut moved = 0;
    let mut move_failure = None;
    // Only when a controller is to be enabled: processes that are not
    // kiln's (a login shell's, when root starts kiln by hand) stay where
    // they are unless limits need the group emptied. The machine's root
    // group may hold processes and still hand out controllers.
    if !wanted.is_empty() && !is_real_root(mount, &group) {
        match move_into_leaf(&group) {
            Ok(n) => moved = n,
            Err(e) => move_failure = Some(e),
        }
    }
    let mut failures: Vec<(String, String)> = Vec::new();
    for c in &wanted {
        let file = group.join("cgroup.subtree_control");
        match fs::write(&file, format!("+{c}")) {
            Ok(()) => enabled.push((*c).to_owned()),
            Err(e) => {
                let why = match (&move_failure, e.raw_os_error()) {
                    (Some(m), _) => m.clone(),
                    (None, Some(libc::EBUSY)) => format!(
                        "processes remain in {} (the kernel allows limits only below a group without processes)",
                        group.display()
                    ),
                    _ => e.to_string(),
                };
                failures.push((
                    (*c).to_owned(),
                    format!("cannot enable it in {}: {why}", file.display()),
                ));
            }
        }
    }
    let controllers = wanted_here
        .iter()
        .map(|c| {
            if let Some((_, why)) = failures.iter().find(|(f, _)| f == c) {
                ControllerState::not_held(c, why.clone())
            } else if enabled.iter().any(|e| e == c) {
                ControllerState::held(c, what_holds(c, &group))
            } else {
                ControllerState::not_held(
                    c,
                    format!(
                        "the {c} controller is not delegated to kiln's cgroup {} (offered: [{}]); give kiln's systemd unit Delegate=yes (docs/install.md)",
                        group.display(),
                        offered.join(" ")
                    ),
                )
            }
        })
        .collect();
    V2Setup {
        group,
        controllers,
        moved,
        writable: true,
    }
}

/// Whether `group` is the machine's root cgroup, the one group the kernel
/// lets hold processes and hand out controllers at once. The mount point is
/// not always that: in a cgroup namespace (a container's, Docker's default
/// on v2) `/proc/self/cgroup` says `0::/` and the mount shows the
/// container's own group, which obeys the rule like any other. The kernel
/// gives every group but the real root a `cgroup.type` file.
fn is_real_root(mount: &Path, group: &Path) -> bool {
    group == mount && !group.join("cgroup.type").exists()
}

/// Moves every process of `group` into its [`SERVER_LEAF`]. Processes that
/// exit meanwhile are no obstacle; one that cannot be moved is.
fn move_into_leaf(group: &Path) -> Result<usize, String> {
    let procs = fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<&str> = procs.split_whitespace().collect();
    if pids.is_empty() {
        return Ok(0);
    }
    let leaf = group.join(SERVER_LEAF);
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", leaf.display())),
    }
    let target = leaf.join("cgroup.procs");
    let mut moved = 0;
    for pid in pids {
        match fs::write(&target, pid) {
            Ok(()) => moved += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                return Err(format!(
                    "process {pid} in {} cannot be moved into {}: {e}",
                    group.display(),
                    leaf.display()
                ))
            }
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/fs/cgroup` with kiln's group at `/svc/kiln.service`.
    fn tree(controllers: &str, subtree: &str, procs: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tmp");
        let g = tmp.path().join("svc/kiln.service");
        fs::create_dir_all(&g).expect("group");
        fs::write(g.join("cgroup.controllers"), controllers).expect("write");
        fs::write(g.join("cgroup.subtree_control"), subtree).expect("write");
        fs::write(g.join("cgroup.procs"), procs).expect("write");
        (tmp, g)
    }

    fn states(s: &V2Setup) -> Vec<(String, bool)> {
        s.controllers
            .iter()
            .map(|c| (c.controller.clone(), c.enforced))
            .collect()
    }

    #[test]
    fn the_summary_names_each_controller_and_why_one_does_not_hold() {
        let cs = [
            ControllerState::held("memory", "memory.max"),
            ControllerState::not_held("cpu", "not delegated"),
        ];
        assert_eq!(
            summary(Some(2), &cs),
            "limits with cgroup v2: memory enforced; cpu not enforced (not delegated)"
        );
    }

    #[test]
    fn lists_end_in_a_newline_that_is_not_a_controller() {
        assert_eq!(parse_list("memory\n"), ["memory"]);
        assert_eq!(
            parse_list("cpuset cpu io memory pids\n"),
            ["cpuset", "cpu", "io", "memory", "pids"]
        );
        assert!(parse_list("\n").is_empty());
    }

    #[test]
    fn the_server_moves_into_a_leaf_and_enables_what_its_group_is_offered() {
        let (tmp, g) = tree("cpuset cpu io memory hugetlb pids\n", "\n", "41\n42\n");
        let s = delegate(tmp.path(), "/svc/kiln.service");
        assert_eq!(s.group, g);
        assert_eq!(s.moved, 2);
        assert!(g.join(SERVER_LEAF).is_dir());
        // A plain file keeps only the last write: each controller was
        // written on its own, so one refusal cannot hide the others.
        assert_eq!(
            fs::read_to_string(g.join("cgroup.subtree_control")).expect("read"),
            "+pids"
        );
        assert_eq!(
            states(&s),
            [
                ("memory".into(), true),
                ("cpu".into(), true),
                ("pids".into(), true)
            ]
        );
        // No memory.swap.max in this tree: said, not hidden.
        assert!(
            s.controllers[0].detail.contains("swap not limited"),
            "{s:?}"
        );
    }

    #[test]
    fn only_memory_delegated_is_said_per_controller() {
        // What the H200 machine's session offered.
        let (tmp, _g) = tree("memory\n", "", "7\n");
        let s = delegate(tmp.path(), "/svc/kiln.service");
        assert_eq!(
            states(&s),
            [
                ("memory".into(), true),
                ("cpu".into(), false),
                ("pids".into(), false)
            ]
        );
        assert!(s.controllers[1].detail.contains("Delegate=yes"), "{s:?}");
        assert!(
            s.controllers[1].detail.contains("offered: [memory]"),
            "{s:?}"
        );
    }

    #[test]
    fn with_nothing_to_enable_nobody_is_moved() {
        // A login shell's group offered nothing kiln uses: its processes
        // stay where they are.
        let (tmp, g) = tree("hugetlb\n", "", "7\n8\n");
        let s = delegate(tmp.path(), "/svc/kiln.service");
        assert_eq!(s.moved, 0);
        assert!(!g.join(SERVER_LEAF).exists());
        assert!(s.controllers.iter().all(|c| !c.enforced), "{s:?}");
    }

    #[test]
    fn a_later_start_in_the_leaf_uses_the_same_group_and_moves_nothing() {
        let (tmp, g) = tree("cpu memory pids\n", "cpu memory pids\n", "");
        fs::create_dir(g.join(SERVER_LEAF)).expect("leaf");
        let s = delegate(tmp.path(), "/svc/kiln.service/kiln-server");
        assert_eq!(s.group, g);
        assert_eq!(s.moved, 0);
        assert!(s.controllers.iter().all(|c| c.enforced), "{s:?}");
    }

    #[test]
    fn the_root_group_is_never_emptied() {
        let tmp = tempfile::tempdir().expect("tmp");
        fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids\n").expect("w");
        fs::write(tmp.path().join("cgroup.subtree_control"), "").expect("w");
        fs::write(tmp.path().join("cgroup.procs"), "1\n").expect("w");
        let s = delegate(tmp.path(), "/");
        assert_eq!(s.moved, 0);
        assert!(!tmp.path().join(SERVER_LEAF).exists());
    }

    #[test]
    fn a_containers_namespace_root_is_emptied_like_any_group() {
        // In a cgroup namespace the mount is the container's group: it has a
        // cgroup.type, as every group but the real root does, and the kernel
        // refuses controllers below it while it holds processes.
        let tmp = tempfile::tempdir().expect("tmp");
        for (f, text) in [
            ("cgroup.controllers", "cpu memory pids\n"),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", "1\n57\n"),
            ("cgroup.type", "domain\n"),
        ] {
            fs::write(tmp.path().join(f), text).expect("w");
        }
        let s = delegate(tmp.path(), "/");
        assert_eq!(s.group, tmp.path());
        assert_eq!(s.moved, 2, "{s:?}");
        assert!(tmp.path().join(SERVER_LEAF).is_dir());
        assert!(s.controllers.iter().all(|c| c.enforced), "{s:?}");
    }

    #[test]
    fn a_group_kiln_cannot_write_is_said_for_every_controller() {
        let tmp = tempfile::tempdir().expect("tmp");
        // No such group: nothing can be created in it.
        let s = delegate(tmp.path(), "/gone");
        assert!(s.controllers.iter().all(|c| !c.enforced));
        assert!(
            s.controllers[0].detail.contains("cannot create groups"),
            "{s:?}"
        );
    }
}
