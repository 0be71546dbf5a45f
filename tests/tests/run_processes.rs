//! `run`'s jobs leave nothing behind: a `sh -c 'sleep 100 & wait'` job (whose `sleep` is a
//! grandchild that inherits no parent-death signal) is gone, with its whole process group,
//! after its `--task-timeout`, after a coordinator SIGTERM and after a coordinator SIGKILL.
//! Liveness is read from /proc (a zombie counts as gone: PID 1 in a container may not reap).
//! And 100 MB of output from one job, in ordered mode behind a slow job, stays within the
//! buffer plus the spill files.

use powerpool_tests::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The job: writes its shell's pid and its background sleep's pid to `dir/<input>`, then waits.
const JOB: &str = "sleep 100 & echo $$ $! > \"$0\"; wait";

/// The pids the jobs wrote, once `n` files are there.
fn job_pids(dir: &Path, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    let seen = wait_for(Duration::from_secs(20), || {
        pids = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter(|t| t.ends_with('\n'))
                    .flat_map(|t| {
                        t.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>()
                    })
                    .collect()
            })
            .unwrap_or_default();
        pids.len() == 2 * n
    });
    assert!(seen, "the jobs did not start: {pids:?}");
    pids
}

fn assert_all_gone(pids: &[u32], what: &str) {
    let gone = wait_for(Duration::from_secs(10), || pids.iter().all(|&p| !alive(p)));
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &left {
        kill(p, libc::SIGKILL);
    }
    assert!(gone, "{what}: processes left behind: {left:?}");
}

fn start(dir: &Path, extra: &[&str]) -> std::process::Child {
    let a = dir.join("a");
    let b = dir.join("b");
    powerpool(["run", "--workers", "2"])
        .args(extra)
        .args(["--", "sh", "-c", JOB, "{}", ":::"])
        .arg(&a)
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns")
}

#[test]
fn a_timed_out_job_leaves_no_process() {
    let dir = TempDir::new("timeout-tree");
    let child = start(&dir.0, &["--task-timeout", "1s"]);
    let pids = job_pids(&dir.0, 2);
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    assert_all_gone(&pids, "after --task-timeout");
}

