//! Your function, your types, one binary: the library as Python's `Pool` should have been.
//!
//! Declare a task with [`task!`](crate::task) (a plain function over serde types, checked at
//! compile time), call [`init`] first thing in `main`, build a [`Pool`], and map:
//!
//! ```no_run
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Stats {
//!     words: usize,
//!     bytes: usize,
//! }
//!
//! fn stats(line: String) -> Stats {
//!     Stats { words: line.split_ascii_whitespace().count(), bytes: line.len() }
//! }
//! powerpool::task!(STATS: fn(String) -> Stats = stats);
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     powerpool::init();
//!     let pool = powerpool::Pool::new()?;
//!     let lines = ["a b c", "hello"].map(String::from);
//!     for result in pool.map(&STATS, lines) {
//!         let s = result?;
//!         println!("{} {}", s.words, s.bytes);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Workers are this same executable started again; [`init`] is where they begin to serve (and
//! never return into `main`). They start once and serve every call until the pool is closed.
//! Everything the command line has comes with it: a worker that dies (panic, segfault, OOM,
//! kill) is replaced and its items run again; an item that keeps failing is cornered by
//! bisection and named ([`TaskError`]); timeouts that kill, per item; recycling by count or
//! by memory; bounded memory (each call pulls its input lazily, at most a window ahead);
//! cancellation by dropping a call.
//!
//! **What travels.** Inputs and results cross the process boundary through bincode (serde,
//! fixed-width integers), which is not self-describing: `#[serde(flatten)]`,
//! `#[serde(untagged)]`, `#[serde(skip_serializing_if)]` and `serde_json::Value` do not
//! round-trip. The first input of every call, and the first result of every task in every
//! worker, is checked to come back unchanged; one that does not fails with an error naming the
//! task, never as a wrong value.

mod call;
mod map;
mod pending;
mod pool;
mod route;
mod task;

pub use call::Progress;
pub use map::{Map, MapStream, Submitted, Unordered};
pub use pool::{init, Pool, PoolBuilder};
pub use task::{Task, TaskError};

#[doc(hidden)]
pub mod __private {
    pub use powerpool_worker::typed::{call_plain, call_with_state, linkme, TaskEntry, TASKS};
}
