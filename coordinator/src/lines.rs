//! `map` over the lines of `--input FILE|-`: one item per line, one result line per item, in
//! input order (or as computed with `--unordered`). Two kinds of work:
//!
//! - a byte task (`map sha256 --input FILE`): each line is a body for the task;
//! - `--exec COMMAND`: persistent line workers; each worker starts COMMAND once and feeds it
//!   lines (the worker side and its checks are in `powerpool-worker`'s `lines.rs`).
//!
//! Lines are read by a thread as the pool has room for them, never held whole; the engine's
//! window bounds what is in flight, and the writer moves it forward as it writes.

use crate::cli::{MapArgs, OnFail};
use crate::errors::Error;
use crate::output::FAILED_MARK;
use crate::plan::{check_writable, pool_config, worker_for};
use crate::pool::{self, Batching, Item, Job, Observers, Outcome, PoolConfig, PoolError, Stop};
use crate::signal::Interrupt;
use powerpool_shared::codec;
use powerpool_shared::jobs::LineSpec;
use powerpool_shared::task::TaskKind;
use powerpool_shared::Input;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Lines in one unit, at most; and their bytes (a line worker's units are larger: each unit
/// boundary is a moment its command waits).
const BATCH_LINES: u64 = 1024;
const BATCH_BYTES: usize = 256 << 10;
const EXEC_BATCH_LINES: u64 = 4096;
const EXEC_BATCH_BYTES: usize = 1 << 20;
/// Lines a line worker writes ahead of their answers.
const EXEC_WINDOW: u32 = 4096;

mod words;
pub use words::split_words;

/// What each line goes to.
#[derive(Debug, Clone)]
pub enum Work {
    Task(String),
    Exec(LineSpec),
}

/// A `map --input` or `map --exec` run, checked.
#[derive(Debug, Clone)]
pub struct LinesPlan {
    pub work: Work,
    /// `None`: stdin.
    pub input: Option<PathBuf>,
    pub ordered: bool,
    pub on_fail: OnFail,
    pub pool: PoolConfig,
    pub report: Option<PathBuf>,
    pub joblog: Option<PathBuf>,
    pub progress: bool,
}

impl LinesPlan {
    pub fn from_args(args: MapArgs) -> Result<LinesPlan, Error> {
        let usage = |m: &str| Error::Usage(m.to_owned());
        if args.output.is_some() || args.shard.is_some() || !args.fetch.is_empty() {
            return Err(usage("--output, --shard and --fetch work with --range only"));
        }
        if args.chunk_size.is_some() || args.format != crate::cli::OutputFormat::Lines {
            return Err(usage("--chunk-size and --format work with --range only"));
        }
        let input = match &args.input {
            None => None,
            Some(p) if p.as_os_str() == "-" => None,
            Some(p) => {
                std::fs::File::open(p).map_err(|e| {
                    Error::Usage(format!("cannot read --input '{}': {e}", p.display()))
                })?;
                Some(p.clone())
            }
        };
        for (flag, path) in [("--report", &args.report), ("--joblog", &args.joblog)] {
            if let Some(path) = path {
                check_writable(flag, path)?;
            }
        }
        crate::plan::check_distinct(&[
            ("--input", input.as_deref()),
            ("--report", args.report.as_deref()),
            ("--joblog", args.joblog.as_deref()),
        ])?;
        let timeout_ms = args.pool.task_timeout.map(|d| d.as_millis() as u64);
        let (work, command) = match (&args.exec, &args.task) {
            (Some(exec), _) => {
                let argv = if args.shell {
                    vec!["sh".to_owned(), "-c".to_owned(), exec.clone()]
                } else {
                    split_words(exec).map_err(|e| Error::Usage(format!("--exec: {e}")))?
                };
                check_program(&argv[0])?;
                let spec = LineSpec {
                    argv: argv.into_iter().map(|w| w.into_bytes().into()).collect(),
                    timeout_ms,
                    term_grace_ms: 200,
                    window: EXEC_WINDOW,
                    window_bytes: 1 << 20,
                };
                let command = match &args.pool.worker_cmd {
                    Some(p) => {
                        crate::pool::WorkerCommand::resolve(p).map_err(|e| Error::Usage(e.0))?
                    }
                    None => {
                        crate::pool::WorkerCommand::current_exe().map_err(|e| Error::Usage(e.0))?
                    }
                };
                (Work::Exec(spec), command)
            }
            (None, Some(task)) => {
                let command = worker_for(task, args.pool.worker_cmd.as_deref(), TaskKind::Bytes)?;
                (Work::Task(task.clone()), command)
            }
            (None, None) => return Err(usage("map needs a TASK or --exec COMMAND")),
        };
        let mut pool = pool_config(&args.pool, command, args.keep_going);
        if matches!(work, Work::Exec(_)) {
            // The worker times each line itself (and restarts its command, not itself).
            pool.task_timeout = None;
        }
        Ok(LinesPlan {
            work,
            input,
            ordered: !args.unordered,
            on_fail: args.on_fail.unwrap_or_default(),
            pool,
            report: args.report,
            joblog: args.joblog,
            progress: false,
        })
    }
}

/// Refuses an `--exec` program that cannot be found, before any work.
fn check_program(program: &str) -> Result<(), Error> {
    let path = std::path::Path::new(program);
    let found = if program.contains('/') {
        path.is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
    };
    if found {
        Ok(())
    } else {
        Err(Error::Usage(format!("--exec: '{program}' is not a program (not found in PATH)")))
    }
}

/// Runs `plan`: every line through the pool, a result line each on stdout.
pub async fn run(
    plan: LinesPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let (items_tx, items_rx) = mpsc::channel::<Item>(1024);
    let input = plan.input.clone();
    let reader = tokio::task::spawn_blocking(move || read_lines(input, &items_tx));
    let (max_items, max_bytes) = match plan.work {
        Work::Task(_) => (BATCH_LINES, BATCH_BYTES),
        Work::Exec(_) => (EXEC_BATCH_LINES, EXEC_BATCH_BYTES),
    };
    let batching = Batching { max_items, max_bytes, window_bytes: Some(16 << 20), target: None };
    let (task, work) = match &plan.work {
        Work::Task(task) => {
            (task.clone(), pool::Work::Items { source: items_rx, batching, lines: true })
        }
        Work::Exec(spec) => (
            "exec".to_owned(),
            pool::Work::Commands { source: items_rx, batching, input: Input::Lines(spec.clone()) },
        ),
    };
    let job = Job { task, work, config: plan.pool.clone(), ordered: plan.ordered };
    let (mut sender, receiver) = pool::results();
    let mark = plan.on_fail == OnFail::Mark;
    let (ordered, bar) = (plan.ordered, plan.progress.then(|| crate::progress::for_run(None)));
    let writer = tokio::task::spawn_blocking(move || write_results(receiver, ordered, mark, bar));
    let mut observers = Observers::default();
    if let Some(path) = &plan.joblog {
        let log = crate::joblog::Joblog::create(path, started, None).map_err(|e| {
            Error::Usage(format!("cannot write --joblog '{}': {e}", path.display()))
        })?;
        observers.joblog = Some(Box::new(log));
    }
    let (stats, result) = pool::run(job, &mut sender, interrupts, &mut observers).await;
    sender.finish(result.is_ok());
    let written = writer.await.map_err(|e| Error::Output(io::Error::other(e)))?;
    crate::progress::finish();
    if let Some(log) = observers.joblog.take() {
        if let Err(err) = log.finish() {
            tracing::warn!("the joblog is incomplete: {err}");
        }
    }
    let read = if result.is_ok() { reader.await.ok() } else { None };
    let result = match (result, written) {
        (Err(Stop::ConsumerGone), Err(err)) | (Ok(()), Err(err)) => Err(Error::Output(err)),
        (Err(stop), _) => Err(Error::from(stop)),
        (Ok(()), Ok(_)) => match (read, &stats.broken) {
            (_, Some(why)) => Err(Error::Pool(PoolError::Broken(why.clone()))),
            (Some(Err(err)), _) => Err(err),
            _ if stats.failed_count > 0 => Err(Error::Partial { failed: stats.failed_count }),
            _ => Ok(()),
        },
    };
    if stats.failed_count > 0 || stats.restarts > 0 {
        crate::progress::suspend(|| {
            eprintln!(
                "powerpool: {} worker(s) restarted, {} unit(s) retried, {} line(s) failed",
                stats.restarts, stats.retried, stats.failed_count
            );
            for f in &stats.failed_items {
                eprintln!("powerpool: failed line {}: {}", f.offset + 1, f.reason);
            }
        });
    }
    if let Some(path) = &plan.report {
        let report = words::report(&plan, &stats, started, &result);
        if let Err(err) = std::fs::write(path, report) {
            tracing::warn!("cannot write --report '{}': {err}", path.display());
        }
    }
    result
}

/// The reader thread: one item per line (without its newline).
fn read_lines(input: Option<PathBuf>, items: &mpsc::Sender<Item>) -> Result<(), Error> {
    let mut reader: Box<dyn BufRead> = match &input {
        Some(path) => Box::new(io::BufReader::with_capacity(
            64 << 10,
            std::fs::File::open(path)
                .map_err(|e| Error::Input(format!("cannot read '{}': {e}", path.display())))?,
        )),
        None => Box::new(io::BufReader::with_capacity(64 << 10, io::stdin())),
    };
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::Input(format!("cannot read the input: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if items.blocking_send(Item::from(bytes::Bytes::from(line))).is_err() {
            return Ok(());
        }
    }
}

/// The writer thread: each result as a line, moving the pool's window forward.
fn write_results(
    results: pool::ResultReceiver,
    ordered: bool,
    mark: bool,
    bar: Option<indicatif::ProgressBar>,
) -> io::Result<u64> {
    let pool::ResultReceiver { mut rx, consumed } = results;
    let mut out = io::BufWriter::with_capacity(256 << 10, io::stdout().lock());
    let mut taken = 0u64;
    while let Some(Some(released)) = rx.blocking_recv() {
        match released.outcome {
            Outcome::Done(records) => {
                for record in codec::split_records(&records).map_err(io::Error::other)? {
                    out.write_all(&record)?;
                    out.write_all(b"\n")?;
                }
            }
            Outcome::Failed(_) if mark => writeln!(out, "{FAILED_MARK}")?,
            Outcome::Failed(_) => {}
        }
        let n = released.end - released.first;
        taken += n;
        if let Some(bar) = &bar {
            bar.inc(n);
        }
        if rx.is_empty() {
            out.flush()?;
        }
        consumed.send_replace(if ordered { released.end } else { taken });
    }
    out.flush()?;
    Ok(taken)
}
