//! Concurrent GETs on the coordinator's runtime: the `fetch` command, and `map --fetch` beside
//! the pool.

mod client;
mod follow;
mod http1;
mod lean;
mod process;

pub use client::FetchOutcome;
pub use lean::FORCE_ENV;
pub use process::Computed;

use crate::errors::Error;
use crate::plan::FetchPlan;
use crate::pool::Stats;
use crate::progress;
use crate::report::{self, FetchReport, Percentiles, ProcessCounts};
use crate::signal::Interrupt;
use std::collections::BTreeMap;
use std::io::Write;
use tokio::sync::mpsc;

/// Runs every fetch of `plan`, at most `concurrency` at once, calling `report` with each outcome
/// in input order as soon as it and all before it are done (with `true` for the last outcome
/// of each batch that became ready together, the moment to flush). Returns how many failed.
pub async fn run_ordered(
    plan: &FetchPlan,
    mut report: impl FnMut(&FetchOutcome, bool) -> std::io::Result<()>,
) -> Result<usize, Error> {
    let limits = lean::Limits { timeout: plan.timeout, max_body: plan.max_body };
    let mut fetches = lean::start(&plan.urls, plan.concurrency, limits, || lean::Discard);
    let mut pending = BTreeMap::new();
    let mut next = 0;
    let mut failed = 0;
    while let Some((i, outcome, lean::Discard)) = fetches.done.recv().await {
        pending.insert(i, outcome);
        while let Some(outcome) = pending.remove(&next) {
            if !outcome.is_success() {
                failed += 1;
            }
            next += 1;
            report(&outcome, !pending.contains_key(&next)).map_err(Error::Output)?;
        }
    }
    Ok(failed)
}

/// `powerpool fetch`: one line per URL on stdout, in input order (with `--process`, the
/// body's result at its end); a bar and a report if asked. Both modes finish the same way.
pub async fn command(
    plan: FetchPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let total = plan.urls.len();
    let bar = plan.progress.then(|| progress::for_fetch(total as u64));
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut tally = Tally::default();
    let mut print = |outcome: &FetchOutcome, computed: Option<&Computed>, batch_end: bool| {
        let failed = tally.add(outcome, computed);
        match computed {
            None => writeln!(out, "{}", outcome.line())?,
            Some(Computed::NotFetched) => writeln!(out, "{} -", outcome.line())?,
            Some(Computed::Failed(_)) => writeln!(out, "{} ERR:task", outcome.line())?,
            Some(Computed::Done(result)) => {
                write!(out, "{} ", outcome.line())?;
                out.write_all(result)?;
                out.write_all(b"\n")?;
            }
        }
        if let (true, Some(Computed::Failed(why))) = (failed, computed) {
            progress::suspend(|| tracing::warn!("{}: the task failed: {why}", outcome.url));
        }
        if let Some(bar) = &bar {
            bar.inc(1);
            if tally.failed > 0 {
                bar.set_message(format!("{} failed", tally.failed));
            }
        }
        if batch_end {
            out.flush()?;
        }
        Ok(())
    };
    let (stats, result) = match &plan.process {
        None => {
            let fetches = run_ordered(&plan, |outcome, end| print(outcome, None, end));
            let result = tokio::select! {
                result = fetches => result.map(|_| ()),
                Some(int) = interrupts.recv() => {
                    Err(Error::Interrupted { name: int.name, code: int.code })
                }
            };
            (None, result)
        }
        Some(process) => {
            let (stats, result) =
                process::run(&plan, process, interrupts, |outcome, computed, end| {
                    print(outcome, Some(computed), end)
                })
                .await;
            (Some((process, stats)), result)
        }
    };
    let flushed = out.flush().map_err(Error::Output);
    progress::finish();
    if let Some((_, stats)) = &stats {
        report_pool(stats);
    }
    let failures = match tally.failed {
        0 => Ok(()),
        failed => Err(Error::FetchFailed { failed, total }),
    };
    let result = result.and(flushed).and(failures);
    if let Some(path) = &plan.report {
        let counts = stats.map(|(process, stats)| ProcessCounts::new(process, &stats));
        if let Err(err) = tally.report(total, started.elapsed(), &result, counts).write(path) {
            tracing::warn!("cannot write --report '{}': {err}", path.display());
        }
    }
    result
}

/// The end-of-run line of `--process` when anything went wrong with the pool.
fn report_pool(stats: &Stats) {
    if stats.restarts > 0 || stats.retried > 0 || stats.failed_count > 0 {
        tracing::warn!(
            "{} worker(s) restarted, {} body(ies) retried, {} timed out; {} could not be computed",
            stats.restarts,
            stats.retried,
            stats.timeouts,
            stats.failed_count
        );
    }
}

/// Counts for `--report`.
#[derive(Debug, Default)]
struct Tally {
    failed: usize,
    task_failed: usize,
    bytes: u64,
    statuses: BTreeMap<String, usize>,
    latencies_ms: Vec<f64>,
}

impl Tally {
    /// Counts one URL; returns whether it failed (its fetch, or its task).
    fn add(&mut self, outcome: &FetchOutcome, computed: Option<&Computed>) -> bool {
        let task_failed = matches!(computed, Some(Computed::Failed(_)));
        let failed = !outcome.is_success() || task_failed;
        self.failed += usize::from(failed);
        self.task_failed += usize::from(task_failed);
        self.bytes += outcome.bytes;
        let status = match outcome.status {
            Ok(code) => code.to_string(),
            Err(reason) => format!("ERR:{reason}"),
        };
        *self.statuses.entry(status).or_default() += 1;
        self.latencies_ms.push(outcome.elapsed.as_secs_f64() * 1e3);
        failed
    }

    fn report(
        self,
        urls: usize,
        elapsed: std::time::Duration,
        result: &Result<(), Error>,
        process: Option<ProcessCounts>,
    ) -> FetchReport {
        let (outcome, exit_code, error) = report::outcome(result);
        let secs = elapsed.as_secs_f64();
        let done = self.latencies_ms.len();
        FetchReport {
            command: "fetch",
            urls,
            ok: done - self.failed,
            failed: self.failed,
            status_counts: self.statuses,
            bytes: self.bytes,
            elapsed_s: secs,
            requests_per_s: if secs > 0.0 { done as f64 / secs } else { 0.0 },
            latency_ms: Percentiles::of(self.latencies_ms),
            process: process.map(|p| ProcessCounts { task_failed: self.task_failed, ..p }),
            outcome,
            exit_code,
            error,
        }
    }
}

/// `map --fetch`: each outcome on stderr as it completes in order; returns how many failed.
pub async fn beside_map(plan: FetchPlan) -> Result<usize, Error> {
    run_ordered(&plan, |outcome, _| {
        progress::suspend(|| eprintln!("fetch: {}", outcome.line()));
        Ok(())
    })
    .await
}
