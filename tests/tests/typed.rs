//! The typed library through its one-binary entry point: this test binary is its own worker
//! (its `main` calls `powerpool::init()` first), as a user's program is.

use futures::StreamExt;
use libtest_mimic::{Arguments, Failed, Trial};
use powerpool::{Pool, TaskError};
use powerpool_tests::{alive, processes_with_env, rss_kib};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- the tasks ----------------------------------------------------------------------------

fn square(x: i64) -> i128 {
    i128::from(x) * i128::from(x)
}
powerpool::task!(SQUARE: fn(i64) -> i128 = square);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    number: u64,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stats {
    number: u64,
    words: usize,
    upper: String,
}

fn stats(line: Line) -> Stats {
    Stats {
        number: line.number,
        words: line.text.split_ascii_whitespace().count(),
        upper: line.text.to_uppercase(),
    }
}
powerpool::task!(STATS: fn(Line) -> Stats = stats);

fn picky(x: u64) -> u64 {
    if x % 97 == 13 {
        panic!("cannot take {x}");
    }
    x + 1
}
powerpool::task!(PICKY: fn(u64) -> u64 = picky);

fn segv_at(x: u64) -> u64 {
    if x == 77_777 {
        // SAFETY: none; the fault is the point: this worker dies with SIGSEGV.
        unsafe { std::ptr::null_mut::<u64>().write_volatile(x) };
    }
    x
}
powerpool::task!(SEGV_AT: fn(u64) -> u64 = segv_at);

/// Places at the edges of a call's runs (1,024 items each) and of the pool's batches.
const POISONED: [u64; 9] = [0, 1023, 1024, 1025, 2047, 2048, 3071, 4095, 4096];

fn poison_at(x: u64) -> u64 {
    if POISONED.contains(&x) {
        panic!("poison {x}");
    }
    x + 7
}
powerpool::task!(POISON_AT: fn(u64) -> u64 = poison_at);

fn weigh(bytes: Vec<u8>) -> (usize, u64) {
    let sum = bytes
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &b)| acc.wrapping_mul(31).wrapping_add(u64::from(b) ^ i as u64));
    (bytes.len(), sum)
}
powerpool::task!(WEIGH: fn(Vec<u8>) -> (usize, u64) = weigh);

static INITS: AtomicUsize = AtomicUsize::new(0);

struct WorkerState {
    pid: u32,
    inits: usize,
}

fn make_state() -> WorkerState {
    WorkerState { pid: std::process::id(), inits: INITS.fetch_add(1, Ordering::SeqCst) + 1 }
}

/// `(pid, how many times the state was made in that process)`; input 500 kills its worker
/// the first time it is met (a marker file in the directory named by POWERPOOL_TEST_DIR).
fn who(state: &WorkerState, x: u64) -> (u32, usize) {
    if x == 500 {
        if let Some(dir) = std::env::var_os("POWERPOOL_TEST_DIR") {
            let marker = std::path::Path::new(&dir).join("killed");
            if std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok() {
                // SAFETY: raise touches no memory.
                unsafe { libc::raise(libc::SIGKILL) };
            }
        }
    }
    std::thread::sleep(Duration::from_micros(200));
    (state.pid, state.inits)
}
powerpool::task!(WHO: fn(&WorkerState, u64) -> (u32, usize) = who, init = make_state);

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
powerpool::task!(SLEEP_MS: fn(u64) -> u64 = sleep_ms);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sloppy {
    a: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<u32>,
    c: u32,
}

fn sloppy(s: Sloppy) -> u32 {
    s.a + s.c
}
powerpool::task!(SLOPPY: fn(Sloppy) -> u32 = sloppy);

fn json_len(v: serde_json::Value) -> usize {
    v.to_string().len()
}
powerpool::task!(JSON_LEN: fn(serde_json::Value) -> usize = json_len);

fn hog(mib: u64) -> u64 {
    // Leaks `mib` MiB, touched, so that the worker's resident memory grows.
    let block = vec![1u8; (mib << 20) as usize];
    std::mem::forget(block);
    u64::from(std::process::id())
}
powerpool::task!(HOG: fn(u64) -> u64 = hog);

fn invert(m: std::collections::HashMap<String, u32>) -> std::collections::HashMap<u32, String> {
    m.into_iter().map(|(k, v)| (v, k)).collect()
}
powerpool::task!(INVERT: fn(std::collections::HashMap<String, u32>) -> std::collections::HashMap<u32, String> = invert);

