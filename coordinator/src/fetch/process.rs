//! `fetch --process TASK`: fetch concurrently on the runtime, compute each body in the worker
//! pool, print one line per URL in input order: `<status> <bytes> <ms> <url> <result>`.
//!
//! Three tasks run at once: the fetcher (at most `--concurrency` GETs in flight), the pool's
//! supervisor (bodies go to workers as they arrive, in any order) and the printer (results in
//! input order). Memory is bounded by the *budget*: bytes fetched and not yet computed. A fetch
//! takes budget for every piece of body it receives and waits when there is none; the budget
//! comes back when the body's result is in. So that a body larger than what is left (or than
//! the whole budget) cannot wedge the others, one fetch at a time may go into *overdraft* and
//! finish its body beyond the budget: memory stays under budget + `--max-body`.

use super::client::{Download, FetchOutcome};
use crate::errors::Error;
use crate::output::{Feed, Writer};
use crate::plan::{FetchPlan, ProcessPlan};
use crate::pool::{self, Body, BodyEvent, Job, Observers, Stop};
use crate::progress;
use crate::signal::Interrupt;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use powerpool_shared::Format;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// What a fetched body holds of the budget until its result is in.
#[derive(Debug, Default)]
pub struct Hold {
    _permit: Option<OwnedSemaphorePermit>,
    _overdraft: Option<OwnedMutexGuard<()>>,
}

/// The byte budget: permits are bytes.
struct Budget {
    bytes: Arc<Semaphore>,
    overdraft: Arc<tokio::sync::Mutex<()>>,
}

/// How each URL's line begins, and whether its body went to the pool.
type Lines = Arc<Mutex<HashMap<u64, (String, bool)>>>;

