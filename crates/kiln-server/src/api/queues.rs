//! `/api/v1/queues`: the admin makes queues with a guaranteed share and
//! grants them to users; everyone sees them and which they may use. Jobs
//! name their queue in the spec (`queue`, OpenPAI's `virtualCluster`,
//! Kubeflow's `schedulingPolicy.queue`); admission refuses the others.

pub use super::queue_live::QueueLiveView;
use super::users::json_body;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_sched::{GpuQuota, Quota, DEFAULT_QUEUE};
use kiln_spec::completion::JobState;
use kiln_store::QueueRecord;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::extract::{Body, P};
use super::{blocking, AppState, Caller, Problem};
use crate::admission::may_use;

/// Bounds that keep the scheduler's sums over quotas far from overflow.
const MAX_QUOTA_CPUS: u64 = 1 << 24;
const MAX_QUOTA_MEMORY_MB: u64 = 1 << 40;
const MAX_QUOTA_GPUS: u64 = 1 << 20;
const MAX_GPU_ENTRIES: usize = 32;
const MAX_USERS_PER_REQUEST: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuQuotaView {
    /// A case-insensitive part of the GPU model name (like a task's
    /// gpuType); absent: any model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    pub cpus: u64,
    pub memory_mb: u64,
    pub gpus: Vec<GpuQuotaView>,
}

/// A quota as sent: CPUs and memory may be left out.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaBody {
    /// Default: the same share of the cluster's CPUs as the GPUs are of its
    /// GPUs (fixed when the queue is written, not followed later).
    pub cpus: Option<u64>,
    /// MiB; default as for cpus.
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub gpus: Vec<GpuQuotaView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub name: String,
    pub quota: QuotaView,
    /// At most this many GPUs running per user in this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_max_gpus: Option<u64>,
    /// Users granted the queue (the admin may use every queue, everyone
    /// `default`).
    pub users: Vec<String>,
    /// Whether the caller may submit to it.
    pub may_use: bool,
    /// False for `default` while the admin has not given it a quota: then
    /// it is guaranteed what the other queues are not.
    pub explicit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<u64>,
    /// What it holds and who waits, as of the last scheduling pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub live: Option<super::queue_live::QueueLiveView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewQueue {
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]+$")]
    name: String,
    quota: QuotaBody,
    user_max_gpus: Option<u64>,
    #[serde(default)]
    users: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueuePatch {
    quota: Option<QuotaBody>,
    /// null removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, nullable)]
    user_max_gpus: Option<Option<u64>>,
    #[serde(default)]
    add_users: Vec<String>,
    #[serde(default)]
    remove_users: Vec<String>,
}

/// Tells a field sent as null (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemovedQueue {
    pub name: String,
}

/// Queues are listed for everyone, so changing one is refused openly.
fn admin_only(caller: &Caller) -> Result<(), Problem> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "only the admin manages queues",
        ))
    }
}

fn quota_view(q: &Quota) -> QuotaView {
    QuotaView {
        cpus: q.cpus,
        memory_mb: q.memory_mb,
        gpus: q
            .gpus
            .iter()
            .map(|g| GpuQuotaView {
                model: g.model.clone(),
                count: g.count,
            })
            .collect(),
    }
}

fn view(q: &QueueRecord, caller: &Caller) -> QueueView {
    QueueView {
        name: q.name.clone(),
        quota: quota_view(&q.quota),
        user_max_gpus: q.user_max_gpus,
        users: q.users.clone(),
        may_use: may_use(&q.name, &q.users, &caller.name, caller.is_admin),
        explicit: true,
        created_at_ms: Some(q.created_at_ms),
        live: None,
    }
}

fn nodes(state: &AppState) -> Vec<kiln_sched::Node> {
    state
        .control
        .cluster()
        .nodes
        .into_iter()
        .map(|n| n.node)
        .collect()
}

/// Every queue, with `default` (given what the others are not, unless the
/// admin set its quota) always among them.
fn all_views(state: &AppState, queues: &[QueueRecord], caller: &Caller) -> Vec<QueueView> {
    let mut out: Vec<QueueView> = queues.iter().map(|q| view(q, caller)).collect();
    if !queues.iter().any(|q| q.name == DEFAULT_QUEUE) {
        let others: Vec<&Quota> = queues.iter().map(|q| &q.quota).collect();
        let quota = kiln_sched::quota::remainder(&nodes(state), &others);
        out.insert(
            0,
            QueueView {
                name: DEFAULT_QUEUE.into(),
                quota: quota_view(&quota),
                user_max_gpus: None,
                users: Vec::new(),
                may_use: true,
                explicit: false,
                created_at_ms: None,
                live: None,
            },
        );
    }
    let sched: Vec<kiln_sched::Queue> = kiln_sched::quota::with_default(
        &nodes(state),
        &queues.iter().map(QueueRecord::to_queue).collect::<Vec<_>>(),
    );
    for v in &mut out {
        v.live = Some(super::queue_live::live(state, &sched, &v.name, &v.users));
    }
    out
}

