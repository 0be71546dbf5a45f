//! The fault model, one test per fault kind and per scenario: a worker that panics, aborts,
//! segfaults, exits, is SIGKILLed, runs out of memory or hangs on one input; transient faults;
//! a poison input among many; `--keep-going`; workers that cannot start; worker recycling;
//! empty ranges. Every run has a watchdog, and every assertion is on exact output and status.

use powerpool_tests::*;
use std::process::Output;
use std::time::Duration;

/// Runs `map TASK --range RANGE` with the hidden fault tasks enabled.
fn map_fault(task: &str, range: &str, extra: &[&str]) -> Output {
    let mut cmd = powerpool(["map", task, "--range", range]);
    cmd.args(extra).env("POWERPOOL_TEST_TASKS", "1");
    run_with_timeout(&mut cmd, TIMEOUT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The final error line.
fn error_line(out: &Output) -> String {
    let text = stderr(out);
    let line = text.lines().find(|l| l.starts_with("powerpool: error: "));
    line.unwrap_or_else(|| panic!("no error line in:\n{text}")).to_owned()
}

/// Asserts the run stopped before input `item` with exit 4, having written every result before
/// it, and that the error names the input, `cause` and a worker pid.
fn assert_stopped_at(out: &Output, start: i64, item: i64, cause: &str) {
    let line = error_line(out);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(out));
    assert_eq!(out.stdout, squares_lines(start, item), "not the exact prefix before {item}");
    assert!(line.contains(&format!("input {item} failed")), "{line}");
    assert!(line.contains(cause), "cause '{cause}' not named: {line}");
    assert!(line.contains("worker pid "), "no pid named: {line}");
}

#[test]
fn a_panic_stops_the_run_before_the_input_and_names_it() {
    let out = map_fault("fault-panic@500", "0..1000", &["--workers", "2", "--chunk-size", "100"]);
    assert_stopped_at(&out, 0, 500, "injected panic at item 500");
}

#[test]
fn a_panic_in_mid_chunk_is_cornered_at_once_from_the_item_the_worker_names() {
    // The worker names the item it was computing when the task panicked: the failed chunk is
    // cut there (500..550 runs, 550..551 fails again), not narrowed an item at a time from its
    // start, which is what a worker that named the chunk's first item would cause.
    let dir = TempDir::new("midchunk");
    let log = dir.0.join("jobs.jsonl");
    let log_arg = log.to_str().expect("utf-8");
    let args = ["--workers", "2", "--chunk-size", "100", "--joblog", log_arg];
    let out = map_fault("fault-panic@550", "0..1000", &args);
    assert_stopped_at(&out, 0, 550, "injected panic at item 550");
    let text = std::fs::read_to_string(&log).expect("joblog written");
    let failed: Vec<(i64, i64)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|e| e["outcome"].as_str().is_some_and(|o| o.starts_with("failed")))
        .map(|e| (e["first"].as_i64().expect("first"), e["end"].as_i64().expect("end")))
        .collect();
    assert_eq!(failed.first(), Some(&(500, 600)), "{text}");
    assert!(failed[1..].iter().all(|&f| f == (550, 551)), "{failed:?}");
    assert!(failed.len() <= 4, "cornered in a few tries: {failed:?}");
}

#[test]
fn an_abort_is_named_sigabrt() {
    let out = map_fault("fault-abort@77", "0..300", &["--workers", "2", "--chunk-size", "50"]);
    assert_stopped_at(&out, 0, 77, "killed by SIGABRT");
}

#[test]
fn a_segfault_is_named_sigsegv() {
    let out = map_fault("fault-segv@-3", "-10..300", &["--workers", "3", "--chunk-size", "64"]);
    assert_stopped_at(&out, -10, -3, "killed by SIGSEGV");
}

#[test]
fn an_exit_mid_chunk_is_named_with_its_status() {
    let out = map_fault("fault-exit@250", "0..300", &["--workers", "2", "--chunk-size", "100"]);
    assert_stopped_at(&out, 0, 250, "exited with status 3");
}

#[test]
fn a_sigkill_like_the_oom_killer_is_named() {
    let out = map_fault("fault-kill@10", "0..300", &["--workers", "2"]);
    assert_stopped_at(&out, 0, 10, "killed by SIGKILL");
}

#[test]
fn running_out_of_memory_under_an_rlimit_is_caught() {
    let out = map_fault("fault-oom@123", "0..200", &["--workers", "2", "--retries", "0"]);
    assert_stopped_at(&out, 0, 123, "killed by SIGABRT");
    assert!(stderr(&out).contains("memory allocation of"), "{}", stderr(&out));
}

