//! The task registry: names mapped to implementations, and the per-format inner loops.
//!
//! A task is a plain `Fn(i64) -> i128`. It is wrapped once, at registration, in a generic
//! [`ChunkTask`] whose loops are monomorphised for that function, so the only dynamic dispatch is
//! one virtual call per chunk, never one per item.

use crate::bytes::{ByteState, ByteTask, Sha256State, WcState};
use powerpool_shared::{codec, task, Format, I256};
use std::time::Duration;

/// The output of one chunk, built in a buffer that is reused from chunk to chunk. The buffer
/// starts with room for the frame header ([`codec::DONE_PREFIX`]), so the finished output is
/// sent as one frame without being copied.
#[derive(Debug, Default)]
pub struct ChunkOutput {
    buf: Vec<u8>,
    /// The input being computed; after a panic, the item that caused it.
    current: i64,
}

impl ChunkOutput {
    /// The chunk's output bytes (the payload).
    pub fn bytes(&self) -> &[u8] {
        self.buf.get(codec::DONE_PREFIX..).unwrap_or_default()
    }

    /// The whole buffer, header room included, for [`codec::finish_done_frame`].
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The input that was being computed when the chunk stopped.
    pub fn current(&self) -> i64 {
        self.current
    }

    fn reset(&mut self, start: i64) {
        self.buf.clear();
        self.buf.resize(codec::DONE_PREFIX, 0);
        self.current = start;
    }
}

/// A task as the worker loop sees it: computes a whole chunk in a given format.
pub trait ChunkTask: Send + Sync {
    /// Computes `start..end` into `out`, replacing what it held.
    fn run(&self, start: i64, end: i64, format: Format, out: &mut ChunkOutput);
}

struct FnTask<F>(F);

impl<F: Fn(i64) -> i128 + Send + Sync> ChunkTask for FnTask<F> {
    fn run(&self, start: i64, end: i64, format: Format, out: &mut ChunkOutput) {
        out.reset(start);
        let f = &self.0;
        match format {
            Format::Lines => {
                let mut digits = itoa::Buffer::new();
                // One reservation for the whole chunk: no growth checks that reallocate.
                let items = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
                out.buf.reserve(items.saturating_mul(Format::Lines.max_bytes_per_item()));
                for x in start..end {
                    let y = at_item(&mut out.current, x, f);
                    // Most results fit 64 bits, whose formatting is several times cheaper
                    // than the 128-bit one (a third of a `square` chunk's time).
                    let text = match u64::try_from(y) {
                        Ok(small) => digits.format(small),
                        Err(_) => digits.format(y),
                    };
                    out.buf.extend_from_slice(text.as_bytes());
                    out.buf.push(b'\n');
                }
            }
            Format::Bin => {
                // Size the buffer once, then fill fixed 16-byte slots: no per-item length or
                // capacity bookkeeping, so the loop vectorises.
                let items = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
                let base = out.buf.len();
                out.buf.resize(base + items * 16, 0);
                for (x, slot) in (start..end).zip(out.buf[base..].chunks_exact_mut(16)) {
                    slot.copy_from_slice(&at_item(&mut out.current, x, f).to_le_bytes());
                }
            }
            Format::Sum => {
                let mut sum = I256::ZERO;
                for x in start..end {
                    sum.add_i128(at_item(&mut out.current, x, f));
                }
                out.buf.extend_from_slice(&sum.to_le_bytes());
            }
        }
    }
}

