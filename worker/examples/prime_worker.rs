//! A worker binary with a task of its own, for `powerpool map ... --worker-cmd` or
//! `Pool::builder().worker_command(...)`: `is-prime` (1 for a prime, 0 otherwise), beside the
//! built-in tasks. Build it with `cargo build --release -p powerpool-worker --example
//! prime_worker`, then count the primes below a million:
//!
//! ```sh
//! powerpool map is-prime --range 0..1000000 --format sum \
//!     --worker-cmd target/release/examples/prime_worker        # prints 78498
//! ```

use powerpool_worker::Registry;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut tasks = Registry::builtin();
    tasks.register("is-prime", |x| i128::from(is_prime(x)));
    powerpool_worker::main_with(tasks)
}

/// Deterministic Miller-Rabin for every `u64`: the first twelve primes as witnesses suffice
/// below 3.3 * 10^24.
fn is_prime(x: i64) -> bool {
    let Ok(n) = u64::try_from(x) else { return false };
    if n < 2 {
        return false;
    }
    const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    for p in WITNESSES {
        if n % p == 0 {
            return n == p;
        }
    }
    let (mut d, mut s) = (n - 1, 0);
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    let mul = |a: u64, b: u64| ((u128::from(a) * u128::from(b)) % u128::from(n)) as u64;
    let pow = |mut base: u64, mut exp: u64| {
        let mut acc = 1;
        while exp > 0 {
            if exp & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            exp >>= 1;
        }
        acc
    };
    'witness: for a in WITNESSES {
        let mut x = pow(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}
