//! powerpool as a library (`Pool`, ordered and unordered streams, errors, cancellation), and
//! custom tasks in a worker binary of the user's own (`worker/examples/prime_worker.rs`), used
//! from the command line and from the library.

use futures::StreamExt;
use powerpool::pool::PoolError;
use powerpool::{Error, Pool};
use powerpool_tests::*;
use std::time::Duration;

/// A pool of the workspace's `powerpool-worker`, with the hidden test tasks enabled.
fn test_pool(workers: usize, chunk_size: u64) -> Pool {
    Pool::builder()
        .workers(workers)
        .chunk_size(chunk_size)
        .worker_command(bin("powerpool-worker"), Vec::<String>::new())
        .worker_env("POWERPOOL_TEST_TASKS", "1")
        .build()
        .expect("pool")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
}

/// Primes below `n` by a sieve: the independent reference.
fn primes_below(n: usize) -> Vec<bool> {
    let mut sieve = vec![true; n];
    for (i, slot) in sieve.iter_mut().enumerate().take(2) {
        *slot = i >= 2;
    }
    let mut p = 2;
    while p * p < n {
        if sieve[p] {
            (p * p..n).step_by(p).for_each(|m| sieve[m] = false);
        }
        p += 1;
    }
    sieve
}

#[test]
fn a_custom_task_runs_through_worker_cmd() {
    let worker = example("prime_worker");
    let out = run(powerpool(["map", "is-prime", "--range", "0..100000", "--format", "sum"])
        .arg("--worker-cmd")
        .arg(&worker));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"9592\n", "pi(10^5)");
    let out = run(powerpool(["map", "is-prime", "--range=-20..3000", "--workers", "3"])
        .arg("--worker-cmd")
        .arg(&worker));
    let sieve = primes_below(3000);
    let expected: String =
        (-20i64..3000).map(|x| format!("{}\n", u8::from(x >= 0 && sieve[x as usize]))).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    // The custom worker still has the built-in tasks.
    let out =
        run(powerpool(["map", "square", "--range", "0..50"]).arg("--worker-cmd").arg(&worker));
    assert_eq!(out.stdout, squares_lines(0, 50));
}

#[test]
fn the_library_maps_in_order_and_unordered() {
    runtime().block_on(async {
        let pool = test_pool(3, 97);
        let ordered: Vec<i128> =
            pool.map("square", -1000..5000).map(|r| r.expect("ok")).collect().await;
        let expected: Vec<i128> = (-1000i128..5000).map(|x| x * x).collect();
        assert_eq!(ordered, expected);
        let mut unordered: Vec<(i64, i128)> =
            pool.map_unordered("square", -1000..5000).map(|r| r.expect("ok")).collect().await;
        unordered.sort_unstable();
        let pairs: Vec<(i64, i128)> =
            (-1000i64..5000).map(|x| (x, i128::from(x) * i128::from(x))).collect();
        assert_eq!(unordered, pairs);
        assert!(pool.map("square", 5..5).next().await.is_none(), "an empty range yields nothing");
    });
}

#[test]
fn the_library_runs_custom_tasks() {
    runtime().block_on(async {
        let pool = Pool::builder()
            .workers(2)
            .worker_command(example("prime_worker"), Vec::<String>::new())
            .build()
            .expect("pool");
        let count: i128 = pool
            .map("is-prime", 0..10_000)
            .map(|r| r.expect("ok"))
            .collect::<Vec<_>>()
            .await
            .iter()
            .sum();
        assert_eq!(count, 1229, "pi(10^4)");
    });
}

#[test]
fn a_failing_input_ends_the_stream_after_every_result_before_it() {
    runtime().block_on(async {
        let pool = test_pool(2, 10);
        let results: Vec<Result<i128, Error>> = pool.map("fault-segv@50", 0..100).collect().await;
        assert_eq!(results.len(), 51, "50 results, then the error");
        for (x, r) in results[..50].iter().enumerate() {
            assert_eq!(r.as_ref().expect("ok"), &((x * x) as i128));
        }
        match &results[50] {
            Err(Error::Pool(PoolError::TaskFailed { offset: 50, what, reason, .. })) => {
                assert_eq!(what, "input 50");
                assert!(reason.contains("SIGSEGV"), "{reason}");
            }
            other => panic!("expected the failure of input 50, got {other:?}"),
        }
        let unknown: Vec<_> = pool.map("no-such-task", 0..10).collect().await;
        assert!(
            matches!(unknown.as_slice(), [Err(Error::Pool(PoolError::JobRefused(_)))]),
            "{unknown:?}"
        );
    });
}

#[test]
fn dropping_the_stream_stops_and_reaps_the_workers() {
    runtime().block_on(async {
        // This pool's workers, told apart from any other test's by a tag in their environment.
        let tag = format!("{}-{:?}", std::process::id(), std::time::Instant::now());
        let pool = Pool::builder()
            .workers(2)
            .chunk_size(10)
            .worker_command(bin("powerpool-worker"), Vec::<String>::new())
            .worker_env("POWERPOOL_TEST_TASKS", "1")
            .worker_env("POWERPOOL_TEST_TAG", &tag)
            .build()
            .expect("pool");
        let mut stream = pool.map("slow-square", 0..100_000);
        for x in 0..25i128 {
            assert_eq!(stream.next().await.expect("a result").expect("ok"), x * x);
        }
        let workers = processes_with_env("POWERPOOL_TEST_TAG", &tag);
        assert_eq!(workers.len(), 2, "both workers should be running: {workers:?}");
        drop(stream);
        let mut gone = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if workers.iter().all(|&p| !alive(p)) {
                gone = true;
                break;
            }
        }
        assert!(gone, "workers outlived the dropped stream: {workers:?}");
    });
}
