//! Where results go: stdout or a file, written by one blocking task in input order.
//!
//! A `--output` file is written under a temporary name in the same directory and renamed into
//! place only when the whole run succeeded, so a file at that path always looks complete because
//! it is; a failed or interrupted run removes the temporary file.

use crate::cli::OnFail;
use crate::pool::{self, Outcome, Released, ResultReceiver, ResultSender};
use crate::shard::ShardWriter;
use powerpool_shared::{Format, I256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

/// A `--output` file being written: removed on drop unless committed.
#[derive(Debug)]
pub struct PendingFile {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl PendingFile {
    /// Creates the temporary file next to `dest`.
    pub fn create(dest: &Path) -> io::Result<(PendingFile, File)> {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.powerpool-{}.tmp", std::process::id()));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok((PendingFile { tmp, dest: dest.to_path_buf(), committed: false }, file))
    }

    /// Moves the finished file into place.
    pub fn commit(mut self) -> io::Result<()> {
        std::fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
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
    task: JoinHandle<io::Result<()>>,
}

impl Writer {
    /// Starts the writer task over `sink`, fed by the returned sender. In `Sum` format unit
    /// outputs are 32-byte partial sums, added up and printed as one line at the end. A failed
    /// input (`--keep-going`) leaves nothing, or with `on_fail` mark the line [`FAILED_MARK`].
    pub fn start(sink: Sink, format: Format, on_fail: OnFail) -> (ResultSender, Writer) {
        let (sender, receiver) = pool::results();
        let mark = on_fail == OnFail::Mark;
        let task = tokio::task::spawn_blocking(move || write_all(sink, format, mark, receiver));
        (sender, Writer { task })
    }

    /// Waits until everything queued is written and flushed; returns the first write error.
    /// `complete` says the run produced every result: only then does `sum` print its line.
    pub async fn finish(self, results: ResultSender, complete: bool) -> io::Result<()> {
        results.finish(complete);
        self.task.await.map_err(io::Error::other)?
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
    while let Some(msg) = rx.blocking_recv() {
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
