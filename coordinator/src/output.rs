//! Where results go: stdout or a file, written by one thread of its own in input order (a
//! plain thread: its start fails with an error, where tokio's `spawn_blocking` panics).
//!
//! A `--output` file is written under a temporary name in the same directory and renamed into
//! place only when the whole run succeeded, so a file at that path always looks complete because
//! it is; a failed or interrupted run removes the temporary file ([`crate::outfile`]).

use crate::cli::OnFail;
pub use crate::outfile::PendingFile;
use crate::pool::{self, Outcome, Released, ResultReceiver, ResultSender};
use crate::shard::ShardWriter;
use powerpool_shared::{Format, I256};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use tokio::sync::{mpsc, oneshot};

/// Writes `bytes` to stdout and flushes: what the commands that print one text use (`tasks`,
/// `completions`, `man`), so a full disk is an error line and a closed pipe a quiet success,
/// never the panic of `println!`.
pub fn write_stdout(bytes: &[u8]) -> Result<(), crate::errors::Error> {
    let mut out = io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(crate::errors::Error::Output)
}

/// Where results go.
#[derive(Debug)]
pub enum Sink {
    Stdout,
    File(File),
    /// A `--shard` file: a `sum` is written as 32 binary bytes, for `merge` to add up.
    Shard(Box<ShardWriter>),
}

impl Sink {
    fn writer(self) -> (Box<dyn Write + Send>, Option<ShardWriter>) {
        match self {
            Sink::Stdout => (Box::new(BufWriter::with_capacity(256 << 10, io::stdout())), None),
            Sink::File(f) => (Box::new(BufWriter::with_capacity(256 << 10, f)), None),
            Sink::Shard(s) => (Box::new(io::sink()), Some(*s)),
        }
    }
}

/// The writer task: writes what a pool run releases, in order, to its sink.
#[derive(Debug)]
pub struct Writer {
    /// The writer thread's result, or why it could not start.
    task: Result<oneshot::Receiver<io::Result<()>>, io::Error>,
}

impl Writer {
    /// Starts the writer thread over `sink`, fed by the returned sender. In `Sum` format unit
    /// outputs are 32-byte partial sums, added up and printed as one line at the end. A failed
    /// input (`--keep-going`) leaves nothing, or with `on_fail` mark the line [`FAILED_MARK`].
    /// A plain thread, not the runtime's blocking pool: its failed start (a low process limit)
    /// is an error, not a panic.
    pub fn start(sink: Sink, format: Format, on_fail: OnFail) -> (ResultSender, Writer) {
        let (sender, receiver) = pool::results();
        let mark = on_fail == OnFail::Mark;
        let (done, result) = oneshot::channel();
        let started =
            std::thread::Builder::new().name("powerpool-output".into()).spawn(move || {
                let _ = done.send(write_all(sink, format, mark, receiver));
            });
        // Without the thread the receiver is dropped, so the run stops at once as on a write
        // error.
        let task = match started {
            Ok(_) => Ok(result),
            Err(err) => Err(io::Error::new(
                err.kind(),
                format!(
                    "cannot start the output thread: {}",
                    crate::limits::explain_spawn_error(err)
                ),
            )),
        };
        (sender, Writer { task })
    }

    /// Waits until everything queued is written and flushed; returns the first write error.
    /// `complete` says the run produced every result: only then does `sum` print its line.
    pub async fn finish(self, results: ResultSender, complete: bool) -> io::Result<()> {
        results.finish(complete);
        match self.task {
            Ok(result) => result.await.unwrap_or_else(|_| {
                Err(io::Error::other("the output thread ended without a word"))
            }),
            Err(err) => Err(err),
        }
    }
}

/// The line `--on-fail mark` writes for each failed input: never a decimal result.
pub const FAILED_MARK: &str = "ERR:failed";

fn write_all(sink: Sink, format: Format, mark: bool, results: ResultReceiver) -> io::Result<()> {
    let (mut plain, shard) = sink.writer();
    let is_sum = format == Format::Sum;
    match shard {
        Some(mut shard) => match pump(&mut shard, format, mark, results)? {
            // Only a complete shard gets its length and checksum (and is then renamed in).
            Some(sum) => {
                if is_sum {
                    shard.write_all(&sum.to_le_bytes())?;
                }
                shard.finish()
            }
            None => shard.flush(),
        },
        None => {
            if let Some(sum) = pump(&mut plain, format, mark, results)?.filter(|_| is_sum) {
                writeln!(plain, "{sum}")?;
            }
            plain.flush()
        }
    }
}

/// Writes outputs as they come until the channel closes; returns the sum of `sum` outputs
/// (zero in other formats) if the run was complete, `None` if it stopped short.
fn pump(
    out: &mut dyn Write,
    format: Format,
    mark: bool,
    results: ResultReceiver,
) -> io::Result<Option<I256>> {
    let ResultReceiver { mut rx, consumed } = results;
    let mut sum = I256::ZERO;
    loop {
        // What is buffered goes out whenever nothing else is waiting: a reader downstream sees
        // each result as soon as this thread is idle, and the end of a run (its workers'
        // exits) overlaps the last write instead of preceding it. A busy run still writes in
        // large blocks, as the queue is rarely empty then.
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                out.flush()?;
                match rx.blocking_recv() {
                    Some(msg) => msg,
                    None => break,
                }
            }
        };
        let Some(Released { end, outcome, .. }) = msg else {
            return Ok(Some(sum));
        };
        match (format, outcome) {
            // An input given up under --keep-going has no result: a mark, or nothing.
            (Format::Lines, Outcome::Failed(_)) if mark => writeln!(out, "{FAILED_MARK}")?,
            (_, Outcome::Failed(_)) => {}
            (Format::Sum, Outcome::Done(part)) => {
                let part = I256::from_le_bytes(&part).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a worker sent a malformed sum")
                })?;
                sum.add(part);
            }
            (Format::Lines | Format::Bin, Outcome::Done(bytes)) => out.write_all(&bytes)?,
        }
        consumed.send_replace(end);
    }
    out.flush()?;
    Ok(None)
}
