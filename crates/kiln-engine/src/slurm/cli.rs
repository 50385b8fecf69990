//! Slurm's commands, run as processes: the one place the Slurm engine
//! starts `sbatch`, `squeue`, `sinfo`, `scancel` and `scontrol`.
//!
//! Every call has a deadline: a slurmctld that stops answering must not stall
//! the engine's worker for ever. Calls block, so the engine makes them on a
//! thread of its own, never on the control loop's or an async runtime's.
//! Behind [`SlurmApi`] so a slurmrestd client can sit beside it later
//! (docs/engines.md 3.9).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::parse::{parse_sinfo, parse_squeue, SlurmJob, SlurmNode};
use crate::error::EngineError;
use crate::local::RunAs;

/// What the engine asks of Slurm.
pub trait SlurmApi: Send + Sync {
    /// `sbatch --parsable ARGS`, as `user` when given (munge signs for the
    /// calling uid, so the job is the user's in Slurm's accounting).
    fn submit(&self, args: &[String], user: Option<RunAs>) -> Result<u64, EngineError>;
    /// Every job Slurm still knows (`squeue --json`; 22.05 ignores filters).
    fn jobs(&self) -> Result<Vec<SlurmJob>, EngineError>;
    /// Every node (`sinfo --json`).
    fn nodes(&self) -> Result<Vec<SlurmNode>, EngineError>;
    /// `scancel`; with a signal, the job's steps get it and the job stays.
    fn cancel(&self, job: u64, signal: Option<&str>) -> Result<(), EngineError>;
    /// `scontrol update JobId=.. TimeLimit=..` (raising it needs Slurm's
    /// operator or root).
    fn set_time_limit(&self, job: u64, minutes: u64) -> Result<(), EngineError>;
}

/// The commands on PATH, with the environment they need (`SLURM_CONF`).
#[derive(Debug, Clone)]
pub struct Cli {
    env: Vec<(String, String)>,
    timeout: Duration,
}

/// How long one command may take before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most of a command's output kept for an error message.
const SAID_MAX: usize = 2000;

impl Cli {
    /// `slurm_conf`: the cluster's configuration file, when not the default.
    pub fn new(slurm_conf: Option<&std::path::Path>, timeout: Duration) -> Cli {
        Cli {
            env: slurm_conf
                .map(|c| vec![("SLURM_CONF".to_owned(), c.display().to_string())])
                .unwrap_or_default(),
            timeout,
        }
    }

    /// Runs `program args` (as `user` through setpriv), returning stdout.
    fn run(
        &self,
        program: &str,
        args: &[String],
        user: Option<RunAs>,
    ) -> Result<String, EngineError> {
        let mut cmd = match user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={}", u.uid),
                    format!("--regid={}", u.gid),
                    "--clear-groups".to_owned(),
                    "--".to_owned(),
                    program.to_owned(),
                ]);
                c
            }
            None => Command::new(program),
        };
        let mut child = cmd
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| EngineError::SlurmCommand {
                command: program.to_owned(),
                why: source.to_string(),
            })?;
        // Read both pipes on threads so a full pipe never blocks the child
        // while this thread waits for it.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut out);
                }
                out
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(EngineError::SlurmCommand {
                        command: program.to_owned(),
                        why: format!("no answer within {} s", self.timeout.as_secs()),
                    });
                }
                Err(e) => {
                    return Err(EngineError::SlurmCommand {
                        command: program.to_owned(),
                        why: e.to_string(),
                    })
                }
            }
        };
        let out = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
        let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
        if !status.success() {
            let mut said = err.trim().to_owned();
            if said.is_empty() {
                said = out.trim().to_owned();
            }
            if said.len() > SAID_MAX {
                let cut = (0..=SAID_MAX)
                    .rev()
                    .find(|i| said.is_char_boundary(*i))
                    .unwrap_or(0);
                said.truncate(cut);
            }
            return Err(EngineError::SlurmCommand {
                command: program.to_owned(),
                why: format!("{status}: {said}"),
            });
        }
        Ok(out)
    }
}

/// `sbatch --parsable` prints `JOBID` or `JOBID;CLUSTER`.
pub fn parse_job_id(out: &str) -> Result<u64, EngineError> {
    let first = out.trim().split(';').next().unwrap_or("");
    first.parse().map_err(|_| EngineError::SlurmCommand {
        command: "sbatch".to_owned(),
        why: format!("expected a job id, got {:?}", out.trim()),
    })
}

impl SlurmApi for Cli {
    fn submit(&self, args: &[String], user: Option<RunAs>) -> Result<u64, EngineError> {
        let mut all = vec!["--parsable".to_owned()];
        all.extend(args.iter().filter(|a| *a != "--parsable").cloned());
        parse_job_id(&self.run("sbatch", &all, user)?)
    }

    fn jobs(&self) -> Result<Vec<SlurmJob>, EngineError> {
        parse_squeue(&self.run("squeue", &["--json".to_owned()], None)?)
    }

    fn nodes(&self) -> Result<Vec<SlurmNode>, EngineError> {
        parse_sinfo(&self.run("sinfo", &["--json".to_owned()], None)?)
    }

    fn cancel(&self, job: u64, signal: Option<&str>) -> Result<(), EngineError> {
        let mut args = Vec::new();
        if let Some(s) = signal {
            args.push(format!("--signal={s}"));
        }
        args.push(job.to_string());
        self.run("scancel", &args, None).map(|_| ())
    }

    fn set_time_limit(&self, job: u64, minutes: u64) -> Result<(), EngineError> {
        let args = [
            "update".to_owned(),
            format!("JobId={job}"),
            format!("TimeLimit={minutes}"),
        ];
        self.run("scontrol", &args, None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_answers_a_job_id_with_or_without_a_cluster() {
        assert_eq!(parse_job_id("4711\n").ok(), Some(4711));
        assert_eq!(parse_job_id("4711;lab\n").ok(), Some(4711));
        assert!(parse_job_id("Submitted batch job 4711").is_err());
        assert!(parse_job_id("").is_err());
    }

    #[test]
    fn a_command_that_fails_says_what_it_said() {
        let cli = Cli::new(None, Duration::from_secs(5));
        let err = cli
            .run("sh", &["-c".into(), "echo nope >&2; exit 3".into()], None)
            .expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("sh") && text.contains("nope"), "{text}");
    }

    #[test]
    fn a_command_that_hangs_is_cut_at_its_deadline() {
        // Without the deadline, `sleep` would end well and this would pass
        // as a success 30 s later.
        let cli = Cli::new(None, Duration::from_millis(200));
        let err = cli.run("sleep", &["30".into()], None).expect_err("cut");
        assert!(err.to_string().contains("no answer"), "{err}");
    }
}
