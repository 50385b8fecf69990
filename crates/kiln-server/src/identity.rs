//! Who each kiln user's tasks run as on this machine: never root, never
//! another user's uid. Users of one kiln do not trust each other, so each
//! gets a uid of their own: the Unix account the admin mapped
//! (`kiln user add NAME --unix-user U`, or `--map-unix-users` for accounts
//! of the same name), or one kiln allocates from a range it owns, like
//! systemd's DynamicUser, recorded in the store so it never changes. The
//! user's space is owned by that uid; kiln's data folder, store and tokens
//! are not readable to it.
//!
//! Only a root server can do this. A server that is not root runs every
//! task as its own uid, and `kiln nodes` and the README say what that means.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use kiln_engine::local::RunAs;
use kiln_store::{Identity, Store};
use serde::Serialize;

/// The uids (and same-numbered gids) kiln may give its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

/// Far above the accounts of a machine (1000-60000), systemd's dynamic
/// users (61184-65519) and the usual subordinate ranges of containers
/// (100000 and up, 65536 per user).
pub const DEFAULT_UID_RANGE: UidRange = UidRange {
    first: 1_500_000_000,
    last: 1_500_999_999,
};

impl std::str::FromStr for UidRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?}: give a range FIRST-LAST, e.g. 1500000000-1500999999"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{x:?} is not a uid"))
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if first < 1000 || last < first || last == u32::MAX {
            return Err(format!(
                "{s:?}: the range must start at 1000 or above and end after it starts, below 4294967295"
            ));
        }
        Ok(UidRange { first, last })
    }
}

/// The lowest uid of `range` that nobody holds: not another kiln user, not
/// an account of the machine.
pub fn pick_uid(range: UidRange, taken: &BTreeSet<u32>) -> Option<u32> {
    let mut want = range.first;
    for &t in taken.range(range.first..=range.last) {
        if t != want {
            break;
        }
        want = want.checked_add(1)?;
    }
    (want <= range.last).then_some(want)
}

/// A Unix account's uid and gid, never root's.
pub fn unix_account(name: &str) -> Result<(u32, u32), String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) if u.uid.as_raw() == 0 || u.gid.as_raw() == 0 => Err(format!(
            "Unix account {name} is root's (uid or gid 0); tasks never run as root"
        )),
        // System accounts and groups (daemons, disk, shadow) are not people's.
        Ok(Some(u)) if u.uid.as_raw() < 1000 || u.gid.as_raw() < 100 => Err(format!(
            "Unix account {name} is a system account (uid {}, gid {}); map people's accounts (uid 1000 and up)",
            u.uid.as_raw(),
            u.gid.as_raw()
        )),
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(format!("there is no Unix account {name} on this machine")),
        Err(e) => Err(format!("cannot look up Unix account {name}: {e}")),
    }
}

/// How tasks are kept apart here, said in `kiln nodes`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IsolationView {
    /// Each user's tasks run as that user's own uid.
    pub per_user_uids: bool,
    pub uid_range: Option<UidRange>,
    pub map_unix_users: bool,
    /// In plain words: what is and is not isolated.
    pub note: String,
}

pub struct Identities {
    store: Arc<dyn Store>,
    /// None: kiln is not root and cannot change uids.
    range: Option<UidRange>,
    map_unix_users: bool,
    spaces: PathBuf,
    known: RwLock<HashMap<String, RunAs>>,
    /// One allocation at a time, so two users never get the same uid.
    assigning: std::sync::Mutex<()>,
}

impl Identities {
    pub fn new(
        store: Arc<dyn Store>,
        range: Option<UidRange>,
        map_unix_users: bool,
        spaces: PathBuf,
    ) -> Self {
        Identities {
            store,
            range,
            map_unix_users,
            spaces,
            known: RwLock::new(HashMap::new()),
            assigning: std::sync::Mutex::new(()),
        }
    }

