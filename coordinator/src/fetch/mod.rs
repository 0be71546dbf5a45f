//! Concurrent GETs on the coordinator's runtime: the `fetch` command, and `map --fetch` beside
//! the pool.

mod client;
mod process;

pub use client::{build, fetch_one, FetchOutcome};
pub use process::{command as process_command, Hold};

use crate::errors::Error;
use crate::plan::FetchPlan;
use crate::progress;
use crate::report::{self, FetchReport, Percentiles};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::io::Write;

/// Runs every fetch of `plan`, at most `concurrency` at once, calling `report` with each outcome
/// in input order as soon as it and all before it are done (with `true` for the last outcome
/// of each batch that became ready together, the moment to flush). Returns how many failed.
pub async fn run_ordered(
    plan: &FetchPlan,
    mut report: impl FnMut(&FetchOutcome, bool) -> std::io::Result<()>,
) -> Result<usize, Error> {
    let client = build(plan.concurrency, plan.timeout).map_err(Error::Http)?;
    let client = &client;
    let mut outcomes = futures::stream::iter(plan.urls.iter().cloned().enumerate())
        .map(|(i, url)| async move { (i, fetch_one(client, url, plan.max_body).await) })
        .buffer_unordered(plan.concurrency);
    let mut pending = BTreeMap::new();
    let mut next = 0;
    let mut failed = 0;
    while let Some((i, outcome)) = outcomes.next().await {
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

/// `powerpool fetch`: one line per URL on stdout, in input order; a bar and a report if asked.
pub async fn command(plan: FetchPlan) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let total = plan.urls.len();
    let bar = plan.progress.then(|| progress::for_fetch(total as u64));
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut tally = Tally::default();
    let result = run_ordered(&plan, |outcome, batch_end| {
        tally.add(outcome);
        writeln!(out, "{}", outcome.line())?;
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
    })
    .await;
    let flushed = out.flush().map_err(Error::Output);
    progress::finish();
    let result =
        result.and_then(|failed| flushed.map(|()| failed)).and_then(|failed| match failed {
            0 => Ok(()),
            failed => Err(Error::FetchFailed { failed, total }),
        });
    if let Some(path) = &plan.report {
        if let Err(err) = tally.report(total, started.elapsed(), &result).write(path) {
            tracing::warn!("cannot write --report '{}': {err}", path.display());
        }
    }
    result
}

/// Counts for `--report`.
#[derive(Debug, Default)]
struct Tally {
    failed: usize,
    bytes: u64,
    statuses: BTreeMap<String, usize>,
    latencies_ms: Vec<f64>,
}

impl Tally {
    fn add(&mut self, outcome: &FetchOutcome) {
        if !outcome.is_success() {
            self.failed += 1;
        }
        self.bytes += outcome.bytes;
        let status = match outcome.status {
            Ok(code) => code.to_string(),
            Err(reason) => format!("ERR:{reason}"),
        };
        *self.statuses.entry(status).or_default() += 1;
        self.latencies_ms.push(outcome.elapsed.as_secs_f64() * 1e3);
    }

    fn report(
        self,
        urls: usize,
        elapsed: std::time::Duration,
        result: &Result<(), Error>,
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
