//! `--report PATH`: one JSON object at the end of a run, whatever its outcome, for scripts and
//! dashboards. Field by field in docs/cli.md; every count is the same one the run printed.

use crate::errors::Error;
use crate::plan::{format_name, MapPlan};
use crate::pool::Stats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A finished `map`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: &'static str,
    pub task: String,
    /// The range asked for, `[start, end)`.
    pub range: [i64; 2],
    /// `K/N` under `--shard`.
    pub shard: Option<String>,
    pub format: &'static str,
    pub workers: usize,
    /// Inputs in the range (the shard's slice under `--shard`).
    pub items: u64,
    /// Inputs whose results were written, in order (all of them when `outcome` is `complete`).
    pub items_written: u64,
    pub chunks: u64,
    pub elapsed_s: f64,
    pub items_per_s: f64,
    pub restarts: u32,
    pub retries: u32,
    pub timeouts: u32,
    pub recycled: u32,
    pub failed_count: u64,
    pub failed_items: Vec<FailedItem>,
    /// `complete`, `partial` (--keep-going gave inputs up), `interrupted` or `failed`.
    pub outcome: &'static str,
    pub exit_code: u8,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FailedItem {
    pub item: i64,
    pub reason: String,
}

impl Report {
    pub fn new(
        plan: &MapPlan,
        stats: &Stats,
        written: u64,
        elapsed: Duration,
        result: &Result<(), Error>,
    ) -> Report {
        let secs = elapsed.as_secs_f64();
        let (outcome, exit_code, error) = outcome(result);
        Report {
            command: "map",
            task: plan.task.clone(),
            range: plan.range,
            shard: plan.shard.as_ref().map(|h| format!("{}/{}", h.shard.index, h.shard.count)),
            format: format_name(plan.format),
            workers: plan.pool.workers,
            items: u64::try_from(plan.chunks.items()).unwrap_or(u64::MAX),
            items_written: written,
            chunks: plan.chunks.count(),
            elapsed_s: secs,
            items_per_s: if secs > 0.0 { written as f64 / secs } else { 0.0 },
            restarts: stats.restarts,
            retries: stats.retried,
            timeouts: stats.timeouts,
            recycled: stats.recycled,
            failed_count: stats.failed_count,
            failed_items: stats
                .failed_items
                .iter()
                .map(|f| FailedItem { item: plan.chunks.item(f.offset), reason: f.reason.clone() })
                .collect(),
            outcome,
            exit_code,
            error,
        }
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_json(path, self)
    }
}

/// A finished `fetch`.
#[derive(Debug, Serialize)]
pub struct FetchReport {
    pub command: &'static str,
    pub urls: usize,
    pub ok: usize,
    pub failed: usize,
    /// How many answers of each kind: `"200"`, `"404"`, `"ERR:timeout"`...
    pub status_counts: BTreeMap<String, usize>,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    /// Latency percentiles in milliseconds over every URL (failures included).
    pub latency_ms: Percentiles,
    /// `--process`: the pool's counters (`null` without it).
    pub process: Option<ProcessCounts>,
    pub outcome: &'static str,
    pub exit_code: u8,
    pub error: Option<String>,
}

/// What the pool of `fetch --process` did.
#[derive(Debug, Serialize)]
pub struct ProcessCounts {
    pub task: String,
    pub workers: usize,
    /// Bodies whose task kept failing (`ERR:task`).
    pub task_failed: usize,
    pub restarts: u32,
    pub retries: u32,
    pub timeouts: u32,
    pub recycled: u32,
}

impl ProcessCounts {
    pub fn new(process: &crate::plan::ProcessPlan, stats: &Stats) -> ProcessCounts {
        ProcessCounts {
            task: process.task.clone(),
            workers: process.pool.workers,
            task_failed: 0,
            restarts: stats.restarts,
            retries: stats.retried,
            timeouts: stats.timeouts,
            recycled: stats.recycled,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (milliseconds), sorted here.
    pub fn of(mut samples: Vec<f64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Percentiles { p50: rank(0.5), p90: rank(0.9), p99: rank(0.99), max: rank(1.0) }
    }
}

impl FetchReport {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_json(path, self)
    }
}

/// `(outcome, exit code, error message)` of a run's result.
pub fn outcome(result: &Result<(), Error>) -> (&'static str, u8, Option<String>) {
    match result {
        Ok(()) => ("complete", 0, None),
        Err(err) => {
            let outcome = match err {
                Error::Partial { .. } | Error::FetchFailed { .. } => "partial",
                Error::Interrupted { .. } => "interrupted",
                _ => "failed",
            };
            (outcome, err.exit_code(), Some(err.to_string()))
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    std::io::Write::write_all(&mut crate::outfile::open_plain(path)?, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        let one = Percentiles::of(vec![7.0]);
        assert_eq!((one.p50, one.max), (7.0, 7.0));
        assert_eq!(Percentiles::of(vec![]).max, 0.0);
    }
}