fn policy(_: ()) -> i32 {
    // SAFETY: sched_getscheduler reads this process's policy and touches no memory.
    unsafe { libc::sched_getscheduler(0) }
}
powerpool::task!(POLICY: fn(()) -> i32 = policy);

/// An input's length; for an input marked `#`, also what this worker has read from files so
/// far (`rchar`: `read` and `pread`, not a socket's `recv`) and whether it holds the item
/// arena open read-only.
fn through_arena(s: String) -> (usize, u32, u64, bool) {
    if !s.starts_with('#') {
        return (s.len(), std::process::id(), 0, true);
    }
    let read_only = std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten().any(|fd| {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let info = std::path::Path::new("/proc/self/fdinfo").join(fd.file_name());
        let flags = std::fs::read_to_string(info).unwrap_or_default();
        let flags = flags.lines().find_map(|l| l.strip_prefix("flags:")).unwrap_or("1");
        let flags = u32::from_str_radix(flags.trim(), 8).unwrap_or(1);
        target.to_string_lossy().contains("memfd:powerpool-items") && flags & 3 == 0
    });
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let rchar =
        io.lines().find_map(|l| l.strip_prefix("rchar:")).and_then(|v| v.trim().parse().ok());
    (s.len(), std::process::id(), rchar.unwrap_or(0), read_only)
}
powerpool::task!(THROUGH_ARENA: fn(String) -> (usize, u32, u64, bool) = through_arena);

// ---- helpers ------------------------------------------------------------------------------

/// A pool whose workers carry `tag` in their environment, to be found among other tests'.
fn tagged(workers: usize, tag: &str) -> Pool {
    Pool::builder().workers(workers).worker_env("POWERPOOL_TEST_TAG", tag).build().expect("pool")
}

