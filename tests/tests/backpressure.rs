//! Bounded memory: when the reader of stdout stalls, workers are throttled instead of the
//! coordinator buffering the range's whole output.

use powerpool_tests::{powerpool, rss_kib, TIMEOUT};
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

/// Bytes of `print(*(x*x for x in range(n)), sep="\n")`, counted digit by digit.
fn lines_len(n: u64) -> u64 {
    (0..n).map(|x| (x * x).checked_ilog10().unwrap_or(0) as u64 + 2).sum()
}

#[test]
fn a_stalled_reader_throttles_the_workers_and_memory_stays_flat() {
    const N: u64 = 10_000_000; // about 150 MB of output
    let mut child = powerpool(["map", "square", "--range", &format!("0..{N}"), "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    // Read nothing for a while, watching the coordinator's memory all along: an unbounded
    // gather would grow towards the whole output (the workers compute it in about a second).
    let mut stalled_rss = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        stalled_rss = stalled_rss.max(rss_kib(child.id()));
    }
    assert!(child.try_wait().expect("waits").is_none(), "the run cannot end while stdout is full");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut total = 0u64;
        let mut lines = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n as u64;
                    lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                }
            }
        }
        (total, lines)
    });
    let out = wait_output_without_stdout(child);
    let (total, lines) = reader.join().expect("reader");
    assert!(out.0.success(), "{}", out.1);
    assert_eq!(lines, N);
    assert_eq!(total, lines_len(N));
    eprintln!("coordinator peak RSS while the reader stalled: {stalled_rss} KiB");
    assert!(stalled_rss > 0, "RSS was read");
    assert!(stalled_rss < 48 * 1024, "coordinator RSS {stalled_rss} KiB while the reader stalled");
}

fn wait_output_without_stdout(
    mut child: std::process::Child,
) -> (std::process::ExitStatus, String) {
    // stdout already has its own reader thread; collect stderr and the status here.
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = powerpool_tests::wait_timeout(&mut child, TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("did not finish within {TIMEOUT:?}");
    });
    (status, err.join().expect("stderr reader"))
}
