//! How the URLs of a `fetch` are spread over connections: the lean HTTP/1.1 path.
//!
//! URLs are grouped by origin once, up front (each parsed once into its origin and its request
//! target). `--concurrency` connection tasks each hold at most one connection: a task takes the
//! next URL of its origin's queue (an atomic counter, no lock), sends it on its connection as
//! soon as the last answer was read, and moves to another origin's queue only when its own is
//! empty. No per-request pool checkout, no request builder, no URL parsing per request.
//!
//! https URLs (and redirects to https) go through reqwest, which does TLS and HTTP/2: those
//! tasks call reqwest for each URL of the https queue, and reqwest keeps their connections.
//! The whole of a fetch is bounded by `--timeout`; a request that died on a reused connection
//! before any answer is sent once more on a new one (the server closed the connection as idle).
//! `POWERPOOL_FETCH_CLIENT=reqwest` sends every URL through reqwest instead (the path before
//! this one; the tests run on both).

use super::client::{self, FetchOutcome};
use super::follow::{follow, Ended};
use super::http1::{target, Conn, Failure, Origin};
use bytes::Bytes;
use hyper::Uri;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Set to `reqwest` to send every URL through reqwest (tests run both paths).
pub const FORCE_ENV: &str = "POWERPOOL_FETCH_CLIENT";

/// What the final answer's body goes to, a piece at a time, as it arrives.
pub(crate) trait Sink: Send + 'static {
    fn piece(&mut self, piece: Bytes) -> impl Future<Output = ()> + Send;
}

/// A sink that keeps nothing (plain `fetch` counts the bytes, no more).
#[derive(Debug, Default)]
pub(crate) struct Discard;

impl Sink for Discard {
    async fn piece(&mut self, _piece: Bytes) {}
}

/// The fetches under way: each URL's outcome and its sink, in completion order.
pub(crate) struct Fetches<S> {
    pub done: mpsc::UnboundedReceiver<(usize, FetchOutcome, S)>,
    /// Dropping this aborts every fetch still under way.
    _tasks: JoinSet<()>,
}

/// The limits of every request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub timeout: Duration,
    pub max_body: u64,
}

/// One URL: its place in the input, and its request target on its origin (http only).
struct Job {
    index: usize,
    url: url::Url,
    target: Option<Uri>,
}

/// The URLs of one origin (`None`: the https URLs, for reqwest), taken in order.
struct Queue {
    origin: Option<Origin>,
    jobs: Vec<Job>,
    next: AtomicUsize,
}