fn unique(name: &str) -> String {
    format!("{name}-{}-{:?}", std::process::id(), Instant::now())
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn workers_gone(tag: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if processes_with_env("POWERPOOL_TEST_TAG", tag).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---- the tests ----------------------------------------------------------------------------

fn blocking_map_from_a_plain_main_in_order() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let got: Vec<i128> = pool.map(&SQUARE, -1000..100_000).collect::<Result<_, _>>()?;
    let want: Vec<i128> = (-1000..100_000).map(square).collect();
    check(got == want, || "squares differ".into())?;
    // Structs in, structs out.
    let lines: Vec<Line> =
        (0..5000).map(|n| Line { number: n, text: format!("word {n} and ünïcode {n}") }).collect();
    let got: Vec<Stats> = pool.map(&STATS, lines.clone()).collect::<Result<_, _>>()?;
    check(got == lines.into_iter().map(stats).collect::<Vec<_>>(), || "stats differ".into())
}

fn batches_travel_through_the_shared_arena_read_only() -> Result<(), Failed> {
    // 24 MB of strings: twice the arena's slabs' worth, so slabs are freed and filled again
    // while the call runs. Each lands whole, in order, and the workers read them from the
    // arena's file, which they hold read-only (a socket's reads are not counted in `rchar`).
    let pool = Pool::builder().workers(2).build()?;
    let n = 200_000usize;
    let input = |i: usize| {
        // Marks every 1,000th: each worker's last mark comes near the end of its share.
        let mark = if i % 1_000 == 999 { '#' } else { '.' };
        format!("{mark}{:0>119}", i)
    };
    let total: usize = (0..n).map(|i| input(i).len()).sum();
    let mut rchar = std::collections::HashMap::<u32, u64>::new();
    for (i, r) in pool.map(&THROUGH_ARENA, (0..n).map(input)).enumerate() {
        let (len, pid, read, read_only) = r?;
        check(len == input(i).len(), || format!("item {i}: length {len}"))?;
        check(read_only, || format!("item {i}: worker {pid} holds no read-only arena"))?;
        let seen = rchar.entry(pid).or_default();
        *seen = (*seen).max(read);
    }
    let read: u64 = rchar.values().sum();
    check(read >= (total / 2) as u64, || {
        format!("the workers read {read} bytes from the arena for {total} bytes of input")
    })
}

fn calls_after_the_pool_stopped_by_itself_are_told_why() -> Result<(), Failed> {
    // Workers killed again and again before they did anything: the pool gives up. A call made
    // afterwards names that reason, not a bare "the pool is closed" (the caller closed nothing).
    let tag = unique("stopped");
    let pool = tagged(1, &tag);
    let first: Vec<i128> = pool.map(&SQUARE, 0..10).collect::<Result<_, _>>()?;
    check(first.len() == 10, || "the pool works first".into())?;
    // Idle workers killed as they come back, with no call in between (a call that gets
    // answered would prove the workers do start), until no replacement comes for 2.5 s
    // (longer than the longest wait before one, 1 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut kills, mut quiet) = (0, 0);
    while quiet < 25 {
        check(Instant::now() < deadline, || format!("the pool never gave up ({kills} kills)"))?;
        let workers = processes_with_env("POWERPOOL_TEST_TAG", &tag);
        quiet = if workers.is_empty() { quiet + 1 } else { 0 };
        for pid in workers {
            powerpool_tests::kill(pid, libc::SIGKILL);
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reason = match pool.map(&SQUARE, 0..1).next() {
        Some(Err(e)) => e.reason,
        other => return Err(format!("a call after {kills} kills: {other:?}").into()),
    };
    check(reason.starts_with("the pool stopped: "), || format!("told: {reason}"))?;
    match pool.map(&SQUARE, 0..1).next() {
        Some(Err(e)) => check(e.reason == reason, || format!("then: {}", e.reason)),
        other => Err(format!("a call after the end: {other:?}").into()),
    }
}

fn large_inputs_among_small_ones_arrive_whole() -> Result<(), Failed> {
    // Items past 1 MiB travel alone, in pieces cut from the call's buffer; small ones around
    // them share batches.
    let pool = Pool::builder().workers(2).build()?;
    let sizes = [10usize, 3 << 20, 5, (2 << 20) + 7, 0, 1 << 20, 100];
    let inputs: Vec<Vec<u8>> =
        (0..21).map(|i| (0..sizes[i % sizes.len()]).map(|j| (j * 7 + i) as u8).collect()).collect();
    let got: Vec<(usize, u64)> = pool.map(&WEIGH, inputs.clone()).collect::<Result<_, _>>()?;
    let want: Vec<(usize, u64)> = inputs.into_iter().map(weigh).collect();
    check(got == want, || format!("{got:?} against {want:?}"))
}

fn workers_run_as_batch_jobs_and_the_caller_keeps_its_policy() -> Result<(), Failed> {
    // Workers yield to the process that feeds them (SCHED_BATCH); the caller is left alone.
    let pool = Pool::builder().workers(2).build()?;
    let got: Vec<i32> = pool.map(&POLICY, [(), (), ()]).collect::<Result<_, _>>()?;
    check(got.iter().all(|&p| p == libc::SCHED_BATCH), || format!("worker policies {got:?}"))?;
    let ours = policy(());
    check(ours == libc::SCHED_OTHER, || format!("the caller's policy became {ours}"))
}

fn unordered_results_carry_their_place() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let mut got: Vec<(u64, i128)> = pool
        .map(&SQUARE, 0..20_000i64)
        .unordered()
        .map(|(i, r)| r.map(|v| (i, v)))
        .collect::<Result<_, _>>()?;
    got.sort();
    check(got.iter().all(|&(i, v)| v == square(i as i64)) && got.len() == 20_000, || {
        "unordered results do not match their places".into()
    })
}

fn keep_going_keeps_results_aligned_and_names_each_failure() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).retries(0).build()?;
    let results: Vec<Result<u64, TaskError>> = pool.map(&PICKY, 0..1000u64).keep_going().collect();
    check(results.len() == 1000, || format!("{} results for 1000 inputs", results.len()))?;
    for (x, r) in results.iter().enumerate() {
        let x = x as u64;
        match r {
            Ok(v) => check(x % 97 != 13 && *v == x + 1, || format!("item {x}: {v}"))?,
            Err(e) => check(
                x % 97 == 13
                    && e.index == x
                    && e.reason.contains(&format!("cannot take {x}"))
                    && e.task.ends_with("PICKY"),
                || format!("item {x}: {e}"),
            )?,
        }
    }
    // By default the call stops at the first failure, after every result before it.
    let stopped: Vec<Result<u64, TaskError>> = pool.map(&PICKY, 0..1000u64).collect();
    check(stopped.len() == 14 && stopped[13].is_err(), || format!("{} results", stopped.len()))
}

