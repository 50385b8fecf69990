//! What a queue holds now, beside its definition: used, borrowed and lent
//! GPUs, each user's running GPUs and fair-share usage, and the waiting
//! jobs in the order the scheduler takes them, with their reasons.

use std::collections::BTreeSet;

use kiln_sched::quota::queue_index;
use kiln_sched::{Queue, DEFAULT_QUEUE};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use crate::control::QueuesLive;

/// Waiting jobs listed per queue; the rest are counted.
const MAX_WAITING_SHOWN: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueLiveView {
    pub used_gpus: u64,
    pub used_cpus: u64,
    pub used_memory_mb: u64,
    /// Part of `usedGpus` beyond the quota, on GPUs others do not use.
    pub borrowed_gpus: u64,
    /// GPUs of its quota that other queues' jobs hold now.
    pub lent_gpus: u64,
    pub lent_to: Vec<String>,
    /// Users with jobs or usage in the queue, lightest usage first.
    pub users: Vec<UserShareView>,
    /// Waiting jobs in the order they will be taken (first 50).
    pub waiting: Vec<WaitingView>,
    pub waiting_total: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserShareView {
    pub user: String,
    pub running_gpus: u64,
    /// Fair-share usage, GPU-hours decayed with the half-life.
    pub usage_gpu_hours: f64,
    /// Equal shares among the queue's users.
    pub share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingView {
    pub job: String,
    pub reason: Option<String>,
    /// The scheduler's reason as data, for the reader's language (as a
    /// job's `pendingDetail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<kiln_sched::Reason>,
}

/// The live view of queue `name`, whose granted users are `granted`.
pub fn live(state: &AppState, queues: &[Queue], name: &str, granted: &[String]) -> QueueLiveView {
    let l: QueuesLive = state.control.queues_live();
    let index = |q: &str| queue_index(queues, q);
    let me = index(name);
    let usage = l.queues.iter().find(|u| u.name == name);
    let mut users: BTreeSet<String> = granted.iter().cloned().collect();
    if let Some(u) = usage {
        users.extend(u.user_gpus.keys().cloned());
    }
    let waiting_all: Vec<&(i64, String, String)> =
        l.order.iter().filter(|(_, _, q)| index(q) == me).collect();
    for (_, id, _) in &waiting_all {
        if let Some((user, _)) = id.split_once('~') {
            users.insert(user.to_owned());
        }
    }
    if name == DEFAULT_QUEUE {
        // Everyone may use default: only those with something in it count.
        users.retain(|u| {
            usage.is_some_and(|q| q.user_gpus.contains_key(u))
                || waiting_all
                    .iter()
                    .any(|(_, id, _)| id.starts_with(&format!("{u}~")))
        });
    }
    let n = users.len().max(1) as f64;
    let mut users: Vec<UserShareView> = users
        .into_iter()
        .map(|user| UserShareView {
            running_gpus: usage
                .and_then(|q| q.user_gpus.get(&user).copied())
                .unwrap_or(0),
            usage_gpu_hours: l.usage.get(&user).copied().unwrap_or(0.0) / 3600.0,
            share: 1.0 / n,
            user,
        })
        .collect();
    users.sort_by(|a, b| a.usage_gpu_hours.total_cmp(&b.usage_gpu_hours));
    QueueLiveView {
        used_gpus: usage.map_or(0, |u| u.used.gpu_count()),
        used_cpus: usage.map_or(0, |u| u.used.cpus),
        used_memory_mb: usage.map_or(0, |u| u.used.memory_mb),
        borrowed_gpus: usage.map_or(0, |u| u.borrowed.gpu_count()),
        lent_gpus: usage.map_or(0, |u| u.lent_gpus),
        lent_to: usage.map(|u| u.lent_to.clone()).unwrap_or_default(),
        users,
        waiting_total: waiting_all.len(),
        waiting: waiting_all
            .iter()
            .take(MAX_WAITING_SHOWN)
            .map(|(key, id, _)| {
                let pending = state.control.pending_reason(*key);
                WaitingView {
                    job: id.clone(),
                    reason: pending.as_ref().map(|p| p.text()),
                    detail: pending.as_ref().and_then(|p| p.detail().cloned()),
                }
            })
            .collect(),
    }
}
