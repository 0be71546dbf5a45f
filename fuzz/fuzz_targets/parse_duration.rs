//! `--task-timeout`/`--timeout` durations and `--max-body` sizes on any text: a value within
//! the documented bounds or a message, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use powerpool::cli::{parse_duration, parse_size, MAX_DURATION};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = parse_duration(text) {
        assert!(d >= Duration::from_micros(999) && d <= MAX_DURATION, "{text:?} -> {d:?}");
    }
    if let Ok(n) = parse_size(text) {
        assert!((1..=1 << 40).contains(&n), "{text:?} -> {n}");
    }
});