fn failures_at_the_edges_of_runs_and_batches_stay_in_place() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).retries(0).build()?;
    let got: Vec<Result<u64, TaskError>> = pool.map(&POISON_AT, 0..5000u64).keep_going().collect();
    check(got.len() == 5000, || format!("{} results for 5000 inputs", got.len()))?;
    for (x, r) in (0u64..).zip(&got) {
        let ok = match r {
            Ok(v) => !POISONED.contains(&x) && *v == x + 7,
            Err(e) => {
                POISONED.contains(&x) && e.index == x && e.reason.contains(&format!("poison {x}"))
            }
        };
        check(ok, || format!("item {x}: {r:?}"))?;
    }
    let mut seen = vec![0u8; 5000];
    for (x, r) in pool.map(&POISON_AT, 0..5000u64).unordered() {
        seen[x as usize] += 1;
        check(r.is_err() == POISONED.contains(&x), || format!("unordered item {x}: {r:?}"))?;
    }
    check(seen.iter().all(|&n| n == 1), || "an unordered place came back twice or never".into())
}

fn a_segfaulting_input_among_100000_is_isolated_and_named() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let results: Vec<Result<u64, TaskError>> =
        pool.map(&SEGV_AT, 0..100_000u64).keep_going().collect();
    let failed: Vec<&TaskError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    check(failed.len() == 1, || format!("{} failures: {failed:?}", failed.len()))?;
    check(failed[0].index == 77_777 && failed[0].reason.contains("SIGSEGV"), || {
        format!("{}", failed[0])
    })?;
    let ok = results.iter().enumerate().filter(|(i, _)| *i != 77_777);
    for (i, r) in ok {
        check(r.as_ref().ok() == Some(&(i as u64)), || format!("item {i}: {r:?}"))?;
    }
    Ok(())
}

fn the_initializer_runs_once_per_worker_and_again_after_a_kill() -> Result<(), Failed> {
    let dir = powerpool_tests::TempDir::new("typed-init");
    let pool = Pool::builder().workers(2).worker_env("POWERPOOL_TEST_DIR", &dir.0).build()?;
    let results: Vec<(u32, usize)> = pool.map(&WHO, 0..2000u64).collect::<Result<_, _>>()?;
    let mut pids: Vec<u32> = results.iter().map(|r| r.0).collect();
    pids.sort();
    pids.dedup();
    check(results.iter().all(|r| r.1 == 1), || "a state was made twice in one worker".into())?;
    check(pids.len() >= 3, || format!("a worker was killed, so 3 or more pids: {pids:?}"))?;
    check(dir.0.join("killed").exists(), || "the kill never happened".into())
}

fn dropping_a_call_stops_pulling_and_dropping_the_pool_leaves_no_worker() -> Result<(), Failed> {
    let tag = unique("drop");
    let pool =
        Pool::builder().workers(2).window(1000).worker_env("POWERPOOL_TEST_TAG", &tag).build()?;
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&pulled);
    let inputs = (0..10_000_000u64).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut call = pool.map(&SLEEP_MS, inputs.map(|_| 0));
    for _ in 0..10 {
        call.next().transpose()?;
    }
    let workers = processes_with_env("POWERPOOL_TEST_TAG", &tag);
    check(workers.len() == 2, || format!("expected 2 workers, found {workers:?}"))?;
    drop(call);
    let pulled = pulled.load(Ordering::SeqCst);
    check(pulled <= 10 + 1000, || {
        format!("{pulled} inputs pulled for 10 results and a window of 1000")
    })?;
    drop(pool);
    check(workers.iter().all(|&p| !alive(p)), || format!("workers outlived the pool: {workers:?}"))
}

fn a_stalled_consumer_of_a_huge_lazy_input_keeps_memory_flat() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).window(4096).build()?;
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&pulled);
    let inputs = (0..10_000_000i64).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut call = pool.map(&SQUARE, inputs);
    let before = rss_kib(std::process::id());
    for _ in 0..1000 {
        call.next().transpose()?;
    }
    // Stall: nothing more is pulled than the window, whatever the input's length.
    std::thread::sleep(Duration::from_millis(500));
    let pulled_now = pulled.load(Ordering::SeqCst);
    check(pulled_now <= 1000 + 4096, || format!("{pulled_now} inputs pulled while stalled"))?;
    let after = rss_kib(std::process::id());
    check(after < before + 32 * 1024, || format!("RSS grew from {before} to {after} KiB"))?;
    // And it goes on from where it stopped.
    let next: Vec<i128> = call.take(10).collect::<Result<_, _>>()?;
    check(next == (1000..1010).map(square).collect::<Vec<_>>(), || "it did not go on".into())
}

