//! B9's work, shared by every program that measures it: a seeded stream of strings of about
//! 100 ASCII bytes (words from a fixed list) and what each maps to (its count of ASCII
//! whitespace-separated words and the XXH3-64 of its bytes), with optional busy work.

use std::time::{Duration, Instant};

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// The `n` inputs, generated lazily from a fixed seed.
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

/// What one input maps to: `(words, xxh3-64)`, after `work` of busy time.
pub fn compute(s: &str, work: Duration) -> (u32, u64) {
    if !work.is_zero() {
        let until = Instant::now() + work;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    (s.split_ascii_whitespace().count() as u32, xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}
