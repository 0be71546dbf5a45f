//! The persistent pool: workers started once, serving every call until the pool is closed.
//!
//! The pool runs on a thread of its own, with its own runtime, so it works the same from a
//! plain `fn main` and from inside `#[tokio::main]` (no runtime is nested in the caller's). One
//! engine job runs for the pool's whole life: an items job whose items name their task, fed by
//! every call at once. A *feeder* task numbers what the calls send, in one order, and keeps a
//! route from each range of numbers back to its call; a *router* task sends each result along
//! its route. Calls bound their own lookahead, so a stalled consumer holds its call's window
//! and no more.

use super::call::{Batch, Routes};
use super::route::Outcome;
use crate::errors::Error;
use crate::pool::{self, Arena, Batching, Job, Observers, PoolConfig, WorkerCommand};
use crate::signal::{Interrupt, SIGTERM};
use powerpool_shared::env;
use powerpool_worker::typed::TYPED_JOB;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// The entry point: call it first thing in `main`. In a worker process (this same executable,
/// started by a pool) it serves tasks and exits, never returning into the rest of `main`; in
/// the program itself it returns at once and lets pools be built.
///
/// ```no_run
/// fn double(x: u64) -> u64 {
///     x * 2
/// }
/// powerpool::task!(DOUBLE: fn(u64) -> u64 = double);
///
/// fn main() {
///     powerpool::init();
///     let pool = powerpool::Pool::new().expect("a pool");
///     let doubled: Vec<u64> = pool.map(&DOUBLE, 0..10).map(|r| r.expect("ok")).collect();
///     assert_eq!(doubled[9], 18);
/// }
/// ```
pub fn init() {
    INITIALIZED.store(true, Ordering::SeqCst);
    if !powerpool_worker::is_worker_process() {
        return;
    }
    // A thread of its own: the caller may be inside a runtime (`#[tokio::main]`), and the
    // worker loop has its own.
    let served = std::thread::Builder::new()
        .name("powerpool-worker".into())
        .spawn(|| powerpool_worker::run(powerpool_worker::Registry::builtin()));
    let code = match served.map(|t| t.join()) {
        Ok(Ok(code)) => i32::from(code),
        _ => i32::from(powerpool_worker::exit::PROTOCOL),
    };
    std::process::exit(code);
}

