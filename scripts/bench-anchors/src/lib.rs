//! B9's work, as `tests/src/b9.rs` defines it (kept identical: scripts/bench checks every
//! anchor's output against powerpool's by SHA-256).

use std::time::{Duration, Instant};

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
];

pub fn inputs(n: u64) -> impl Iterator<Item = String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n).map(move |_| {
        let mut s = String::with_capacity(112);
        while s.len() < 100 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            s.push_str(WORDS[(state % 16) as usize]);
            s.push(' ');
        }
        s
    })
}

pub fn compute(s: &str, work: Duration) -> (u32, u64) {
    if !work.is_zero() {
        let until = Instant::now() + work;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    (s.split_ascii_whitespace().count() as u32, xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}

pub fn args() -> (u64, Duration) {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(1).and_then(|n| n.parse().ok()).expect("usage: N [WORK_US]");
    let us = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    (n, Duration::from_micros(us))
}
