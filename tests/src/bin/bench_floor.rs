//! Baseline for scripts/bench (B10): the floor of an ordered job runner. Keeps `JOBS`
//! children of `PROGRAM` in flight (std's spawn is `posix_spawn` here: no pre-exec hook), one
//! per input line of stdin as its last argument, captures each one's stdout through a pipe and
//! prints the outputs in input order. Nothing else: no retries, no timeouts, no log.
//!
//! Usage: bench-floor JOBS PROGRAM [ARG...] < inputs

use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};

fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: bench-floor JOBS PROGRAM [ARG...] < inputs");
        std::process::exit(2);
    });
    let program = args.next().expect("a program");
    let fixed: Vec<String> = args.collect();
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut running: VecDeque<Child> = VecDeque::new();
    let finish = |child: Child, out: &mut dyn Write| {
        let mut child = child;
        let mut text = Vec::new();
        child.stdout.take().expect("piped").read_to_end(&mut text).expect("reads");
        child.wait().expect("waits");
        out.write_all(&text).expect("writes");
    };
    for line in stdin.lines() {
        let line = line.expect("reads stdin");
        if running.len() == jobs {
            let oldest = running.pop_front().expect("one running");
            finish(oldest, &mut out);
        }
        let child = Command::new(&program)
            .args(&fixed)
            .arg(line)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawns");
        running.push_back(child);
    }
    while let Some(child) = running.pop_front() {
        finish(child, &mut out);
    }
    out.flush().expect("flushes");
}
