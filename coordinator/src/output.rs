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
use bytes::Bytes;
use powerpool_shared::{Format, I256};
use std::fs::File;
use std::io::{self, Write};
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
    /// The writer for results, unbuffered: [`Gather`] queues whole results and writes them
    /// with one `writev`, so no result is copied into a buffer on its way out.
    fn writer(self) -> (Box<dyn Write + Send>, Option<ShardWriter>) {
        match self {
            Sink::Stdout => (Box::new(RawStdout), None),
            Sink::File(f) => (Box::new(f), None),
            Sink::Shard(s) => (Box::new(io::sink()), Some(*s)),
        }
    }
}

/// Standard output without `Stdout`'s line buffer, which would copy (and scan) every result.
/// Nothing else writes to standard output while a run's results are written.
struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        stdout_file().write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        stdout_file().write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Descriptor 1 as a `File` that is never closed.
fn stdout_file() -> std::mem::ManuallyDrop<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: descriptor 1 stays open for the life of the process (the standard library
    // reopens it on /dev/null at start if it was closed), and ManuallyDrop never closes it.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) })
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
                yield_on_wake_up();
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

/// Puts this thread under `SCHED_BATCH`: the same share of the CPU, but woken by a released
/// result it no longer preempts the thread that released it. That thread often releases
/// several in a row (a late unit frees the ones held behind it); preempting it at each one
/// cost two context switches and a write per result where one gathered write does.
fn yield_on_wake_up() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler on this thread (0) with a valid, initialised parameter.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
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
                // One write: the writer is unbuffered.
                plain.write_all(format!("{sum}\n").as_bytes())?;
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
    let mut queued = Gather::default();
    loop {
        // What is queued goes out whenever nothing else is waiting: a reader downstream sees
        // each result as soon as this thread is idle, and the end of a run (its workers'
        // exits) overlaps the last write instead of preceding it. A busy run still writes in
        // large blocks, as the queue is rarely empty then.
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                queued.write_to(out)?;
                match rx.blocking_recv() {
                    Some(msg) => msg,
                    None => break,
                }
            }
        };
        let Some(Released { end, outcome, .. }) = msg else {
            queued.write_to(out)?;
            return Ok(Some(sum));
        };
        match (format, outcome) {
            // An input given up under --keep-going has no result: a mark, or nothing.
            (Format::Lines, Outcome::Failed(_)) if mark => {
                queued.push(Bytes::from_static(FAILED_LINE), out)?;
            }
            (_, Outcome::Failed(_)) => {}
            (Format::Sum, Outcome::Done(part)) => {
                let part = I256::from_le_bytes(&part).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a worker sent a malformed sum")
                })?;
                sum.add(part);
            }
            (Format::Lines | Format::Bin, Outcome::Done(bytes)) => queued.push(bytes, out)?,
        }
        consumed.send_replace(end);
    }
    queued.write_to(out)?;
    Ok(None)
}

/// [`FAILED_MARK`] as the line it is written as.
const FAILED_LINE: &[u8] = b"ERR:failed\n";
const _: () = assert!(FAILED_LINE.len() == FAILED_MARK.len() + 1);

/// Results queued for one gathered write: each is written from where it was received, with
/// no copy. At most [`Gather::MAX_BYTES`] (what a buffer would hold) and [`Gather::MAX_PARTS`]
/// (within every system's `IOV_MAX`) wait at once.
#[derive(Debug, Default)]
struct Gather {
    parts: Vec<Bytes>,
    bytes: usize,
}

impl Gather {
    const MAX_BYTES: usize = 256 << 10;
    const MAX_PARTS: usize = 512;

    /// Queues `part`, writing what is queued first if it is full.
    fn push(&mut self, part: Bytes, out: &mut dyn Write) -> io::Result<()> {
        if part.is_empty() {
            return Ok(());
        }
        self.bytes += part.len();
        self.parts.push(part);
        if self.bytes >= Self::MAX_BYTES || self.parts.len() >= Self::MAX_PARTS {
            self.write_to(out)?;
        }
        Ok(())
    }

    /// Writes everything queued, in order, and flushes `out`.
    fn write_to(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> =
            self.parts.iter().map(|part| io::IoSlice::new(part)).collect();
        let mut left: &mut [io::IoSlice<'_>] = &mut slices;
        while !left.is_empty() {
            match out.write_vectored(left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut left, n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        drop(slices);
        self.parts.clear();
        self.bytes = 0;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `step` bytes per call, from the first slice only (as
    /// `Write`'s default `write_vectored` does), and records what it took.
    struct Trickle {
        step: usize,
        took: Vec<u8>,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            let n = buf.len().min(self.step);
            self.took.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn gathered_parts_come_out_whole_and_in_order_through_short_writes() {
        let parts: Vec<Bytes> =
            (0..40u8).map(|i| Bytes::from(vec![b'a' + i % 26; usize::from(i) * 7])).collect();
        let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        for step in [1, 3, 64, 1 << 20] {
            let mut out = Trickle { step, took: Vec::new(), calls: 0 };
            let mut queued = Gather::default();
            for part in &parts {
                queued.push(part.clone(), &mut out).unwrap();
            }
            queued.write_to(&mut out).unwrap();
            assert_eq!(out.took, want, "step {step}");
            assert!(queued.parts.is_empty() && queued.bytes == 0);
        }
    }

    #[test]
    fn a_full_queue_is_written_before_it_grows_further() {
        let mut out = Trickle { step: usize::MAX, took: Vec::new(), calls: 0 };
        let mut queued = Gather::default();
        for _ in 0..Gather::MAX_PARTS {
            queued.push(Bytes::from_static(b"x\n"), &mut out).unwrap();
        }
        // The 512th part filled the queue: all of it went out, in one gathered write.
        assert_eq!(out.took.len(), 2 * Gather::MAX_PARTS);
        assert!(queued.parts.is_empty());
        queued.push(Bytes::from(vec![0u8; Gather::MAX_BYTES]), &mut out).unwrap();
        assert_eq!(out.took.len(), 2 * Gather::MAX_PARTS + Gather::MAX_BYTES);
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error_not_a_loop() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut queued = Gather::default();
        queued.push(Bytes::from_static(b"1\n"), &mut Full).unwrap();
        let err = queued.write_to(&mut Full).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
