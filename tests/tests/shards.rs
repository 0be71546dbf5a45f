//! `map --shard K/N` and `merge`: N shard runs merged are byte-identical to the single run, for
//! several N (including more shards than inputs), negative ranges and every format; a missing,
//! duplicated, truncated, corrupt or foreign shard is refused with one line and nothing written.

use powerpool_tests::*;
use std::path::{Path, PathBuf};

fn single(range: &str, format: &str) -> Vec<u8> {
    let out = run(&mut powerpool(["map", "square", "--range", range, "--format", format]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Runs every shard of `range` into `dir`; returns the files in shard order.
fn shards(dir: &Path, range: &str, format: &str, n: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|k| {
            let path = dir.join(format!("{format}-{n}-{k}.shard"));
            let mut cmd = powerpool(["map", "square", "--range", range, "--format", format]);
            cmd.args(["--workers", "2", "--shard", &format!("{k}/{n}"), "--output"]).arg(&path);
            let out = run(&mut cmd);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            path
        })
        .collect()
}

fn merge(files: &[PathBuf], extra: &[&str]) -> std::process::Output {
    run(powerpool(["merge"]).args(files).args(extra))
}

#[test]
fn merged_shards_equal_the_single_run_in_every_format() {
    let dir = TempDir::new("shards");
    for range in ["-1000..1000", "5..5", "-9223372036854775808..-9223372036854775000"] {
        for format in ["lines", "bin", "sum"] {
            for n in [1, 2, 3, 7] {
                let mut files = shards(&dir.0, range, format, n);
                files.reverse(); // order of the arguments does not matter
                let out = merge(&files, &[]);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(out.stdout, single(range, format), "{range} {format} in {n} shards");
            }
        }
    }
}

#[test]
fn more_shards_than_inputs_still_merge_exactly() {
    let dir = TempDir::new("many");
    let files = shards(&dir.0, "-10..30", "lines", 60);
    let out = merge(&files, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, squares_lines(-10, 30));
}

#[test]
fn merge_converts_formats() {
    let dir = TempDir::new("convert");
    let bin = shards(&dir.0, "-50..77", "bin", 3);
    assert_eq!(merge(&bin, &["--format", "lines"]).stdout, squares_lines(-50, 77));
    assert_eq!(merge(&bin, &["--format", "sum"]).stdout, single("-50..77", "sum"));
    let lines = shards(&dir.0, "-50..77", "lines", 3);
    assert_eq!(merge(&lines, &["--format", "bin"]).stdout, squares_bin(-50, 77));
    let out = dir.0.join("merged.txt");
    let done = merge(&lines, &["--output", out.to_str().expect("utf-8")]);
    assert!(done.status.success());
    assert_eq!(std::fs::read(&out).expect("written"), squares_lines(-50, 77));
    let sums = shards(&dir.0, "-50..77", "sum", 2);
    assert_usage_error(&merge(&sums, &["--format", "lines"]), "sum shards into lines");
}

/// Asserts `merge` refused with exit 2, one line containing `why`, and wrote nothing.
fn assert_refused(out: &std::process::Output, why: &str) {
    assert_usage_error(out, why);
    assert!(out.stdout.is_empty(), "{why}: output was written");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(why), "expected '{why}' in: {stderr}");
}

#[test]
fn defective_shard_sets_are_refused_before_any_output() {
    let dir = TempDir::new("defects");
    let files = shards(&dir.0, "0..1000", "lines", 4);
    assert_refused(&merge(&files[..3], &[]), "missing: 3");
    let twice = [files[0].clone(), files[1].clone(), files[1].clone(), files[2].clone()];
    assert_refused(&merge(&twice, &[]), "shard 1 given twice");

    let cut = dir.0.join("cut.shard");
    let bytes = std::fs::read(&files[2]).expect("reads");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).expect("writes");
    let set = [files[0].clone(), files[1].clone(), cut, files[3].clone()];
    assert_refused(&merge(&set, &[]), "truncated");

    let flipped = dir.0.join("flipped.shard");
    let mut bytes = std::fs::read(&files[3]).expect("reads");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&flipped, &bytes).expect("writes");
    let set = [files[0].clone(), files[1].clone(), files[2].clone(), flipped];
    assert_refused(&merge(&set, &[]), "corrupt");

    let elsewhere = TempDir::new("other-job");
    let other = shards(&elsewhere.0, "0..1001", "lines", 4);
    let set = [files[0].clone(), files[1].clone(), files[2].clone(), other[3].clone()];
    assert_refused(&merge(&set, &[]), "belong to different jobs");

    let text = dir.0.join("not-a-shard.txt");
    std::fs::write(&text, vec![b'x'; 200]).expect("writes");
    assert_refused(&merge(&[text], &[]), "not a powerpool shard file");

    let out = dir.0.join("never.txt");
    assert_refused(&merge(&files[1..], &["--output", out.to_str().expect("utf-8")]), "missing: 0");
    assert!(!out.exists(), "a refused merge must not create its output");
}

#[test]
fn shard_needs_an_output_file() {
    let out = run(&mut powerpool(["map", "square", "--range", "0..10", "--shard", "0/2"]));
    assert_usage_error(&out, "--shard without --output");
}
