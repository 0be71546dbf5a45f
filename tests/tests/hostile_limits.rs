//! Issue 17, resource limits a hostile (or merely ordinary) environment sets: a low process
//! limit (`ulimit -u`) and the usual soft open-file limit (`ulimit -n`) under many workers or
//! many connections. Each test is named after its defect.
//!
//! The process limit does not bind root, so its test runs powerpool as a fresh uid with no
//! other process (root may switch to any uid); elsewhere it says it was skipped.

use powerpool_tests::http::TestServer;
use powerpool_tests::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::Duration;

/// Sets `resource` to `soft`/`hard` in the child before it runs.
fn with_limit(cmd: &mut Command, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe and reads only the struct on the stack.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            if libc::setrlimit(resource, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The soft and hard "Max open files" of `pid`, from /proc/PID/limits.
fn open_files_limit(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line.split_whitespace().skip(3).map(|n| n.parse::<u64>().ok());
    Some((numbers.next()??, numbers.next()??))
}

fn one_line_naming(out: &Output, words: &[&str], what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    for word in words {
        assert!(stderr.contains(word), "{what}: no {word:?} in {stderr}");
    }
}

#[test]
fn defect_17_8_a_low_process_limit_is_one_line_naming_it_never_a_hang_or_a_panic() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED defect_17_8: needs root to run powerpool as a fresh uid");
        return;
    }
    // A uid no process runs as, so that the limit counts only this run's threads.
    let uid = 60_000 + std::process::id() % 5_000;
    let mut refused = 0;
    for limit in 1..=10u64 {
        for args in [
            vec!["map", "square", "--range", "0..50000", "--workers", "2"],
            vec!["fetch", "http://127.0.0.1:1/"],
        ] {
            let mut cmd = powerpool(&args);
            cmd.uid(uid).gid(uid).env("TMPDIR", "/tmp").env_remove("XDG_RUNTIME_DIR");
            with_limit(&mut cmd, libc::RLIMIT_NPROC, limit, limit);
            let what = format!("ulimit -u {limit}: {}", args.join(" "));
            let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("internal error"), "{what}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
            match out.status.code() {
                Some(1) => {
                    refused += 1;
                    one_line_naming(&out, &["ulimit -u", &limit.to_string()], &what);
                }
                Some(0) => assert_eq!(out.stdout, squares_lines(0, 50000), "{what}"),
                Some(3) => assert!(args[0] == "fetch", "{what}: {stderr}"), // port 1 refuses
                other => panic!("{what}: exit {other:?}: {stderr}"),
            }
        }
    }
    assert!(refused >= 4, "the lowest limits are refused up front");
}

#[test]
fn a_run_its_process_limit_allows_is_never_refused_however_early_its_workers_start() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to run powerpool as a fresh uid");
        return;
    }
    // The coordinator, its zygote (counted apart, though it becomes the last worker) and 8
    // workers on one thread need 11 of the limit. `main` forks the first wave before the run
    // checks the limit; those workers must not count twice (once as running, once as still
    // to start), or a run that fits is refused, at random, as they appear.
    let uid = 55_000 + std::process::id() % 5_000;
    for limit in 11..=20u64 {
        for _ in 0..3 {
            let mut cmd = powerpool(["map", "square", "--range", "0..100", "--workers", "8"]);
            cmd.uid(uid).gid(uid).env("TMPDIR", "/tmp").env_remove("XDG_RUNTIME_DIR");
            with_limit(&mut cmd, libc::RLIMIT_NPROC, limit, limit);
            let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
            let what = format!("ulimit -u {limit}");
            assert_eq!(
                out.status.code(),
                Some(0),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, squares_lines(0, 100), "{what}");
        }
    }
}

#[test]
fn defect_17_14_many_workers_under_a_low_file_limit_run_with_one_warning() {
    let mut cmd = powerpool(["map", "square", "--range", "0..100000", "--workers", "512"]);
    with_limit(&mut cmd, libc::RLIMIT_NOFILE, 200, 200);
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout, squares_lines(0, 100000));
    one_line_naming(&out, &["open-file limit is 200", "ulimit -n", "512 workers"], "workers");
    assert!(!stderr.contains("Too many open files"), "{stderr}");
}

#[test]
fn defect_17_14_many_connections_under_a_low_file_limit_are_capped_with_one_warning() {
    let server = TestServer::start();
    let dir = TempDir::new("nofile-fetch");
    let list = dir.0.join("urls.txt");
    let url = format!("{}\n", server.url("/ok/10"));
    std::fs::write(&list, url.repeat(3000)).expect("writes");
    let mut cmd = powerpool(["fetch", "--concurrency", "3000", "--from"]);
    cmd.arg(&list);
    with_limit(&mut cmd, libc::RLIMIT_NOFILE, 256, 256);
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("200 10 ")).count(), 3000, "{stderr}");
    one_line_naming(&out, &["open-file limit is 256", "3000 requests"], "fetch");
}

