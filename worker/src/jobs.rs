//! `run`'s jobs in a worker: each item is a command, run as this worker's child in a process
//! group of its own, its stdout and stderr captured, its outcome sent back as one record.
//!
//! A job is its process group: on timeout the group gets SIGTERM, then SIGKILL after the grace
//! period; and when the job's own process ends, whatever it left running in its group is ended
//! the same way, so no job outlives its turn and no pipe stays open behind it. Each stream is
//! kept in memory up to `inline_max` bytes and written to a file in the run's spill directory
//! beyond that (read and removed by the coordinator), so one job's output may be of any size.
//! A failed job (non-zero exit, signal, timeout) is run again up to `retries` times; only the
//! last attempt's output is kept.

use crate::child::{self, CURRENT_GROUP};
use powerpool_shared::jobs::{Captured, JobCommand, JobOutcome, JobSpec, JobStatus};
use serde_bytes::ByteBuf;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a job's pipes may stay open after its group was killed (a process that left the
/// group may hold them): then the output so far is kept and the rest dropped.
const EOF_AFTER_KILL: Duration = Duration::from_secs(1);

/// The size of each pipe read.
const READ_BUF: usize = 64 << 10;

/// Runs `jobs`' commands for one worker: its slot (for `{%}`) and where it spills.
#[derive(Debug)]
pub struct Runner {
    spec: JobSpec,
    slot: u64,
    spill_dir: PathBuf,
    spilled: u64,
    /// `PATH` when the worker started, and the programs found in it.
    path_var: Option<std::ffi::OsString>,
    found: std::collections::HashMap<Vec<u8>, PathBuf>,
    /// The read buffers of a job's two pipes, kept from job to job (fresh ones cost a page
    /// fault and a clear per page, per job).
    scratch: [Vec<u8>; 2],
}

impl Runner {
    pub fn new(spec: JobSpec, slot: u64) -> Runner {
        let spill_dir = PathBuf::from(std::ffi::OsStr::from_bytes(&spec.spill_dir));
        let path_var = std::env::var_os("PATH");
        let scratch = [vec![0u8; READ_BUF], vec![0u8; READ_BUF]];
        Runner { spec, slot, spill_dir, spilled: 0, path_var, found: Default::default(), scratch }
    }

