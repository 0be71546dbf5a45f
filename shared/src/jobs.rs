//! Command jobs: what `run` and `map --exec` send as items and get back as records.
//!
//! - `run` ([`crate::Input::Jobs`]): each item is a [`JobCommand`] (an argv, already expanded by
//!   the coordinator, with the places where the worker writes its own slot number for `{%}`);
//!   the worker runs it as its child in a process group of its own, captures its stdout and
//!   stderr, and answers with one [`JobOutcome`] record. Output up to [`JobSpec::inline_max`]
//!   bytes per stream travels in the record; beyond that the worker writes the stream to a file
//!   in the run's private spill directory ([`JobSpec::spill_dir`], mode 0700) and passes its name
//!   ([`Captured::Spilled`]), so a job's output may be larger than a frame.
//! - `map --exec` ([`crate::Input::Lines`]): each item is one line (without its newline) written
//!   to the stdin of a command the worker keeps running ([`LineSpec`]); each record is the line
//!   the command printed back, without its newline.
//!
//! Both are bincode through [`crate::codec`], like every message: a change here is a protocol
//! change.

use crate::codec::{self, CodecError};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// How a worker runs `run`'s jobs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct JobSpec {
    /// Per-job timeout: the job's process group gets SIGTERM, then SIGKILL after `term_grace_ms`.
    pub timeout_ms: Option<u64>,
    pub term_grace_ms: u64,
    /// Times a failed job (non-zero exit, signal, timeout) is run again by the worker.
    pub retries: u32,
    /// The most bytes of one stream sent in the record; more is spilled to a file.
    pub inline_max: u64,
    /// The run's private directory for spilled output (an absolute path).
    pub spill_dir: ByteBuf,
}

/// How a worker runs `map --exec`'s command.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct LineSpec {
    /// The command, as words (never through a shell unless the words say so).
    pub argv: Vec<ByteBuf>,
    /// Per-line timeout: the longest the oldest outstanding line may wait for its answer.
    pub timeout_ms: Option<u64>,
    pub term_grace_ms: u64,
    /// Lines written ahead of their answers, at most (and at most `window_bytes` bytes).
    pub window: u32,
    pub window_bytes: u32,
}

/// One `run` job: its argv, and where the worker inserts its slot number (`{%}`): at byte
/// `offset` of word `word`, in increasing order.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
pub struct JobCommand {
    pub argv: Vec<ByteBuf>,
    pub slot_marks: Vec<(u32, u32)>,
}

impl JobCommand {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<JobCommand, CodecError> {
        codec::decode(bytes)
    }

    /// The argv with `slot` written at each mark (marks out of place are ignored).
    pub fn argv_for_slot(&self, slot: u64) -> Vec<Vec<u8>> {
        let digits = slot.to_string();
        let mut argv: Vec<Vec<u8>> = self.argv.iter().map(|w| w.to_vec()).collect();
        // From the last mark to the first, so earlier offsets stay valid.
        for &(word, offset) in self.slot_marks.iter().rev() {
            if let Some(w) = argv.get_mut(word as usize) {
                let at = (offset as usize).min(w.len());
                w.splice(at..at, digits.bytes());
            }
        }
        argv
    }
}

/// How a job ended.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum JobStatus {
    Exited(i32),
    Signalled(i32),
    /// Overran the job timeout: its process group was ended (the signal that ended the leader).
    TimedOut(i32),
    /// The program could not be started (not found, not executable): why.
    CannotStart(String),
}

impl JobStatus {
    pub fn is_success(&self) -> bool {
        *self == JobStatus::Exited(0)
    }

    /// GNU parallel's joblog `Exitval` and `Signal` columns.
    pub fn exitval_signal(&self) -> (i32, i32) {
        match self {
            JobStatus::Exited(code) => (*code, 0),
            // As GNU parallel logs them: a signal with exit value 0, a timeout with -1.
            JobStatus::Signalled(sig) => (0, *sig),
            JobStatus::TimedOut(sig) => (-1, *sig),
            JobStatus::CannotStart(_) => (127, 0),
        }
    }
}

/// One captured stream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Captured {
    Inline(ByteBuf),
    /// Written to this file (a bare name) in the spill directory; `len` bytes.
    Spilled {
        name: String,
        len: u64,
    },
}

impl Captured {
    pub fn len(&self) -> u64 {
        match self {
            Captured::Inline(b) => b.len() as u64,
            Captured::Spilled { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What became of one `run` job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct JobOutcome {
    pub status: JobStatus,
    /// When the last attempt started, in microseconds since the Unix epoch.
    pub started_us: u64,
    /// How long the last attempt ran, in microseconds.
    pub runtime_us: u64,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// The pid of the job's leader (its process group) in the last attempt; 0 if not started.
    pub pid: u32,
    /// The slot of the worker that ran it (`{%}`).
    pub slot: u64,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl JobOutcome {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<JobOutcome, CodecError> {
        codec::decode(bytes)
    }
}

/// Whether `name` may name a spill file: a bare name the coordinator can join to its spill
/// directory without leaving it.
pub fn is_spill_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_marks_are_filled_in_place() {
        let cmd = JobCommand {
            argv: vec![ByteBuf::from(b"echo".to_vec()), ByteBuf::from(b"s-/".to_vec())],
            slot_marks: vec![(1, 2), (1, 3), (7, 0)],
        };
        assert_eq!(cmd.argv_for_slot(12), vec![b"echo".to_vec(), b"s-12/12".to_vec()]);
        let back = JobCommand::decode(&cmd.encode().unwrap()).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn outcomes_round_trip_and_name_their_status() {
        let outcome = JobOutcome {
            status: JobStatus::TimedOut(15),
            started_us: 1,
            runtime_us: 2,
            attempts: 3,
            pid: 4,
            slot: 5,
            stdout: Captured::Inline(ByteBuf::from(b"x\n".to_vec())),
            stderr: Captured::Spilled { name: "j1-2.err".into(), len: 99 },
        };
        assert_eq!(JobOutcome::decode(&outcome.encode().unwrap()).unwrap(), outcome);
        assert_eq!(outcome.status.exitval_signal(), (-1, 15));
        assert!(JobStatus::Exited(0).is_success() && !JobStatus::Exited(1).is_success());
        assert!(JobOutcome::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn spill_names_cannot_leave_the_directory() {
        assert!(is_spill_name("j123-4.out"));
        for bad in ["", "../x", "a/b", ".hidden", "/etc/passwd", "a\0b"] {
            assert!(!is_spill_name(bad), "{bad:?}");
        }
    }
}