impl Queue {
    fn take(&self) -> Option<&Job> {
        self.jobs.get(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn is_drained(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.jobs.len()
    }
}

struct Shared<S, F> {
    queues: Vec<Queue>,
    /// No queue before this one has a URL left: where a task whose queue ran dry looks first.
    first_open: AtomicUsize,
    limits: Limits,
    reqwest: OnceLock<Result<reqwest::Client, String>>,
    concurrency: usize,
    new_sink: F,
    done: mpsc::UnboundedSender<(usize, FetchOutcome, S)>,
}

/// Starts fetching every URL, at most `concurrency` at once, each body into a sink from
/// `new_sink`.
pub(crate) fn start<S: Sink, F: Fn() -> S + Send + Sync + 'static>(
    urls: &[url::Url],
    concurrency: usize,
    limits: Limits,
    new_sink: F,
) -> Fetches<S> {
    let (done_tx, done) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let force = std::env::var(FORCE_ENV).is_ok_and(|v| v == "reqwest");
    let mut queues: Vec<Queue> = Vec::new();
    let mut by_origin: HashMap<Option<(String, u16)>, usize> = HashMap::new();
    for (index, url) in urls.iter().enumerate() {
        let lean = (!force).then(|| Origin::of(url).zip(target(url))).flatten();
        let key =
            lean.as_ref().map(|(o, _)| (o.authority.to_str().unwrap_or("").to_owned(), o.port));
        let at = *by_origin.entry(key).or_insert_with(|| {
            let origin = lean.as_ref().map(|(origin, _)| origin.clone());
            queues.push(Queue { origin, jobs: Vec::new(), next: AtomicUsize::new(0) });
            queues.len() - 1
        });
        let target = lean.map(|(_, target)| target);
        queues[at].jobs.push(Job { index, url: url.clone(), target });
    }
    let connections = concurrency.min(urls.len()).max(1);
    let shared = Arc::new(Shared {
        queues,
        first_open: AtomicUsize::new(0),
        limits,
        reqwest: OnceLock::new(),
        concurrency,
        new_sink,
        done: done_tx,
    });
    if !urls.is_empty() {
        for k in 0..connections {
            let start = k % shared.queues.len();
            tasks.spawn(connection(Arc::clone(&shared), start));
        }
    }
    Fetches { done, _tasks: tasks }
}

/// The first queue with URLs left, if any. Queues only ever run dry, so `first_open` only moves
/// forward: finding the next queue costs nothing per URL and one pass over the origins in all,
/// however many there are.
fn next_queue(queues: &[Queue], first_open: &AtomicUsize) -> Option<usize> {
    let mut q = first_open.load(Ordering::Relaxed);
    while let Some(queue) = queues.get(q) {
        if !queue.is_drained() {
            return Some(q);
        }
        q += 1;
        first_open.fetch_max(q, Ordering::Relaxed);
    }
    None
}

/// One connection task: URLs of its origin, one after the other, on one connection.
async fn connection<S: Sink, F: Fn() -> S + Send + Sync>(shared: Arc<Shared<S, F>>, mut at: usize) {
    let mut conn: Option<Conn> = None;
    loop {
        let job = match shared.queues[at].take() {
            Some(job) => job,
            None => {
                let Some(next) = next_queue(&shared.queues, &shared.first_open) else {
                    return;
                };
                (at, conn) = (next, None);
                continue;
            }
        };
        let mut sink = (shared.new_sink)();
        let started = Instant::now();
        let mut bytes = 0;
        let queue = &shared.queues[at];
        let status = match (&queue.origin, &job.target) {
            (Some(origin), Some(target)) => {
                let get = async {
                    let limits = shared.limits;
                    match follow(limits, &mut conn, origin, target, &job.url, &mut sink, &mut bytes)
                        .await?
                    {
                        Ended::Answered(status) => Ok(status),
                        Ended::ToHttps(url) => {
                            through_reqwest(&shared, &url, &mut sink, &mut bytes)
                                .await
                                .map_err(Failure::Other)
                        }
                    }
                };
                match tokio::time::timeout(shared.limits.timeout, get).await {
                    Ok(result) => result.map_err(|f| {
                        tracing::debug!("{}: {f}", job.url);
                        f.reason()
                    }),
                    Err(_) => {
                        conn = None; // in an unknown state
                        Err("timeout")
                    }
                }
            }
            _ => through_reqwest(&shared, &job.url, &mut sink, &mut bytes).await,
        };
        let outcome =
            FetchOutcome { url: job.url.clone(), status, bytes, elapsed: started.elapsed() };
        if shared.done.send((job.index, outcome, sink)).is_err() {
            return; // nobody waits for the outcomes any more
        }
    }
}

/// A GET through reqwest (https, or every URL when forced), redirects and timeout included.
async fn through_reqwest<S: Sink, F>(
    shared: &Shared<S, F>,
    url: &url::Url,
    sink: &mut S,
    bytes: &mut u64,
) -> Result<u16, &'static str> {
    let client = shared
        .reqwest
        .get_or_init(|| client::build(shared.concurrency, shared.limits.timeout))
        .as_ref()
        .map_err(|_| "request")?;
    client::get_into(client, url, shared.limits.max_body, sink, bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(urls: usize) -> Queue {
        let url = url::Url::parse("http://h/").expect("a URL");
        let jobs = (0..urls).map(|index| Job { index, url: url.clone(), target: None }).collect();
        Queue { origin: None, jobs, next: AtomicUsize::new(0) }
    }

    #[test]
    fn a_task_whose_queue_ran_dry_moves_to_the_first_queue_with_urls_left() {
        let queues = [queue(1), queue(2), queue(0), queue(1)];
        let first_open = AtomicUsize::new(0);
        assert_eq!(next_queue(&queues, &first_open), Some(0));
        assert_eq!(queues[0].take().map(|j| j.index), Some(0));
        assert!(queues[0].take().is_none(), "queue 0 ran dry");
        assert_eq!(next_queue(&queues, &first_open), Some(1));
        assert_eq!(first_open.load(Ordering::Relaxed), 1, "queue 0 is never looked at again");
        queues[1].take();
        queues[1].take();
        assert_eq!(next_queue(&queues, &first_open), Some(3), "every URL of 1 taken, 2 empty");
        queues[3].take();
        assert_eq!(next_queue(&queues, &first_open), None, "every URL is taken");
        assert_eq!(first_open.load(Ordering::Relaxed), 4);
    }
}
