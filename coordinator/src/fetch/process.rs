//! `fetch --process TASK`: a client of the pool's item path. Fetches run concurrently on the
//! runtime; each 2xx body becomes one item for the pool, which computes it in a worker; each
//! URL gets one record in input order: its fetch, and what became of its body.
//!
//! Three parts run at once: the fetcher (at most `--concurrency` GETs in flight), the pool
//! (items go to workers as they arrive, results come back as computed) and the gatherer
//! (records in URL order). Items are numbered by the pool in the order they arrive, which is
//! not URL order: the gatherer keeps the map between the two.
//!
//! Memory is bounded by the *budget*: bytes fetched and not yet computed. A fetch takes budget
//! for every piece of body it receives (never more than the whole budget at once) and waits
//! when there is none; the budget comes back when the body's result is in. So that a body
//! larger than what is left (or than the whole budget) cannot wedge the others, one fetch at a
//! time may go into *overdraft* and finish its body beyond the budget. Bodies are kept as the
//! pieces they arrived in, never copied into one buffer nor reserved ahead from a
//! Content-Length (a server may lie), so what is held is what arrived: at most the budget plus
//! one body of at most `--max-body` in overdraft.

use super::client::FetchOutcome;
use super::lean::{self, Limits, Sink};
use crate::errors::Error;
use crate::plan::{FetchPlan, ProcessPlan};
use crate::pool::{self, Batching, Item, Job, Observers, Outcome, ResultReceiver, Stats};
use crate::signal::Interrupt;
use bytes::Bytes;
use powerpool_shared::codec;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// What became of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Computed {
    /// Not fetched (the fetch failed): nothing to compute.
    NotFetched,
    /// The task's result.
    Done(Bytes),
    /// The task kept failing on this body.
    Failed(String),
}

/// What a fetched body holds of the budget until its result is in.
#[derive(Debug, Default)]
struct Hold {
    _permit: Option<OwnedSemaphorePermit>,
    _overdraft: Option<OwnedMutexGuard<()>>,
}

/// The byte budget: permits are bytes.
#[derive(Clone)]
struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
    overdraft: Arc<tokio::sync::Mutex<()>>,
}

/// One fetch finished: its outcome, and the pool's number for its body if it has one.
struct Fetched {
    url_index: usize,
    outcome: FetchOutcome,
    item: Option<(u64, Hold)>,
}

/// Runs the fetches and computes every body, calling `record` with each URL's outcome in
/// input order (and `true` for the last of each batch that became ready together). Returns
/// what the pool did, and how many URLs failed (their fetch or their task).
pub async fn run(
    plan: &FetchPlan,
    process: &ProcessPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
    record: impl FnMut(&FetchOutcome, &Computed, bool) -> std::io::Result<()>,
) -> (Stats, Result<(), Error>) {
    let total = usize::try_from(process.budget).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
    let budget =
        Budget { bytes: Arc::new(Semaphore::new(total)), total, overdraft: Arc::default() };
    let (items_tx, items_rx) = mpsc::channel(64);
    let (fetched_tx, fetched_rx) = mpsc::unbounded_channel();
    let fetcher = tokio::spawn(fetch_all(plan.clone(), budget, items_tx, fetched_tx));
    let job = Job {
        task: process.task.clone(),
        work: pool::Work::Items {
            source: items_rx,
            // Small bodies share a frame; a large one travels alone, in pieces.
            batching: Batching {
                max_items: 16,
                max_bytes: 1 << 20,
                window_bytes: None,
                target: None,
            },
            lines: false,
        },
        config: process.pool.clone(),
        ordered: false,
    };
    let (mut sender, receiver) = pool::results();
    let pool_run = async {
        let mut observers = Observers::default();
        let (stats, result) = pool::run(job, &mut sender, interrupts, &mut observers).await;
        sender.finish(result.is_ok());
        (stats, result)
    };
    let gathered = gather(plan.urls.len(), fetched_rx, receiver, record);
    let ((stats, result), printed) = tokio::join!(pool_run, gathered);
    fetcher.abort();
    let result = match result {
        Ok(()) => printed,
        Err(pool::Stop::ConsumerGone) => printed.and(Err(Error::from(pool::Stop::ConsumerGone))),
        Err(stop) => Err(Error::from(stop)),
    };
    (stats, result)
}

/// Fetches every URL, at most `concurrency` at once; each outcome goes to the gatherer, then
/// each 2xx body to the pool as an item (numbered here, in the order they go to the pool).
async fn fetch_all(
    plan: FetchPlan,
    budget: Budget,
    items: mpsc::Sender<Item>,
    fetched: mpsc::UnboundedSender<Fetched>,
) {
    let limits = Limits { timeout: plan.timeout, max_body: plan.max_body };
    let new_body = move || Body { budget: Some(budget.clone()), ..Body::default() };
    let mut fetches = lean::start(&plan.urls, plan.concurrency, limits, new_body);
    let mut next_item = 0u64;
    while let Some((url_index, outcome, body)) = fetches.done.recv().await {
        if !outcome.is_success() {
            if fetched.send(Fetched { url_index, outcome, item: None }).is_err() {
                return;
            }
            continue;
        }
        let index = next_item;
        next_item += 1;
        // The gatherer learns of the item before the pool can answer for it.
        if fetched.send(Fetched { url_index, outcome, item: Some((index, body.hold)) }).is_err()
            || items.send(Item::from_pieces(body.pieces)).await.is_err()
        {
            return; // the run stopped
        }
    }
}

