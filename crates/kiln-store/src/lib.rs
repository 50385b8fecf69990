//! Persistence: the store is the source of truth the control loop converges
//! to. One trait, [`Store`], with SQLite as the embedded backend; the test
//! suite in `tests/` is written against the trait so a PostgreSQL backend can
//! run the same one.
//!
//! Every state change of a job is one [`Change`] applied in one transaction:
//! the job's fields, its tasks and the events that explain the change land
//! together or not at all.

mod credentials;
mod error;
mod queues;
mod records;
mod sqlite;

pub use error::StoreError;
pub use records::{
    Change, Event, Identity, JobFilter, JobPatch, JobRecord, NewEvent, NewJob, QueueRecord,
    RegistryCredential, Revoke, TaskRecord, TokenLife, Usage, User,
};
pub use sqlite::SqliteStore;

use kiln_spec::JobId;

pub trait Store: Send + Sync {
    /// Stores a new WAITING job with a `submitted` event. Fails with
    /// [`StoreError::Conflict`] when the user already has a job of that name.
    fn submit(&self, job: &NewJob) -> Result<JobRecord, StoreError>;

    fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError>;

    fn job_by_key(&self, key: i64) -> Result<Option<JobRecord>, StoreError>;

    /// Newest first, filtered and paginated.
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError>;

    /// WAITING, RUNNING and STOPPING jobs in submission order: what the
    /// control loop works on, and what it reloads after a restart.
    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;

    /// How many jobs are in each state (for /metrics).
    fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Applies one change atomically and returns the job as it now is.
    fn apply(&self, key: i64, change: &Change) -> Result<JobRecord, StoreError>;

    fn tasks(&self, key: i64, attempt: u32) -> Result<Vec<TaskRecord>, StoreError>;

    fn events(&self, key: i64) -> Result<Vec<Event>, StoreError>;

    /// Removes a finished job with its tasks and events; refuses others.
    fn delete_job(&self, key: i64) -> Result<(), StoreError>;

    fn add_user(&self, user: &User) -> Result<(), StoreError>;

    /// Sets (or, with None, removes) a user's password hash.
    fn set_password(&self, name: &str, password_hash: Option<&str>) -> Result<(), StoreError>;

    /// Records who a user's tasks run as; a uid is one user's only.
    fn set_identity(&self, name: &str, id: &Identity) -> Result<(), StoreError>;

    fn user(&self, name: &str) -> Result<Option<User>, StoreError>;

    fn users(&self) -> Result<Vec<User>, StoreError>;

    /// Records an API token by its hash (never the token itself).
    fn add_token(&self, user: &str, token_hash: &str, life: TokenLife) -> Result<(), StoreError>;

    /// The token's user, unless the token is unknown or expired at `now_ms`.
    fn user_by_token(&self, token_hash: &str, now_ms: u64) -> Result<Option<User>, StoreError>;

    /// Forgets one token; false when it was not known.
    fn revoke_token(&self, token_hash: &str) -> Result<bool, StoreError>;

    /// Forgets a user's tokens; returns how many.
    fn revoke_tokens(&self, user: &str, which: Revoke) -> Result<usize, StoreError>;

    /// Forgets tokens that expired by `now_ms`; returns how many.
    fn purge_expired_tokens(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Every user's fair-share usage as last recorded.
    fn usage(&self) -> Result<Vec<Usage>, StoreError>;

    /// Creates a queue, or replaces an existing one's quota and user limit
    /// (keeping its creation time and its users). The record's `users` are
    /// granted as well, so a queue and its first users land together.
    fn put_queue(&self, queue: &QueueRecord) -> Result<(), StoreError>;

    /// Removes a queue and its grants; false when there was none. Jobs that
    /// named it keep the name and count as `default` from then on.
    fn remove_queue(&self, name: &str) -> Result<bool, StoreError>;

    /// Every queue the admin made, by name, with its users.
    fn queues(&self) -> Result<Vec<QueueRecord>, StoreError>;

    /// Lets `user` submit to `queue`; granting twice is no error. Fails with
    /// [`StoreError::NotFound`] when the queue does not exist.
    fn grant_queue(&self, queue: &str, user: &str) -> Result<(), StoreError>;

    /// Takes `queue` away from `user`; false when it was not granted.
    fn revoke_queue(&self, queue: &str, user: &str) -> Result<bool, StoreError>;

    /// Stores a user's credential for a registry, replacing theirs for it.
    fn put_credential(&self, credential: &RegistryCredential) -> Result<(), StoreError>;

    /// Forgets a user's credential for a registry; false when there was none.
    fn remove_credential(&self, user: &str, registry: &str) -> Result<bool, StoreError>;

    /// A user's credentials, by registry.
    fn credentials(&self, user: &str) -> Result<Vec<RegistryCredential>, StoreError>;

    /// Records that an image repository was pulled with credentials: from
    /// then on every start pulls it afresh with the starting user's own
    /// rights. Never forgotten (a logout leaves the image on machines).
    fn mark_private_image(&self, repository: &str, at_ms: u64) -> Result<(), StoreError>;

    /// Whether anyone pulled this image repository with credentials.
    fn is_private_image(&self, repository: &str) -> Result<bool, StoreError>;
}