#[test]
fn a_coordinator_sigterm_leaves_no_process() {
    let dir = TempDir::new("term-tree");
    let child = start(&dir.0, &[]);
    let pids = job_pids(&dir.0, 2);
    kill(child.id(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    kill(child.id(), libc::SIGTERM); // the second signal stops at once
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert_all_gone(&pids, "after a coordinator SIGTERM");
}

#[test]
fn a_coordinator_sigkill_leaves_no_process() {
    let dir = TempDir::new("kill-tree");
    let mut child = start(&dir.0, &[]);
    let pids = job_pids(&dir.0, 2);
    let workers = children_of(child.id());
    assert!(!workers.is_empty());
    kill(child.id(), libc::SIGKILL);
    let _ = child.wait();
    assert_all_gone(&pids, "after a coordinator SIGKILL");
    assert_all_gone(&workers, "workers after a coordinator SIGKILL");
}

#[test]
fn a_job_that_leaves_a_process_in_its_group_does_not_outlive_its_turn() {
    let dir = TempDir::new("leftover");
    let pidfile = dir.0.join("bg");
    let script = format!("sleep 100 >/dev/null 2>&1 & echo $! > {}; echo done", pidfile.display());
    let out = run_with_timeout(
        &mut powerpool(["run", "--", "sh", "-c", &script, ":::", "x"]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"done\n");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_all_gone(&[pid], "a background process of a finished job");
}

/// The summed RSS (KiB) of `pid` and its children, from /proc.
fn tree_rss_kib(pid: u32) -> u64 {
    let rss = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    rss(pid) + children_of(pid).into_iter().map(rss).sum::<u64>()
}

#[test]
fn a_hundred_megabytes_from_one_job_in_ordered_mode_stay_within_buffer_plus_spill() {
    // Job 1 is slow, job 2 writes 100 MB: job 2's output waits for its turn.
    let script = "case $1 in 1) sleep 2; echo first;; 2) head -c 100000000 /dev/zero;; esac";
    let mut child = powerpool(["run", "--workers", "2", "--buffer", "1M", "--"])
        .args(["sh", "-c", script, "sh", "{}", ":::", "1", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut stdout = child.stdout.take().expect("piped");
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let (mut total, mut head) = (0u64, Vec::new());
        loop {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => return (total, head),
                Ok(n) => {
                    if head.len() < 6 {
                        head.extend_from_slice(&buf[..n.min(6)]);
                    }
                    total += n as u64;
                }
            }
        }
    });
    let pid = child.id();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        peak = peak.max(tree_rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("waits");
    let (total, head) = counter.join().expect("counter");
    assert!(status.success());
    assert_eq!(total, 100_000_000 + 6, "every byte, once");
    assert_eq!(&head[..6], b"first\n", "in input order");
    assert!(peak < 64 * 1024, "peak RSS of the tree {peak} KiB: not within buffer plus spill");
}

#[test]
fn a_job_whose_daemon_keeps_its_output_open_keeps_what_it_printed() {
    // The daemon leaves the job's group (setsid) holding the job's stdout and stderr open:
    // the job ends, its pipes do not. What it printed stays, its status stays, and the note
    // goes to stderr, never into the output.
    let dir = TempDir::new("daemon");
    let pidfile = dir.0.join("daemon");
    // The job ends only once its daemon has left the group (its pid file is written): a job
    // that ended first would have its group, the daemon-to-be with it, ended at once.
    let script = format!(
        "setsid sh -c 'echo $$ > {0}.$1.tmp; mv {0}.$1.tmp {0}.$1; exec sleep 100' sh $1 & \
         while [ ! -s {0}.$1 ]; do sleep 0.01; done; echo printed $1",
        pidfile.display()
    );
    let out = run_with_timeout(
        &mut powerpool(["run", "--", "sh", "-c", &script, "sh", "{}", ":::", "1", "2"]),
        Duration::from_secs(30),
    );
    let daemons: Vec<u32> = ["1", "2"]
        .iter()
        .filter_map(|k| std::fs::read_to_string(format!("{}.{k}", pidfile.display())).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    for &p in &daemons {
        kill(p, libc::SIGKILL);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(daemons.len(), 2, "both daemons started: {stderr}");
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "printed 1\nprinted 2\n");
    assert!(stderr.contains("kept its output open"), "{stderr}");
}

/// `(slot, worker pid)` of each output line `SLOT PID INPUT`, checked to be in input order.
fn slots_and_pids(stdout: &[u8], inputs: u64) -> Vec<(u64, u32)> {
    let text = String::from_utf8_lossy(stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let order: Vec<String> = rows.iter().map(|r| r[2].to_owned()).collect();
    let expected: Vec<String> = (1..=inputs).map(|i| i.to_string()).collect();
    assert_eq!(order, expected, "every input once, in order");
    rows.iter().map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap())).collect()
}

#[test]
fn the_worker_slot_is_in_range_and_a_replaced_worker_keeps_its_slot() {
    // Job 20 kills its own worker (once): the pool replaces it and runs job 20 again.
    let dir = TempDir::new("slots");
    let marker = dir.0.join("killed");
    let script = format!(
        "if [ $2 = 20 ] && [ ! -e {0} ]; then echo $PPID > {0}; kill -9 $PPID; sleep 1; fi; \
         echo $1 $PPID $2",
        marker.display()
    );
    let inputs: Vec<String> = (1..=60).map(|i| i.to_string()).collect();
    let out = run_with_timeout(
        powerpool(["run", "--workers", "3", "--", "sh", "-c", &script, "sh", "{%}", "{}", ":::"])
            .args(&inputs),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = slots_and_pids(&out.stdout, 60);
    let mut slot_of = std::collections::HashMap::new();
    for &(slot, pid) in &rows {
        assert!((1..=3).contains(&slot), "slot {slot} out of 1..=3");
        assert_eq!(*slot_of.entry(pid).or_insert(slot), slot, "worker {pid} changed slot");
    }
    let killed: u32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    assert_ne!(rows[19].1, killed, "job 20 ran again, on another worker");
    let mut per_slot = std::collections::HashMap::<u64, Vec<u32>>::new();
    for (&pid, &slot) in &slot_of {
        per_slot.entry(slot).or_default().push(pid);
    }
    assert_eq!(per_slot.len(), 3, "three slots: {per_slot:?}");
    let replaced: Vec<&Vec<u32>> = per_slot.values().filter(|p| p.len() > 1).collect();
    assert!(replaced.len() <= 1, "only the killed worker's slot had two workers: {per_slot:?}");
    if let Some(pids) = replaced.first() {
        assert!(pids.contains(&killed), "the replacement took the killed worker's slot");
    }
}

#[test]
fn max_tasks_per_worker_replaces_run_workers_and_the_output_is_exact() {
    let inputs: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let out = run_with_timeout(
        powerpool(["run", "--workers", "2", "--max-tasks-per-worker", "4", "--"])
            .args(["sh", "-c", "echo $1 $PPID $2", "sh", "{%}", "{}", ":::"])
            .args(&inputs),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = slots_and_pids(&out.stdout, 30);
    let mut jobs_of = std::collections::HashMap::<u32, u32>::new();
    for &(slot, pid) in &rows {
        assert!((1..=2).contains(&slot));
        *jobs_of.entry(pid).or_default() += 1;
    }
    assert!(jobs_of.values().all(|&n| n <= 4), "a worker ran more than 4 jobs: {jobs_of:?}");
    assert!(jobs_of.len() >= 8, "30 jobs, 4 per worker: {jobs_of:?}");
}
