//! `map` output against independent references, over a grid of ranges, worker counts, chunk
//! sizes and formats; and the canonical job against Python's own Pool.

use num_bigint::BigInt;
use powerpool_tests::{powerpool, run, squares_bin, squares_lines};

const RANGES: &[(i64, i64)] = &[
    (5, 5),                   // empty
    (5, -5),                  // inverted: empty, like range(5, -5)
    (7, 8),                   // one item
    (-10, -1),                // negative
    (-50, 50),                // crossing zero
    (i64::MIN, i64::MIN + 5), // the low edge
    (i64::MAX - 5, i64::MAX), // the high edge
    (0, 1000),
];
const WORKERS: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "8"];
const CHUNKS: &[Option<&str>] = &[Some("1"), Some("3"), Some("7"), Some("100000"), None];

fn map(start: i64, end: i64, workers: &str, chunk: Option<&str>, format: &str) -> Vec<u8> {
    let range = format!("--range={start}..{end}");
    let mut args = vec!["map", "square", &range, "--workers", workers, "--format", format];
    if let Some(c) = chunk {
        args.extend(["--chunk-size", c]);
    }
    let out = run(&mut powerpool(&args));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn sum_of_squares(start: i64, end: i64) -> String {
    let mut sum = BigInt::from(0);
    for x in start..end.max(start) {
        sum += BigInt::from(x) * BigInt::from(x);
    }
    format!("{sum}\n")
}

#[test]
fn lines_match_the_reference_over_the_grid() {
    for &(s, e) in RANGES {
        let want = squares_lines(s, e);
        for w in WORKERS {
            for &c in CHUNKS {
                assert_eq!(
                    map(s, e, w, c, "lines"),
                    want,
                    "lines {s}..{e} workers {w} chunk {c:?}"
                );
            }
        }
    }
}

#[test]
fn bin_matches_the_reference_over_the_grid() {
    for &(s, e) in RANGES {
        let want = squares_bin(s, e);
        for w in WORKERS {
            for &c in CHUNKS {
                assert_eq!(map(s, e, w, c, "bin"), want, "bin {s}..{e} workers {w} chunk {c:?}");
            }
        }
    }
}

#[test]
fn sum_matches_bigint_over_the_grid() {
    for &(s, e) in RANGES {
        let want = sum_of_squares(s, e);
        for w in WORKERS {
            for &c in CHUNKS {
                let got = String::from_utf8(map(s, e, w, c, "sum")).expect("utf-8");
                assert_eq!(got, want, "sum {s}..{e} workers {w} chunk {c:?}");
            }
        }
    }
}

#[test]
fn a_large_sum_is_exact_beyond_128_bits() {
    // 2^20 items at the top of the i64 range: the sum needs about 146 bits.
    let (s, e) = (i64::MAX - (1 << 20), i64::MAX);
    let got = String::from_utf8(map(s, e, "2", None, "sum")).expect("utf-8");
    // Closed form for sum of x^2 over [s, e): F(e) - F(s), F(n) = (n-1) n (2n-1) / 6.
    let f = |n: i64| {
        let n = BigInt::from(n);
        (&n - 1) * &n * (2 * &n - 1) / 6
    };
    assert_eq!(got, format!("{}\n", f(e) - f(s)));
}

#[test]
fn empty_ranges_print_nothing_in_any_format() {
    for format in ["lines", "bin"] {
        assert!(map(10, 0, "4", None, format).is_empty());
    }
    assert_eq!(map(0, 0, "4", None, "sum"), b"0\n");
}

#[test]
fn the_canonical_job_prints_what_python_pool_prints() {
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "from multiprocessing import Pool\n\
             def square(x):\n    return x * x\n\
             if __name__ == '__main__':\n    \
                 with Pool(4) as pool:\n        \
                     print(*pool.map(square, range(100000)), sep='\\n')",
        ])
        .output()
        .expect("python3 is installed (CI installs it)");
    assert!(python.status.success(), "python failed: {}", String::from_utf8_lossy(&python.stderr));
    let ours = map(0, 100_000, "4", None, "lines");
    assert_eq!(ours.len(), python.stdout.len());
    assert!(ours == python.stdout, "powerpool and Python's Pool differ");
    assert_eq!(ours, squares_lines(0, 100_000));
}

#[test]
fn output_file_holds_the_same_bytes_as_stdout() {
    let dir = powerpool_tests::TempDir::new("out");
    let path = dir.0.join("squares.txt");
    let mut cmd = powerpool(["map", "square", "--range=-300..300", "--workers", "3", "--output"]);
    let out = run(cmd.arg(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&path).expect("written"), squares_lines(-300, 300));
    assert_eq!(dir.entries(), vec!["squares.txt".to_owned()], "no temporary file left");
}
