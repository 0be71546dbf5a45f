//! The pool as a Rust library: [`Pool`] runs tasks over ranges in worker processes and returns
//! the results as an async [`Stream`], in input order ([`Pool::map`]) or as they are computed
//! ([`Pool::map_unordered`]). Everything the command line has comes with it: crash recovery and
//! poison-input isolation, timeouts, worker recycling, bounded memory (the stream's consumer
//! throttles the workers), and cancellation by dropping the stream.
//!
//! ```no_run
//! use futures::StreamExt;
//! use powerpool::Pool;
//!
//! # async fn example() -> Result<(), powerpool::Error> {
//! // Workers run `powerpool-worker` (found next to this program, in PATH, or in
//! // $POWERPOOL_WORKER), or any worker binary built with `powerpool_worker::main_with`.
//! let pool = Pool::builder().workers(4).build()?;
//! let squares: Vec<i128> = pool.map("square", 0..100_000).map(|r| r.unwrap()).collect().await;
//! assert_eq!(squares[99_999], 99_999 * 99_999);
//!
//! // Results as they come, each with its input; stop early by dropping the stream.
//! let mut stream = pool.map_unordered("collatz", 1..1_000_000);
//! while let Some(result) = stream.next().await {
//!     let (input, steps) = result?;
//!     if steps > 400 {
//!         println!("{input} takes {steps} steps");
//!         break; // the workers are stopped and reaped
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The streams need a tokio runtime (multi-threaded or not) with I/O and time enabled.

use crate::chunk::{self, Chunks};
use crate::errors::Error;
use crate::pool::{self, Job, Observers, Outcome, PoolConfig, ResultReceiver, WorkerCommand};
use bytes::Bytes;
use futures::Stream;
use powerpool_shared::Format;
use std::ffi::OsString;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// The environment variable naming the worker executable the library starts by default.
pub const WORKER_ENV: &str = "POWERPOOL_WORKER";

/// A configured pool. Cheap to clone; each `map` starts its own worker processes.
#[derive(Debug, Clone)]
pub struct Pool {
    config: PoolConfig,
    chunk_size: Option<u64>,
}

/// Builds a [`Pool`]; every setting has the command line's default.
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    workers: Option<usize>,
    chunk_size: Option<u64>,
    retries: Option<u32>,
    task_timeout: Option<Duration>,
    max_tasks_per_worker: Option<u64>,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl PoolBuilder {
    /// Worker processes (default: the available cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Inputs per chunk (default: automatic, as on the command line).
    pub fn chunk_size(mut self, n: u64) -> Self {
        self.chunk_size = Some(n);
        self
    }

    /// Retries before a failing chunk is split, and before a failing input is given up
    /// (default 2). A given-up input ends the stream with [`Error::Pool`] ([`crate::pool::PoolError::TaskFailed`]).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }

    /// The longest one chunk may run before its worker is ended and the chunk retried.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Replace each worker after `n` chunks.
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }

    /// The worker executable, and its arguments; for example a binary of your own that
    /// registers your tasks and calls `powerpool_worker::main_with`.
    pub fn worker_command(
        mut self,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        self.program = Some(program.into());
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable for the workers (they inherit this process's otherwise).
    pub fn worker_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Checks the settings and finds the worker executable.
    pub fn build(self) -> Result<Pool, Error> {
        let workers = self.workers.unwrap_or_else(pool::default_workers);
        if workers == 0 || workers > pool::MAX_WORKERS {
            return Err(Error::Usage(format!(
                "workers must be from 1 to {}, not {workers}",
                pool::MAX_WORKERS
            )));
        }
        if let Some(size) = self.chunk_size {
            if size == 0 || size > Format::Bin.max_chunk_items() {
                return Err(Error::Usage(format!(
                    "chunk_size must be from 1 to {}, not {size}",
                    Format::Bin.max_chunk_items()
                )));
            }
        }
        let mut command = match self.program {
            Some(program) => WorkerCommand::resolve(&program).map_err(|e| Error::Usage(e.0))?,
            None => default_worker()?,
        };
        if !self.args.is_empty() {
            command.args = self.args;
        }
        command.env = self.env;
        let defaults = PoolConfig::new(command);
        let config = PoolConfig {
            workers,
            retries: self.retries.unwrap_or(defaults.retries),
            task_timeout: self.task_timeout,
            max_tasks_per_worker: self.max_tasks_per_worker,
            ..defaults
        };
        Ok(Pool { config, chunk_size: self.chunk_size })
    }
}

/// `$POWERPOOL_WORKER`, else `powerpool-worker` next to this executable (or one directory up,
/// as from `target/debug/deps` or `target/debug/examples`), else in `PATH`.
fn default_worker() -> Result<WorkerCommand, Error> {
    let usage = |e: pool::BadCommand| Error::Usage(e.0);
    if let Some(path) = std::env::var_os(WORKER_ENV) {
        return WorkerCommand::resolve(&PathBuf::from(path)).map_err(usage);
    }
    let name = "powerpool-worker";
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return WorkerCommand::resolve(&candidate).map_err(usage);
            }
        }
    }
    WorkerCommand::resolve(std::path::Path::new(name)).map_err(|_| {
        Error::Usage(format!(
            "no worker executable: build powerpool-worker, set ${WORKER_ENV}, or call \
             PoolBuilder::worker_command"
        ))
    })
}

