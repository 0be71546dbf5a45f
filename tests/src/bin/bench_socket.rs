//! Baseline for scripts/bench (B4): raw Unix-socket throughput on this machine. A writer thread
//! sends BYTES through a socket pair in 1 MiB writes from one reused buffer; a reader thread
//! drains them into another. Nothing is encoded, framed or reordered: the ceiling for moving
//! that many bytes between two endpoints through the kernel.
//!
//! Usage: bench-socket BYTES
//! Prints `elapsed_s=<seconds> gb_per_s=<GB/s>` on stdout.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

fn main() {
    let bytes: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: bench-socket BYTES");
        std::process::exit(2);
    });
    let (mut tx, mut rx) = UnixStream::pair().expect("socket pair");
    let began = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match rx.read(&mut buf) {
                Ok(0) => break got,
                Ok(n) => got += n as u64,
                Err(e) => panic!("read: {e}"),
            }
        }
    });
    let block = vec![7u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        tx.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    drop(tx);
    let got = reader.join().expect("reader");
    assert_eq!(got, bytes);
    let secs = began.elapsed().as_secs_f64();
    println!("elapsed_s={secs:.6} gb_per_s={:.3}", bytes as f64 / secs / 1e9);
}
