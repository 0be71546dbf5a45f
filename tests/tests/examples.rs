//! The typed library's examples, run as a user runs them: `line_stats` against a
//! straightforward single-process computation, on awkward and on large files; `worker_state`.

use powerpool_tests::*;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// What `line_stats` must print for `text`, computed the plain way.
fn expected(text: &[u8]) -> String {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if text.ends_with(b"\n") || text.is_empty() {
        lines.pop();
    }
    let mut out = String::new();
    for line in lines {
        let line = std::str::from_utf8(line).expect("utf-8");
        let digest: String =
            Sha256::digest(line.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "{} {} {digest}", line.split_ascii_whitespace().count(), line.len());
    }
    out
}

fn line_stats(text: &[u8]) -> std::process::Output {
    let dir = TempDir::new("line-stats");
    let file = dir.0.join("input.txt");
    std::fs::write(&file, text).expect("writes");
    run_with_timeout(std::process::Command::new(example("line_stats")).arg(&file), TIMEOUT)
}

#[test]
fn line_stats_prints_what_a_plain_computation_prints_on_awkward_text() {
    let cases: [&[u8]; 7] = [
        b"",
        b"\n",
        b"one line without a newline",
        b"hello world\r\n\r\n\n  two  words \n\tTabs\tand\x0bvt\x0cff\n",
        "ünïcödé wörds\n日本語 テキスト\n\n".as_bytes(),
        b"trailing spaces   \nlast",
        b"a\n\nb\n\n\n",
    ];
    for text in cases {
        let out = line_stats(text);
        assert!(out.status.success(), "{text:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected(text), "{text:?}");
    }
}

#[test]
fn line_stats_streams_a_large_file_in_order() {
    let mut text = Vec::new();
    let words = ["alpha", "beta", "gamma", "delta", "  ", "\t", "é"];
    let mut state = 7u64;
    for i in 0..200_000u64 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        for j in 0..(state % 12) {
            text.extend_from_slice(words[((state >> j) % 7) as usize].as_bytes());
            text.push(b' ');
        }
        text.extend_from_slice(i.to_string().as_bytes());
        text.push(b'\n');
    }
    let out = line_stats(&text);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == expected(&text).into_bytes(), "the output differs from the plain one");
}

#[test]
fn a_line_that_is_not_utf8_stops_the_run_naming_it() {
    let text = b"good\nalso good\nbad \xff\xfe line\nnever reached\n";
    let out = line_stats(text);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "line_stats: line 3 is not UTF-8");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected(b"good\nalso good\n"));
}

#[test]
fn worker_state_is_built_once_per_worker() {
    let out = run_with_timeout(&mut std::process::Command::new(example("worker_state")), TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Sentences `w{i} x{i} w{7i} y`: w{i} is known for i < 50,000 (always), w{7i} while
    // 7i < 50,000 (i up to 7142): 10,000 + 7,143.
    assert_eq!(text.trim(), "17143 known words; the dictionary was built by 2 worker(s)");
}
