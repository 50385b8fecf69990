//! Variables the dynamic loader and the C library act on as a program
//! starts, before its own code runs: `LD_PRELOAD` names a library to run
//! inside it. A task's environment is its user's to choose, so these must
//! reach the task's own processes only, never a helper kiln runs as root to
//! set the task up (bwrap and setpriv, a container engine's client): there
//! they would run the user's code as root. glibc ignores them only in
//! set-uid programs, which kiln's helpers are not.

/// glibc's list of variables it drops for set-uid programs
/// (`unsecvars.h`); every other `LD_*` and `MALLOC_*` is the loader's or
/// malloc's too.
const AT_START: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
];

/// Whether a variable acts on a program before its code runs.
pub fn acts_at_start(name: &str) -> bool {
    name.starts_with("LD_") || name.starts_with("MALLOC_") || AT_START.contains(&name)
}

/// Variables in order, as a task gets them.
pub type Env = Vec<(String, String)>;

/// Splits an environment into what a root helper may be started with and
/// what must wait for the task's own process (in their order).
pub fn split(env: Env) -> (Env, Env) {
    env.into_iter().partition(|(k, _)| !acts_at_start(k))
}

/// `env`'s arguments that set `deferred` for the command after them.
pub fn env_args(deferred: &[(String, String)]) -> Vec<String> {
    deferred.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaders_variables_wait_for_the_task_and_the_rest_do_not() {
        let env: Vec<(String, String)> = [
            ("PATH", "/usr/bin"),
            ("LD_PRELOAD", "/mnt/evil.so"),
            ("RANK", "0"),
            ("GLIBC_TUNABLES", "glibc.malloc.check=3"),
            ("LD_LIBRARY_PATH", "/opt/lib"),
            ("MALLOC_ARENA_MAX", "2"),
            ("TMPDIR", "/tmp"),
            ("LDFLAGS", "-L/x"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let (now, later) = split(env);
        let names = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(names(&now), ["PATH", "RANK", "LDFLAGS"]);
        assert_eq!(
            names(&later),
            [
                "LD_PRELOAD",
                "GLIBC_TUNABLES",
                "LD_LIBRARY_PATH",
                "MALLOC_ARENA_MAX",
                "TMPDIR"
            ]
        );
        assert_eq!(env_args(&later[..1]), ["LD_PRELOAD=/mnt/evil.so"]);
    }
}
