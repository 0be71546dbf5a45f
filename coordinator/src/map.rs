//! A `map` run from start to end: output, pool, fetches beside it, and the final status.

use crate::errors::Error;
use crate::fetch;
use crate::output::{PendingFile, Writer};
use crate::plan::MapPlan;
use crate::pool::{self, Job, Stop};
use crate::signal::Interrupt;
use std::io::{self, Write};
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
    let (sink, pending): (Box<dyn Write + Send>, Option<PendingFile>) = match &plan.output {
        Some(path) => {
            let (pending, file) = PendingFile::create(path).map_err(|e| {
                Error::Usage(format!("cannot write --output '{}': {e}", path.display()))
            })?;
            (Box::new(file), Some(pending))
        }
        None => (Box::new(io::stdout()), None),
    };
    let fetches = plan.fetch.clone().map(|f| tokio::spawn(fetch::beside_map(f)));
    let mut writer = Writer::start(sink, plan.format);
    let job = Job {
        task: plan.task.clone(),
        format: plan.format,
        chunks: plan.chunks,
        workers: plan.workers,
        command: plan.worker.clone(),
    };
    let result = if plan.chunks.count() == 0 {
        Ok(pool::Stats::default())
    } else {
        pool::run(&job, &mut writer, interrupts).await
    };
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
        retried_chunks = stats.retried_chunks,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "map finished"
    );
    if stats.restarts > 0 || stats.retried_chunks > 0 {
        tracing::warn!(
            "{} worker(s) restarted, {} chunk(s) re-run; output is complete",
            stats.restarts,
            stats.retried_chunks
        );
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