#[test]
fn defect_17_14_the_soft_file_limit_is_raised_for_the_coordinator_and_restored_for_workers() {
    let mut cmd = powerpool(["map", "slow-square", "--range", "0..100000", "--workers", "2"]);
    cmd.args(["--chunk-size", "10"]);
    cmd.env("POWERPOOL_TEST_TASKS", "1");
    with_limit(&mut cmd, libc::RLIMIT_NOFILE, 128, 4096);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let workers = wait_for_workers(child.id(), 2);
    let coordinator = open_files_limit(child.id());
    let mut seen = Vec::new();
    let restored = wait_for(Duration::from_secs(10), || {
        seen = workers.iter().map(|&w| open_files_limit(w)).collect();
        seen.iter().all(|l| *l == Some((128, 4096)))
    });
    kill(child.id(), libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).is_some(), "stops on SIGTERM");
    assert_eq!(coordinator, Some((4096, 4096)), "the coordinator raised its soft limit");
    assert!(restored, "the workers run with the user's soft limit: {seen:?}");
}

#[test]
fn jobs_run_with_the_users_soft_file_limit_though_the_zygote_raised_its_own() {
    // The zygote raises its soft limit (descriptors in flight to the coordinator count against
    // it); the workers it forks, and the jobs they start, must see the user's.
    let mut cmd = powerpool(["run", "--", "sh", "-c", "ulimit -Sn", ":::", "a", "b", "c"]);
    with_limit(&mut cmd, libc::RLIMIT_NOFILE, 128, 4096);
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "128\n128\n128\n", "{stderr}");
}

#[test]
fn many_forked_workers_under_a_low_soft_file_limit_are_all_born_connected() {
    // Each connection the zygote sends counts against its soft open-file limit until the
    // coordinator receives it, and the coordinator reads them only when its run starts (here:
    // once a reader opens the output FIFO). Forty of them under a soft limit of 20: none may
    // be lost (a worker never reported is never reaped), and none needs a socket.
    // The kernel's limit on descriptors in flight does not bind root: as root, the run is made
    // as user nobody (if nobody can run the binary at all).
    let dir = TempDir::new("nofile-inflight");
    let runtime = TempDir::new("nofile-inflight-rt");
    let fifo = dir.0.join("out");
    let path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: a valid C string; mkfifo touches no memory of ours.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let args = ["map", "square", "--range", "0..100000", "--workers", "40", "-o"];
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let nobody = ["--reuid", "65534", "--regid", "65534", "--clear-groups"];
        let reachable =
            Command::new("setpriv").args(nobody).arg(bin("powerpool")).arg("--version").output();
        let parent = dir.0.parent().expect("a parent").to_path_buf();
        let reaches =
            Command::new("setpriv").args(nobody).args(["test", "-x"]).arg(&parent).status();
        if !reachable.is_ok_and(|out| out.status.success()) || !reaches.is_ok_and(|s| s.success()) {
            let (program, parent) = (bin("powerpool"), parent.display());
            eprintln!("SKIPPED: user nobody cannot run {} or reach {parent}", program.display());
            return;
        }
        for path in [&dir.0, &runtime.0, &fifo] {
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown");
        }
        let mut cmd = Command::new("setpriv");
        cmd.args(nobody).arg(bin("powerpool")).args(args);
        cmd
    } else {
        powerpool(args)
    };
    cmd.arg(&fifo).env("XDG_RUNTIME_DIR", &runtime.0);
    with_limit(&mut cmd, libc::RLIMIT_NOFILE, 20, 4096);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    let coordinator = child.id();
    // The whole first wave is forked and waiting before anyone reads.
    assert!(wait_for(Duration::from_secs(20), || children_of(coordinator).len() >= 40));
    std::thread::sleep(Duration::from_millis(300));
    let reader = std::thread::spawn(move || std::fs::read(&fifo).expect("reads the FIFO"));
    let out = wait_output(child, TIMEOUT);
    let written = reader.join().expect("the reader");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(written, squares_lines(0, 100000));
    assert!(stderr.is_empty(), "{stderr}");
    assert!(runtime.entries().is_empty(), "a socket was made: {:?}", runtime.entries());
}

#[test]
fn an_open_file_limit_too_low_for_any_run_is_one_line_naming_it() {
    // Below a few dozen open files a run would fail at random: a worker that cannot start,
    // a runtime that panics, a socket directory that cannot be removed. It is refused first.
    let runtime = TempDir::new("nofile-floor");
    let commands: [&[&str]; 3] = [
        &["map", "square", "--range", "0..1000", "--workers", "2"],
        &["run", "--", "true", ":::", "1", "2", "3"],
        &["map", "--exec", "cat", "--input", "/dev/null"],
    ];
    for limit in [7, 10, 20] {
        for args in commands {
            let mut cmd = powerpool(args.iter().copied());
            cmd.env("XDG_RUNTIME_DIR", &runtime.0);
            with_limit(&mut cmd, libc::RLIMIT_NOFILE, limit, limit);
            let out = run(&mut cmd);
            let what = format!("{args:?} under ulimit -n {limit}");
            assert_eq!(
                out.status.code(),
                Some(1),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            one_line_naming(&out, &["ulimit -n", &limit.to_string()], &what);
        }
    }
    assert!(runtime.entries().is_empty(), "left behind: {:?}", runtime.entries());
}