/// `f(x)`, noting `x` in `current` only if `f` panics (as the stack unwinds through here), not
/// once per item. With a store per item in the inner loop, the loop's speed hung on the
/// build's memory layout: a build that changed nothing in the worker ran `collatz` 1.11x-1.13x
/// slower than the one before it, the same machine code (20 and 12 interleaved pairs, two
/// sizes of environment); noted on unwinding only, the two ran alike (1.01x). Where `f`
/// cannot panic, the unwinding path is gone and so is every trace of the guard in the loop.
#[inline(always)]
fn at_item<F: Fn(i64) -> i128>(current: &mut i64, x: i64, f: &F) -> i128 {
    struct Unwinding<'a>(&'a mut i64, i64);
    impl Drop for Unwinding<'_> {
        fn drop(&mut self) {
            *self.0 = self.1;
        }
    }
    let guard = Unwinding(current, x);
    let y = f(x);
    std::mem::forget(guard);
    y
}

/// Named tasks a worker can run: integer tasks for `map`, byte tasks for `fetch --process`.
pub struct Registry {
    tasks: Vec<(String, Box<dyn ChunkTask>)>,
    byte_tasks: Vec<(String, Box<dyn ByteTask>)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tasks.iter().map(|(name, _)| name)).finish()
    }
}

impl Registry {
    /// A registry with no tasks.
    pub fn empty() -> Self {
        Registry { tasks: Vec::new(), byte_tasks: Vec::new() }
    }

    /// The built-in tasks of [`powerpool_shared::task::TASKS`]; the test-only ones only when
    /// [`task::TEST_TASKS_ENV`] is set.
    pub fn builtin() -> Self {
        let mut reg = Registry::empty();
        reg.register("square", square);
        reg.register("collatz", collatz);
        reg.register_bytes("sha256", || Box::<Sha256State>::default() as Box<dyn ByteState>);
        reg.register_bytes("wc", || Box::<WcState>::default() as Box<dyn ByteState>);
        if task::test_tasks_enabled() {
            reg.register("slow-square", |x| {
                std::thread::sleep(Duration::from_millis(1));
                square(x)
            });
            reg.register_bytes("empty", || {
                Box::<crate::fault::Empty>::default() as Box<dyn ByteState>
            });
            reg.register_bytes("poison-bytes", || {
                Box::<crate::fault::PoisonBytes>::default() as Box<dyn ByteState>
            });
        }
        reg
    }

    /// Adds (or replaces) a task.
    pub fn register<F>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(i64) -> i128 + Send + Sync + 'static,
    {
        self.tasks.retain(|(n, _)| n != name);
        self.tasks.push((name.to_owned(), Box::new(FnTask(f))));
        self
    }

    /// Adds the hidden fault task `name` if it is one and test tasks are enabled (see
    /// [`task::FaultSpec`]); returns whether it did.
    pub fn register_fault_task(&mut self, name: &str) -> bool {
        match task::FaultSpec::parse(name).filter(|_| task::test_tasks_enabled()) {
            Some(spec) => {
                self.register(name, crate::fault::task(spec));
                true
            }
            None => false,
        }
    }

    /// Adds (or replaces) a byte task: `start` makes the state for one body.
    pub fn register_bytes<F>(&mut self, name: &str, start: F) -> &mut Self
    where
        F: Fn() -> Box<dyn ByteState> + Send + Sync + 'static,
    {
        self.byte_tasks.retain(|(n, _)| n != name);
        self.byte_tasks.push((name.to_owned(), Box::new(start)));
        self
    }

    /// The byte task called `name`.
    pub fn get_bytes(&self, name: &str) -> Option<&dyn ByteTask> {
        self.byte_tasks.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_ref())
    }

    /// The task called `name`.
    pub fn get(&self, name: &str) -> Option<&dyn ChunkTask> {
        self.tasks.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_ref())
    }

    /// Names of the registered tasks, integer tasks first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let ints = self.tasks.iter().map(|(n, _)| n.as_str());
        ints.chain(self.byte_tasks.iter().map(|(n, _)| n.as_str()))
    }
}

/// x -> x², exact: an `i64` squared needs up to 126 bits.
#[inline]
pub fn square(x: i64) -> i128 {
    let x = i128::from(x);
    x * x
}

