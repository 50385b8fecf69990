//! Typed identifiers and the naming rules they enforce.
//!
//! A job is addressed as `user~name` (OpenPAI's convention) and a task as
//! `<role>-<index>`. The rules here are what make those spellings unambiguous:
//! user names never contain `~`, role names never contain `-`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest job, role, user or label name kiln accepts; keeps ids, env names and
/// file paths built from them well under filesystem limits.
pub const MAX_NAME_LEN: usize = 128;

/// `^[A-Za-z0-9\-._]+$`: OpenPAI's jobName rule without `~`. A job is
/// addressed as `user~name`, or by its name alone within the caller's own
/// jobs; a name with `~` (`tilde~x`) would read as user `tilde`, so the job
/// could not be addressed that way.
pub fn check_job_name(name: &str) -> Result<(), String> {
    check_chars(name, "job name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
    })
    .map_err(|e| {
        if name.contains('~') {
            format!("{e} ('~' separates the user from the name in a job id user~name)")
        } else {
            e
        }
    })
}

/// Queue names follow the job-name rule: they appear in the same places
/// (OpenPAI's virtualCluster, URLs, table columns).
pub fn check_queue_name(name: &str) -> Result<(), String> {
    check_chars(name, "queue name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
    })
}

/// The rule for names of jobs already stored: before `~` was refused in new
/// names, OpenPAI's rule allowed it, and such jobs must still load.
pub fn check_stored_job_name(name: &str) -> Result<(), String> {
    check_chars(name, "job name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
    })
}

/// `^[A-Za-z0-9._~]+$` (OpenPAI's taskRole.name and portType.label rule).
pub fn check_role_name(name: &str) -> Result<(), String> {
    check_chars(name, "name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~')
    })
}

/// Port labels follow the role-name rule.
pub fn check_port_label(label: &str) -> Result<(), String> {
    check_role_name(label)
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]*$`: like a Unix login, never containing `~`, so
/// `user~name` splits at its first `~`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    check_chars(name, "user name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })?;
    if name.starts_with(['.', '_', '-']) {
        return Err(format!(
            "must start with a letter or digit, got {}",
            quoted(name)
        ));
    }
    Ok(())
}

fn check_chars(name: &str, what: &str, ok: impl Fn(char) -> bool) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} must be at most {MAX_NAME_LEN} characters, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "{what} {} contains {:?}; allowed are letters, digits and {}",
            quoted(name),
            bad,
            allowed_punctuation(&ok)
        ));
    }
    Ok(())
}

fn allowed_punctuation(ok: &impl Fn(char) -> bool) -> String {
    ['-', '.', '_', '~']
        .into_iter()
        .filter(|c| ok(*c))
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a user value for an error message, shortened so a hostile 1 MB name
/// does not become a 1 MB message.
pub(crate) fn quoted(s: &str) -> String {
    const SHOWN: usize = 60;
    if s.chars().count() <= SHOWN {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{head:?}…")
    }
}

/// `user~name`: the id of a job, unique across the platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId {
    user: String,
    name: String,
}

impl JobId {
    pub fn new(user: &str, name: &str) -> Result<Self, String> {
        check_user_name(user)?;
        check_stored_job_name(name)?;
        Ok(Self {
            user: user.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}~{}", self.user, self.name)
    }
}

impl FromStr for JobId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, name) = s
            .split_once('~')
            .ok_or_else(|| format!("job id {} must be user~name", quoted(s)))?;
        Self::new(user, name)
    }
}

impl TryFrom<String> for JobId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

/// `<role>-<index>`, e.g. `worker-1`: one task of a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId {
    role: String,
    index: u32,
}

impl TaskId {
    pub fn new(role: &str, index: u32) -> Result<Self, String> {
        check_role_name(role)?;
        Ok(Self {
            role: role.to_owned(),
            index,
        })
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    pub fn index(&self) -> u32 {
        self.index
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.role, self.index)
    }
}

impl FromStr for TaskId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "task id {} must be <role>-<index>, e.g. worker-0",
                quoted(s)
            )
        };
        let (role, index) = s.rsplit_once('-').ok_or_else(bad)?;
        let index = index.parse::<u32>().map_err(|_| bad())?;
        Self::new(role, index)
    }
}

impl TryFrom<String> for TaskId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_round_trips_and_splits_at_first_tilde() {
        let id: JobId = "alice~run~2".parse().unwrap();
        assert_eq!(id.user(), "alice");
        assert_eq!(id.name(), "run~2");
        assert_eq!(id.to_string(), "alice~run~2");
    }

    #[test]
    fn job_id_rejects_bad_parts() {
        assert!("nouser".parse::<JobId>().is_err());
        assert!("~name".parse::<JobId>().is_err());
        assert!("alice~".parse::<JobId>().is_err());
        assert!("al/ice~x".parse::<JobId>().is_err());
        assert!("alice~a/b".parse::<JobId>().is_err());
        assert!("-alice~x".parse::<JobId>().is_err());
    }

    #[test]
    fn task_id_round_trips() {
        let id: TaskId = "worker-12".parse().unwrap();
        assert_eq!((id.role(), id.index()), ("worker", 12));
        assert_eq!(id.to_string(), "worker-12");
        assert!("worker".parse::<TaskId>().is_err());
        assert!("worker-x".parse::<TaskId>().is_err());
        assert!("wor/ker-1".parse::<TaskId>().is_err());
    }

    #[test]
    fn name_rules_follow_openpai() {
        assert!(check_job_name("a-b.c_d9").is_ok());
        assert!(check_job_name("a b").is_err());
        assert!(check_job_name("").is_err());
        assert!(check_role_name("a.b_c~d").is_ok());
        assert!(check_role_name("a-b").is_err());
        assert!(check_job_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    /// `admin~tilde~x` could not be addressed as `tilde~x` (that reads as
    /// user `tilde`), so new names refuse `~`; ids stored before still load.
    #[test]
    fn new_job_names_refuse_tilde_but_stored_ids_still_parse() {
        let msg = check_job_name("tilde~x").unwrap_err();
        assert!(msg.contains("'~'"), "{msg}");
        assert!(msg.contains("user~name"), "{msg}");
        let old: JobId = "admin~tilde~x"
            .parse()
            .expect("an id stored before the rule");
        assert_eq!(old.name(), "tilde~x");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let msg = check_job_name(&format!("{} bad", "x".repeat(500))).unwrap_err();
        assert!(msg.len() < 300, "{msg}");
    }
}
