//! What each GPU is doing, for the per-task GPU series and the idle-GPU
//! notice. The reading comes from a [`GpuUsage`] source: NVML on a real
//! machine, nothing with `--fake-gpus` (fake GPUs report no use rather than
//! made-up numbers), and test sources in tests. Turning a reading into a
//! task's points is pure ([`task_points`]).

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

/// One GPU at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSample {
    /// NVML's index, the one placements and `CUDA_VISIBLE_DEVICES` use.
    pub index: u32,
    /// Percent of the last sample period a kernel was running.
    pub utilization_percent: u32,
    pub memory_used_bytes: u64,
    /// Compute processes on it (host PIDs).
    #[serde(default)]
    pub processes: Vec<GpuProcess>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuProcess {
    pub pid: u32,
    /// None where the driver does not say (some MIG and WDDM set-ups).
    pub memory_bytes: Option<u64>,
}

/// A source of GPU readings; called from the sampler's blocking thread.
pub trait GpuUsage: Send + Sync {
    fn sample(&self) -> Result<Vec<DeviceSample>, String>;
}

/// The series name of a GPU's utilisation (percent) in a task's series.
pub fn utilization_series(index: u32) -> String {
    format!("gpu{index}.utilization")
}

/// The series name of the GPU memory (bytes) a task's processes hold.
pub fn memory_series(index: u32) -> String {
    format!("gpu{index}.memory")
}

/// A task's points from one reading: for each GPU placed for it, the GPU's
/// utilisation (a GPU is placed for one task only, so all of its use is
/// that task's) and the memory held by the task's processes. Should the
/// driver not tell a process's memory, the GPU's whole used memory stands
/// in for it, by the same exclusivity. GPUs missing from the reading give
/// no points, rather than zeros that would look like an idle GPU.
pub fn task_points(
    reading: &[DeviceSample],
    gpus: &[u32],
    pids: &HashSet<u32>,
) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for &index in gpus {
        let Some(d) = reading.iter().find(|d| d.index == index) else {
            continue;
        };
        let mine: Vec<&GpuProcess> = d
            .processes
            .iter()
            .filter(|p| pids.contains(&p.pid))
            .collect();
        let memory = if mine.iter().any(|p| p.memory_bytes.is_none()) {
            d.memory_used_bytes
        } else {
            mine.iter().filter_map(|p| p.memory_bytes).sum()
        };
        out.push((utilization_series(index), f64::from(d.utilization_percent)));
        out.push((memory_series(index), memory as f64));
    }
    out
}

/// The utilisation of each GPU in `gpus` that the reading covers.
pub fn utilizations(reading: &[DeviceSample], gpus: &[u32]) -> Vec<u32> {
    gpus.iter()
        .filter_map(|i| reading.iter().find(|d| d.index == *i))
        .map(|d| d.utilization_percent)
        .collect()
}

/// Readings written by hand into a JSON file, read afresh each time: the
/// stand-in for NVML behind `kiln server --fake-gpus N --fake-gpu-usage F`,
/// so tests can drive the GPU series and the idle-GPU notice end to end.
pub struct FromFile(pub PathBuf);

impl GpuUsage for FromFile {
    fn sample(&self) -> Result<Vec<DeviceSample>, String> {
        let bytes = std::fs::read(&self.0).map_err(|e| format!("{}: {e}", self.0.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.0.display()))
    }
}

/// NVML, loaded once at start; the devices are looked up at every reading,
/// so a GPU that falls off the bus is missing from that reading only.
pub struct Nvml {
    nvml: nvml_wrapper::Nvml,
}

impl Nvml {
    /// None when the driver's library cannot be loaded (no NVIDIA driver).
    pub fn open() -> Option<Nvml> {
        ["libnvidia-ml.so.1", "libnvidia-ml.so"]
            .iter()
            .find_map(|lib| {
                nvml_wrapper::Nvml::builder()
                    .lib_path(lib.as_ref())
                    .init()
                    .ok()
            })
            .map(|nvml| Nvml { nvml })
    }
}