#[test]
fn a_hang_is_ended_by_the_task_timeout() {
    let args = ["--workers", "2", "--chunk-size", "8", "--task-timeout", "200ms", "--retries", "1"];
    let out = map_fault("fault-hang@20", "0..40", &args);
    assert_stopped_at(&out, 0, 20, "--task-timeout 200ms");
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
}

#[test]
fn a_slow_chunk_within_the_timeout_is_left_alone() {
    let args = ["--workers", "2", "--chunk-size", "5", "--task-timeout", "10s"];
    let out = map_fault("slow-square", "0..50", &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, squares_lines(0, 50));
    assert!(!stderr(&out).contains("timed out"));
}

/// Every fault kind that kills its worker, once each: the run heals and its output is exact.
#[test]
fn transient_faults_of_every_kind_are_retried_to_an_exact_output() {
    for kind in ["panic", "abort", "segv", "exit", "kill", "hang"] {
        let flaky = TempDir::new("flaky");
        let mut cmd = powerpool(["map", &format!("flaky-{kind}@3,555,999"), "--range", "0..1000"]);
        cmd.args(["--workers", "2", "--chunk-size", "100", "--task-timeout", "300ms"])
            .env("POWERPOOL_TEST_TASKS", "1")
            .env("POWERPOOL_FLAKY_DIR", &flaky.0);
        let out = run_with_timeout(&mut cmd, TIMEOUT);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        assert_eq!(out.stdout, squares_lines(0, 1000), "{kind}: output differs");
        assert_eq!(flaky.entries().len(), 3, "{kind}: each input should have failed once");
        if kind != "panic" {
            assert!(stderr(&out).contains("worker(s) restarted"), "{kind}: {}", stderr(&out));
        }
        assert!(stderr(&out).contains("output is complete"), "{kind}: {}", stderr(&out));
    }
}

#[test]
fn one_poison_input_among_many_is_found_in_a_few_dozen_tries() {
    let out = map_fault("fault-segv@123457", "0..300000", &["--workers", "2"]);
    assert_stopped_at(&out, 0, 123_457, "killed by SIGSEGV");
    let deaths = stderr(&out).matches("killed by SIGSEGV (").count()
        + stderr(&out).lines().filter(|l| l.ends_with("killed by SIGSEGV")).count();
    // 3 whole tries of a 65,536-input chunk, 16 halvings, the input's own 2 retries, with
    // slack for the second worker's share; never anything like the chunk's size.
    assert!((20..=40).contains(&deaths), "{deaths} deaths to find one input");
}

