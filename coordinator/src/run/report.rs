//! `run --report PATH`: one JSON object when the run ends, whatever its outcome.

use super::output::Written;
use super::RunPlan;
use crate::errors::Error;
use crate::pool::Stats;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// A finished `run`.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub command: &'static str,
    pub template: String,
    pub workers: usize,
    /// Jobs whose outputs were written.
    pub jobs: u64,
    pub succeeded: u64,
    pub failed_count: u64,
    /// The first failed jobs (at most 1000): `{seq, input, reason}`.
    pub failed: Vec<FailedJob>,
    pub elapsed_s: f64,
    pub jobs_per_s: f64,
    /// Workers that died and were replaced (a job's failure is not a worker's).
    pub restarts: u32,
    pub recycled: u32,
    /// `complete`, `partial` (some jobs failed), `halted`, `interrupted` or `failed`.
    pub outcome: &'static str,
    pub exit_code: u8,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FailedJob {
    pub seq: u64,
    pub input: String,
    pub reason: String,
}

impl RunReport {
    pub fn new(
        plan: &RunPlan,
        stats: &Stats,
        written: Option<&Written>,
        started: Instant,
        result: &Result<(), Error>,
    ) -> RunReport {
        let secs = started.elapsed().as_secs_f64();
        let (outcome, exit_code, error) = crate::report::outcome(result);
        let outcome = match result {
            Err(Error::Halted { .. }) => "halted",
            Err(Error::JobsFailed { .. }) => "partial",
            _ => outcome,
        };
        let (jobs, failed_count) = written.map_or((0, 0), |w| (w.jobs, w.failed));
        RunReport {
            command: "run",
            template: plan.template.text(),
            workers: plan.pool.workers,
            jobs,
            succeeded: jobs - failed_count,
            failed_count,
            failed: written
                .map(|w| {
                    w.failures
                        .iter()
                        .map(|f| FailedJob {
                            seq: f.seq,
                            input: f.input.clone(),
                            reason: f.why.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            elapsed_s: secs,
            jobs_per_s: if secs > 0.0 { jobs as f64 / secs } else { 0.0 },
            restarts: stats.restarts,
            recycled: stats.recycled,
            outcome,
            exit_code,
            error,
        }
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }
}
