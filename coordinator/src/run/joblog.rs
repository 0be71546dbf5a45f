//! `run --joblog FILE` in GNU parallel's tab-separated format, so the tools that read
//! parallel's joblogs read ours, and parallel's own `--resume` accepts it:
//!
//! ```text
//! Seq<TAB>Host<TAB>Starttime<TAB>JobRuntime<TAB>Send<TAB>Receive<TAB>Exitval<TAB>Signal<TAB>Command
//! 1<TAB>:<TAB>1795672781.270<TAB>     0.002<TAB>0<TAB>2<TAB>0<TAB>0<TAB>echo a
//! ```
//!
//! `Host` is `:` (this machine), `Starttime` seconds since the epoch, `JobRuntime` seconds
//! (`%10.3f`), `Send` 0 (jobs get no stdin), `Receive` the bytes of stdout, `Exitval` and
//! `Signal` as parallel writes them (a signal with exit value 0; a timeout with -1 and the
//! signal that ended it; a program that cannot start with 127). One line per job, as jobs
//! finish. `--resume` skips every job number in the log; `--resume-failed` skips those that
//! succeeded (exit value and signal 0) and runs the others again. `map --joblog` is a
//! different log (JSON lines, one per chunk attempt).

use std::collections::HashSet;
use std::io::{self, Write};

/// The header line, without its newline.
pub const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand";

/// One job's line.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub start_s: f64,
    pub runtime_s: f64,
    pub receive: u64,
    pub exitval: i32,
    pub signal: i32,
    pub command: Vec<u8>,
}

/// Writes `e` as one line (a newline in the command would split it: it is written as a space).
pub fn write(out: &mut impl Write, e: &Entry) -> io::Result<()> {
    write!(
        out,
        "{}\t:\t{:.3}\t{:10.3}\t0\t{}\t{}\t{}\t",
        e.seq, e.start_s, e.runtime_s, e.receive, e.exitval, e.signal
    )?;
    let command: Vec<u8> = e.command.iter().map(|&b| if b == b'\n' { b' ' } else { b }).collect();
    out.write_all(&command)?;
    out.write_all(b"\n")
}

/// What `--resume` reads from a joblog.
#[derive(Debug, Default, PartialEq)]
pub struct Resumed {
    /// The job numbers the resumed run skips.
    pub done: HashSet<u64>,
    /// The bytes of whole lines: a last line without its newline (a run stopped while writing
    /// it) is cut off before the log is appended to, and its job runs again.
    pub whole: u64,
}

/// The job numbers a resumed run skips: every one in the log, or with `failed_again` only
/// those that succeeded. The log is bytes (a command may be any bytes); an error names the
/// first line that is not a joblog line.
pub fn done_jobs(log: &[u8], failed_again: bool) -> Result<Resumed, String> {
    let whole = log.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut resumed = Resumed { done: HashSet::new(), whole: whole as u64 };
    if whole == 0 {
        return Ok(resumed);
    }
    let mut lines = log[..whole - 1].split(|&b| b == b'\n');
    match lines.next() {
        None => return Ok(resumed),
        Some(first) if first == HEADER.as_bytes() => {}
        Some(first) => {
            let first = String::from_utf8_lossy(&first[..first.len().min(200)]);
            return Err(format!("its first line is not the header: {first:?}"));
        }
    }
    for (n, line) in lines.enumerate() {
        let fields: Vec<&[u8]> = line.splitn(9, |&b| b == b'\t').collect();
        let number = |f: &[u8]| std::str::from_utf8(f).ok()?.trim().parse::<i64>().ok();
        let parsed = (fields.len() == 9)
            .then(|| {
                let seq = u64::try_from(number(fields[0])?).ok()?;
                Some((seq, number(fields[6])?, number(fields[7])?))
            })
            .flatten();
        let Some((seq, exitval, signal)) = parsed else {
            let line = String::from_utf8_lossy(&line[..line.len().min(200)]);
            return Err(format!("line {} is not a joblog line: {line:?}", n + 2));
        };
        if !failed_again || (exitval == 0 && signal == 0) {
            resumed.done.insert(seq);
        }
    }
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            start_s: 1.0,
            runtime_s: 0.5,
            receive: 0,
            exitval: 0,
            signal: 0,
            command: b"true".to_vec(),
        }
    }

    #[test]
    fn lines_are_gnu_parallels() {
        let mut out = Vec::new();
        let e = Entry {
            seq: 2,
            start_s: 1795672781.2764,
            runtime_s: 0.006,
            receive: 4,
            exitval: 0,
            signal: 0,
            command: b"echo 'b c'".to_vec(),
        };
        write(&mut out, &e).unwrap();
        assert_eq!(out, b"2\t:\t1795672781.276\t     0.006\t0\t4\t0\t0\techo 'b c'\n");
    }

    #[test]
    fn resume_skips_what_is_logged_and_resume_failed_only_what_succeeded() {
        let log = format!(
            "{HEADER}\n1\t:\t1.000\t     0.001\t0\t2\t0\t0\techo a\n\
             2\t:\t1.000\t     0.001\t0\t0\t1\t0\tfalse\t x\n\
             3\t:\t1.000\t     0.001\t0\t0\t0\t9\tkill\n"
        );
        let log = log.as_bytes();
        assert_eq!(done_jobs(log, false).unwrap().done, [1, 2, 3].into_iter().collect());
        assert_eq!(done_jobs(log, true).unwrap().done, [1].into_iter().collect());
        assert_eq!(done_jobs(log, false).unwrap().whole, log.len() as u64);
        assert_eq!(done_jobs(b"", false).unwrap(), Resumed::default(), "a new log");
        assert!(done_jobs(b"garbage\n", false).unwrap_err().contains("header"));
        let bad = format!("{HEADER}\n1\t:\tx\n");
        assert!(done_jobs(bad.as_bytes(), false).unwrap_err().contains("line 2"));
    }

    #[test]
    fn a_log_cut_mid_line_resumes_from_its_last_whole_line() {
        let head = format!("{HEADER}\n1\t:\t1.000\t     0.001\t0\t2\t0\t0\techo a\n");
        let cut = format!("{head}2\t:\t1.000\t     0.0");
        let got = done_jobs(cut.as_bytes(), false).unwrap();
        assert_eq!(got.done, [1].into_iter().collect(), "the cut job runs again");
        assert_eq!(got.whole, head.len() as u64, "the cut line is dropped");
        let cut_header = &HEADER.as_bytes()[..10];
        assert_eq!(done_jobs(cut_header, false).unwrap(), Resumed::default());
    }

    #[test]
    fn commands_that_are_not_utf8_are_read_back() {
        let mut log = format!("{HEADER}\n").into_bytes();
        write(&mut log, &Entry { command: b"echo a\xff".to_vec(), ..entry(3) }).unwrap();
        assert_eq!(done_jobs(&log, false).unwrap().done, [3].into_iter().collect());
    }
}