    /// Where `PATH` finds the program `name`, looked up once per name (a run mostly starts
    /// one program many times); `None` leaves the search to the spawn.
    fn program(&mut self, name: &[u8]) -> Option<PathBuf> {
        if let Some(found) = self.found.get(name) {
            return Some(found.clone());
        }
        let found = child::find_in_path(name, self.path_var.as_deref())?;
        if self.found.len() < 64 {
            self.found.insert(name.to_vec(), found.clone());
        }
        Some(found)
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.spec.term_grace_ms)
    }

    /// Runs one job item (with its retries); the record to send back.
    pub async fn run(&mut self, item: &[u8]) -> JobOutcome {
        let argv = match JobCommand::decode(item) {
            Ok(cmd) => cmd.argv_for_slot(self.slot),
            Err(err) => return not_started(format!("malformed job: {err}")),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut outcome = self.attempt(&argv).await;
            outcome.attempts = attempts;
            outcome.slot = self.slot;
            let retry = !outcome.status.is_success()
                && !matches!(outcome.status, JobStatus::CannotStart(_))
                && attempts <= self.spec.retries;
            if !retry {
                return outcome;
            }
            self.discard(&outcome);
        }
    }

    /// Removes the spill files of an attempt that is not kept.
    fn discard(&self, outcome: &JobOutcome) {
        for captured in [&outcome.stdout, &outcome.stderr] {
            if let Captured::Spilled { name, .. } = captured {
                let _ = std::fs::remove_file(self.spill_dir.join(name));
            }
        }
    }

    async fn attempt(&mut self, argv: &[Vec<u8>]) -> JobOutcome {
        let path = argv.first().and_then(|name| self.program(name));
        let Some(mut cmd) = child::command_at(argv, path.as_deref()) else {
            return not_started("empty command".into());
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let began = Instant::now();
        let mut job = match cmd.spawn() {
            Ok(job) => job,
            Err(err) => {
                let program = String::from_utf8_lossy(&argv[0]).into_owned();
                let why = if argv.iter().any(|a| a.contains(&0)) {
                    "an argument holds a NUL byte, which no argument can (NUL-separated \
                     input needs -0)"
                        .to_owned()
                } else {
                    err.to_string()
                };
                return JobOutcome {
                    started_us,
                    ..not_started(format!("cannot run '{program}': {why}"))
                };
            }
        };
        let pid = job.id().unwrap_or(0);
        let pgid = pid as i32;
        CURRENT_GROUP.store(pgid, Ordering::SeqCst);
        let (out, err) = (job.stdout.take(), job.stderr.take());
        self.spilled += 1;
        let n = self.spilled;
        let me = std::process::id();
        let inline_max = self.spec.inline_max;
        let dir = self.spill_dir.clone();
        let out_name = format!("j{me}-{n}.out");
        let err_name = format!("j{me}-{n}.err");
        let deadline = self.spec.timeout_ms.map(|ms| began + Duration::from_millis(ms));
        let grace = self.grace();
        let mut held_out = Held::default();
        let mut held_err = Held::default();
        let mut scratch = std::mem::take(&mut self.scratch);
        let (ended, pipes) = {
            let [buf_out, buf_err] = &mut scratch;
            let capture_out = capture(out, &dir, &out_name, inline_max, &mut held_out, buf_out);
            let capture_err = capture(err, &dir, &err_name, inline_max, &mut held_err, buf_err);
            let mut captured = Box::pin(async { tokio::join!(capture_out, capture_err) });
            let mut early = None;
            let ended = async {
                let mut timed_out = false;
                let status = tokio::select! {
                    status = job.wait() => status,
                    () = child::sleep_until(deadline) => {
                        timed_out = true;
                        child::signal_group(pgid, libc::SIGTERM);
                        match tokio::time::timeout(grace, job.wait()).await {
                            Ok(status) => status,
                            Err(_) => {
                                child::signal_group(pgid, libc::SIGKILL);
                                job.wait().await
                            }
                        }
                    }
                };
                (status, timed_out, began.elapsed())
            };
            tokio::pin!(ended);
            let ended = loop {
                tokio::select! {
                    both = &mut captured, if early.is_none() => early = Some(both),
                    ended = &mut ended => break ended,
                }
            };
            let pipes = match early {
                Some(both) => Some(both),
                None => {
                    // The leader is gone, its pipes are not: end what it left in its group.
                    child::signal_group(pgid, libc::SIGTERM);
                    match tokio::time::timeout(grace, &mut captured).await {
                        Ok(both) => Some(both),
                        Err(_) => {
                            child::signal_group(pgid, libc::SIGKILL);
                            tokio::time::timeout(EOF_AFTER_KILL, &mut captured).await.ok()
                        }
                    }
                }
            };
            (ended, pipes)
        };
        self.scratch = scratch;
        let (status, timed_out, runtime) = ended;
        // What came is kept, whatever cut a stream short; why goes to the job's stderr (never
        // into its stdout, which is data).
        let (out_read, err_read) = pipes.unwrap_or_else(|| {
            let why = "a process that left the job's process group kept its output open; \
                       what it wrote after the job ended is not kept";
            (Ok(()), Err(std::io::Error::other(why)))
        });
        if let Err(e) = out_read {
            held_err.note(&format!("powerpool: the job's stdout was cut short: {e}\n"));
        }
        if let Err(e) = err_read {
            held_err.note(&format!("powerpool: {e}\n"));
        }
        // Whatever the job left in its group ends with it (ESRCH, nothing, in the usual case).
        child::signal_group(pgid, libc::SIGTERM);
        child::signal_group(pgid, libc::SIGKILL);
        CURRENT_GROUP.store(0, Ordering::SeqCst);
        let status = match status {
            Ok(s) if timed_out => JobStatus::TimedOut(signal_of(s).unwrap_or(libc::SIGKILL)),
            Ok(s) => match (s.code(), signal_of(s)) {
                (Some(code), _) => JobStatus::Exited(code),
                (None, Some(sig)) => JobStatus::Signalled(sig),
                _ => JobStatus::Exited(-1),
            },
            Err(err) => JobStatus::CannotStart(format!("cannot wait for the job: {err}")),
        };
        JobOutcome {
            status,
            started_us,
            runtime_us: runtime.as_micros() as u64,
            attempts: 1,
            pid,
            slot: self.slot,
            stdout: held_out.into_captured(out_name),
            stderr: held_err.into_captured(err_name),
        }
    }
}

fn note(text: String) -> Captured {
    Captured::Inline(ByteBuf::from(text.into_bytes()))
}

fn signal_of(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

fn not_started(why: String) -> JobOutcome {
    JobOutcome {
        status: JobStatus::CannotStart(why.clone()),
        started_us: 0,
        runtime_us: 0,
        attempts: 1,
        pid: 0,
        slot: 0,
        stdout: Captured::Inline(ByteBuf::new()),
        stderr: note(format!("powerpool: {why}\n")),
    }
}

/// A stream's bytes so far: in memory up to the limit, then in a spill file.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    file: Option<std::fs::File>,
    len: u64,
}

impl Held {
    /// Adds a note of ours at the end (a spill file that cannot take it keeps what it has).
    fn note(&mut self, text: &str) {
        match &mut self.file {
            Some(f) => {
                if f.write_all(text.as_bytes()).is_ok() {
                    self.len += text.len() as u64;
                }
            }
            None => self.bytes.extend_from_slice(text.as_bytes()),
        }
    }

    fn into_captured(self, name: String) -> Captured {
        match self.file {
            Some(_) => Captured::Spilled { name, len: self.len },
            None => Captured::Inline(ByteBuf::from(self.bytes)),
        }
    }
}

/// Reads a pipe to its end into `held`: in memory up to `inline_max` bytes, then into
/// `dir/name`. What was read stays in `held` if this is dropped before the end.
async fn capture(
    pipe: Option<impl AsyncRead + Unpin>,
    dir: &Path,
    name: &str,
    inline_max: u64,
    held: &mut Held,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let Some(mut pipe) = pipe else { return Ok(()) };
    loop {
        let n = pipe.read(buf).await?;
        if n == 0 {
            return Ok(());
        }
        held.len += n as u64;
        match &mut held.file {
            Some(f) => f.write_all(&buf[..n])?,
            None if held.len > inline_max => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dir.join(name))?;
                f.write_all(&held.bytes)?;
                f.write_all(&buf[..n])?;
                held.bytes = Vec::new();
                held.file = Some(f);
            }
            None => held.bytes.extend_from_slice(&buf[..n]),
        }
    }
}