/// Steps of the Collatz map (n/2 if even, 3n+1 if odd) from |x| down to 1; 0 for 0 and 1.
/// CPU-bound and irregular: a few to a few hundred steps per input. Trajectories are followed in
/// 128 bits; one that would overflow them (none is known below 2^64) panics, which fails the
/// input like any task error.
#[inline]
pub fn collatz(x: i64) -> i128 {
    let mut n = u128::from(x.unsigned_abs());
    let mut steps = 0i128;
    while n > 1 {
        n = if n % 2 == 0 {
            n / 2
        } else {
            n.checked_mul(3).and_then(|m| m.checked_add(1)).expect("Collatz trajectory past 2^128")
        };
        steps += 1;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(task: &str, start: i64, end: i64, format: Format) -> Vec<u8> {
        let reg = Registry::builtin();
        let mut out = ChunkOutput::default();
        reg.get(task).expect("registered").run(start, end, format, &mut out);
        out.bytes().to_vec()
    }

    #[test]
    fn every_public_catalogue_task_is_implemented() {
        let reg = Registry::builtin();
        for spec in task::public() {
            let found = match spec.kind {
                task::TaskKind::Int => reg.get(spec.name).is_some(),
                task::TaskKind::Bytes => reg.get_bytes(spec.name).is_some(),
            };
            assert!(found, "{} has no implementation", spec.name);
        }
    }

    #[test]
    fn a_panicking_item_is_the_one_noted_in_every_format() {
        let mut reg = Registry::empty();
        reg.register("seven", |x| if x == 7 { panic!("seven") } else { i128::from(x) });
        let task = reg.get("seven").expect("registered");
        for format in [Format::Lines, Format::Bin, Format::Sum] {
            let mut out = ChunkOutput::default();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                task.run(3, 20, format, &mut out);
            }));
            assert!(run.is_err(), "{format:?}: the task panicked");
            assert_eq!(out.current(), 7, "{format:?}");
            // A chunk that does not panic leaves its start (nothing else reads it then).
            task.run(8, 12, format, &mut out);
            assert_eq!(out.current(), 8, "{format:?}");
        }
    }

    #[test]
    fn collatz_counts_steps() {
        // 27 takes 111 steps (a classic); 97 takes 118.
        let steps: Vec<i128> = [0, 1, 2, 3, 6, 7, 27, -27, 97].map(collatz).to_vec();
        assert_eq!(steps, vec![0, 0, 1, 7, 8, 16, 111, 111, 118]);
        assert!(collatz(i64::MIN) > 0 && collatz(i64::MAX) > 0);
    }

    #[test]
    fn square_is_exact_at_the_edges() {
        assert_eq!(square(i64::MIN), 85070591730234615865843651857942052864);
        assert_eq!(square(i64::MAX), 85070591730234615847396907784232501249);
        assert_eq!(square(-3), 9);
    }

    #[test]
    fn formats_produce_lines_bytes_and_sums() {
        assert_eq!(run("square", -2, 3, Format::Lines), b"4\n1\n0\n1\n4\n");
        let bin = run("square", -1, 1, Format::Bin);
        assert_eq!(bin.len(), 32);
        assert_eq!(&bin[..16], &1i128.to_le_bytes());
        assert_eq!(&bin[16..], &0i128.to_le_bytes());
        let sum = run("square", 0, 4, Format::Sum);
        assert_eq!(I256::from_le_bytes(&sum).expect("32 bytes").to_string(), "14");
        assert!(run("square", 5, 5, Format::Lines).is_empty());
    }

    #[test]
    fn output_buffer_is_replaced_not_appended() {
        let reg = Registry::builtin();
        let mut out = ChunkOutput::default();
        let task = reg.get("square").expect("registered");
        task.run(0, 3, Format::Lines, &mut out);
        task.run(3, 4, Format::Lines, &mut out);
        assert_eq!(out.bytes(), b"9\n");
    }
}
