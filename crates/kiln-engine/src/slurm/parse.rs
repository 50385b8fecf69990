//! `squeue --json` and `sinfo --json` into plain structs. Slurm 22.05 prints numbers
//! and state words; 23.02 and later wrap numbers as `{"set":true,"number":5}` and
//! print states as lists. Both shapes read into the same structs, so the rest of the
//! engine never sees which release answered. Fields kiln does not use are skipped,
//! and missing ones take their empty value, since each release adds and drops some.

use serde::{Deserialize, Deserializer, Serialize};

use super::gres::{parse_gres, Gres};
use super::hostlist::expand_hostlist;
use crate::EngineError;

/// One entry of `squeue --json`. A heterogeneous job is one entry per component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJob {
    pub id: u64,
    pub name: String,
    pub user: String,
    /// The state words as Slurm printed them (`["RUNNING"]`); see
    /// [`super::state::job_view`].
    pub state: Vec<String>,
    /// Why it waits (`Resources`), or `None`.
    pub state_reason: String,
    pub partition: String,
    /// The allocated nodes, expanded; empty while pending.
    pub nodes: Vec<String>,
    /// The GPUs it holds on each of its nodes, in `nodes` order.
    pub gpus: Vec<NodeGpus>,
    /// Minutes; `None` where unlimited or unset.
    pub time_limit_min: Option<u64>,
    /// Unix seconds: when it started, or for a pending job when Slurm expects it to.
    pub start_time: Option<u64>,
    pub priority: Option<u64>,
    /// The id of the heterogeneous job it belongs to, and which component it is.
    pub het_job_id: Option<u64>,
    pub het_job_offset: Option<u32>,
}

/// The GPUs a job holds on one node, from `gres_detail` (`gpu:a100:2(IDX:0-1)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGpus {
    pub node: String,
    pub gpu_type: Option<String>,
    pub count: u64,
    pub indices: Vec<u32>,
}

/// One node of `sinfo --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmNode {
    pub name: String,
    /// `NodeAddr`: where tasks reach this node.
    pub address: String,
    pub cpus: u64,
    pub alloc_cpus: u64,
    pub real_memory_mb: u64,
    pub alloc_memory_mb: u64,
    /// What it has (`gpu:a100:4`).
    pub gres: Vec<Gres>,
    /// What jobs hold now, with indices.
    pub gres_used: Vec<Gres>,
    /// The base state in lower case (`idle`, `mixed`, `allocated`, `down`).
    pub state: String,
    /// Flags in upper case (`DRAIN`, `NOT_RESPONDING`).
    pub state_flags: Vec<String>,
    pub reason: String,
    pub partitions: Vec<String>,
}

impl SlurmNode {
    /// Down or drained nodes take no new jobs until an admin or Slurm brings them back.
    pub fn unavailable(&self) -> bool {
        let bad = [
            "DOWN",
            "DRAIN",
            "DRAINED",
            "DRAINING",
            "FAIL",
            "NOT_RESPONDING",
        ];
        self.state.eq_ignore_ascii_case("down")
            || self.state.starts_with("drain")
            || self.state_flags.iter().any(|f| bad.contains(&f.as_str()))
    }

    pub fn free_cpus(&self) -> u64 {
        self.cpus.saturating_sub(self.alloc_cpus)
    }

    pub fn free_memory_mb(&self) -> u64 {
        self.real_memory_mb.saturating_sub(self.alloc_memory_mb)
    }

    /// GPUs on the node, of `gpu_type` when one is given (an exact Slurm type).
    pub fn gpus(&self, gpu_type: Option<&str>) -> u64 {
        count_gpus(&self.gres, gpu_type)
    }

    /// GPUs no job holds, of `gpu_type` when one is given.
    pub fn free_gpus(&self, gpu_type: Option<&str>) -> u64 {
        self.gpus(gpu_type)
            .saturating_sub(count_gpus(&self.gres_used, gpu_type))
    }

    /// The GPU types the node declares (`a100`), for matching `gpuType`.
    pub fn gpu_types(&self) -> impl Iterator<Item = &str> {
        self.gres
            .iter()
            .filter(|g| g.is_gpu())
            .filter_map(|g| g.gpu_type.as_deref())
    }
}

