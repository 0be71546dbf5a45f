//! Every input that can be checked before work starts is refused with exit 2 and one line.

use powerpool_tests::{assert_usage_error, bin, powerpool, run};

#[test]
fn bad_command_lines_are_refused_with_one_line_and_exit_2() {
    let not_exec = powerpool_tests::TempDir::new("noexec");
    let plain = not_exec.0.join("plain-file");
    std::fs::write(&plain, b"#!/bin/sh\n").expect("writes");
    let plain = plain.to_string_lossy().into_owned();
    let dir = not_exec.0.to_string_lossy().into_owned();
    let cases: Vec<Vec<String>> = vec![
        vec!["map", "cube", "--range", "0..5"],
        vec!["map", "square", "--range", "5.."],
        vec!["map", "square", "--range", "..5"],
        vec!["map", "square", "--range", "a..b"],
        vec!["map", "square", "--range", "5"],
        vec!["map", "square", "--range", "0..9223372036854775808"],
        vec!["map", "square", "--range", "-9223372036854775809..0"],
        vec!["map", "square", "--range", "1e3..2e3"],
        vec!["map", "square", "--range", ""],
        vec!["map", "square"],
        vec!["map", "square", "--range", "0..5", "--workers", "0"],
        vec!["map", "square", "--range", "0..5", "--workers", "100000"],
        vec!["map", "square", "--range", "0..5", "--workers", "two"],
        vec!["map", "square", "--range", "0..5", "--chunk-size", "0"],
        vec!["map", "square", "--range", "0..5", "--chunk-size", "99999999999"],
        vec!["map", "square", "--range", "0..5", "--chunk-size", "300000"],
        vec!["map", "square", "--range", "0..5", "--format", "xml"],
        vec!["map", "square", "--range", "0..5", "--output", "/nonexistent-dir/out.txt"],
        vec!["map", "square", "--range", "0..5", "--output", &dir],
        vec!["map", "square", "--range", "0..5", "--worker-cmd", "/nonexistent/worker"],
        vec!["map", "square", "--range", "0..5", "--worker-cmd", &plain],
        vec!["map", "square", "--range", "0..5", "--worker-cmd", &dir],
        vec!["map", "square", "--range", "0..5", "--fetch", "ftp://example.com/"],
        vec!["map", "square", "--range", "0..5", "--fetch", "not a url"],
        vec!["map", "square", "--range", "0..5", "--bogus"],
        vec!["fetch"],
        vec!["fetch", "http://"],
        vec!["fetch", "file:///etc/passwd"],
        vec!["fetch", "http://127.0.0.1:1/", "--concurrency", "0"],
        vec!["fetch", "http://127.0.0.1:1/", "--timeout", "-1"],
        vec!["fetch", "http://127.0.0.1:1/", "--timeout", "soon"],
        vec!["frobnicate"],
        vec!["map", "square", "--range", "0..5", "--report", "/nonexistent-dir/r.json"],
        vec!["map", "square", "--range", "0..5", "--joblog", &dir],
        vec!["fetch", "http://127.0.0.1:1/", "--report", "/nonexistent-dir/r.json"],
        vec!["map", "square", "--range", "0..5", "--shard", "2/2", "-o", "x"],
        vec!["map", "square", "--range", "0..5", "--shard", "1", "-o", "x"],
        vec!["merge"],
        vec!["fetch", "--from", "/nonexistent/urls.txt"],
        vec!["fetch", "http://127.0.0.1:1/", "--max-body", "0"],
        vec!["fetch", "http://127.0.0.1:1/", "--max-body", "1.5G"],
        vec!["fetch", "http://127.0.0.1:1/", "--max-body", "2T"],
        vec!["map", "square", "--range", "0..5", "--retries", "-1"],
        vec!["map", "square", "--range", "0..5", "--retries", "101"],
        vec!["map", "square", "--range", "0..5", "--task-timeout", "0s"],
        vec!["map", "square", "--range", "0..5", "--task-timeout", "25h"],
        vec!["map", "square", "--range", "0..5", "--task-timeout", "5parsecs"],
        vec!["map", "square", "--range", "0..5", "--task-timeout", "1.2.3s"],
        vec!["map", "square", "--range", "0..5", "--max-tasks-per-worker", "0"],
        vec!["map", "square", "--range", "0..5", "--keep-going=yes"],
        // The fault-injection tasks exist only when the test environment variable is set.
        vec!["map", "fault-segv@1", "--range", "0..5"],
        vec!["map", "square", "--range", "0..5", "-q", "-v"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect();
    assert!(cases.len() >= 30);
    for args in &cases {
        let out = run(&mut powerpool(args));
        assert_usage_error(&out, &args.join(" "));
    }
}

#[test]
fn a_misspelled_option_is_one_line_that_names_the_right_one() {
    for (args, right) in [
        (vec!["map", "square", "--range", "0..5", "--worker", "4"], "'--workers'"),
        (vec!["map", "square", "--rnage", "0..5"], "'--range'"),
        (vec!["run", "--jobs", "2", "--", "echo", "{}", ":::", "a"], "--workers N"),
        (vec!["run", "--timeout", "5", "--", "echo", "{}", ":::", "a"], "--task-timeout"),
    ] {
        let out = run(&mut powerpool(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(right), "{args:?}: {stderr}");
        assert!(!stderr.contains("  "), "{args:?}: no run of spaces: {stderr}");
    }
}

#[test]
fn unknown_task_in_a_custom_worker_is_refused_by_the_worker() {
    let out =
        run(powerpool(["map", "cube", "--range", "0..5", "--worker-cmd"])
            .arg(bin("powerpool-worker")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown integer task 'cube'"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_worker_mode_refuses_to_run_by_hand() {
    let out = run(&mut powerpool(["worker"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("started by powerpool"), "{stderr}");
}

#[test]
fn help_and_version_succeed() {
    let help = run(&mut powerpool(["--help"]));
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("map"));
    let version = run(&mut powerpool(["--version"]));
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("powerpool "));
    let tasks = run(&mut powerpool(["tasks"]));
    assert!(tasks.status.success());
    let listed = String::from_utf8_lossy(&tasks.stdout);
    assert!(listed.lines().any(|l| l.starts_with("square ")), "{listed}");
    assert!(!listed.contains("slow-square"), "test tasks stay hidden: {listed}");
}

#[test]
fn defect_17_18_an_output_under_a_plain_file_says_it_is_not_a_directory() {
    let dir = powerpool_tests::TempDir::new("notdir");
    let file = dir.0.join("file");
    std::fs::write(&file, b"x").expect("writes");
    for flag in ["--output", "--report", "--joblog"] {
        let out = run(powerpool(["map", "square", "--range", "0..5", flag]).arg(file.join("x")));
        assert_usage_error(&out, flag);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not a directory"), "{flag}: {stderr}");
        assert!(!stderr.contains("does not exist"), "{flag}: {stderr}");
    }
}

#[test]
fn defect_17_18_merge_into_a_directory_is_refused_before_reading_the_shards() {
    let dir = powerpool_tests::TempDir::new("merge-dir");
    let shard = dir.0.join("s.shard");
    let mut cmd = powerpool(["map", "square", "--range", "0..10", "--shard", "0/1", "-o"]);
    assert!(run(cmd.arg(&shard)).status.success());
    let out = run(powerpool(["merge"]).arg(&shard).arg("-o").arg(&dir.0));
    assert_usage_error(&out, "merge -o DIR");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--output") && stderr.contains("is a directory"), "{stderr}");
}

#[test]
fn defect_17_18_a_doubled_underscore_is_not_a_number() {
    for range in ["1__0..15", "0..1__5", "-1__0..0"] {
        let out = run(&mut powerpool(["map", "square", "--range", range]));
        assert_usage_error(&out, range);
    }
    let out = run(&mut powerpool(["map", "square", "--range", "1_0..1_2"]));
    assert_eq!(out.stdout, b"100\n121\n", "single underscores still separate digits");
}

#[test]
fn defect_17_18_map_timeout_without_fetch_is_refused_and_points_to_task_timeout() {
    let out = run(&mut powerpool(["map", "square", "--range", "0..5", "--timeout", "5s"]));
    assert_usage_error(&out, "--timeout without --fetch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fetch") && stderr.contains("--task-timeout"), "{stderr}");
}

#[test]
fn defect_17_18_a_misspelt_task_gets_a_suggestion() {
    for (typed, meant) in [("squar", "square"), ("colatz", "collatz"), ("sqaure", "square")] {
        let out = run(&mut powerpool(["map", typed, "--range", "0..5"]));
        assert_usage_error(&out, typed);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("did you mean '{meant}'?")), "{stderr}");
    }
    let out = run(&mut powerpool(["fetch", "--process", "sha265", "http://127.0.0.1:1/"]));
    assert_usage_error(&out, "sha265");
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean 'sha256'?"));
    let out = run(&mut powerpool(["map", "frobnicate", "--range", "0..5"]));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("did you mean"), "nothing close");
}