fn submits_from_many_threads_and_tasks_share_the_workers() -> Result<(), Failed> {
    let tag = unique("submit");
    let pool = tagged(2, &tag);
    let threads: Vec<_> = (0..8i64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                (0..25i64).map(|i| pool.submit(&SQUARE, t * 100 + i).join()).collect::<Vec<_>>()
            })
        })
        .collect();
    for (t, thread) in threads.into_iter().enumerate() {
        let got: Vec<i128> = thread
            .join()
            .map_err(|_| "a thread panicked")?
            .into_iter()
            .collect::<Result<_, _>>()?;
        let want: Vec<i128> = (0..25).map(|i| square(t as i64 * 100 + i)).collect();
        check(got == want, || format!("thread {t}"))?;
    }
    // The async API, inside a runtime: submits awaited together, and a stream.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let handles: Vec<_> = (0..100i64).map(|i| pool.submit(&SQUARE, i)).collect();
        let got: Vec<i128> =
            futures::future::join_all(handles).await.into_iter().collect::<Result<_, _>>()?;
        check(got == (0..100).map(square).collect::<Vec<_>>(), || "async submits".into())?;
        let stream = pool.map_stream(&SQUARE, futures::stream::iter(0..5000i64));
        let got: Vec<i128> = stream.map(|r| r.expect("ok")).collect().await;
        check(got == (0..5000).map(square).collect::<Vec<_>>(), || "async stream".into())?;
        // The blocking API says what to do instead of blocking a runtime thread.
        let blocked: Vec<_> = pool.map(&SQUARE, 0..3i64).collect();
        check(matches!(&blocked[..], [Err(e)] if e.reason.contains("map_stream")), || {
            format!("{blocked:?}")
        })
    })?;
    // Every call went through the same two workers.
    let workers = processes_with_env("POWERPOOL_TEST_TAG", &tag);
    check(workers.len() == 2, || format!("{workers:?}"))
}

fn types_the_codec_cannot_carry_fail_naming_the_task() -> Result<(), Failed> {
    let pool = Pool::builder().workers(1).build()?;
    let inputs = vec![Sloppy { a: 1, b: None, c: 2 }];
    let results: Vec<Result<u32, TaskError>> = pool.map(&SLOPPY, inputs).collect();
    check(
        matches!(&results[..], [Err(e)] if e.task.ends_with("SLOPPY") && e.reason.contains("skip_serializing_if")),
        || format!("{results:?}"),
    )?;
    let inputs = vec![serde_json::json!({"a": [1, 2]})];
    let results: Vec<Result<usize, TaskError>> = pool.map(&JSON_LEN, inputs).collect();
    check(
        matches!(&results[..], [Err(e)] if e.task.ends_with("JSON_LEN") && e.reason.contains("input type")),
        || format!("{results:?}"),
    )
}

fn hash_maps_come_through_whatever_their_order_and_oversized_inputs_are_named() -> Result<(), Failed>
{
    // A HashMap lists its entries in its own hasher's order: a copy decoded elsewhere encodes
    // them in another. Each call checks its first input, each worker its first result.
    let pool = Pool::builder().workers(2).build()?;
    for round in 0..20u32 {
        let input: std::collections::HashMap<String, u32> =
            (0..8).map(|k| (format!("k{k}-{round}"), k * 100 + round)).collect();
        let got = pool.submit(&INVERT, input.clone()).join()?;
        check(got == invert(input), || format!("round {round}: {got:?}"))?;
    }
    // The first input of a call past the 16 MiB a frame carries: named as too large.
    let huge = vec![vec![7u8; 16 << 20]];
    let results: Vec<Result<(usize, u64), TaskError>> = pool.map(&WEIGH, huge).collect();
    check(matches!(&results[..], [Err(e)] if e.reason.contains("passes the 16 MiB limit")), || {
        format!("{results:?}")
    })
}

