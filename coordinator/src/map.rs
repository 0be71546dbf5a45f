//! A `map` run from start to end: output, pool, fetches beside it, and the final status.

use crate::errors::Error;
use crate::fetch;
use crate::joblog::Joblog;
use crate::output::{PendingFile, Sink, Writer};
use crate::plan::MapPlan;
use crate::pool::{self, Job, Stop};
use crate::progress;
use crate::report::Report;
use crate::shard::ShardWriter;
use crate::signal::Interrupt;
use std::io;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long an interrupted run waits for the writer to flush complete results (a stalled
/// consumer on the other end of a pipe must not make Ctrl-C hang).
const INTERRUPTED_FLUSH: Duration = Duration::from_secs(2);

/// Runs `plan`; stops early on an error or an interrupt, leaving an exact prefix on stdout and
/// no `--output` file. Writes `--report` whatever the outcome.
pub async fn run(
    plan: MapPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut observers = pool::Observers::default();
    if let Some(path) = &plan.joblog {
        let log = Joblog::create(path, started, Some(plan.chunks))
            .map_err(|e| crate::outfile::open_error("--joblog", path, e))?;
        observers.joblog = Some(Box::new(log));
    }
    let (stats, written, result) = execute(&plan, interrupts, &mut observers).await;
    progress::finish();
    if let Some(log) = observers.joblog.take() {
        if let Err(err) = log.finish() {
            tracing::warn!("the joblog is incomplete: {err}");
        }
    }
    // The map itself finished: its faults are told whether or not a --fetch failed beside it.
    let map_finished = matches!(result, Ok(()) | Err(Error::FetchFailed { .. }));
    if map_finished {
        report_faults(&stats);
    }
    let result = match (result, stats.failed_count) {
        (Ok(()), 0) => Ok(()),
        // Missing results (5) weigh more than a failed fetch beside a complete map (3); the
        // failed fetches were each told on stderr as they ended.
        (Ok(()) | Err(Error::FetchFailed { .. }), failed) if failed > 0 => {
            Err(Error::Partial { failed })
        }
        (Ok(()), _) => Ok(()),
        (Err(err), _) => Err(err),
    };
    if let Some(path) = &plan.report {
        let report = Report::new(&plan, &stats, written, started.elapsed(), &result);
        if let Err(err) = report.write(path) {
            tracing::warn!("cannot write --report '{}': {err}", path.display());
            // A signal that ended the wait for a FIFO's reader ends the run as a signal does.
            let err = crate::outfile::open_error("--report", path, err);
            if let (Ok(()), Error::Interrupted { .. }) = (&result, &err) {
                return Err(err);
            }
        }
    }
    result
}

/// The run itself: returns what happened, how many inputs were written, and the outcome.
async fn execute(
    plan: &MapPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
    observers: &mut pool::Observers,
) -> (pool::Stats, u64, Result<(), Error>) {
    let opened = open_sink(plan);
    let (sink, pending) = match opened {
        Ok(parts) => parts,
        Err(err) => return (pool::Stats::default(), 0, Err(err)),
    };
    let fetches = plan.fetch.clone().map(|f| tokio::spawn(fetch::beside_map(f)));
    let (mut results, writer) = Writer::start(sink, plan.format, plan.on_fail);
    let job = Job {
        task: plan.task.clone(),
        work: pool::Work::Range { chunks: plan.chunks, format: plan.format },
        config: plan.pool.clone(),
        ordered: true,
    };
    let total = u64::try_from(plan.chunks.items()).unwrap_or(u64::MAX);
    if plan.progress {
        observers.progress = Some(progress::for_map(total));
    }
    let (stats, result) = if plan.chunks.count() == 0 {
        (pool::Stats::default(), Ok(()))
    } else {
        pool::run(job, &mut results, interrupts, observers).await
    };
    // Read once the writer is done: the pool's end no longer waits for idle workers to exit,
    // which gave the writer time to take the last results before this was read.
    let consumed = results.consumed.clone();
    let complete = result.is_ok();
    let flushed = if complete {
        writer.finish(results, true).await
    } else {
        tokio::time::timeout(INTERRUPTED_FLUSH, writer.finish(results, false))
            .await
            .unwrap_or(Ok(()))
    };
    let written = *consumed.borrow();
    let outcome = match result {
        Ok(()) => flushed.map_err(Error::Output),
        Err(Stop::ConsumerGone) => Err(Error::Output(
            flushed.err().unwrap_or_else(|| io::Error::other("the writer stopped")),
        )),
        Err(stop) => Err(Error::from(stop)),
    };
    let outcome = outcome.and_then(|()| match pending {
        Some(pending) => {
            pending.commit().and_then(|()| sync_shard_dir(plan)).map_err(Error::Output)
        }
        None => Ok(()),
    });
    tracing::info!(
        items = %plan.chunks.items(),
        chunks = plan.chunks.count(),
        workers = plan.pool.workers,
        restarts = stats.restarts,
        retried = stats.retried,
        timeouts = stats.timeouts,
        recycled = stats.recycled,
        "map finished"
    );
    let outcome = match (outcome, fetches) {
        (Ok(()), Some(fetches)) => {
            let total = plan.fetch.as_ref().map_or(0, |f| f.urls.len());
            match fetches.await.map_err(|e| Error::Http(e.to_string())) {
                Ok(Ok(0)) => Ok(()),
                Ok(Ok(failed)) => Err(Error::FetchFailed { failed, total }),
                Ok(Err(err)) | Err(err) => Err(err),
            }
        }
        (outcome, _) => outcome,
    };
    (stats, written, outcome)
}

/// After a shard file's rename, fsyncs its directory: a cluster job that reported the shard
/// done must not lose it to a crash of the node.
fn sync_shard_dir(plan: &MapPlan) -> io::Result<()> {
    match (&plan.shard, &plan.output) {
        (Some(_), Some(path)) => crate::shard::sync_parent_dir(path),
        _ => Ok(()),
    }
}

/// Where the results go: stdout, an `--output` file, or a `--shard` file.
fn open_sink(plan: &MapPlan) -> Result<(Sink, Option<PendingFile>), Error> {
    let Some(path) = &plan.output else { return Ok((Sink::Stdout, None)) };
    let cannot = |e| crate::outfile::open_error("--output", path, e);
    let (pending, file) = PendingFile::create(path).map_err(cannot)?;
    let sink = match &plan.shard {
        Some(shard) => {
            Sink::Shard(Box::new(ShardWriter::new(file, shard.clone()).map_err(cannot)?))
        }
        None => Sink::File(file),
    };
    Ok((sink, Some(pending)))
}

/// The end-of-run summary on stderr: one line of counts when anything went wrong (silent
/// otherwise, and under `-q`), then under `--keep-going` one line per input given up.
fn report_faults(stats: &pool::Stats) {
    if stats.restarts == 0 && stats.retried == 0 && stats.timeouts == 0 && stats.failed_count == 0 {
        return;
    }
    let verdict = if stats.failed_count == 0 {
        "output is complete".to_owned()
    } else {
        format!("{} input(s) failed", stats.failed_count)
    };
    tracing::warn!(
        "{} worker(s) restarted, {} chunk(s) retried, {} timed out; {verdict}",
        stats.restarts,
        stats.retried,
        stats.timeouts
    );
    for failed in &stats.failed_items {
        tracing::warn!("failed {}: {}", failed.what, failed.reason);
    }
    let unlisted = stats.failed_count - stats.failed_items.len() as u64;
    if unlisted > 0 {
        tracing::warn!("... and {unlisted} more failed input(s)");
    }
}
