//! Reading the Alibaba GPU trace (cluster-trace-gpu-v2023) CSV files.
//!
//! The files are plain CSV without quoting (no field holds a comma), so a
//! split is enough and keeps the crate free of a CSV dependency. Columns are
//! found by header name, because the pod lists do not all have the same
//! columns (multigpu50 has no times and no gpu_spec).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One node as the trace gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceNode {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpus: u32,
    pub model: String,
}

/// One pod (task) as the trace gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePod {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub num_gpu: u32,
    /// For 1-GPU pods, the fraction of a GPU asked (1000 = whole).
    pub gpu_milli: u32,
    /// Allowed GPU models, empty = any.
    pub gpu_spec: Vec<String>,
    /// None when the list has no time columns (multigpu50, gpushare100's
    /// sibling lists may differ).
    pub times: Option<Times>,
}

/// When a pod came, started and went, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub creation: u64,
    /// None for pods that never ran in the trace (phase Pending).
    pub scheduled: Option<u64>,
    pub deletion: u64,
}

impl Times {
    /// How long the pod holds its resources once placed: deletion minus
    /// scheduled time, or minus creation time for a pod that never ran
    /// (how long it was around is the only length the trace gives), and at
    /// least 1 s so that every job ends after it starts.
    pub fn duration(&self) -> u64 {
        let from = self.scheduled.unwrap_or(self.creation);
        self.deletion.saturating_sub(from).max(1)
    }
}

struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    fn read(path: &Path) -> Result<Table> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Table::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Table> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = match lines.next() {
            Some((_, h)) => h.split(',').map(|s| s.trim().to_owned()).collect(),
            None => {
                return Err(Error::Csv {
                    path: path.to_owned(),
                    line: 1,
                    msg: "empty file".into(),
                })
            }
        };
        let rows = lines
            .map(|(i, l)| (i + 1, l.split(',').map(|s| s.trim().to_owned()).collect()))
            .collect();
        Ok(Table {
            path: path.to_owned(),
            header,
            rows,
        })
    }

    fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    fn need(&self, name: &str) -> Result<usize> {
        self.col(name).ok_or_else(|| Error::Csv {
            path: self.path.clone(),
            line: 1,
            msg: format!("no column {name}"),
        })
    }

    fn err(&self, line: usize, msg: String) -> Error {
        Error::Csv {
            path: self.path.clone(),
            line,
            msg,
        }
    }

    fn field<'r>(&self, line: usize, row: &'r [String], col: usize) -> Result<&'r str> {
        row.get(col)
            .map(String::as_str)
            .ok_or_else(|| self.err(line, format!("missing column {}", self.header[col])))
    }

    fn num(&self, line: usize, row: &[String], col: usize) -> Result<u64> {
        let s = self.field(line, row, col)?;
        s.parse()
            .map_err(|_| self.err(line, format!("{}: not a number: {s:?}", self.header[col])))
    }

    /// A number that may be empty (a pod that was never scheduled).
    fn opt_num(&self, line: usize, row: &[String], col: usize) -> Result<Option<u64>> {
        if self.field(line, row, col)?.is_empty() {
            return Ok(None);
        }
        self.num(line, row, col).map(Some)
    }
}

pub fn read_nodes(path: &Path) -> Result<Vec<TraceNode>> {
    parse_nodes(&Table::read(path)?)
}

pub fn read_pods(path: &Path) -> Result<Vec<TracePod>> {
    parse_pods(&Table::read(path)?)
}

fn parse_nodes(t: &Table) -> Result<Vec<TraceNode>> {
    let (sn, cpu, mem, gpu, model) = (
        t.need("sn")?,
        t.need("cpu_milli")?,
        t.need("memory_mib")?,
        t.need("gpu")?,
        t.need("model")?,
    );
    t.rows
        .iter()
        .map(|(line, row)| {
            let gpus = t.num(*line, row, gpu)?;
            Ok(TraceNode {
                name: t.field(*line, row, sn)?.to_owned(),
                cpu_milli: t.num(*line, row, cpu)?,
                memory_mib: t.num(*line, row, mem)?,
                gpus: u32::try_from(gpus).map_err(|_| t.err(*line, format!("gpu {gpus}")))?,
                model: t.field(*line, row, model)?.to_owned(),
            })
        })
        .collect()
}

fn parse_pods(t: &Table) -> Result<Vec<TracePod>> {
    let (name, cpu, mem, ngpu, milli) = (
        t.need("name")?,
        t.need("cpu_milli")?,
        t.need("memory_mib")?,
        t.need("num_gpu")?,
        t.need("gpu_milli")?,
    );
    let spec = t.col("gpu_spec");
    let times = match (
        t.col("creation_time"),
        t.col("deletion_time"),
        t.col("scheduled_time"),
    ) {
        (Some(c), Some(d), Some(s)) => Some((c, d, s)),
        _ => None,
    };
    t.rows
        .iter()
        .map(|(line, row)| {
            let line = *line;
            let num_gpu = t.num(line, row, ngpu)?;
            let gpu_milli = t.num(line, row, milli)?;
            let gpu_spec = match spec {
                Some(c) => t
                    .field(line, row, c)?
                    .split('|')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                None => Vec::new(),
            };
            let times = match times {
                Some((c, d, s)) => Some(Times {
                    creation: t.num(line, row, c)?,
                    deletion: t.num(line, row, d)?,
                    scheduled: t.opt_num(line, row, s)?,
                }),
                None => None,
            };
            Ok(TracePod {
                name: t.field(line, row, name)?.to_owned(),
                cpu_milli: t.num(line, row, cpu)?,
                memory_mib: t.num(line, row, mem)?,
                num_gpu: u32::try_from(num_gpu)
                    .map_err(|_| t.err(line, format!("num_gpu {num_gpu}")))?,
                gpu_milli: u32::try_from(gpu_milli)
                    .map_err(|_| t.err(line, format!("gpu_milli {gpu_milli}")))?,
                gpu_spec,
                times,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        match Table::parse(Path::new("t.csv"), text) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn reads_pods_with_and_without_times() {
        let t = table(
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n\
             openb-pod-0001,6000,12288,1,460,,LS,Running,427061,12902960,427061\n\
             openb-pod-0002,500,100,2,1000,V100M16|V100M32,BE,Pending,10,70,\n",
        );
        let pods = parse_pods(&t).unwrap_or_default();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].gpu_milli, 460);
        assert_eq!(pods[0].times.map(|t| t.duration()), Some(12902960 - 427061));
        assert_eq!(pods[1].gpu_spec, vec!["V100M16", "V100M32"]);
        // Never scheduled: it was around for 60 s.
        assert_eq!(pods[1].times.map(|t| t.duration()), Some(60));

        let t = table(
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nopenb-pod-0000,12000,16384,1,1000\n",
        );
        let pods = parse_pods(&t).unwrap_or_default();
        assert_eq!(pods[0].times, None);
        assert!(pods[0].gpu_spec.is_empty());
    }

    #[test]
    fn bad_lines_name_their_line() {
        let t = table("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,12x,1,1,1000\n");
        let e = parse_pods(&t)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("t.csv:2") && e.contains("cpu_milli"), "{e}");
        let t = table("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\n");
        let nodes = parse_nodes(&t).unwrap_or_default();
        assert_eq!(nodes[0].gpus, 2);
        assert!(parse_nodes(&table("sn,gpu\n")).is_err());
    }
}