fn the_timeout_is_per_item_whatever_the_batch() -> Result<(), Failed> {
    let pool = Pool::builder()
        .workers(1)
        .batch_size(50)
        .task_timeout(Duration::from_millis(300))
        .build()?;
    // 20 items of 40 ms in one batch: 800 ms, but no item over the limit.
    let got: Vec<u64> = pool.map(&SLEEP_MS, vec![40u64; 20]).collect::<Result<_, _>>()?;
    check(got == vec![40; 20], || format!("{got:?}"))?;
    let pool =
        Pool::builder().workers(1).retries(0).task_timeout(Duration::from_millis(300)).build()?;
    let results: Vec<Result<u64, TaskError>> =
        pool.map(&SLEEP_MS, vec![1, 2000, 1]).keep_going().collect();
    check(
        results[0].is_ok()
            && results[2].is_ok()
            && matches!(&results[1], Err(e) if e.reason.contains("timed out")),
        || format!("{results:?}"),
    )
}

fn a_panic_carries_its_backtrace_when_asked() -> Result<(), Failed> {
    let pool = Pool::builder().workers(1).retries(0).worker_env("RUST_BACKTRACE", "1").build()?;
    let results: Vec<Result<u64, TaskError>> = pool.map(&PICKY, vec![13u64]).collect();
    check(
        matches!(&results[..], [Err(e)] if e.reason.contains("cannot take 13") && e.reason.contains("backtrace")),
        || format!("{results:?}"),
    )
}

fn a_worker_over_its_memory_limit_is_replaced() -> Result<(), Failed> {
    let pool = Pool::builder().workers(1).batch_size(1).max_worker_memory(40 << 20).build()?;
    let pids: Vec<u64> = pool.map(&HOG, vec![16u64; 8]).collect::<Result<_, _>>()?;
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    check(distinct.len() >= 2, || format!("one worker leaked 128 MiB: {pids:?}"))
}

fn the_progress_hook_sees_the_counts() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let last = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&last);
    let n = pool
        .map(&SQUARE, 0..50_000i64)
        .progress(move |p| *seen.lock().expect("lock") = Some(*p))
        .count();
    let last = last.lock().expect("lock").expect("the hook was called");
    check(n == 50_000 && last.done == 50_000 && last.failed == 0 && last.rate() > 0.0, || {
        format!("{last:?}")
    })
}

fn closing_drains_and_terminating_kills() -> Result<(), Failed> {
    let tag = unique("close");
    let pool = tagged(2, &tag);
    let pending = pool.submit(&SLEEP_MS, 300);
    pool.close();
    check(pending.join()? == 300, || "a closed pool still finishes what was sent".into())?;
    pool.join();
    check(workers_gone(&tag), || "workers outlived join".into())?;
    let refused: Vec<_> = pool.map(&SQUARE, 0..3i64).collect();
    check(matches!(&refused[..], [Err(e)] if e.reason.contains("closed")), || {
        format!("{refused:?}")
    })?;
    let tag = unique("terminate");
    let pool = tagged(2, &tag);
    let slow = pool.submit(&SLEEP_MS, 60_000);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    pool.terminate();
    check(started.elapsed() < Duration::from_secs(10), || "terminate waited".into())?;
    check(slow.join().is_err(), || "a terminated item has no result".into())?;
    check(workers_gone(&tag), || "workers outlived terminate".into())
}

/// The mode `a_worker_that_cannot_open_the_arena_gets_its_batches_by_socket` runs this binary
/// in, as user nobody: a process that is not dumpable (a daemon after dropping privileges),
/// whose descriptors its workers cannot open through `/proc`.
const NOT_DUMPABLE: &str = "POWERPOOL_TEST_NOT_DUMPABLE";

fn not_dumpable_run() {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes an integer and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let pool = Pool::builder().workers(2).build().expect("a pool");
    let lines: Vec<Line> =
        (0..20_000).map(|n| Line { number: n, text: format!("word {n} and more") }).collect();
    let got: Vec<Stats> =
        pool.map(&STATS, lines.clone()).collect::<Result<_, _>>().expect("results");
    let ok = got == lines.into_iter().map(stats).collect::<Vec<_>>();
    print!("{}", if ok { "exact" } else { "wrong" });
}