    pub fn view(&self) -> IsolationView {
        IsolationView {
            per_user_uids: self.range.is_some(),
            uid_range: self.range,
            map_unix_users: self.map_unix_users,
            note: if self.range.is_some() {
                "each user's tasks run as that user's own unprivileged uid, which owns the \
                 user's space and cannot read kiln's data folder or other users' spaces"
                    .into()
            } else {
                "kiln is not running as root: every task runs as kiln's own uid, so tasks of \
                 different users are kept apart only by the sandbox's mounts and namespaces, \
                 not by file permissions"
                    .into()
            },
        }
    }

    /// Who `user`'s tasks and file operations run as; assigns (and records)
    /// an identity on first use. None: kiln is not root.
    pub fn run_as(&self, user: &str) -> Result<Option<RunAs>, String> {
        if self.range.is_none() {
            return Ok(None);
        }
        if let Some(id) = self.known.read().ok().and_then(|k| k.get(user).copied()) {
            return Ok(Some(id));
        }
        let _one = self
            .assigning
            .lock()
            .map_err(|_| "identity lock poisoned")?;
        let u = self
            .store
            .user(user)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no user {user}"))?;
        let (id, new) = match u.identity {
            Some(id) => (id, false),
            None => {
                let id = self.choose(user)?;
                self.store
                    .set_identity(user, &id)
                    .map_err(|e| e.to_string())?;
                tracing::info!(user, uid = id.uid, gid = id.gid, unix_user = ?id.unix_user, "user's tasks run as their own uid");
                (id, true)
            }
        };
        let run = RunAs {
            uid: id.uid,
            gid: id.gid,
        };
        if new {
            // The space is the user's: whatever is in it from before kiln
            // gave uids becomes theirs (the server makes files in it as
            // them from now on).
            chown_tree(&self.spaces.join(user), run)?;
        }
        if let Ok(mut k) = self.known.write() {
            k.insert(user.to_owned(), run);
        }
        Ok(Some(run))
    }

    /// Maps `user` to a Unix account, as the admin asked; refused when the
    /// account is root's or another user's.
    pub fn map_unix(&self, user: &str, account: &str) -> Result<(), String> {
        if self.range.is_none() {
            return Err(
                "kiln is not running as root, so tasks cannot run as another Unix account".into(),
            );
        }
        let (uid, gid) = unix_account(account)?;
        let _one = self
            .assigning
            .lock()
            .map_err(|_| "identity lock poisoned")?;
        self.store
            .set_identity(
                user,
                &Identity {
                    uid,
                    gid,
                    unix_user: Some(account.to_owned()),
                },
            )
            .map_err(|e| e.to_string())?;
        if let Ok(mut k) = self.known.write() {
            k.remove(user);
        }
        chown_tree(&self.spaces.join(user), RunAs { uid, gid })
    }

    fn choose(&self, user: &str) -> Result<Identity, String> {
        if self.map_unix_users {
            if let Ok((uid, gid)) = unix_account(user) {
                return Ok(Identity {
                    uid,
                    gid,
                    unix_user: Some(user.to_owned()),
                });
            }
        }
        let range = self.range.ok_or("kiln is not root")?;
        let mut taken: BTreeSet<u32> = self
            .store
            .users()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|u| u.identity.map(|i| i.uid))
            .collect();
        // Never an account of the machine, should one sit in the range.
        loop {
            let uid = pick_uid(range, &taken)
                .ok_or_else(|| format!("no free uid left in {}-{}", range.first, range.last))?;
            let exists = matches!(
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
                Ok(Some(_))
            ) || matches!(
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(uid)),
                Ok(Some(_))
            );
            if !exists {
                return Ok(Identity {
                    uid,
                    gid: uid,
                    unix_user: None,
                });
            }
            taken.insert(uid);
        }
    }
}