/// Builds a [`Pool`]; every setting has a default.
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    workers: Option<usize>,
    retries: Option<u32>,
    task_timeout: Option<Duration>,
    max_tasks_per_worker: Option<u64>,
    max_worker_memory: Option<u64>,
    batch_size: Option<u64>,
    window: Option<usize>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl PoolBuilder {
    /// An environment variable for the workers (they inherit this process's otherwise).
    pub fn worker_env(
        mut self,
        key: impl Into<std::ffi::OsString>,
        value: impl Into<std::ffi::OsString>,
    ) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Worker processes (default: the available cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Times a failed batch is run again before it is split to find the failing item, and
    /// times that item is run again before it fails (default 2).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }

    /// The longest one item may run; its worker is then killed (TERM, then KILL) and the
    /// item retried. Per item, whatever the batch size: workers report progress within a
    /// batch.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Replace each worker after `n` batches (Python's `maxtasksperchild`).
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }

    /// Replace a worker whose resident memory passes `bytes` after a batch (as loky does).
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.max_worker_memory = Some(bytes);
        self
    }

    /// Items per batch. By default batches are sized from measured cost: one item at first,
    /// then as many as take about 2 ms, at most 4096 items and 256 KiB of input.
    pub fn batch_size(mut self, n: u64) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// How many items one call may have sent and not yet handed back (default 32768, enough
    /// to keep two workers' pipelines of full batches busy): the bound on a call's memory,
    /// whatever its input's length.
    pub fn window(mut self, n: usize) -> Self {
        self.window = Some(n);
        self
    }

    /// Starts the workers. Fails if [`init`] was not called first (a worker is this very
    /// program started again: without `init` it would run `main` instead of serving).
    pub fn build(self) -> Result<Pool, Error> {
        if !INITIALIZED.load(Ordering::SeqCst) {
            return Err(Error::Usage(
                "call powerpool::init() first thing in main: workers are this program started \
                 again, and init is where they begin to serve"
                    .to_owned(),
            ));
        }
        let workers = self.workers.unwrap_or_else(pool::default_workers);
        if workers == 0 || workers > pool::MAX_WORKERS {
            return Err(Error::Usage(format!(
                "workers must be from 1 to {}, not {workers}",
                pool::MAX_WORKERS
            )));
        }
        // The command line's bounds, so that no setting can overflow or wedge the pool.
        let bad = |what: String| Err(Error::Usage(what));
        if let Some(n) = self.batch_size.filter(|&n| n == 0 || n > 1 << 20) {
            return bad(format!("batch_size must be from 1 to 1048576, not {n}"));
        }
        if let Some(n) = self.window.filter(|&n| n == 0 || n > 1 << 24) {
            return bad(format!("window must be from 1 to 16777216, not {n}"));
        }
        if let Some(d) = self
            .task_timeout
            .filter(|d| *d < Duration::from_millis(1) || *d > crate::cli::MAX_DURATION)
        {
            return bad(format!("task_timeout must be from 1 ms to 24 h, not {d:?}"));
        }
        if let Some(n) = self.retries.filter(|&n| n > 100) {
            return bad(format!("retries must be at most 100, not {n}"));
        }
        if self.max_tasks_per_worker == Some(0) {
            return bad("max_tasks_per_worker must be at least 1".to_owned());
        }
        if let Some(n) = self.max_worker_memory.filter(|&n| n < 1 << 20) {
            return bad(format!("max_worker_memory must be at least 1 MiB, not {n} bytes"));
        }
        for (key, value) in &self.env {
            let (k, v) = (key.as_encoded_bytes(), value.as_encoded_bytes());
            if k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0) {
                return bad(format!("worker_env {key:?}={value:?} is not an environment variable"));
            }
        }
        let program = std::env::current_exe()
            .map_err(|e| Error::Usage(format!("cannot find this program's own path: {e}")))?;
        let mut env = self.env;
        // Batches go through shared memory where this system allows it (see `pool::Arena`);
        // through the sockets otherwise, as fast as before it.
        let arena = Arena::standard().ok();
        // Set either way: a value inherited from this process's own environment (a pool built
        // inside a worker) is never taken for this pool's.
        let path = arena.as_ref().map(Arena::worker_path).unwrap_or_default();
        env.push((env::ITEMS_ARENA.into(), path.into()));
        let command = WorkerCommand { program, args: Vec::new(), env };
        let config = PoolConfig {
            arena,
            workers,
            retries: self.retries.unwrap_or(2),
            // Each call decides what a failed item means to it.
            keep_going: true,
            task_timeout: self.task_timeout,
            max_tasks_per_worker: self.max_tasks_per_worker,
            max_worker_memory: self.max_worker_memory,
            ..PoolConfig::new(command)
        };
        let batching = match self.batch_size {
            Some(n) => {
                Batching { max_items: n, max_bytes: usize::MAX, window_bytes: None, target: None }
            }
            None => Batching {
                max_items: 4096,
                max_bytes: 256 << 10,
                window_bytes: Some(64 << 20),
                target: Some(Duration::from_millis(2)),
            },
        };
        Pool::start(config, batching, self.window.unwrap_or(32768))
    }
}

/// A pool of worker processes running typed tasks. Cheap to clone; the workers stop when the
/// last clone (and the last call) is gone, after finishing what was sent ([`Pool::close`]
/// and [`Pool::join`] say when), or at once with [`Pool::terminate`].
#[derive(Debug, Clone)]
pub struct Pool {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    /// Where a call's finished batches are written for the workers, if the pool has one.
    pub(super) arena: Option<Arena>,
    /// Why the pool's run ended, once it has: what later calls are told.
    stopped: Arc<Mutex<Option<String>>>,
    /// To the feeder; `None` once closed.
    requests: Mutex<Option<mpsc::UnboundedSender<Batch>>>,
    interrupts: mpsc::UnboundedSender<Interrupt>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) window: usize,
}

impl Pool {
    /// A pool with every default (see [`PoolBuilder`]).
    pub fn new() -> Result<Pool, Error> {
        Pool::builder().build()
    }

    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    fn start(config: PoolConfig, batching: Batching, window: usize) -> Result<Pool, Error> {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (interrupts, interrupts_rx) = mpsc::unbounded_channel();
        let arena = config.arena.clone();
        let stopped = Arc::new(Mutex::new(None));
        let why = Arc::clone(&stopped);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let routes = Routes::default();
        let thread_routes = routes.clone();
        let thread = std::thread::Builder::new()
            .name("powerpool".into())
            .spawn(move || {
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(serve(
                        config,
                        batching,
                        requests_rx,
                        interrupts_rx,
                        routes,
                        why,
                    ))
                }));
                if served.is_err() {
                    // A bug, never an answer: whoever waits gets an error, not a hang.
                    thread_routes.fail_all("the pool stopped: internal error (please report it)");
                }
            })
            .map_err(Error::Runtime)?;
        let inner = Inner {
            arena,
            stopped,
            requests: Mutex::new(Some(requests)),
            interrupts,
            thread: Mutex::new(Some(thread)),
            window,
        };
        Ok(Pool { inner: Arc::new(inner) })
    }

    /// Takes no more calls; what was sent is still computed.
    pub fn close(&self) {
        if let Ok(mut requests) = self.inner.requests.lock() {
            requests.take();
        }
    }

    /// Closes the pool and waits until every worker has exited.
    pub fn join(&self) {
        self.close();
        self.inner.join();
    }

    /// Stops every worker now: what was sent and not computed fails with the pool's end.
    pub fn terminate(&self) {
        self.close();
        // A first stop lets units in flight finish; a second kills.
        let _ = self.inner.interrupts.send(SIGTERM);
        let _ = self.inner.interrupts.send(SIGTERM);
        self.inner.join();
    }
}