impl Pool {
    /// A builder with the command line's defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// `task` over `range`, in input order. The stream ends after the last result, or yields
    /// one `Err` (after every result before the failure) and ends.
    pub fn map(&self, task: &str, range: Range<i64>) -> MapStream {
        MapStream::start(self.job(task, range, true))
    }

    /// `task` over `range`, as results arrive, each with its input.
    pub fn map_unordered(&self, task: &str, range: Range<i64>) -> UnorderedStream {
        UnorderedStream { inner: MapStream::start(self.job(task, range, false)) }
    }

    fn job(&self, task: &str, range: Range<i64>, ordered: bool) -> (Job, Chunks) {
        let len = u64::try_from(Chunks::new(range.start, range.end, 1).items()).unwrap_or(u64::MAX);
        let workers = self.config.workers;
        let size = self.chunk_size.unwrap_or_else(|| chunk::auto_size(len, workers, Format::Bin));
        let chunks = Chunks::new(range.start, range.end, size);
        let job = Job {
            task: task.to_owned(),
            work: pool::Work::Range { chunks, format: Format::Bin },
            config: self.config.clone(),
            ordered,
        };
        (job, chunks)
    }
}

/// The results of [`Pool::map`], in input order.
#[derive(Debug)]
pub struct MapStream {
    chunks: Chunks,
    ordered: bool,
    feed: ResultReceiver,
    /// The output being handed out, and how far into it.
    current: Bytes,
    current_first: u64,
    at: usize,
    /// Results handed out (the backpressure signal in unordered mode).
    consumed: u64,
    outcome: oneshot::Receiver<Result<(), Error>>,
    done: bool,
}

impl MapStream {
    fn start((job, chunks): (Job, Chunks)) -> MapStream {
        let (mut sender, feed) = pool::results();
        let (outcome_tx, outcome) = oneshot::channel();
        let ordered = job.ordered;
        tokio::spawn(async move {
            let result = if chunks.count() == 0 {
                Ok(())
            } else {
                // Held for the run's length: a library run is stopped by dropping its stream.
                let (_interrupt_tx, mut interrupts) = tokio::sync::mpsc::unbounded_channel();
                let mut observers = Observers::default();
                pool::run(job, &mut sender, &mut interrupts, &mut observers).await.1
            };
            sender.finish(result.is_ok());
            let _ = outcome_tx.send(result.map_err(Error::from));
        });
        MapStream {
            chunks,
            ordered,
            feed,
            current: Bytes::new(),
            current_first: 0,
            at: 0,
            consumed: 0,
            outcome,
            done: false,
        }
    }

    /// The next (offset, value), or the end, or the run's error.
    fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<(u64, i128), Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if self.at + 16 <= self.current.len() {
                let record: [u8; 16] =
                    self.current[self.at..self.at + 16].try_into().expect("16 bytes");
                let offset = self.current_first + (self.at / 16) as u64;
                self.at += 16;
                self.consumed += 1;
                if !self.ordered && self.at == self.current.len() {
                    self.feed.consumed.send_replace(self.consumed);
                }
                return Poll::Ready(Some(Ok((offset, i128::from_le_bytes(record)))));
            }
            match self.feed.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Some(released))) => {
                    if self.ordered {
                        // Everything before this output is consumed: let the run go on.
                        self.feed.consumed.send_replace(released.first);
                    }
                    // The library stops at the first failed input: none is ever skipped.
                    self.current = match released.outcome {
                        Outcome::Done(bytes) => bytes,
                        Outcome::Failed(_) => Bytes::new(),
                    };
                    self.current_first = released.first;
                    self.at = 0;
                }
                Poll::Ready(Some(None)) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => {
                    // The run stopped short: its error follows.
                    return match Pin::new(&mut self.outcome).poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(result) => {
                            self.done = true;
                            let err = match result {
                                Ok(Err(err)) => err,
                                Ok(Ok(())) | Err(_) => {
                                    Error::Output(std::io::Error::other("the run ended early"))
                                }
                            };
                            Poll::Ready(Some(Err(err)))
                        }
                    };
                }
            }
        }
    }
}

use std::future::Future as _;

impl Stream for MapStream {
    type Item = Result<i128, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_result(cx).map(|r| r.map(|r| r.map(|(_, v)| v)))
    }
}

/// The results of [`Pool::map_unordered`]: `(input, result)` pairs as they are computed.
#[derive(Debug)]
pub struct UnorderedStream {
    inner: MapStream,
}

impl Stream for UnorderedStream {
    type Item = Result<(i64, i128), Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let chunks = self.inner.chunks;
        self.inner.poll_result(cx).map(|r| r.map(|r| r.map(|(off, v)| (chunks.item(off), v))))
    }
}
