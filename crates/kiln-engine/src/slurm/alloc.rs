//! Which task runs where (docs/engines.md 3.3). The launcher records what Slurm
//! allocated, per component, in `allocation.json`; the engine then places each shape's
//! tasks, in task order, on its component's nodes by their task counts. Slurm decided
//! how many tasks each node gets; kiln only decides which of them, the same way every
//! time, so a restarted server computes the same placement.

use serde::{Deserialize, Serialize};

use super::hostlist::{expand_hostlist, expand_tasks_per_node};
use super::script::ShapeGroup;
use crate::EngineError;

/// What Slurm allocated to one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub job_id: u64,
    /// One per component: one for a plain job, one per shape for a heterogeneous one.
    pub components: Vec<Component>,
}

/// The nodes of one component and how many of its tasks each takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    pub nodes: Vec<String>,
    pub tasks_per_node: Vec<u32>,
}

impl Component {
    /// From Slurm's compact forms (`n[1-2]`, `2(x2)`), checking they agree.
    pub fn parse(nodelist: &str, tasks_per_node: &str) -> Result<Self, EngineError> {
        let nodes = expand_hostlist(nodelist)?;
        let tasks_per_node = expand_tasks_per_node(tasks_per_node)?;
        if nodes.len() != tasks_per_node.len() {
            return Err(EngineError::SlurmAllocation(format!(
                "{nodelist} is {} nodes but the task counts {:?} are for {}",
                nodes.len(),
                tasks_per_node,
                tasks_per_node.len()
            )));
        }
        Ok(Component {
            nodes,
            tasks_per_node,
        })
    }
}

