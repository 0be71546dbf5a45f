//! For each line of FILE, in order: `<words> <bytes> <sha256 of the line in hex>`, computed by
//! a typed task in worker processes (this same executable), streaming: a file of any size is
//! read as it goes, in flat memory.
//!
//! `cargo run --release --example line_stats -- FILE`
//!
//! Words are split on ASCII whitespace (`str::split_ascii_whitespace`); bytes do not count the
//! newline; a `\r` before it is part of the line; a last line without a newline is a line. A
//! line that is not UTF-8 stops the run, after every line before it, with one error naming it.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

#[derive(serde::Serialize, serde::Deserialize)]
struct LineStats {
    words: u64,
    bytes: u64,
    sha256: [u8; 32],
}

fn line_stats(line: String) -> LineStats {
    LineStats {
        words: line.split_ascii_whitespace().count() as u64,
        bytes: line.len() as u64,
        sha256: Sha256::digest(line.as_bytes()).into(),
    }
}
powerpool::task!(LINE_STATS: fn(String) -> LineStats = line_stats);

/// The lines of `reader` as strings, lazily; the first that is not UTF-8 (or a read error)
/// ends them, and is kept in `error`.
fn lines(reader: impl BufRead, error: Arc<Mutex<Option<String>>>) -> impl Iterator<Item = String> {
    let mut number = 0u64;
    reader.split(b'\n').map_while(move |line| {
        number += 1;
        let failed = |why: String| {
            if let Ok(mut slot) = error.lock() {
                *slot = Some(why);
            }
            None
        };
        match line {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some(text),
                Err(_) => failed(format!("line {number} is not UTF-8")),
            },
            Err(e) => failed(format!("cannot read line {number}: {e}")),
        }
    })
}

fn main() {
    powerpool::init();
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: line_stats FILE");
        std::process::exit(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("line_stats: cannot open {}: {e}", path.to_string_lossy());
            std::process::exit(2);
        }
    };
    let pool = match powerpool::Pool::new() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("line_stats: {e}");
            std::process::exit(1);
        }
    };
    let error = Arc::new(Mutex::new(None));
    let input = lines(BufReader::with_capacity(1 << 20, file), Arc::clone(&error));
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut hex = [0u8; 64];
    for result in pool.map(&LINE_STATS, input) {
        let stats = match result {
            Ok(stats) => stats,
            Err(e) => {
                let _ = out.flush();
                eprintln!("line_stats: {e}");
                pool.terminate();
                std::process::exit(1);
            }
        };
        for (i, b) in stats.sha256.iter().enumerate() {
            hex[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
            hex[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
        }
        let written = write!(out, "{} {} ", stats.words, stats.bytes)
            .and_then(|()| out.write_all(&hex))
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return;
            }
            eprintln!("line_stats: cannot write: {e}");
            std::process::exit(1);
        }
    }
    let _ = out.flush();
    if let Some(why) = error.lock().ok().and_then(|mut e| e.take()) {
        eprintln!("line_stats: {why}");
        // Workers and the socket directory go before the exit, which would skip them.
        pool.terminate();
        std::process::exit(1);
    }
}
