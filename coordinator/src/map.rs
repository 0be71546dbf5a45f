//! A `map` run from start to end: output, pool, fetches beside it, and the final status.

use crate::errors::Error;
use crate::fetch;
use crate::output::{PendingFile, Sink, Writer};
use crate::plan::MapPlan;
use crate::pool::{self, Job, Stop};
use crate::shard::ShardWriter;
use crate::signal::Interrupt;
use std::io;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long an interrupted run waits for the writer to flush complete results (a stalled
/// consumer on the other end of a pipe must not make Ctrl-C hang).
const INTERRUPTED_FLUSH: Duration = Duration::from_secs(2);

/// Runs `plan`; stops early on an error or an interrupt, leaving an exact prefix on stdout and
/// no `--output` file.
pub async fn run(
    plan: MapPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<(), Error> {
    let started = Instant::now();
    let (sink, pending) = match &plan.output {
        Some(path) => {
            let cannot =
                |e| Error::Usage(format!("cannot write --output '{}': {e}", path.display()));
            let (pending, file) = PendingFile::create(path).map_err(cannot)?;
            let sink = match &plan.shard {
                Some(shard) => {
                    Sink::Shard(Box::new(ShardWriter::new(file, shard.clone()).map_err(cannot)?))
                }
                None => Sink::File(file),
            };
            (sink, Some(pending))
        }
        None => (Sink::Stdout, None),
    };
    let fetches = plan.fetch.clone().map(|f| tokio::spawn(fetch::beside_map(f)));
    let mut writer = Writer::start(sink, plan.format);
    let job = Job {
        task: plan.task.clone(),
        format: plan.format,
        chunks: plan.chunks,
        workers: plan.workers,
        command: plan.worker.clone(),
        retries: plan.retries,
        keep_going: plan.keep_going,
        task_timeout: plan.task_timeout,
        max_tasks_per_worker: plan.max_tasks_per_worker,
    };
    let result = if plan.chunks.count() == 0 {
        Ok(pool::Stats::default())
    } else {
        pool::run(&job, &mut writer, interrupts).await
    };
    // Under --keep-going a sum without the failed inputs is still printed (exit 5 says so).
    let complete = result.is_ok();
    let flushed = if complete {
        writer.finish(true).await
    } else {
        tokio::time::timeout(INTERRUPTED_FLUSH, writer.finish(false)).await.unwrap_or(Ok(()))
    };
    let stats = match result {
        Ok(stats) => stats,
        Err(Stop::WriterGone) => {
            return Err(Error::Output(
                flushed.err().unwrap_or_else(|| io::Error::other("the writer stopped")),
            ));
        }
        Err(Stop::Fatal(err)) => return Err(err),
        Err(Stop::Interrupted(int)) => {
            return Err(Error::Interrupted { name: int.name, code: int.code })
        }
    };
    flushed.map_err(Error::Output)?;
    if let Some(pending) = pending {
        pending.commit().map_err(Error::Output)?;
    }
    tracing::info!(
        items = %plan.chunks.items(),
        chunks = plan.chunks.count(),
        workers = plan.workers,
        restarts = stats.restarts,
        retried = stats.retried,
        timeouts = stats.timeouts,
        recycled = stats.recycled,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "map finished"
    );
    report_faults(&stats);
    if stats.failed_count > 0 {
        return Err(Error::Partial { failed: stats.failed_count });
    }
    if let Some(fetches) = fetches {
        let total = plan.fetch.as_ref().map_or(0, |f| f.urls.len());
        let failed = fetches.await.map_err(|e| Error::Http(e.to_string()))??;
        if failed > 0 {
            return Err(Error::FetchFailed { failed, total });
        }
    }
    Ok(())
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
        tracing::warn!("failed input {}: {}", failed.item, failed.reason);
    }
    let unlisted = stats.failed_count - stats.failed_items.len() as u64;
    if unlisted > 0 {
        tracing::warn!("... and {unlisted} more failed input(s)");
    }
}
