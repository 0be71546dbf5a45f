//! Where results go: stdout or a file, written by one thread of its own in input order (a
//! plain thread: its start fails with an error, where tokio's `spawn_blocking` panics).
//!
//! A `--output` file is written under a temporary name in the same directory and renamed into
//! place only when the whole run succeeded, so a file at that path always looks complete because
//! it is; a failed or interrupted run removes the temporary file ([`crate::outfile`]).

use crate::gather::Released;
pub use crate::outfile::PendingFile;
use crate::shard::ShardWriter;
use powerpool_shared::{Format, I256};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use tokio::sync::{mpsc, oneshot, watch};

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

/// The writing half: hands outputs, in order, to the writer task.
#[derive(Debug)]
pub struct Writer {
    /// `None` marks the end of a complete run: only then is a sum printed.
    tx: mpsc::UnboundedSender<Option<Released>>,
    /// Every offset of the range below this one has been written.
    pub written: watch::Receiver<u64>,
    /// The writer thread's result, or why it could not start.
    task: Option<Result<oneshot::Receiver<io::Result<()>>, io::Error>>,
}

/// The consuming end of [`Writer::channel`]: outputs in release order, `None` once the run is
/// complete (the channel closing without it means the run stopped short).
#[derive(Debug)]
pub struct Feed {
    pub rx: mpsc::UnboundedReceiver<Option<Released>>,
    pub written: watch::Sender<u64>,
}

impl Writer {
    /// Starts the writer task over `sink`. In `Sum` format chunk outputs are 32-byte partial
    /// sums, added up and printed as one line at the end.
    pub fn start(sink: Sink, format: Format) -> Writer {
        let (mut writer, feed) = Writer::channel();
        let Feed { rx, written } = feed;
        let (done, result) = oneshot::channel();
        let started =
            std::thread::Builder::new().name("powerpool-output".into()).spawn(move || {
                let _ = done.send(write_all(sink, format, rx, written));
            });
        // Without the thread the feed is dropped, so the run stops at once as on a write error.
        writer.task = Some(match started {
            Ok(_) => Ok(result),
            Err(err) => Err(io::Error::new(
                err.kind(),
                format!(
                    "cannot start the output thread: {}",
                    crate::limits::explain_spawn_error(err)
                ),
            )),
        });
        writer
    }

    /// A writer whose outputs go to whoever holds the [`Feed`] (the library's result streams),
    /// which reports through `Feed::written` how far it has consumed: that is what throttles
    /// dispatch, and dropping the feed stops the run.
    pub fn channel() -> (Writer, Feed) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (written_tx, written) = watch::channel(0);
        (Writer { tx, written, task: None }, Feed { rx, written: written_tx })
    }

    /// Queues the next output in order. Fails only if the writer task has stopped (on a write
    /// error, which [`Writer::finish`] returns).
    pub fn push(&self, output: Released) -> bool {
        self.tx.send(Some(output)).is_ok()
    }

    /// Waits until everything queued is written and flushed; returns the first write error.
    /// `complete` says the run produced every result: only then does `sum` print its line.
    pub async fn finish(self, complete: bool) -> io::Result<()> {
        if complete {
            let _ = self.tx.send(None);
        }
        drop(self.tx);
        match self.task {
            Some(Ok(result)) => result.await.unwrap_or_else(|_| {
                Err(io::Error::other("the output thread ended without a word"))
            }),
            Some(Err(err)) => Err(err),
            None => Ok(()),
        }
    }
}

fn write_all(
    sink: Sink,
    format: Format,
    rx: mpsc::UnboundedReceiver<Option<Released>>,
    written: watch::Sender<u64>,
) -> io::Result<()> {
    let (mut plain, shard) = sink.writer();
    let is_sum = format == Format::Sum;
    match shard {
        Some(mut shard) => match pump(&mut shard, format, rx, &written)? {
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
            if let Some(sum) = pump(&mut plain, format, rx, &written)?.filter(|_| is_sum) {
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
    mut rx: mpsc::UnboundedReceiver<Option<Released>>,
    written: &watch::Sender<u64>,
) -> io::Result<Option<I256>> {
    let mut sum = I256::ZERO;
    while let Some(msg) = rx.blocking_recv() {
        let Some(Released { end, bytes: chunk, .. }) = msg else {
            return Ok(Some(sum));
        };
        match format {
            // A failed item skipped under --keep-going leaves an empty output.
            Format::Sum if chunk.is_empty() => {}
            Format::Sum => {
                let part = I256::from_le_bytes(&chunk).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a worker sent a malformed sum")
                })?;
                sum.add(part);
            }
            Format::Lines | Format::Bin | Format::Text => out.write_all(&chunk)?,
        }
        written.send_replace(end);
    }
    out.flush()?;
    Ok(None)
}
