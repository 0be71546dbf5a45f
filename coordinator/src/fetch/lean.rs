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
use super::http1::{target, Conn, Failure, Origin};
use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::header::LOCATION;
use hyper::{Response, Uri};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Set to `reqwest` to send every URL through reqwest (tests run both paths).
pub const FORCE_ENV: &str = "POWERPOOL_FETCH_CLIENT";
/// Redirects followed before `ERR:redirects`, as reqwest's `Policy::limited(10)`.
const MAX_REDIRECTS: usize = 10;
/// The most of a redirect's body read to keep its connection; beyond, the connection is dropped.
const DRAIN_LIMIT: u64 = 64 << 10;

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
                let get =
                    follow(&shared, &mut conn, origin, target, &job.url, &mut sink, &mut bytes);
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

/// GETs `url` on `conn` (its origin's connection), following redirects; the final answer's
/// body goes to `sink`.
async fn follow<S: Sink, F>(
    shared: &Shared<S, F>,
    conn: &mut Option<Conn>,
    home: &Origin,
    first: &Uri,
    url: &url::Url,
    sink: &mut S,
    bytes: &mut u64,
) -> Result<u16, Failure> {
    let limits = shared.limits;
    let mut away: Option<(Origin, Option<Conn>)> = None;
    let mut next: Option<url::Url> = None;
    for hop in 0..=MAX_REDIRECTS {
        let here = next.as_ref().unwrap_or(url);
        let (origin, target) = match &next {
            None => (home.clone(), first.clone()),
            Some(u) => match (Origin::of(u), target(u)) {
                (Some(origin), Some(target)) => (origin, target),
                _ if u.scheme() == "https" => {
                    return through_reqwest(shared, u, sink, bytes).await.map_err(Failure::Other)
                }
                _ => return Err(Failure::Scheme(u.to_string())),
            },
        };
        let slot = if &origin == home {
            &mut *conn
        } else {
            if away.as_ref().is_some_and(|(o, _)| o != &origin) {
                away = None;
            }
            &mut away.get_or_insert_with(|| (origin.clone(), None)).1
        };
        let response = request(slot, &origin, &target, limits.timeout).await?;
        if let Some(location) = redirect(&response, here) {
            if hop == MAX_REDIRECTS {
                *slot = None;
                return Err(Failure::Redirects);
            }
            drain(slot, response.into_body()).await;
            next = Some(location);
            continue;
        }
        let status = response.status().as_u16();
        if response.body().size_hint().exact().is_some_and(|n| n > limits.max_body) {
            *slot = None;
            return Err(Failure::TooLarge);
        }
        let read = read_body(slot, response.into_body(), limits.max_body, sink, bytes).await;
        if read.is_err() {
            *slot = None;
        }
        return read.map(|()| status);
    }
    Err(Failure::Redirects)
}

/// Reads `body` into `sink`, within `max_body` bytes in all.
async fn read_body<S: Sink>(
    slot: &mut Option<Conn>,
    mut body: Incoming,
    max_body: u64,
    sink: &mut S,
    bytes: &mut u64,
) -> Result<(), Failure> {
    let Some(conn) = slot.as_mut() else { return Err(Failure::Other("request")) };
    while let Some(piece) = conn.piece(&mut body).await? {
        *bytes += piece.len() as u64;
        if *bytes > max_body {
            return Err(Failure::TooLarge);
        }
        sink.piece(piece).await;
    }
    Ok(())
}

/// Sends a GET on the connection in `slot`, opening one if there is none (or the server closed
/// it). A request that died on a reused connection before any answer goes once more on a new
/// one. On any failure the slot is left empty.
async fn request(
    slot: &mut Option<Conn>,
    origin: &Origin,
    target: &Uri,
    timeout: Duration,
) -> Result<Response<Incoming>, Failure> {
    let connect_timeout = timeout.min(Duration::from_secs(10));
    let reused = match slot.take() {
        Some(conn) if conn.is_open() => Some(conn),
        _ => None,
    };
    let was_reused = reused.is_some();
    let mut conn = match reused {
        Some(conn) => conn,
        None => Conn::open(origin, connect_timeout).await?,
    };
    let answer = match conn.get(target, origin).await {
        Err(err) if was_reused && err.died_before_answer() => {
            tracing::debug!("{target}: {err}; once more on a new connection");
            conn = Conn::open(origin, connect_timeout).await?;
            conn.get(target, origin).await
        }
        answer => answer,
    };
    if answer.is_ok() {
        *slot = Some(conn);
    }
    answer
}

/// Where a redirect answer sends us: reqwest's rule (301, 302, 303, 307, 308 with a Location
/// that resolves against the URL asked for); `None` for any other answer.
fn redirect(response: &Response<Incoming>, base: &url::Url) -> Option<url::Url> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    base.join(location).ok()
}

/// Reads and drops a redirect's body so that its connection can serve the next hop; a long or
/// broken one costs the connection instead.
async fn drain(slot: &mut Option<Conn>, mut body: Incoming) {
    let Some(conn) = slot.as_mut() else { return };
    let mut read = 0u64;
    loop {
        match conn.piece(&mut body).await {
            Ok(None) => return,
            Ok(Some(piece)) if read + piece.len() as u64 <= DRAIN_LIMIT => {
                read += piece.len() as u64;
            }
            _ => {
                *slot = None;
                return;
            }
        }
    }
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