impl GpuUsage for Nvml {
    /// A GPU that cannot be read (utilisation is not supported on some
    /// MIG set-ups) is left out of the reading, with the others kept; only
    /// a reading with no GPU at all is an error.
    fn sample(&self) -> Result<Vec<DeviceSample>, String> {
        let count = self.nvml.device_count().map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(count as usize);
        let mut errors = Vec::new();
        for i in 0..count {
            match self.read(i) {
                Ok(d) => out.push(d),
                Err(e) => errors.push(format!("GPU {i}: {e}")),
            }
        }
        if out.is_empty() && !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(out)
    }
}

impl Nvml {
    fn read(&self, i: u32) -> Result<DeviceSample, nvml_wrapper::error::NvmlError> {
        let d = self.nvml.device_by_index(i)?;
        let processes = d
            .running_compute_processes()?
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                memory_bytes: match p.used_gpu_memory {
                    nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
                    nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                },
            })
            .collect();
        Ok(DeviceSample {
            index: d.index()?,
            utilization_percent: d.utilization_rates()?.gpu,
            memory_used_bytes: d.memory_info()?.used,
            processes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(index: u32, util: u32, used: u64, procs: &[(u32, Option<u64>)]) -> DeviceSample {
        DeviceSample {
            index,
            utilization_percent: util,
            memory_used_bytes: used,
            processes: procs
                .iter()
                .map(|&(pid, memory_bytes)| GpuProcess { pid, memory_bytes })
                .collect(),
        }
    }

    #[test]
    fn a_task_gets_its_own_gpus_and_its_own_processes_memory() {
        let reading = vec![
            device(0, 97, 9_000, &[(100, Some(6_000)), (555, Some(3_000))]),
            device(1, 40, 2_000, &[(101, Some(2_000))]),
            device(2, 100, 5_000, &[(900, Some(5_000))]),
        ];
        let pids: HashSet<u32> = [100, 101, 102].into();
        let points = task_points(&reading, &[0, 1], &pids);
        assert_eq!(
            points,
            vec![
                ("gpu0.utilization".into(), 97.0),
                // Process 555 is not the task's (someone outside kiln).
                ("gpu0.memory".into(), 6_000.0),
                ("gpu1.utilization".into(), 40.0),
                ("gpu1.memory".into(), 2_000.0),
            ]
        );
    }

    #[test]
    fn unknown_process_memory_falls_back_to_the_whole_gpu() {
        let reading = vec![device(3, 12, 7_777, &[(100, None)])];
        let pids: HashSet<u32> = [100].into();
        assert_eq!(
            task_points(&reading, &[3], &pids),
            vec![
                ("gpu3.utilization".into(), 12.0),
                ("gpu3.memory".into(), 7_777.0)
            ]
        );
    }

    #[test]
    fn a_gpu_missing_from_the_reading_gives_no_points() {
        let reading = vec![device(0, 0, 0, &[])];
        assert!(task_points(&reading, &[5], &HashSet::new()).is_empty());
        assert!(utilizations(&reading, &[5]).is_empty());
        assert_eq!(utilizations(&reading, &[0, 5]), vec![0]);
    }

    /// A stand-in for NVML, as the server's sampler sees it.
    struct Script(Vec<DeviceSample>);
    impl GpuUsage for Script {
        fn sample(&self) -> Result<Vec<DeviceSample>, String> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn a_source_behind_the_trait_gives_the_same_points() {
        let src: Box<dyn GpuUsage> = Box::new(Script(vec![device(0, 55, 10, &[(7, Some(10))])]));
        let reading = src.sample().expect("reading");
        let pids: HashSet<u32> = [7].into();
        assert_eq!(
            task_points(&reading, &[0], &pids),
            vec![
                ("gpu0.utilization".into(), 55.0),
                ("gpu0.memory".into(), 10.0)
            ]
        );
    }
}