fn a_worker_that_cannot_open_the_arena_gets_its_batches_by_socket() -> Result<(), Failed> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root, to run as user nobody");
        return Ok(());
    }
    let me = std::env::current_exe()?;
    let nobody = ["--reuid", "65534", "--regid", "65534", "--clear-groups"];
    let setpriv = || {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(nobody).arg(&me);
        cmd
    };
    if !setpriv().arg("--list").output().is_ok_and(|out| out.status.success()) {
        eprintln!("SKIPPED: user nobody cannot run {}", me.display());
        return Ok(());
    }
    let out = setpriv().env(NOT_DUMPABLE, "1").output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.success(), || format!("failed: {stderr}"))?;
    check(out.stdout == b"exact", || format!("output {:?}: {stderr}", out.stdout))
}

fn main() {
    // First thing: in a worker process (this binary, started by a pool) this serves and exits.
    powerpool::init();
    if std::env::var_os(NOT_DUMPABLE).is_some() {
        return not_dumpable_run();
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test(
            "blocking_map_from_a_plain_main_in_order",
            blocking_map_from_a_plain_main_in_order,
        ),
        Trial::test("unordered_results_carry_their_place", unordered_results_carry_their_place),
        Trial::test(
            "hash_maps_come_through_whatever_their_order_and_oversized_inputs_are_named",
            hash_maps_come_through_whatever_their_order_and_oversized_inputs_are_named,
        ),
        Trial::test(
            "workers_run_as_batch_jobs_and_the_caller_keeps_its_policy",
            workers_run_as_batch_jobs_and_the_caller_keeps_its_policy,
        ),
        Trial::test(
            "batches_travel_through_the_shared_arena_read_only",
            batches_travel_through_the_shared_arena_read_only,
        ),
        Trial::test(
            "a_worker_that_cannot_open_the_arena_gets_its_batches_by_socket",
            a_worker_that_cannot_open_the_arena_gets_its_batches_by_socket,
        ),
        Trial::test(
            "calls_after_the_pool_stopped_by_itself_are_told_why",
            calls_after_the_pool_stopped_by_itself_are_told_why,
        ),
        Trial::test(
            "large_inputs_among_small_ones_arrive_whole",
            large_inputs_among_small_ones_arrive_whole,
        ),
        Trial::test(
            "keep_going_keeps_results_aligned_and_names_each_failure",
            keep_going_keeps_results_aligned_and_names_each_failure,
        ),
        Trial::test(
            "failures_at_the_edges_of_runs_and_batches_stay_in_place",
            failures_at_the_edges_of_runs_and_batches_stay_in_place,
        ),
        Trial::test(
            "a_segfaulting_input_among_100000_is_isolated_and_named",
            a_segfaulting_input_among_100000_is_isolated_and_named,
        ),
        Trial::test(
            "the_initializer_runs_once_per_worker_and_again_after_a_kill",
            the_initializer_runs_once_per_worker_and_again_after_a_kill,
        ),
        Trial::test(
            "dropping_a_call_stops_pulling_and_dropping_the_pool_leaves_no_worker",
            dropping_a_call_stops_pulling_and_dropping_the_pool_leaves_no_worker,
        ),
        Trial::test(
            "a_stalled_consumer_of_a_huge_lazy_input_keeps_memory_flat",
            a_stalled_consumer_of_a_huge_lazy_input_keeps_memory_flat,
        ),
        Trial::test(
            "submits_from_many_threads_and_tasks_share_the_workers",
            submits_from_many_threads_and_tasks_share_the_workers,
        ),
        Trial::test(
            "types_the_codec_cannot_carry_fail_naming_the_task",
            types_the_codec_cannot_carry_fail_naming_the_task,
        ),
        Trial::test(
            "the_timeout_is_per_item_whatever_the_batch",
            the_timeout_is_per_item_whatever_the_batch,
        ),
        Trial::test(
            "a_panic_carries_its_backtrace_when_asked",
            a_panic_carries_its_backtrace_when_asked,
        ),
        Trial::test(
            "a_worker_over_its_memory_limit_is_replaced",
            a_worker_over_its_memory_limit_is_replaced,
        ),
        Trial::test("the_progress_hook_sees_the_counts", the_progress_hook_sees_the_counts),
        Trial::test("closing_drains_and_terminating_kills", closing_drains_and_terminating_kills),
    ];
    libtest_mimic::run(&args, tests).exit();
}