fn count_gpus(gres: &[Gres], gpu_type: Option<&str>) -> u64 {
    gres.iter()
        .filter(|g| g.is_gpu())
        .filter(|g| gpu_type.is_none() || g.gpu_type.as_deref() == gpu_type)
        .map(|g| g.count)
        .sum()
}

/// Reads `squeue --json`.
pub fn parse_squeue(json: &str) -> Result<Vec<SlurmJob>, EngineError> {
    let command = "squeue --json";
    let raw: RawSqueue =
        serde_json::from_str(json).map_err(|source| EngineError::SlurmJson { command, source })?;
    reported(command, &raw.errors)?;
    raw.jobs.into_iter().map(RawJob::into_job).collect()
}

/// Reads `sinfo --json` (and `scontrol show nodes --json`, which prints the same
/// `nodes` list).
pub fn parse_sinfo(json: &str) -> Result<Vec<SlurmNode>, EngineError> {
    let command = "sinfo --json";
    let raw: RawSinfo =
        serde_json::from_str(json).map_err(|source| EngineError::SlurmJson { command, source })?;
    reported(command, &raw.errors)?;
    raw.nodes.into_iter().map(RawNode::into_node).collect()
}

/// Errors beside the data mean the data may be partial: a job missing from a partial
/// list must not look gone, so the whole poll fails instead.
fn reported(command: &'static str, errors: &[serde_json::Value]) -> Result<(), EngineError> {
    if errors.is_empty() {
        return Ok(());
    }
    let words: Vec<String> = errors
        .iter()
        .map(|e| match e.get("error").or_else(|| e.get("description")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => e.to_string(),
        })
        .collect();
    Err(EngineError::SlurmReported {
        command,
        errors: words.join("; "),
    })
}