impl Allocation {
    /// Reads the allocation from the batch step's environment: `SLURM_JOB_ID`, and
    /// `SLURM_JOB_NODELIST` with `SLURM_TASKS_PER_NODE`, each with `_HET_GROUP_<c>`
    /// for every component when `SLURM_HET_SIZE` says the job is heterogeneous.
    /// `env` looks one variable up, so this stays pure.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, EngineError> {
        let need = |name: &str| {
            env(name).ok_or_else(|| {
                EngineError::SlurmAllocation(format!("{name} is not set in the batch step"))
            })
        };
        let id = need("SLURM_JOB_ID")?;
        let job_id = id.trim().parse().map_err(|_| {
            EngineError::SlurmAllocation(format!("SLURM_JOB_ID {id:?} is not a number"))
        })?;
        let components = match env("SLURM_HET_SIZE") {
            None => vec![Component::parse(
                &need("SLURM_JOB_NODELIST")?,
                &need("SLURM_TASKS_PER_NODE")?,
            )?],
            Some(size) => {
                let size: usize = size.trim().parse().map_err(|_| {
                    EngineError::SlurmAllocation(format!("SLURM_HET_SIZE {size:?} is not a number"))
                })?;
                (0..size)
                    .map(|c| {
                        Component::parse(
                            &need(&format!("SLURM_JOB_NODELIST_HET_GROUP_{c}"))?,
                            &need(&format!("SLURM_TASKS_PER_NODE_HET_GROUP_{c}"))?,
                        )
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Allocation { job_id, components })
    }
}

/// Where one task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub task: String,
    /// Its component: `srun --het-group` for a heterogeneous job.
    pub component: usize,
    pub node: String,
}

/// Places every task: group `c`'s tasks, in order, fill component `c`'s nodes, each
/// node taking as many as Slurm counted for it. The result is in group order, then
/// task order. Counts that do not add up mean the allocation is not for these tasks.
pub fn place_tasks(
    groups: &[ShapeGroup],
    alloc: &Allocation,
) -> Result<Vec<Placement>, EngineError> {
    if groups.len() != alloc.components.len() {
        return Err(EngineError::SlurmAllocation(format!(
            "Slurm job {} has {} components for {} shapes of tasks",
            alloc.job_id,
            alloc.components.len(),
            groups.len()
        )));
    }
    let mut out = Vec::new();
    for (c, (group, comp)) in groups.iter().zip(&alloc.components).enumerate() {
        let slots: u64 = comp.tasks_per_node.iter().map(|&n| u64::from(n)).sum();
        if slots != group.tasks.len() as u64 {
            return Err(EngineError::SlurmAllocation(format!(
                "component {c} of Slurm job {} has room for {slots} tasks on {}, not {}",
                alloc.job_id,
                super::hostlist::compress_hostlist(&comp.nodes),
                group.tasks.len()
            )));
        }
        let nodes = comp
            .nodes
            .iter()
            .zip(&comp.tasks_per_node)
            .flat_map(|(node, &n)| std::iter::repeat_n(node, n as usize));
        for (task, node) in group.tasks.iter().zip(nodes) {
            out.push(Placement {
                task: task.clone(),
                component: c,
                node: node.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::slurm::script::Shape;

    fn env_file(text: &str) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    fn group(tasks: &[&str]) -> ShapeGroup {
        ShapeGroup {
            shape: Shape {
                cpus: 1,
                memory_mb: 100,
                gpus: 0,
                gpu_type: None,
            },
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn places(p: &[Placement]) -> Vec<(&str, usize, &str)> {
        p.iter()
            .map(|p| (p.task.as_str(), p.component, p.node.as_str()))
            .collect()
    }

    #[test]
    fn reads_captured_allocations() {
        let five = Allocation::from_env(env_file(include_str!("testdata/env-22.05-five.txt")));
        let c = |nodes: &[&str], counts: &[u32]| Component {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            tasks_per_node: counts.to_vec(),
        };
        assert_eq!(
            five.unwrap(),
            Allocation {
                job_id: 58,
                components: vec![c(&["n1", "n2"], &[2, 3])]
            }
        );
        let span = Allocation::from_env(env_file(include_str!("testdata/env-22.05-span.txt")));
        assert_eq!(span.unwrap().components, [c(&["n1", "n2"], &[1, 1])]);
        let het = Allocation::from_env(env_file(include_str!("testdata/env-22.05-het.txt")));
        let het = het.unwrap();
        assert_eq!(het.job_id, 64);
        assert_eq!(het.components, [c(&["n2"], &[1]), c(&["n1"], &[1])]);
    }

    #[test]
    fn a_job_spanning_two_nodes_fills_them_in_task_order() {
        let alloc = Allocation {
            job_id: 58,
            components: vec![Component::parse("n[1-2]", "2,3").unwrap()],
        };
        let groups = [group(&[
            "master-0", "worker-0", "worker-1", "worker-2", "worker-3",
        ])];
        let got = place_tasks(&groups, &alloc).unwrap();
        assert_eq!(
            places(&got),
            [
                ("master-0", 0, "n1"),
                ("worker-0", 0, "n1"),
                ("worker-1", 0, "n2"),
                ("worker-2", 0, "n2"),
                ("worker-3", 0, "n2"),
            ]
        );
    }

    #[test]
    fn each_shape_fills_its_own_component() {
        let het = Allocation::from_env(env_file(include_str!("testdata/env-22.05-het.txt")));
        let groups = [group(&["ps-0"]), group(&["worker-0"])];
        let got = place_tasks(&groups, &het.unwrap()).unwrap();
        assert_eq!(places(&got), [("ps-0", 0, "n2"), ("worker-0", 1, "n1")]);
    }

    #[test]
    fn counts_that_disagree_are_errors() {
        assert!(Component::parse("n[1-2]", "1").is_err());
        let alloc = Allocation {
            job_id: 9,
            components: vec![Component::parse("n[1-2]", "1(x2)").unwrap()],
        };
        let err = place_tasks(&[group(&["a-0"])], &alloc)
            .unwrap_err()
            .to_string();
        assert!(err.contains("room for 2 tasks on n[1-2], not 1"), "{err}");
        assert!(place_tasks(&[group(&["a-0"]), group(&["b-0"])], &alloc).is_err());
        let missing = Allocation::from_env(|k| (k == "SLURM_JOB_ID").then(|| "3".to_string()));
        let err = missing.unwrap_err().to_string();
        assert!(err.contains("SLURM_JOB_NODELIST is not set"), "{err}");
    }

    #[test]
    fn allocation_json_is_camel_case() {
        let alloc = Allocation {
            job_id: 1,
            components: vec![Component::parse("n1", "1").unwrap()],
        };
        let json = serde_json::to_string(&alloc).unwrap();
        assert_eq!(
            json,
            r#"{"jobId":1,"components":[{"nodes":["n1"],"tasksPerNode":[1]}]}"#
        );
    }
}
