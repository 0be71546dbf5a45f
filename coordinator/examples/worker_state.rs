//! Per-worker state: something costly to build (here a dictionary of 50,000 words; in real
//! life a model or a database connection) is made once in each worker process, and the task
//! gets it by reference, as Python's `Pool(initializer=...)`, rayon's `map_init` or mpire's
//! worker state.
//!
//! `cargo run --release --example worker_state`
//!
//! Prints one line: how many words of 10,000 sentences the dictionary knows, and how many
//! workers built the dictionary (one per worker process, however many sentences).

use std::collections::HashSet;
use std::io::Write;

struct Dictionary {
    words: HashSet<String>,
    pid: u32,
}

fn load_dictionary() -> Dictionary {
    let words = (0..50_000).map(|i| format!("w{i}")).collect();
    Dictionary { words, pid: std::process::id() }
}

/// `(known words, the pid of the worker whose dictionary answered)`.
fn known_words(dict: &Dictionary, sentence: String) -> (usize, u32) {
    let known = sentence.split_whitespace().filter(|w| dict.words.contains(*w)).count();
    (known, dict.pid)
}
powerpool::task!(KNOWN: fn(&Dictionary, String) -> (usize, u32) = known_words, init = load_dictionary);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    powerpool::init();
    let pool = powerpool::Pool::builder().workers(2).build()?;
    let sentences = (0..10_000).map(|i| format!("w{i} x{i} w{} y", i * 7));
    let mut pids = HashSet::new();
    let mut total = 0;
    for result in pool.map(&KNOWN, sentences) {
        let (known, pid) = result?;
        total += known;
        pids.insert(pid);
    }
    // A closed stdout (`| head -0`) is no error worth a panic.
    let _ = writeln!(
        std::io::stdout(),
        "{total} known words; the dictionary was built by {} worker(s)",
        pids.len()
    );
    Ok(())
}
