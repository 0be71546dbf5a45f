//! The hidden fault tasks (`fault-KIND@ITEMS`, `flaky-KIND@ITEMS`): square every item except the
//! chosen ones, where the worker fails in the chosen way. They exist so the test suite and
//! `scripts/chaos` can provoke every fault the coordinator must survive; they are registered only
//! when [`powerpool_shared::task::TEST_TASKS_ENV`] is `1`.

use crate::bytes::{ByteState, WcState};
use crate::registry::square;
use powerpool_shared::task::{FaultKind, FaultSpec, FLAKY_DIR_ENV};
use std::path::PathBuf;
use std::time::Duration;

/// The task function for `spec`.
pub fn task(spec: FaultSpec) -> impl Fn(i64) -> i128 + Send + Sync + 'static {
    let flaky_dir = std::env::var_os(FLAKY_DIR_ENV).map(PathBuf::from);
    move |x| {
        if spec.items.contains(&x) && should_fail(spec.flaky, flaky_dir.as_deref(), x) {
            fail(spec.kind, x);
        }
        square(x)
    }
}

/// A flaky fault fails once per item per run: the first worker to meet the item creates its
/// marker file and fails; later ones find the file and compute normally.
fn should_fail(flaky: bool, dir: Option<&std::path::Path>, x: i64) -> bool {
    if !flaky {
        return true;
    }
    let Some(dir) = dir else { return true };
    std::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(x.to_string())).is_ok()
}

fn fail(kind: FaultKind, x: i64) {
    match kind {
        FaultKind::Panic => panic!("injected panic at item {x}"),
        FaultKind::Abort => std::process::abort(),
        FaultKind::Segv => {
            // SAFETY: none; this write is the point. A null-pointer write faults with SIGSEGV
            // before it can corrupt anything.
            unsafe { std::ptr::null_mut::<u64>().write_volatile(u64::try_from(x).unwrap_or(0)) }
        }
        FaultKind::Exit => std::process::exit(3),
        FaultKind::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        FaultKind::Oom => exhaust_memory(),
        FaultKind::Kill => {
            // SAFETY: raise has no memory-safety preconditions.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }
}

/// Caps the address space 256 MiB above what is mapped now, then asks for 4 GiB: the
/// allocation fails and Rust's allocation-error handler aborts the process, as a real
/// out-of-memory would end it.
fn exhaust_memory() {
    let mapped = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u64>().ok()))
        .map_or(1 << 30, |pages| pages * 4096);
    let cap = mapped + (256 << 20);
    let limit = libc::rlimit { rlim_cur: cap, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct we pass; lowering only the soft limit is always allowed.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &limit);
    }
    let mut hog: Vec<u8> = Vec::with_capacity(4 << 30);
    hog.push(1);
    std::hint::black_box(&hog);
}

/// `empty`: every body's result is the empty string.
#[derive(Debug, Default)]
pub struct Empty;

impl ByteState for Empty {
    fn update(&mut self, _piece: &[u8]) {}

    fn finish(self: Box<Self>) -> String {
        String::new()
    }
}

/// `poison-bytes`: `wc`, except that a body starting with `panic` panics and one starting with
/// `segv` takes the worker down with SIGSEGV.
#[derive(Debug, Default)]
pub struct PoisonBytes {
    wc: WcState,
    started: bool,
}

impl ByteState for PoisonBytes {
    fn update(&mut self, piece: &[u8]) {
        if !self.started {
            self.started = true;
            if piece.starts_with(b"panic") {
                fail(FaultKind::Panic, 0);
            }
            if piece.starts_with(b"segv") {
                fail(FaultKind::Segv, 0);
            }
        }
        self.wc.update(piece);
    }

    fn finish(self: Box<Self>) -> String {
        Box::new(self.wc).finish()
    }
}
