//! `map --exec`'s line worker: one command, started once and kept running, fed one line per
//! item on its stdin and read one line per item from its stdout.
//!
//! Lines are written ahead of their answers, at most `window` lines (and `window_bytes` bytes),
//! so the command never waits for the next line; answers are matched to lines in order. The
//! contract is checked, never assumed:
//!
//! - **End of file while lines are outstanding** (the command died, or closed its stdout): its
//!   process group is ended and reaped, the unit fails at the oldest outstanding line (the
//!   coordinator retries it, and isolates a line that keeps failing), and the command is started
//!   again for the next unit.
//! - **A line with none outstanding** (the command printed more lines than it was given): the
//!   results it sent may be shifted, so the worker says `Broken` and the run stops. It is caught
//!   whenever the command falls idle: after a unit's last answer, while the worker waits for
//!   work, and when its input is closed at the end of the run. (While lines are outstanding, an
//!   extra line cannot be told from the next answer; the count at those points can.)
//! - **A hung line** (`timeout_ms`): the oldest outstanding line may wait that long for its
//!   answer (counted from when it was written or the previous answer came, whichever is later);
//!   then the command's group is ended and the unit fails at that line.
//!
//! The command's stderr is passed through to the worker's, each line prefixed with the worker's
//! slot.

use crate::child::{self, CURRENT_GROUP};
use crate::ledger::{Ledger, Verdict};
use powerpool_shared::codec;
use powerpool_shared::jobs::LineSpec;
use powerpool_shared::ChunkFailed;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

mod end;

/// How long the command has, once its input is closed at the end of the run, to finish its
/// last lines and exit.
const DRAIN: Duration = Duration::from_millis(1500);

/// The lines that one read of the command's stdout completed, or its end (`None`).
pub type FromCommand = Option<Vec<Vec<u8>>>;

/// What became of a unit.
#[derive(Debug)]
pub enum UnitEnd {
    /// One record per line.
    Done,
    Failed(ChunkFailed),
    /// The contract was broken after results were sent: why.
    Broken(String),
}

/// The command, running.
struct Running {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<FromCommand>,
    pid: u32,
}

/// The line worker of one worker process.
pub struct LineWorker {
    spec: LineSpec,
    slot: u64,
    label: String,
    running: Option<Running>,
}

impl std::fmt::Debug for LineWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWorker").field("label", &self.label).field("slot", &self.slot).finish()
    }
}

impl LineWorker {
    pub fn new(spec: LineSpec, slot: u64) -> LineWorker {
        let words: Vec<String> =
            spec.argv.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect();
        let mut label = words.join(" ");
        if label.len() > 60 {
            let cut = (0..=57).rev().find(|&i| label.is_char_boundary(i)).unwrap_or(0);
            label.truncate(cut);
            label.push_str("...");
        }
        LineWorker { spec, slot, label, running: None }
    }