/// The quota as given, CPUs and memory defaulted to the GPUs' share of the
/// cluster; each bad field named under `at`.
fn quota_from(body: &QuotaBody, at: &str, nodes: &[kiln_sched::Node]) -> Result<Quota, Problem> {
    if body.gpus.len() > MAX_GPU_ENTRIES {
        return Err(Problem::field(
            &format!("{at}.gpus"),
            format!("at most {MAX_GPU_ENTRIES} entries"),
        ));
    }
    let mut gpus = Vec::new();
    for (i, g) in body.gpus.iter().enumerate() {
        let path = format!("{at}.gpus[{i}]");
        if g.count > MAX_QUOTA_GPUS {
            return Err(Problem::field(
                &format!("{path}.count"),
                format!("must be at most {MAX_QUOTA_GPUS}, got {}", g.count),
            ));
        }
        let model = match g.model.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(Problem::field(
                    &format!("{path}.model"),
                    "must not be empty; leave it out for any model",
                ))
            }
            Some(m) => Some(m.to_owned()),
        };
        gpus.push(GpuQuota {
            model,
            count: g.count,
        });
    }
    let gpu_count: u64 = gpus.iter().map(|g| g.count).sum();
    let total_gpus: u64 = nodes.iter().map(|n| n.gpus.len() as u64).sum();
    let share = |total: u64, what: &str, path: &str| -> Result<u64, Problem> {
        if total_gpus == 0 {
            return Err(Problem::field(
                path,
                format!("this cluster has no GPUs to take a share from; give {what}"),
            ));
        }
        let n = u128::from(total) * u128::from(gpu_count.min(total_gpus)) / u128::from(total_gpus);
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    };
    let cpus = match body.cpus {
        Some(c) => c,
        None => share(
            nodes.iter().map(|n| u64::from(n.cpus)).sum(),
            "cpus",
            &format!("{at}.cpus"),
        )?,
    };
    let memory_mb = match body.memory_mb {
        Some(m) => m,
        None => share(
            nodes.iter().map(|n| n.memory_mb).sum(),
            "memoryMb",
            &format!("{at}.memoryMb"),
        )?,
    };
    if cpus > MAX_QUOTA_CPUS {
        return Err(Problem::field(
            &format!("{at}.cpus"),
            format!("must be at most {MAX_QUOTA_CPUS}, got {cpus}"),
        ));
    }
    if memory_mb > MAX_QUOTA_MEMORY_MB {
        return Err(Problem::field(
            &format!("{at}.memoryMb"),
            format!("must be at most {MAX_QUOTA_MEMORY_MB}, got {memory_mb}"),
        ));
    }
    Ok(Quota {
        cpus,
        memory_mb,
        gpus,
    })
}

/// Every name in `names` is a user kiln knows; the first that is not is
/// named under `at`.
async fn check_users(state: &AppState, names: &[String], at: &str) -> Result<(), Problem> {
    if names.len() > MAX_USERS_PER_REQUEST {
        return Err(Problem::field(
            at,
            format!("at most {MAX_USERS_PER_REQUEST} users at once"),
        ));
    }
    let store = Arc::clone(&state.store);
    let users = blocking(move || store.users()).await?;
    for (i, n) in names.iter().enumerate() {
        if !users.iter().any(|u| &u.name == n) {
            return Err(Problem::field(
                &format!("{at}[{i}]"),
                format!("user \"{n}\" does not exist"),
            ));
        }
    }
    Ok(())
}

async fn stored(state: &AppState) -> Result<Vec<QueueRecord>, Problem> {
    let store = Arc::clone(&state.store);
    blocking(move || store.queues()).await
}

#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    responses((status = 200, body = Vec<QueueView>), (status = 401, body = Problem)))]
/// Every queue, `default` included, and whether the caller may use each.
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<QueueView>>, Problem> {
    let queues = stored(&state).await?;
    Ok(Json(all_views(&state, &queues, &caller)))
}