/// Runs `fetch --process`.
pub async fn command(
    plan: FetchPlan,
    process: ProcessPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<(), Error> {
    let total = plan.urls.len() as u64;
    let job = Job {
        task: process.task.clone(),
        format: Format::Text,
        chunks: crate::chunk::Chunks::new(0, total as i64, 1),
        workers: process.workers.min(plan.urls.len()).max(1),
        command: process.worker.clone(),
        retries: process.retries,
        keep_going: true,
        task_timeout: process.task_timeout,
        max_tasks_per_worker: None,
        ordered: true,
    };
    let lines: Lines = Arc::default();
    let (body_tx, mut body_rx) = mpsc::unbounded_channel();
    let budget = Budget {
        bytes: Arc::new(Semaphore::new(usize::try_from(process.budget).unwrap_or(usize::MAX))),
        overdraft: Arc::default(),
    };
    let client = super::build(plan.concurrency, plan.timeout).map_err(Error::Http)?;
    let fetcher =
        tokio::spawn(fetch_all(plan.clone(), client, budget, body_tx, Arc::clone(&lines)));
    let bar = plan.progress.then(|| progress::for_fetch(total));
    let (mut writer, feed) = Writer::channel();
    let mut observers = Observers::default();
    let pool_run = async {
        let (stats, result) =
            pool::run(&job, &mut writer, interrupts, &mut observers, Some(&mut body_rx)).await;
        let _ = writer.finish(result.is_ok()).await;
        (stats, result)
    };
    let ((stats, result), printed) = tokio::join!(pool_run, print(feed, &lines, bar.as_ref()));
    fetcher.abort();
    progress::finish();
    match result {
        Ok(()) => {}
        Err(Stop::Fatal(err)) => return Err(err),
        Err(Stop::Interrupted(int)) => {
            return Err(Error::Interrupted { name: int.name, code: int.code })
        }
        Err(Stop::WriterGone) => {}
    }
    let failed = printed?;
    if stats.restarts > 0 || stats.failed_count > 0 {
        tracing::warn!(
            "{} worker(s) restarted, {} body(ies) retried, {} could not be computed",
            stats.restarts,
            stats.retried,
            stats.failed_count
        );
    }
    match failed {
        0 => Ok(()),
        failed => Err(Error::FetchFailed { failed: failed as usize, total: total as usize }),
    }
}

/// Fetches every URL, at most `concurrency` at once, and hands each body (or the news that
/// there is none) to the supervisor.
async fn fetch_all(
    plan: FetchPlan,
    client: reqwest::Client,
    budget: Budget,
    bodies: mpsc::UnboundedSender<BodyEvent>,
    lines: Lines,
) {
    let (client, budget) = (&client, &budget);
    let mut fetches =
        futures::stream::iter(plan.urls.iter().cloned().enumerate())
            .map(|(i, url)| async move {
                (i as u64, fetch_body(client, url, plan.max_body, budget).await)
            })
            .buffer_unordered(plan.concurrency);
    while let Some((index, (outcome, body))) = fetches.next().await {
        let ok = body.is_some();
        if let Ok(mut lines) = lines.lock() {
            lines.insert(index, (outcome.line(), ok));
        }
        let body = body.map(|(bytes, hold)| Body { bytes, url: outcome.url.to_string(), hold });
        if bodies.send(BodyEvent { index, body }).is_err() {
            return; // the run stopped
        }
    }
}

/// GETs `url` and keeps its body, taking budget for every piece received.
async fn fetch_body(
    client: &reqwest::Client,
    url: url::Url,
    max_body: u64,
    budget: &Budget,
) -> (FetchOutcome, Option<(Bytes, Hold)>) {
    let start = Instant::now();
    let mut hold = Hold::default();
    let mut held = 0usize;
    let mut body = BytesMut::new();
    let status = async {
        let mut download = Download::start(client, &url, max_body).await?;
        // Sized once from Content-Length when there is one: no doubling, no copies on growth.
        body.reserve(usize::try_from(download.announced().unwrap_or(0)).unwrap_or(0));
        while let Some(piece) = download.next_piece().await? {
            if hold._overdraft.is_none() {
                take_budget(budget, piece.len(), &mut hold, &mut held).await;
            }
            body.extend_from_slice(&piece);
        }
        Ok(download.status())
    }
    .await;
    let outcome = FetchOutcome { url, status, bytes: body.len() as u64, elapsed: start.elapsed() };
    let body = outcome.is_success().then(|| (body.freeze(), hold));
    (outcome, body)
}

/// Takes `n` bytes of budget into `hold`; if none is left and this fetch already holds some,
/// goes into overdraft (one fetch at a time) instead of waiting for budget it may be blocking.
async fn take_budget(budget: &Budget, n: usize, hold: &mut Hold, held: &mut usize) {
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    let more = if *held == 0 {
        Arc::clone(&budget.bytes).acquire_many_owned(n32).await.ok()
    } else {
        tokio::select! {
            permit = Arc::clone(&budget.bytes).acquire_many_owned(n32) => permit.ok(),
            guard = Arc::clone(&budget.overdraft).lock_owned() => {
                hold._overdraft = Some(guard);
                None
            }
        }
    };
    if let Some(more) = more {
        *held += n;
        match &mut hold._permit {
            Some(permit) => permit.merge(more),
            None => hold._permit = Some(more),
        }
    }
}

/// Prints results in input order as the supervisor releases them; returns how many URLs
/// failed (the fetch, or the task).
async fn print(
    mut feed: Feed,
    lines: &Lines,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<u64, Error> {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout());
    let mut failed = 0u64;
    while let Some(Some(released)) = feed.rx.recv().await {
        let (prefix, fetched) =
            lines.lock().ok().and_then(|mut l| l.remove(&released.first)).unwrap_or_default();
        let result = match (fetched, released.bytes.is_empty()) {
            (false, _) => "-".to_owned(),
            (true, true) => "ERR:task".to_owned(),
            (true, false) => String::from_utf8_lossy(&released.bytes).into_owned(),
        };
        if !fetched || released.bytes.is_empty() {
            failed += 1;
        }
        writeln!(out, "{prefix} {result}").map_err(Error::Output)?;
        feed.written.send_replace(released.end);
        if let Some(bar) = bar {
            bar.inc(1);
        }
        if feed.rx.is_empty() {
            out.flush().map_err(Error::Output)?;
        }
    }
    out.flush().map_err(Error::Output)?;
    Ok(failed)
}