    /// Starts the command if it is not running; an error says why it cannot be.
    pub fn start(&mut self) -> Result<(), String> {
        if self.running.is_some() {
            return Ok(());
        }
        let argv: Vec<Vec<u8>> = self.spec.argv.iter().map(|w| w.to_vec()).collect();
        let mut cmd = child::command(&argv).ok_or("--exec: the command is empty")?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut proc = cmd.spawn().map_err(|e| format!("cannot start `{}`: {e}", self.label))?;
        let pid = proc.id().unwrap_or(0);
        CURRENT_GROUP.store(pid as i32, Ordering::SeqCst);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            return Err("the command's pipes are missing".into());
        };
        let (tx, answers) = mpsc::channel(64);
        tokio::spawn(read_lines(stdout, tx));
        let prefix = format!("[worker {} pid {pid}] ", self.slot);
        tokio::spawn(child::pass_stderr(stderr, prefix));
        self.running = Some(Running { child: proc, stdin, answers, pid });
        Ok(())
    }

    /// Runs unit `tag` (items `first..`, when known): each line's answer is pushed to `records`.
    pub async fn unit(
        &mut self,
        tag: u64,
        first: Option<u64>,
        items: &[&[u8]],
        records: &mut Vec<u8>,
    ) -> UnitEnd {
        let fail = |at: usize, reason: String| {
            UnitEnd::Failed(ChunkFailed {
                chunk: tag,
                item: first.and_then(|f| i64::try_from(f + at as u64).ok()),
                reason,
            })
        };
        if let Some(at) = items.iter().position(|l| l.contains(&b'\n')) {
            return fail(at, "a line worker's input line contains a newline".into());
        }
        if let Err(why) = self.start() {
            return fail(0, why);
        }
        let timeout = self.spec.timeout_ms.map(Duration::from_millis);
        let mut ledger = Ledger::new(self.spec.window, self.spec.window_bytes, Instant::now());
        let run = self.running.as_mut().expect("started above");
        let mut wbuf: Vec<u8> = Vec::new();
        let mut wpos = 0;
        let (mut next, mut answered) = (0usize, 0usize);
        while answered < items.len() {
            if wpos == wbuf.len() {
                wbuf.clear();
                wpos = 0;
            }
            while next < items.len() && ledger.has_room(wbuf.len() - wpos) {
                wbuf.extend_from_slice(items[next]);
                wbuf.push(b'\n');
                ledger.place(Instant::now());
                next += 1;
            }
            let deadline = ledger.deadline(timeout);
            tokio::select! {
                biased;
                answer = run.answers.recv() => match answer.flatten() {
                    Some(lines) => {
                        let now = Instant::now();
                        for line in lines {
                            if ledger.line(now) == Verdict::Surplus {
                                return UnitEnd::Broken(self.surplus("beyond the lines it was given"));
                            }
                            codec::push_record(records, &line);
                            answered += 1;
                        }
                    }
                    None => {
                        let why = self.ended("closed its output", answered, items.len()).await;
                        return fail(answered, why);
                    }
                },
                written = run.stdin.write(&wbuf[wpos..]), if wpos < wbuf.len() => match written {
                    Ok(n) => wpos += n,
                    Err(_) => {
                        let why = self.ended("closed its input", answered, items.len()).await;
                        return fail(answered, why);
                    }
                },
                () = child::sleep_until(deadline), if deadline.is_some() => {
                    let limit = timeout.unwrap_or_default();
                    self.stop().await;
                    return fail(answered, format!(
                        "`{}` gave no answer to the line within --task-timeout {limit:?}",
                        self.label
                    ));
                }
            }
        }
        // An answer already waiting now has no line: the results above are shifted.
        if let Ok(Some(_)) = self
            .running
            .as_mut()
            .map_or(Err(mpsc::error::TryRecvError::Empty), |r| r.answers.try_recv())
        {
            return UnitEnd::Broken(self.surplus("after the last line of a unit"));
        }
        UnitEnd::Done
    }

    /// The next thing the command says while no line is outstanding (cancel-safe: for a
    /// `select!` beside the coordinator's next frame); hand it to [`LineWorker::on_idle`].
    pub async fn idle(&mut self) -> Option<FromCommand> {
        match self.running.as_mut() {
            Some(run) => Some(run.answers.recv().await.flatten()),
            None => std::future::pending().await,
        }
    }

    /// What the command said while idle: any line is a broken contract (`Some(why)`); its end
    /// is noted, and it starts again with the next unit.
    pub async fn on_idle(&mut self, said: FromCommand) -> Option<String> {
        match said {
            Some(_) => Some(self.surplus("while it had no line to answer")),
            None => {
                let why = self.ended("ended between lines", 0, 0).await;
                tracing::warn!("{why}; starting it again");
                None
            }
        }
    }
}

/// Reads the command's stdout, sending the lines each read completes (without their newline),
/// then `None` at its end; a last line without a newline counts.
async fn read_lines(mut stdout: tokio::process::ChildStdout, tx: mpsc::Sender<FromCommand>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, &b)| b == b'\n') {
            partial.extend_from_slice(&buf[start..i]);
            lines.push(std::mem::take(&mut partial));
            start = i + 1;
        }
        partial.extend_from_slice(&buf[start..n]);
        if !lines.is_empty() && tx.send(Some(lines)).await.is_err() {
            return;
        }
    }
    if !partial.is_empty() && tx.send(Some(vec![partial])).await.is_err() {
        return;
    }
    let _ = tx.send(None).await;
}