#[test]
fn keep_going_writes_everything_else_and_lists_the_failed_inputs() {
    let out = map_fault(
        "fault-segv@5,17,90",
        "0..100",
        &["--workers", "2", "--keep-going", "--retries", "0"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let expected: Vec<u8> = (0..100i64)
        .filter(|x| ![5, 17, 90].contains(x))
        .flat_map(|x| format!("{}\n", x * x).into_bytes())
        .collect();
    assert_eq!(out.stdout, expected);
    let text = stderr(&out);
    for item in [5, 17, 90] {
        assert!(text.contains(&format!("failed input {item}: worker pid ")), "{text}");
    }
    assert!(error_line(&out).contains("3 input(s) failed"), "{text}");
}

#[test]
fn defect_17_18_on_fail_mark_keeps_line_n_for_input_n() {
    let out = map_fault(
        "fault-segv@5,17,90",
        "0..100",
        &["--workers", "2", "--keep-going", "--retries", "0", "--on-fail", "mark"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let expected: Vec<u8> = (0..100i64)
        .flat_map(|x| match x {
            5 | 17 | 90 => b"ERR:failed\n".to_vec(),
            x => format!("{}\n", x * x).into_bytes(),
        })
        .collect();
    assert_eq!(out.stdout, expected);
    // `skip` is the default; `mark` needs --keep-going, and lines output of the whole run.
    let skip = map_fault("fault-segv@5", "0..10", &["--keep-going", "--on-fail", "skip"]);
    assert_eq!(skip.stdout.iter().filter(|&&b| b == b'\n').count(), 9);
    let dir = TempDir::new("on-fail");
    let shard = dir.0.join("s.bin");
    let shard = shard.to_str().expect("utf-8");
    for bad in [
        &["--on-fail", "mark"][..],
        &["--keep-going", "--on-fail", "mark", "--format", "bin"],
        &["--keep-going", "--on-fail", "mark", "--format", "sum"],
        &["--keep-going", "--on-fail", "mark", "--shard", "0/2", "-o", shard],
        &["--keep-going", "--on-fail", "maybe"],
    ] {
        let out = run(powerpool(["map", "square", "--range", "0..10"]).args(bad));
        assert_usage_error(&out, &format!("{bad:?}"));
    }
}

#[test]
fn keep_going_with_a_failed_fetch_beside_it_still_lists_the_failed_inputs_and_exits_5() {
    let out = map_fault(
        "fault-panic@3,5",
        "0..8",
        &["--keep-going", "--retries", "0", "--fetch", "http://127.0.0.1:1/"],
    );
    assert_eq!(out.status.code(), Some(5), "missing results weigh more: {}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("failed input 3") && text.contains("failed input 5"), "{text}");
    assert!(text.contains("fetch: ERR:"), "the failed fetch is told too: {text}");
}

#[test]
fn keep_going_sums_and_files_what_it_could_compute() {
    let dir = TempDir::new("keep");
    let path = dir.0.join("sum.txt");
    let mut args = vec!["--workers", "2", "--keep-going", "--format", "sum", "--output"];
    let path_text = path.to_str().expect("utf-8 temp path").to_owned();
    args.push(&path_text);
    let out = map_fault("fault-panic@10,20", "0..100", &args);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let expected: i64 = (0..100i64).filter(|x| *x != 10 && *x != 20).map(|x| x * x).sum();
    assert_eq!(std::fs::read_to_string(&path).expect("file written"), format!("{expected}\n"));
}

#[test]
fn the_stopped_run_writes_no_output_file() {
    let dir = TempDir::new("stopfile");
    let path = dir.0.join("out.txt");
    let out = map_fault(
        "fault-panic@10",
        "0..100",
        &["--workers", "2", "--output", path.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn the_earliest_failed_input_is_the_one_reported() {
    let out = map_fault("fault-exit@900,40", "0..1000", &["--workers", "4", "--chunk-size", "10"]);
    assert_stopped_at(&out, 0, 40, "exited with status 3");
}

#[test]
fn workers_that_never_start_give_a_bounded_error() {
    let mut cmd = powerpool(["map", "square", "--range", "0..100", "--workers", "2"]);
    cmd.arg("--worker-cmd").arg(bin("rogue-worker")).env("ROGUE_MODE", "exit-after-welcome");
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(line.contains("workers keep failing to start (5 attempts"), "{line}");
    assert!(out.stdout.is_empty());
}

/// A worker that dies right after its handshake, every time, ends the run with a bounded error:
/// either "workers keep failing to start" (those that died idle), or, when each died holding
/// its first unit, as a poison first input (the run stops before input 0, naming how the
/// workers died). Under `--keep-going`, where it would otherwise give up input after input,
/// the run ends once far more workers have died than cornering any one input takes.
#[test]
fn workers_that_die_right_after_the_handshake_give_a_bounded_error() {
    let rogue = |extra: &[&str]| {
        let mut cmd = powerpool(["map", "square", "--range", "0..100", "--workers", "2"]);
        cmd.args(extra).arg("--worker-cmd").arg(bin("rogue-worker"));
        run_with_timeout(cmd.env("ROGUE_MODE", "ready-then-die"), TIMEOUT)
    };
    // Every worker says Ready, is given its units and dies: each death blames the unit it
    // was running, lowest offsets first, so input 0 is cornered and given up first.
    let out = rogue(&[]);
    let line = error_line(&out);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        line.contains("input 0 failed 3 time(s), so the run stopped before it; last: worker pid"),
        "{line}"
    );
    assert!(out.stdout.is_empty());
    // Under --keep-going no input is ever given up for good: the death budget ends it.
    let out = rogue(&["--keep-going"]);
    let line = error_line(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        line.contains("32 workers in a row died before any unit of work was finished"),
        "{line}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn max_tasks_per_worker_changes_pids_and_keeps_results_exact() {
    let out = map_fault(
        "square",
        "0..10000",
        &["--workers", "2", "--chunk-size", "500", "--max-tasks-per-worker", "3", "-v"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, squares_lines(0, 10000));
    let text = stderr(&out);
    let pids: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains("worker ready"))
        .filter_map(|l| l.split("pid=").nth(1))
        .collect();
    // 20 chunks at 3 per worker: at least 7 distinct workers.
    assert!(pids.len() >= 7, "only {} worker pids: {pids:?}", pids.len());
}

#[test]
fn max_worker_memory_replaces_workers_that_grow_past_it() {
    // Every worker grows past 1 MiB at once (a process is larger than that), so each is
    // replaced after its first chunk and the output stays exact.
    let out = map_fault(
        "square",
        "0..5000",
        &["--workers", "2", "--chunk-size", "500", "--max-worker-memory", "1M", "-v"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, squares_lines(0, 5000));
    let text = stderr(&out);
    assert!(text.contains("worker passed its memory limit"), "{text}");
    let ready = text.lines().filter(|l| l.contains("worker ready")).count();
    assert!(ready >= 5, "workers were not replaced: {ready} started");
    // The flag needs a size.
    let bad =
        run(&mut powerpool(["map", "square", "--range", "0..5", "--max-worker-memory", "lots"]));
    assert_usage_error(&bad, "--max-worker-memory lots");
}

#[test]
fn an_empty_range_returns_nothing_at_once_whatever_the_options() {
    let options: [&[&str]; 5] = [
        &["--keep-going"],
        &["--max-tasks-per-worker", "1"],
        &["--task-timeout", "1ms"],
        &["--retries", "0", "--workers", "8"],
        &["--format", "sum"],
    ];
    for extra in options {
        let mut cmd = powerpool(["map", "square", "--range", "5..5"]);
        cmd.args(extra);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        let expected: &[u8] = if extra.contains(&"sum") { b"0\n" } else { b"" };
        assert_eq!(out.stdout, expected, "{extra:?}");
    }
}

/// Starts a run whose workers hang at input 0 and never read their socket again.
fn start_hung(rt: &TempDir) -> std::process::Child {
    powerpool([
        "map",
        "fault-hang@0,1",
        "--range",
        "0..1000",
        "--workers",
        "2",
        "--chunk-size",
        "1",
    ])
    .env("POWERPOOL_TEST_TASKS", "1")
    .env("XDG_RUNTIME_DIR", &rt.0)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawns")
}

fn hung_workers(coordinator: u32) -> Vec<u32> {
    let kids = wait_for_workers(coordinator, 2);
    // Give them time to take their first unit and hang in it.
    std::thread::sleep(Duration::from_millis(300));
    kids
}

#[test]
fn hung_workers_die_within_a_second_of_a_coordinator_sigkill() {
    let rt = TempDir::new("hung-kill");
    let mut child = start_hung(&rt);
    let workers = hung_workers(child.id());
    kill(child.id(), libc::SIGKILL);
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    let gone = wait_for(Duration::from_secs(1), || workers.iter().all(|&p| !alive(p)));
    assert!(gone, "hung workers outlived their coordinator: {workers:?}");
}

#[test]
fn sigint_with_hung_workers_ends_after_the_grace_period_not_never() {
    let rt = TempDir::new("hung-int");
    let child = start_hung(&rt);
    let workers = hung_workers(child.id());
    kill(child.id(), libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(workers.iter().all(|&p| !alive(p)), "workers survived: {workers:?}");
    assert!(rt.entries().is_empty(), "socket directory left behind: {:?}", rt.entries());
}

#[test]
fn defect_17_10_a_stopped_worker_is_reported_not_silent_and_the_run_resumes_exact() {
    // 1 ms an item, chunks of 10: units of about 10 ms, so a stopped worker stands out.
    let child = powerpool([
        "map",
        "slow-square",
        "--range",
        "0..1500",
        "--workers",
        "2",
        "--chunk-size",
        "10",
    ])
    .env("POWERPOOL_TEST_TASKS", "1")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawns");
    let workers = wait_for_workers(child.id(), 2);
    std::thread::sleep(Duration::from_millis(200));
    kill(workers[0], libc::SIGSTOP);
    // The report comes 2 s after the unit began (10x a 10 ms median is under the 2 s floor).
    std::thread::sleep(Duration::from_millis(3000));
    kill(workers[0], libc::SIGCONT);
    let out = wait_output(child, TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout, squares_lines(0, 1500), "the output stays exact");
    let report = format!("worker pid {} has been running inputs", workers[0]);
    assert!(stderr.contains(&report), "no stall report: {stderr}");
    assert!(stderr.contains("--task-timeout DURATION ends such a worker"), "{stderr}");
    assert_eq!(stderr.matches("has been running").count(), 1, "reported once: {stderr}");
}
