//! Custom tasks in a worker binary of the user's own (`worker/examples/prime_worker.rs`),
//! used from the command line with `--worker-cmd`. (The typed library, where tasks live in the
//! program itself, is tested in `typed.rs`.)

use powerpool_tests::*;

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