impl Inner {
    /// Sends a batch to the feeder; gives it back if the pool is closed.
    pub(super) fn send(&self, batch: Batch) -> Result<(), Batch> {
        let requests = self.requests.lock().ok();
        match requests.as_ref().and_then(|r| r.as_ref()) {
            Some(tx) => tx.send(batch).map_err(|e| e.0),
            None => Err(batch),
        }
    }

    /// Why a call cannot be sent: the pool was closed, or why its run ended by itself.
    pub(super) fn closed_reason(&self) -> String {
        let stopped = self.stopped.lock().ok().and_then(|why| why.clone());
        stopped.unwrap_or_else(|| "the pool is closed".to_owned())
    }

    fn join(&self) {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle: finish what was sent, then let the workers go.
        if let Ok(mut requests) = self.requests.lock() {
            requests.take();
        }
        self.join();
    }
}

/// The pool's life, on its own thread: the engine, the feeder and the router.
async fn serve(
    config: PoolConfig,
    batching: Batching,
    mut requests: mpsc::UnboundedReceiver<Batch>,
    mut interrupts: mpsc::UnboundedReceiver<Interrupt>,
    routes: Routes,
    stopped: Arc<Mutex<Option<String>>>,
) {
    // Four calls' batches of items (each at most `call::SEND_BATCH`) waiting at most.
    let (source_tx, source) = mpsc::channel::<pool::Run>(4);
    let (mut sender, receiver) = pool::results();
    let (stop_feeding, mut feeding_stopped) = tokio::sync::oneshot::channel::<()>();
    let feeder_routes = routes.clone();
    let feeder_why = Arc::clone(&stopped);
    let feeder = tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            let batch = tokio::select! {
                batch = requests.recv() => batch,
                _ = &mut feeding_stopped => None,
            };
            let Some(batch) = batch else { break };
            let first = next;
            next += batch.items.len() as u64;
            // The batch goes on as one run: one channel operation, not one per item.
            if source_tx.send(feeder_routes.add(first, batch)).await.is_err() {
                break;
            }
        }
        // Whatever was sent and never fed gets the pool's end as its answer.
        requests.close();
        let why = feeder_why.lock().ok().and_then(|why| why.clone());
        let why = why.unwrap_or_else(|| "the pool stopped".to_owned());
        while let Ok(batch) = requests.try_recv() {
            batch.fail_all(&why);
        }
    });
    let router = tokio::spawn(route_results(receiver, routes.clone()));
    let job = Job {
        task: TYPED_JOB.to_owned(),
        work: pool::Work::Runs { source, batching },
        config,
        ordered: false,
    };
    let (_, result) = pool::run(job, &mut sender, &mut interrupts, &mut Observers::default()).await;
    sender.finish(result.is_ok());
    let why = match result {
        Ok(()) => "the pool was closed".to_owned(),
        Err(crate::pool::Stop::Interrupted(_)) => "the pool was terminated".to_owned(),
        Err(stop) => format!("the pool stopped: {}", Error::from(stop)),
    };
    // Calls made from now on are told the same (`Inner::closed_reason`).
    if let Ok(mut stopped) = stopped.lock() {
        *stopped = Some(why.clone());
    }
    let _ = stop_feeding.send(());
    let _ = feeder.await;
    let _ = router.await;
    routes.fail_all(&why);
}

/// Sends each result along its route, and tells the engine how many were taken.
async fn route_results(mut receiver: pool::ResultReceiver, routes: Routes) {
    let mut taken = 0u64;
    while let Some(Some(released)) = receiver.rx.recv().await {
        let outcome = match &released.outcome {
            pool::Outcome::Done(records) => Outcome::Records(records),
            pool::Outcome::Failed(reason) => Outcome::Failed(reason),
        };
        routes.answer(released.first, released.end, outcome);
        taken += released.end - released.first;
        receiver.consumed.send_replace(taken);
    }
}
