//! B9's work for the anchors: the very file the workspace's benchmark uses
//! (`tests/src/b9.rs`), compiled in here, so the inputs and the mapping cannot drift apart
//! (scripts/bench also checks every anchor's output against powerpool's by SHA-256).

use std::time::Duration;

#[path = "../../../tests/src/b9.rs"]
mod b9;

pub use b9::{compute, inputs};

pub fn args() -> (u64, Duration) {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(1).and_then(|n| n.parse().ok()).expect("usage: N [WORK_US]");
    let us = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    (n, Duration::from_micros(us))
}
