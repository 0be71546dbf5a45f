//! Baseline for scripts/bench (B3, B7): TASK over START..END summed exactly by THREADS threads in
//! this one process, with the very functions and 256-bit sum the workers use. The bounds come
//! from the command line, so nothing is computed at compile time, and each item goes through the
//! same loop shape as the worker's `sum` format (one task call, one 256-bit add).
//!
//! Usage: bench-threads square|collatz START END THREADS
//! Prints the sum, then `elapsed_s=<seconds>` on stderr.

use powerpool_shared::I256;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: bench-threads square|collatz START END THREADS");
        std::process::exit(2);
    }
    let start: i64 = args[2].parse().expect("START");
    let end: i64 = args[3].parse().expect("END");
    let threads: i64 = args[4].parse().expect("THREADS");
    let began = Instant::now();
    // Monomorphised per task, as the worker's loops are: the task is inlined into the loop.
    let total = match args[1].as_str() {
        "square" => run(powerpool_worker::square, start, end, threads),
        "collatz" => run(powerpool_worker::collatz, start, end, threads),
        other => {
            eprintln!("unknown task {other}");
            std::process::exit(2);
        }
    };
    println!("{total}");
    eprintln!("elapsed_s={:.6}", began.elapsed().as_secs_f64());
}

fn run<F: Fn(i64) -> i128 + Copy + Send>(task: F, start: i64, end: i64, threads: i64) -> I256 {
    let len = end - start;
    let parts: Vec<(i64, i64)> = (0..threads)
        .map(|t| (start + len * t / threads, start + len * (t + 1) / threads))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .iter()
            .map(|&(a, b)| {
                s.spawn(move || {
                    let (a, b) = std::hint::black_box((a, b));
                    let mut sum = I256::ZERO;
                    for x in a..b {
                        sum.add_i128(task(x));
                    }
                    sum
                })
            })
            .collect();
        let mut total = I256::ZERO;
        for h in handles {
            total.add(h.join().expect("thread"));
        }
        total
    })
}