#[utoipa::path(get, path = "/api/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "queue name")),
    responses((status = 200, body = QueueView), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// One queue.
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    P(name): P<String>,
) -> Result<Json<QueueView>, Problem> {
    let queues = stored(&state).await?;
    all_views(&state, &queues, &caller)
        .into_iter()
        .find(|q| q.name == name)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("queue {name} not found")))
}

#[utoipa::path(post, path = "/api/v1/queues", tag = "queues", request_body = NewQueue,
    responses((status = 201, body = QueueView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
/// Makes a queue (admin only). `default` may be made too, to give it an
/// explicit quota instead of what the others leave.
pub async fn add(
    caller: Caller,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<(StatusCode, Json<QueueView>), Problem> {
    admin_only(&caller)?;
    let req: NewQueue = json_body(
        &body,
        r#"{"name": "vision", "quota": {"cpus": 32, "memoryMb": 262144, "gpus": [{"model": "A100", "count": 4}]}}"#,
    )?;
    kiln_spec::ids::check_queue_name(&req.name).map_err(|m| Problem::field("name", m))?;
    let quota = quota_from(&req.quota, "quota", &nodes(&state))?;
    check_users(&state, &req.users, "users").await?;
    let record = QueueRecord {
        name: req.name.clone(),
        quota,
        user_max_gpus: req.user_max_gpus,
        users: req.users,
        created_at_ms: crate::now_ms(),
    };
    let store = Arc::clone(&state.store);
    let name = req.name.clone();
    let created = blocking(move || {
        if store.queues()?.iter().any(|q| q.name == record.name) {
            return Err(kiln_store::StoreError::Conflict(format!(
                "queue {}",
                record.name
            )));
        }
        store.put_queue(&record)?;
        Ok(record)
    })
    .await
    .map_err(|p| {
        if p.status == 409 {
            Problem::conflict(format!(
                "queue {name} already exists; change it with PATCH /api/v1/queues/{name}"
            ))
        } else {
            p
        }
    })?;
    tracing::info!(queue = %created.name, by = %caller.name, "queue created");
    state.control.queues_changed();
    Ok((StatusCode::CREATED, Json(view(&created, &caller))))
}

#[utoipa::path(patch, path = "/api/v1/queues/{name}", tag = "queues", request_body = QueuePatch,
    params(("name" = String, Path, description = "queue name")),
    responses((status = 200, body = QueueView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
/// Changes a queue's quota, user limit or users (admin only).
pub async fn patch(
    caller: Caller,
    State(state): State<AppState>,
    P(name): P<String>,
    Body(body): Body,
) -> Result<Json<QueueView>, Problem> {
    admin_only(&caller)?;
    let req: QueuePatch = json_body(
        &body,
        r#"{"quota": {...}, "userMaxGpus": 2, "addUsers": ["bob"], "removeUsers": []}"#,
    )?;
    let quota = match &req.quota {
        Some(q) => Some(quota_from(q, "quota", &nodes(&state))?),
        None => None,
    };
    check_users(&state, &req.add_users, "addUsers").await?;
    let store = Arc::clone(&state.store);
    let n = name.clone();
    let updated = blocking(move || {
        let Some(mut q) = store.queues()?.into_iter().find(|q| q.name == n) else {
            return Err(kiln_store::StoreError::NotFound(format!("queue {n}")));
        };
        if let Some(quota) = quota {
            q.quota = quota;
        }
        if let Some(limit) = req.user_max_gpus {
            q.user_max_gpus = limit;
        }
        q.users = req.add_users.clone();
        store.put_queue(&q)?;
        for u in &req.remove_users {
            store.revoke_queue(&n, u)?;
        }
        store
            .queues()?
            .into_iter()
            .find(|q| q.name == n)
            .ok_or_else(|| kiln_store::StoreError::NotFound(format!("queue {n}")))
    })
    .await?;
    tracing::info!(queue = %name, by = %caller.name, "queue changed");
    state.control.queues_changed();
    Ok(Json(view(&updated, &caller)))
}

#[utoipa::path(delete, path = "/api/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "queue name")),
    responses((status = 200, body = RemovedQueue), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
/// Removes a queue (admin only). Refused while jobs wait or run in it: stop
/// them or let them finish first. Removing `default` removes its explicit
/// quota; it then gets what the other queues leave.
pub async fn remove(
    caller: Caller,
    State(state): State<AppState>,
    P(name): P<String>,
) -> Result<Json<RemovedQueue>, Problem> {
    admin_only(&caller)?;
    let store = Arc::clone(&state.store);
    let n = name.clone();
    let busy = blocking(move || {
        if !store.queues()?.iter().any(|q| q.name == n) {
            return Err(kiln_store::StoreError::NotFound(format!("queue {n}")));
        }
        // `default` cannot go away: its jobs stay in it.
        if n != DEFAULT_QUEUE {
            let busy = store
                .unfinished_jobs()?
                .into_iter()
                .filter(|j| {
                    j.queue == n && matches!(j.state, JobState::Waiting | JobState::Running)
                })
                .count();
            if busy > 0 {
                return Ok(busy);
            }
        }
        store.remove_queue(&n)?;
        Ok(0)
    })
    .await?;
    if busy > 0 {
        return Err(Problem::conflict(format!(
            "queue {name} has {busy} waiting or running job{}; stop them or let them finish, then remove it",
            if busy == 1 { "" } else { "s" }
        )));
    }
    tracing::info!(queue = %name, by = %caller.name, "queue removed");
    state.control.queues_changed();
    Ok(Json(RemovedQueue { name }))
}

/// Grants each of `queues` to a user just made (`POST /api/v1/users`);
/// `default` needs no grant.
pub(crate) async fn grant_all(
    state: &AppState,
    user: &str,
    queues: Vec<String>,
) -> Result<(), Problem> {
    let store = Arc::clone(&state.store);
    let user = user.to_owned();
    blocking(move || {
        for q in queues.iter().filter(|q| q.as_str() != DEFAULT_QUEUE) {
            store.grant_queue(q, &user)?;
        }
        Ok(())
    })
    .await
}

/// The first of `queues` that does not exist, named under `at`.
pub(crate) async fn check_exist(
    state: &AppState,
    queues: &[String],
    at: &str,
) -> Result<(), Problem> {
    if queues.is_empty() {
        return Ok(());
    }
    let have = stored(state).await?;
    for (i, q) in queues.iter().enumerate() {
        if q != DEFAULT_QUEUE && !have.iter().any(|h| &h.name == q) {
            return Err(Problem::field(
                &format!("{at}[{i}]"),
                format!("queue \"{q}\" does not exist"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpus: u32, memory_mb: u64, gpus: u32) -> kiln_sched::Node {
        kiln_sched::Node {
            name: "n".into(),
            cpus,
            memory_mb,
            gpus: (0..gpus)
                .map(|index| kiln_sched::Gpu {
                    index,
                    model: "A100".into(),
                    memory_mb: 80_000,
                })
                .collect(),
        }
    }

    fn body(json: &str) -> QuotaBody {
        serde_json::from_str(json).expect("quota body")
    }

    #[test]
    fn cpus_and_memory_default_to_the_gpus_share_of_the_cluster() {
        let nodes = [node(64, 512_000, 8)];
        let q = quota_from(&body(r#"{"gpus": [{"count": 2}]}"#), "quota", &nodes).expect("ok");
        assert_eq!((q.cpus, q.memory_mb, q.gpu_count()), (16, 128_000, 2));
        let q = quota_from(&body(r#"{"cpus": 4, "memoryMb": 100}"#), "quota", &nodes).expect("ok");
        assert_eq!((q.cpus, q.memory_mb, q.gpu_count()), (4, 100, 0));
        let e = quota_from(
            &body(r#"{"gpus": [{"count": 1}]}"#),
            "quota",
            &[node(8, 1000, 0)],
        )
        .expect_err("no gpus to share");
        assert_eq!(e.errors[0].path, "quota.cpus");
        let e = quota_from(
            &body(r#"{"cpus": 1, "memoryMb": 1, "gpus": [{"model": " ", "count": 1}]}"#),
            "quota",
            &nodes,
        )
        .expect_err("empty model");
        assert_eq!(e.errors[0].path, "quota.gpus[0].model");
    }

    #[test]
    fn a_patch_tells_null_from_absent() {
        let p: QueuePatch = serde_json::from_str(r#"{"userMaxGpus": null}"#).expect("patch");
        assert_eq!(p.user_max_gpus, Some(None));
        let p: QueuePatch = serde_json::from_str(r#"{}"#).expect("patch");
        assert_eq!(p.user_max_gpus, None);
        let p: QueuePatch = serde_json::from_str(r#"{"userMaxGpus": 3}"#).expect("patch");
        assert_eq!(p.user_max_gpus, Some(Some(3)));
    }
}