#[derive(Deserialize)]
struct RawSqueue {
    #[serde(default)]
    jobs: Vec<RawJob>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawSinfo {
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJob {
    #[serde(deserialize_with = "num")]
    job_id: Option<u64>,
    #[serde(default, deserialize_with = "text")]
    name: String,
    #[serde(default, deserialize_with = "text")]
    user_name: String,
    #[serde(default, deserialize_with = "words")]
    job_state: Vec<String>,
    #[serde(default, deserialize_with = "text")]
    state_reason: String,
    #[serde(default, deserialize_with = "text")]
    partition: String,
    #[serde(default, deserialize_with = "text")]
    nodes: String,
    #[serde(default, deserialize_with = "words")]
    gres_detail: Vec<String>,
    #[serde(default, deserialize_with = "num")]
    time_limit: Option<u64>,
    #[serde(default, deserialize_with = "num")]
    start_time: Option<u64>,
    #[serde(default, deserialize_with = "num")]
    priority: Option<u64>,
    #[serde(default, deserialize_with = "num")]
    het_job_id: Option<u64>,
    #[serde(default, deserialize_with = "num")]
    het_job_offset: Option<u64>,
}

impl RawJob {
    fn into_job(self) -> Result<SlurmJob, EngineError> {
        let id = self.job_id.ok_or_else(|| EngineError::SlurmSyntax {
            what: "job entry",
            value: self.name.clone(),
            why: "it has no job_id".into(),
        })?;
        let nodes = expand_hostlist(&self.nodes)?;
        // One gres_detail entry per allocated node, in the same order. Where the
        // counts differ kiln cannot tell whose GPUs are whose and leaves them out:
        // they only feed `kiln nodes`, and one odd job must not blind the poll.
        let mut gpus = Vec::new();
        if self.gres_detail.len() == nodes.len() {
            for (node, detail) in nodes.iter().zip(&self.gres_detail) {
                for g in parse_gres(detail)?.into_iter().filter(Gres::is_gpu) {
                    gpus.push(NodeGpus {
                        node: node.clone(),
                        gpu_type: g.gpu_type,
                        count: g.count,
                        indices: g.indices,
                    });
                }
            }
        }
        let het = self.het_job_id.filter(|&h| h != 0);
        Ok(SlurmJob {
            id,
            name: self.name,
            user: self.user_name,
            state: self.job_state,
            state_reason: self.state_reason,
            partition: self.partition,
            nodes,
            gpus,
            time_limit_min: self.time_limit,
            start_time: self.start_time.filter(|&t| t != 0),
            priority: self.priority,
            het_job_id: het,
            het_job_offset: het
                .and(self.het_job_offset)
                .and_then(|o| u32::try_from(o).ok()),
        })
    }
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(default, deserialize_with = "text")]
    name: String,
    #[serde(default, deserialize_with = "text")]
    address: String,
    #[serde(default, deserialize_with = "num")]
    cpus: Option<u64>,
    #[serde(default, deserialize_with = "num")]
    alloc_cpus: Option<u64>,
    #[serde(default, deserialize_with = "num")]
    real_memory: Option<u64>,
    #[serde(default, deserialize_with = "num")]
    alloc_memory: Option<u64>,
    #[serde(default, deserialize_with = "text")]
    gres: String,
    #[serde(default, deserialize_with = "text")]
    gres_used: String,
    #[serde(default, deserialize_with = "words")]
    state: Vec<String>,
    #[serde(default, deserialize_with = "words")]
    state_flags: Vec<String>,
    #[serde(default, deserialize_with = "text")]
    reason: String,
    #[serde(default, deserialize_with = "words")]
    partitions: Vec<String>,
}

impl RawNode {
    fn into_node(self) -> Result<SlurmNode, EngineError> {
        // 22.05: "state": "idle" and flags apart; 23.02+: ["IDLE", "DRAIN"].
        let mut words = self.state.into_iter();
        let state = words.next().unwrap_or_default().to_ascii_lowercase();
        let mut flags: Vec<String> = words.chain(self.state_flags).collect();
        flags.iter_mut().for_each(|f| f.make_ascii_uppercase());
        flags.dedup();
        Ok(SlurmNode {
            address: if self.address.is_empty() {
                self.name.clone()
            } else {
                self.address
            },
            name: self.name,
            cpus: self.cpus.unwrap_or(0),
            alloc_cpus: self.alloc_cpus.unwrap_or(0),
            real_memory_mb: self.real_memory.unwrap_or(0),
            alloc_memory_mb: self.alloc_memory.unwrap_or(0),
            gres: parse_gres(&self.gres)?,
            gres_used: parse_gres(&self.gres_used)?,
            state,
            state_flags: flags,
            reason: self.reason,
            partitions: self.partitions,
        })
    }
}

/// A number as either release prints it: `5`, `null`, or `{"set":true,
/// "infinite":false,"number":5}`. Unset, infinite, and Slurm's NO_VAL/INFINITE
/// sentinels are `None`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawNum {
    Plain(i64),
    Float(f64),
    Wrapped {
        #[serde(default = "yes")]
        set: bool,
        #[serde(default)]
        infinite: bool,
        #[serde(default)]
        number: Option<i64>,
    },
}

fn yes() -> bool {
    true
}

fn num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = match Option::<RawNum>::deserialize(d)? {
        None => None,
        Some(RawNum::Plain(n)) => Some(n),
        Some(RawNum::Float(f)) => Some(f as i64),
        Some(RawNum::Wrapped {
            set,
            infinite,
            number,
        }) => number.filter(|_| set && !infinite),
    };
    // NO_VAL (0xfffffffe), INFINITE (0xffffffff) and their 16- and 64-bit kin.
    Ok(n.and_then(|n| u64::try_from(n).ok()).filter(|&n| {
        ![0xfffe, 0xffff, 0xffff_fffe, 0xffff_ffff].contains(&n) && n < 0xffff_ffff_ffff_fff0
    }))
}

/// A string, or `null` as the empty string.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A list of strings, a single string (22.05's states), or `null`.
fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Words {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Words>::deserialize(d)? {
        None => Vec::new(),
        Some(Words::One(s)) if s.is_empty() => Vec::new(),
        Some(Words::One(s)) => vec![s],
        Some(Words::Many(v)) => v,
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