/// Gives a folder and everything beneath it to `id`, without following
/// any link: each level is opened by descriptor with `O_NOFOLLOW` from the
/// one above, so a task that swaps a folder for a link while this runs
/// makes it skip that entry, never reach outside (a link itself is given,
/// never what it points to).
pub fn chown_tree(root: &Path, id: RunAs) -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let fail = |what: &str, p: &Path| {
        format!(
            "cannot give {} to uid {} ({what}): {}",
            p.display(),
            id.uid,
            std::io::Error::last_os_error()
        )
    };
    let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|_| "a name holds a NUL byte".to_owned());
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let root_c = c(root.as_os_str().as_bytes())?;
    // SAFETY: a valid path; the result is checked and owned below.
    let fd = unsafe { libc::open(root_c.as_ptr(), dir_flags) };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => Ok(()),
            _ => Err(fail("open", root)),
        };
    }
    // SAFETY: fd was just opened and is owned here alone.
    let mut stack = vec![(unsafe { OwnedFd::from_raw_fd(fd) }, root.to_owned())];
    while let Some((dir, path)) = stack.pop() {
        // SAFETY: fchown on a descriptor we own.
        if unsafe { libc::fchown(dir.as_raw_fd(), id.uid, id.gid) } != 0 {
            return Err(fail("chown", &path));
        }
        // Listed through the descriptor itself, not by path again.
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name_c = c(name.as_bytes())?;
            // SAFETY: a directory descriptor we own and a valid name.
            let sub = unsafe { libc::openat(dir.as_raw_fd(), name_c.as_ptr(), dir_flags) };
            if sub >= 0 {
                // SAFETY: sub was just opened and is owned here alone.
                stack.push((unsafe { OwnedFd::from_raw_fd(sub) }, path.join(&name)));
                continue;
            }
            // Not a folder (or a link to one): the entry itself.
            // SAFETY: as above; AT_SYMLINK_NOFOLLOW changes a link, not
            // its target.
            let r = unsafe {
                libc::fchownat(
                    dir.as_raw_fd(),
                    name_c.as_ptr(),
                    id.uid,
                    id.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
                return Err(fail("chown", &path.join(&name)));
            }
        }
    }
    Ok(())
}

pub use kiln_engine::local::perms::{give, set_mode};

/// Runs file operations of the calling thread as `id` until dropped: files
/// it makes are the user's, and the kernel checks the user's permissions,
/// not root's (setfsuid is per thread and drops the file capabilities).
pub struct ActingAs {
    restore: Option<(u32, u32)>,
}

impl ActingAs {
    pub fn new(id: Option<RunAs>) -> ActingAs {
        let Some(id) = id else {
            return ActingAs { restore: None };
        };
        // SAFETY: setfsuid/setfsgid only change this thread's credentials;
        // they return the previous value.
        let (gid, uid) = unsafe { (libc::setfsgid(id.gid), libc::setfsuid(id.uid)) };
        ActingAs {
            restore: Some((uid as u32, gid as u32)),
        }
    }
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.restore {
            // SAFETY: as above; back to the thread's own ids.
            unsafe {
                libc::setfsuid(uid);
                libc::setfsgid(gid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_uid_of_the_range_is_picked() {
        let r = UidRange {
            first: 10,
            last: 13,
        };
        let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(pick_uid(r, &set(&[])), Some(10));
        assert_eq!(pick_uid(r, &set(&[10, 11, 13, 5, 99])), Some(12));
        assert_eq!(pick_uid(r, &set(&[10, 11, 12, 13])), None);
        assert_eq!(pick_uid(r, &set(&[1, 2])), Some(10));
    }

    #[test]
    fn ranges_below_1000_or_upside_down_are_refused() {
        assert_eq!(
            "2000-2999".parse::<UidRange>(),
            Ok(UidRange {
                first: 2000,
                last: 2999
            })
        );
        for bad in ["0-100", "3000-2000", "x-2", "5000", "1000-4294967295"] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn root_is_never_an_account_to_map() {
        assert!(unix_account("root").is_err());
        assert!(unix_account("no-such-account-kiln").is_err());
    }
}