/// A body as it arrives: its pieces as received, and the budget taken for them.
#[derive(Default)]
struct Body {
    budget: Option<Budget>,
    hold: Hold,
    held: usize,
    pieces: Vec<Bytes>,
}

impl Sink for Body {
    async fn piece(&mut self, piece: Bytes) {
        if let Some(budget) = &self.budget {
            take_budget(budget, piece.len(), &mut self.hold, &mut self.held).await;
        }
        self.pieces.push(piece);
    }
}

/// Takes `n` bytes of budget into `hold`. A fetch asks for at most the whole budget at once;
/// what it cannot get (a piece larger than the budget, or none left while it already holds
/// some) it takes as overdraft, one fetch at a time, instead of waiting for budget it may be
/// blocking itself. In overdraft the rest of the body is free.
async fn take_budget(budget: &Budget, n: usize, hold: &mut Hold, held: &mut usize) {
    if hold._overdraft.is_some() || n == 0 {
        return;
    }
    let want = n.min(budget.total);
    let want32 = u32::try_from(want).unwrap_or(u32::MAX);
    let permits = Arc::clone(&budget.bytes);
    let more = if *held == 0 {
        permits.acquire_many_owned(want32).await.ok()
    } else {
        tokio::select! {
            permit = permits.acquire_many_owned(want32) => permit.ok(),
            guard = Arc::clone(&budget.overdraft).lock_owned() => {
                hold._overdraft = Some(guard);
                return;
            }
        }
    };
    if let Some(more) = more {
        *held += want;
        match &mut hold._permit {
            Some(permit) => permit.merge(more),
            None => hold._permit = Some(more),
        }
    }
    if want < n {
        // The piece is larger than the whole budget: the rest of it is overdraft.
        hold._overdraft = Some(Arc::clone(&budget.overdraft).lock_owned().await);
    }
}

/// Puts outcomes back in URL order: fetch outcomes arrive as fetches finish, results as the
/// pool computes them (numbered by item). Returns an error only if `record` fails; failed
/// URLs are counted by the caller from the records.
async fn gather(
    urls: usize,
    mut fetched: mpsc::UnboundedReceiver<Fetched>,
    mut results: ResultReceiver,
    mut record: impl FnMut(&FetchOutcome, &Computed, bool) -> std::io::Result<()>,
) -> Result<(), Error> {
    let mut outcomes: BTreeMap<usize, (FetchOutcome, Option<u64>)> = BTreeMap::new();
    let mut computed: HashMap<u64, Computed> = HashMap::new();
    let mut holds: HashMap<u64, Hold> = HashMap::new();
    let mut next_url = 0usize;
    let mut taken = 0u64;
    let mut pool_open = true;
    // Until every URL is recorded and the pool has said it is done: the pool may still be
    // learning that the input ended when the last record goes out, and must not take the
    // results channel closing for a consumer that went away.
    while next_url < urls || pool_open {
        tokio::select! {
            biased;
            Some(f) = fetched.recv() => {
                let index = f.item.map(|(index, hold)| {
                    holds.insert(index, hold);
                    index
                });
                outcomes.insert(f.url_index, (f.outcome, index));
            }
            released = results.rx.recv(), if pool_open => match released {
                Some(Some(released)) => {
                    let answers = answers_of(released.first, released.end, released.outcome);
                    for (index, answer) in answers {
                        // Its memory and its share of the budget go back now.
                        holds.remove(&index);
                        computed.insert(index, answer);
                        taken += 1;
                    }
                    results.consumed.send_replace(taken);
                }
                // The pool is done: what is left comes from the fetches alone.
                Some(None) => pool_open = false,
                // The pool stopped short (its error says why): nothing more is in order.
                None => return Ok(()),
            },
            else => break,
        }
        // Every URL whose outcome (and result, if it has a body) is known, in order.
        let mut ready = Vec::new();
        while let Some((outcome, item)) = outcomes.get(&next_url) {
            let answer = match item {
                None => Computed::NotFetched,
                Some(index) => match computed.remove(index) {
                    Some(answer) => answer,
                    None if pool_open => break,
                    None => Computed::Failed("no result came back for it".into()),
                },
            };
            ready.push((outcome.clone(), answer));
            outcomes.remove(&next_url);
            next_url += 1;
        }
        let last = ready.len();
        for (n, (outcome, answer)) in ready.iter().enumerate() {
            record(outcome, answer, n + 1 == last).map_err(Error::Output)?;
        }
    }
    Ok(())
}

/// The answers in one released unit of items `first..end`.
fn answers_of(first: u64, end: u64, outcome: Outcome) -> Vec<(u64, Computed)> {
    match outcome {
        Outcome::Failed(reason) => {
            (first..end).map(|i| (i, Computed::Failed(reason.clone()))).collect()
        }
        Outcome::Done(records) => match codec::split_records(&records) {
            Ok(records) => (first..end).zip(records.into_iter().map(Computed::Done)).collect(),
            // The pool checked the records; this cannot happen, but is never a wrong result.
            Err(err) => (first..end).map(|i| (i, Computed::Failed(err.to_string()))).collect(),
        },
    }
}
