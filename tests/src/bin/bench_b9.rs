//! B9: 10^6 strings of ~100 bytes mapped to `(words, xxh3-64)`, printed `<words> <hash>` in
//! input order, by 2 workers. Modes:
//!
//! - `powerpool N WORK_US`: the typed library (this binary is its own worker);
//! - `floor N WORK_US`: the least a process pool can do: 2 children forked before any thread,
//!   fed length-prefixed batches over socket pairs, results printed in order;
//! - `serial N WORK_US`: one thread.

use powerpool_tests::b9::{compute, inputs};
use std::io::{BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn b9(s: String) -> (u32, u64) {
    compute(&s, work())
}
powerpool::task!(B9: fn(String) -> (u32, u64) = b9);

/// The busy time per item, from the environment (workers inherit it), read once per process
/// as the floor's children do.
fn work() -> Duration {
    static WORK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *WORK.get_or_init(|| {
        let us = std::env::var("B9_WORK_US").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        Duration::from_micros(us)
    })
}

fn print(out: &mut impl Write, (words, hash): (u32, u64)) {
    let _ = writeln!(out, "{words} {hash}");
}

const BATCH: usize = 1024;

fn main() {
    powerpool::init();
    let args: Vec<String> = std::env::args().collect();
    let (mode, n) = match (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok())) {
        (Some(mode), Some(n)) => (mode.as_str(), n),
        _ => {
            eprintln!("usage: bench-b9 powerpool|floor|serial N [WORK_US]");
            std::process::exit(2);
        }
    };
    if let Some(us) = args.get(3) {
        std::env::set_var("B9_WORK_US", us);
    }
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match mode {
        "serial" => {
            let work = work();
            inputs(n).for_each(|s| print(&mut out, compute(&s, work)));
        }
        "powerpool" => {
            let pool = powerpool::Pool::builder().workers(2).build().expect("a pool");
            for r in pool.map(&B9, inputs(n)) {
                print(&mut out, r.expect("a result"));
            }
        }
        "floor" => floor(n, &mut out),
        _ => {
            eprintln!("unknown mode {mode}");
            std::process::exit(2);
        }
    }
    let _ = out.flush();
}

/// Two children forked before any thread exists, each answering batches on its socket.
fn floor(n: u64, out: &mut impl Write) {
    let mut parents = Vec::new();
    for _ in 0..2 {
        let (parent, child) = UnixStream::pair().expect("a socket pair");
        // SAFETY: no thread exists yet (the pool was never built in this mode); the child only
        // computes and exits.
        match unsafe { libc::fork() } {
            0 => {
                drop(parent);
                serve(child);
                std::process::exit(0);
            }
            -1 => panic!("fork failed"),
            _ => parents.push(parent),
        }
    }
    let mut input = inputs(n).peekable();
    let mut in_flight = std::collections::VecDeque::new();
    let mut turn = 0;
    let mut buf = Vec::new();
    loop {
        // Two batches in flight per child: one computing, one waiting in its socket.
        while in_flight.len() < 4 && input.peek().is_some() {
            // [total length][count] then each [length][bytes]: the child reads it in one go.
            buf.clear();
            buf.extend_from_slice(&[0; 8]);
            let mut count = 0u32;
            for s in input.by_ref().take(BATCH) {
                buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
                buf.extend_from_slice(s.as_bytes());
                count += 1;
            }
            let total = (buf.len() - 8) as u32;
            buf[..4].copy_from_slice(&total.to_le_bytes());
            buf[4..8].copy_from_slice(&count.to_le_bytes());
            parents[turn].write_all(&buf).expect("sends");
            in_flight.push_back((turn, count as usize));
            turn = 1 - turn;
        }
        let Some((child, count)) = in_flight.pop_front() else { break };
        let mut results = vec![0u8; count * 12];
        parents[child].read_exact(&mut results).expect("reads");
        for r in results.chunks_exact(12) {
            let words = u32::from_le_bytes(r[..4].try_into().expect("4 bytes"));
            let hash = u64::from_le_bytes(r[4..].try_into().expect("8 bytes"));
            print(out, (words, hash));
        }
    }
}

fn serve(mut conn: UnixStream) {
    let work = work();
    let mut head = [0u8; 8];
    let mut results = Vec::new();
    let mut batch = Vec::new();
    while conn.read_exact(&mut head).is_ok() {
        let total = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        batch.resize(total, 0);
        conn.read_exact(&mut batch).expect("reads");
        results.clear();
        let mut at = 0;
        while at < batch.len() {
            let len = u32::from_le_bytes(batch[at..at + 4].try_into().expect("4 bytes")) as usize;
            let s = std::str::from_utf8(&batch[at + 4..at + 4 + len]).expect("ascii");
            at += 4 + len;
            let (words, hash) = compute(s, work);
            results.extend_from_slice(&words.to_le_bytes());
            results.extend_from_slice(&hash.to_le_bytes());
        }
        conn.write_all(&results).expect("sends");
    }
}
