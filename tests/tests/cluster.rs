//! `scripts/slurm-array.sh` without a cluster: its shard and merge modes run by hand with the
//! environment Slurm gives a job, and its submit, status and rerun modes against a fake
//! `sbatch`/`squeue`/`scancel` that record what they were asked. The same script on a real
//! Slurm cluster is `scripts/slurm-e2e`; the Kubernetes manifests are `scripts/k8s-check`.

use powerpool_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-array.sh")
}

/// bash, found in the test's own PATH (the script's PATH is what the tests vary).
fn bash() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("bash"))
        .find(|path| path.is_file())
        .expect("bash in PATH")
}

fn slurm_array(args: &[&str]) -> Command {
    let mut cmd = Command::new(bash());
    cmd.arg(script()).args(args);
    for var in ["POWERPOOL", "POWERPOOL_TEST_TASKS", "CPUS_PER_TASK", "SLURM_CPUS_PER_TASK"] {
        cmd.env_remove(var);
    }
    for (var, _) in std::env::vars() {
        if var.starts_with("SLURM_") || var.starts_with("SBATCH_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_refused(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(1), "expected a refusal ({why}): {}", stderr(out));
    assert!(stderr(out).contains(why), "expected {why:?} in: {}", stderr(out));
}

/// Shard K of `range` by hand, as one Slurm array task: K comes from SLURM_ARRAY_TASK_ID alone
/// (no SLURM_ARRAY_TASK_COUNT: N is an argument).
fn shard_by_hand(dir: &Path, range: &str, n: &str, k: u32, format: &str) -> Output {
    let d = dir.to_str().expect("utf-8 path");
    run(slurm_array(&["shard", "square", range, n, d, format])
        .env("POWERPOOL", bin("powerpool"))
        .env("SLURM_ARRAY_TASK_ID", k.to_string())
        .env("SLURM_CPUS_PER_TASK", "2"))
}

fn merge_by_hand(dir: &Path, n: &str, result: &Path, format: &str) -> Output {
    let (d, r) = (dir.to_str().expect("utf-8"), result.to_str().expect("utf-8"));
    run(slurm_array(&["merge", n, d, r, format]).env("POWERPOOL", bin("powerpool")))
}

#[test]
fn the_slurm_script_shards_and_merges_exactly_in_every_format() {
    for (format, expected) in [
        ("lines", squares_lines(-100, 2000)),
        ("bin", squares_bin(-100, 2000)),
        ("sum", format!("{}\n", (-100i128..2000).map(|x| x * x).sum::<i128>()).into_bytes()),
    ] {
        let dir = TempDir::new("slurm");
        for k in 0..3 {
            let out = shard_by_hand(&dir.0, "-100..2000", "3", k, format);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let result = dir.0.join("result");
        let out = merge_by_hand(&dir.0, "3", &result, format);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(std::fs::read(&result).expect("merged"), expected, "{format}");
    }
}

/// Issue 15: re-running one element by hand must not need the array's size, and must never
/// replace a good shard (`--array=0` used to write a whole-range 1-of-1 shard over shard 0).
#[test]
fn a_shard_run_again_never_overwrites_a_good_shard_and_k_must_be_below_n() {
    let dir = TempDir::new("slurm-rerun");
    let out = shard_by_hand(&dir.0, "0..1000", "3", 1, "lines");
    assert!(out.status.success(), "{}", stderr(&out));
    let shard = dir.0.join("shard-1.bin");
    let before = std::fs::read(&shard).expect("shard 1");
    let out = run(slurm_array(&["shard", "square", "0..1000", "3", dir.0.to_str().unwrap()])
        .env("POWERPOOL", bin("powerpool"))
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "1"));
    assert_refused(&out, "never overwritten");
    assert_eq!(std::fs::read(&shard).expect("shard 1"), before);
    assert_refused(&shard_by_hand(&dir.0, "0..1000", "3", 3, "lines"), "must be 0 to N-1");
    assert_refused(&shard_by_hand(&dir.0, "0..1000", "0", 0, "lines"), "N must be a positive");
    // The old four-argument form (N from the array) is refused with the usage.
    let out = run(slurm_array(&["shard", "square", "0..1000", dir.0.to_str().unwrap()])
        .env("SLURM_ARRAY_TASK_ID", "0"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("usage: slurm-array.sh submit"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("#SBATCH"), "usage() prints no #SBATCH line");
}

/// A fake Slurm: `sbatch` appends its arguments to sbatch.log and prints the next job id (from
/// 101); `squeue` prints squeue.out whatever it is asked; `scancel` appends to scancel.log.
struct FakeSlurm {
    dir: TempDir,
}

impl FakeSlurm {
    fn new() -> FakeSlurm {
        let dir = TempDir::new("fake-slurm");
        let bin_dir = dir.0.join("bin");
        std::fs::create_dir(&bin_dir).expect("bin dir");
        let f = dir.0.display();
        let tools = [
            (
                "sbatch",
                format!(
                    "id=$(cat {f}/next 2>/dev/null || echo 101)\necho $((id + 1)) >{f}/next\n\
                     echo \"$*\" >>{f}/sbatch.log\necho \"$id\"\n"
                ),
            ),
            ("squeue", format!("cat {f}/squeue.out 2>/dev/null || true\n")),
            ("scancel", format!("echo \"$*\" >>{f}/scancel.log\n")),
        ];
        for (name, body) in tools {
            let path = bin_dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("fake tool");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        FakeSlurm { dir }
    }

    /// The script with the fake Slurm and powerpool's directory first in PATH.
    fn cmd(&self, args: &[&str]) -> Command {
        let powerpool_dir = bin("powerpool").parent().expect("target dir").to_path_buf();
        let path = std::env::join_paths(
            [self.dir.0.join("bin"), powerpool_dir]
                .into_iter()
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .expect("PATH");
        let mut cmd = slurm_array(args);
        cmd.env("PATH", path);
        cmd
    }

    fn sbatch_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.0.join("sbatch.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn out(&self) -> String {
        self.dir.0.join("out").to_str().expect("utf-8").to_owned()
    }
}

#[test]
fn submit_queues_n_explicit_shards_then_a_merge_cancelled_if_one_fails() {
    let slurm = FakeSlurm::new();
    let out_dir = slurm.out();
    let out = run(&mut slurm.cmd(&["submit", "square", "0..100", "3", &out_dir]));
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = slurm.sbatch_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    // The CPU count is the knob's default, 1, which fits any node; the shards get N itself.
    assert!(calls[0].contains("--array=0-2 --cpus-per-task=1 "), "{}", calls[0]);
    assert!(calls[0].ends_with(&format!("shard square 0..100 3 {out_dir} lines")), "{}", calls[0]);
    assert!(calls[0].contains("--export=ALL"), "{}", calls[0]);
    assert!(
        calls[1].contains("--dependency=afterok:101 --kill-on-invalid-dep=yes --cpus-per-task=1 "),
        "{}",
        calls[1]
    );
    assert!(calls[1].ends_with(&format!("merge 3 {out_dir} {out_dir}/result.txt lines")));
    // Both ids, and where the result will be.
    let said = stdout(&out);
    assert!(said.contains("array job 101"), "{said}");
    assert!(said.contains("merge:  job 102"), "{said}");
    assert!(said.contains(&format!("result: {out_dir}/result.txt")), "{said}");

    // The knob, and another format with its own result name.
    let slurm = FakeSlurm::new();
    let out_dir = slurm.out();
    let out = run(slurm
        .cmd(&["submit", "--format", "bin", "square", "0..100", "4", &out_dir])
        .env("CPUS_PER_TASK", "6"));
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = slurm.sbatch_calls();
    assert!(calls[0].contains("--array=0-3 --cpus-per-task=6 "), "{}", calls[0]);
    assert!(calls[1].ends_with(&format!("merge 4 {out_dir} {out_dir}/result.bin bin")));
}

#[test]
fn submit_refuses_before_queueing_anything() {
    let slurm = FakeSlurm::new();
    let out_dir = slurm.out();
    for (args, why) in [
        (vec!["submit", "square", "0..100", "0", &out_dir], "N must be a positive integer"),
        (vec!["submit", "square", "0..100", "-3", &out_dir], "N must be a positive integer"),
        (vec!["submit", "square", "0..100", "three", &out_dir], "N must be a positive integer"),
        (vec!["submit", "square", "0..x", "3", &out_dir], "the range must be START..END"),
        (vec!["submit", "--format", "csv", "square", "0..9", "3", &out_dir], "unknown format"),
        (vec!["submit", "nosuch", "0..100", "3", &out_dir], "powerpool refused the job"),
    ] {
        assert_refused(&run(&mut slurm.cmd(&args)), why);
    }
    let out =
        run(slurm.cmd(&["submit", "square", "0..100", "3", &out_dir]).env("CPUS_PER_TASK", "0"));
    assert_refused(&out, "CPUS_PER_TASK must be a positive integer");
    // No powerpool in PATH: said at once, instead of `exec: powerpool: not found` in N job logs.
    let out = run(slurm_array(&["submit", "square", "0..100", "3", &out_dir])
        .env("PATH", slurm.dir.0.join("bin")));
    assert_refused(&out, "powerpool not found in PATH");
    // No Slurm at all.
    let empty = TempDir::new("no-slurm");
    let out =
        run(slurm_array(&["submit", "square", "0..100", "3", &out_dir]).env("PATH", &empty.0));
    assert_refused(&out, "sbatch not found");
    assert!(slurm.sbatch_calls().is_empty(), "queued: {:?}", slurm.sbatch_calls());
    assert!(!Path::new(&out_dir).join("job.txt").exists());
}

#[test]
fn an_earlier_runs_files_are_refused_and_cleared_only_by_fresh() {
    let slurm = FakeSlurm::new();
    let out_dir = slurm.out();
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let stale = [Path::new(&out_dir).join("shard-0.bin"), Path::new(&out_dir).join("result.txt")];
    for file in &stale {
        std::fs::write(file, "stale").expect("stale file");
    }
    let out = run(&mut slurm.cmd(&["submit", "square", "0..100", "3", &out_dir]));
    assert_refused(&out, "holds an earlier run's files");
    assert!(slurm.sbatch_calls().is_empty());
    assert!(stale.iter().all(|f| f.exists()), "a refused submit deletes nothing");
    let out = run(&mut slurm.cmd(&["submit", "--fresh", "square", "0..100", "3", &out_dir]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stale.iter().all(|f| !f.exists()), "--fresh clears the earlier run");
    assert_eq!(slurm.sbatch_calls().len(), 2);
    // The earlier run still queued: even --fresh refuses.
    std::fs::write(slurm.dir.0.join("squeue.out"), "101_2 RUNNING\n").expect("squeue.out");
    let out = run(&mut slurm.cmd(&["submit", "--fresh", "square", "0..100", "3", &out_dir]));
    assert_refused(&out, "is still queued");
}

#[test]
fn status_names_missing_shards_and_rerun_resubmits_only_them_and_the_merge() {
    let slurm = FakeSlurm::new();
    let out_dir = slurm.out();
    let out = run(&mut slurm.cmd(&["submit", "square", "0..1000", "4", &out_dir]));
    assert!(out.status.success(), "{}", stderr(&out));
    // Shards 0 and 3 done, 1 cancelled, 2 still running; the merge was cancelled.
    for k in [0, 3] {
        let out = shard_by_hand(Path::new(&out_dir), "0..1000", "4", k, "lines");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let queue = "101_1 CANCELLED\n101_2 RUNNING\n102 CANCELLED\n";
    std::fs::write(slurm.dir.0.join("squeue.out"), queue).expect("squeue.out");
    let out = run(&mut slurm.cmd(&["status", &out_dir]));
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("shard 1: missing: job 101_1 CANCELLED"), "{said}");
    assert!(said.contains("shard 2: running (job 101_2)"), "{said}");
    assert!(said.contains("shards done: 2 of 4"), "{said}");
    assert!(said.contains("merge: not done: job 102 CANCELLED"), "{said}");
    assert!(said.contains(&format!("rerun {out_dir} 1\n")), "{said}");

    // Complete, still running or out-of-range shards are not re-run.
    assert_refused(&run(&mut slurm.cmd(&["rerun", &out_dir, "0"])), "it is never recomputed");
    assert_refused(&run(&mut slurm.cmd(&["rerun", &out_dir, "2"])), "still queued as job 101_2");
    assert_refused(&run(&mut slurm.cmd(&["rerun", &out_dir, "4"])), "K must be 0 to 3");
    assert_eq!(slurm.sbatch_calls().len(), 2);

    // The documented re-run: shard 1 alone, and a merge after it and the still running shard.
    let out = run(&mut slurm.cmd(&["rerun", &out_dir, "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = slurm.sbatch_calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[2].contains("--array=1 "), "{}", calls[2]);
    assert!(calls[2].ends_with(&format!("shard square 0..1000 4 {out_dir} lines")));
    assert!(calls[3].contains("--dependency=afterok:103:101_2 --kill-on-invalid-dep=yes"));
    for k in [0, 3] {
        assert!(Path::new(&out_dir).join(format!("shard-{k}.bin")).exists(), "good shards kept");
    }
    // status follows the re-run's jobs.
    std::fs::write(slurm.dir.0.join("squeue.out"), format!("{queue}103_1 PENDING\n104 PENDING\n"))
        .expect("squeue.out");
    let out = run(&mut slurm.cmd(&["status", &out_dir]));
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).contains("shard 1: pending (job 103_1)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("merge: pending (job 104)"), "{}", stdout(&out));
}

#[test]
fn rerun_with_every_shard_done_resubmits_the_merge_alone() {
    let slurm = FakeSlurm::new();
    let out_dir = slurm.out();
    let out =
        run(&mut slurm.cmd(&["submit", "--format", "sum", "square", "0..100", "2", &out_dir]));
    assert!(out.status.success(), "{}", stderr(&out));
    for k in [0, 1] {
        let out = shard_by_hand(Path::new(&out_dir), "0..100", "2", k, "sum");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    std::fs::write(slurm.dir.0.join("squeue.out"), "102 FAILED\n").expect("squeue.out");
    let out = run(&mut slurm.cmd(&["status", &out_dir]));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("re-run the merge with: "), "{}", stdout(&out));
    let out = run(&mut slurm.cmd(&["rerun", &out_dir]));
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = slurm.sbatch_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(!calls[2].contains("--array") && !calls[2].contains("--dependency"), "{}", calls[2]);
    assert!(calls[2].ends_with(&format!("merge 2 {out_dir} {out_dir}/result.txt sum")));
    // Once the result is there, there is nothing to re-run.
    let result = Path::new(&out_dir).join("result.txt");
    let out = merge_by_hand(Path::new(&out_dir), "2", &result, "sum");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&result).expect("sum"), "328350\n");
    assert_eq!(run(&mut slurm.cmd(&["status", &out_dir])).status.code(), Some(0));
    assert_refused(&run(&mut slurm.cmd(&["rerun", &out_dir])), "nothing to re-run");
}
