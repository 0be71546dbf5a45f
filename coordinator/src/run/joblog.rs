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

/// The job numbers a resumed run skips: every one in the log, or with `failed_again` only
/// those that succeeded. An error names the first line that is not a joblog line.
pub fn done_jobs(text: &str, failed_again: bool) -> Result<HashSet<u64>, String> {
    let mut lines = text.lines();
    match lines.next() {
        None => return Ok(HashSet::new()),
        Some(first) if first == HEADER => {}
        Some(first) => return Err(format!("its first line is not the header: {first:?}")),
    }
    let mut done = HashSet::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.splitn(9, '\t').collect();
        let parsed = (fields.len() == 9)
            .then(|| {
                let seq = fields[0].parse::<u64>().ok()?;
                let exitval = fields[6].parse::<i32>().ok()?;
                let signal = fields[7].parse::<i32>().ok()?;
                Some((seq, exitval, signal))
            })
            .flatten();
        let Some((seq, exitval, signal)) = parsed else {
            return Err(format!("line {} is not a joblog line: {line:?}", n + 2));
        };
        if !failed_again || (exitval == 0 && signal == 0) {
            done.insert(seq);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(done_jobs(&log, false).unwrap(), [1, 2, 3].into_iter().collect());
        assert_eq!(done_jobs(&log, true).unwrap(), [1].into_iter().collect());
        assert!(done_jobs("", false).unwrap().is_empty(), "a new log");
        assert!(done_jobs("garbage\n", false).unwrap_err().contains("header"));
        let bad = format!("{HEADER}\n1\t:\tx\n");
        assert!(done_jobs(&bad, false).unwrap_err().contains("line 2"));
    }
}
