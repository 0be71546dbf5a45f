//! Issue 17, the trust boundary from the worker's side and the socket directory's: a worker
//! gives its token only to the coordinator that started it, in a directory of its own; the
//! coordinator refuses a temp dir another user could swap its directory in, says which path is
//! wrong when the temp dir is missing or too long, and bounds what connections that have not
//! authenticated may cost. Each test is named after its defect.

use powerpool_shared::env::{self, to_hex};
use powerpool_shared::TOKEN_LEN;
use powerpool_tests::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Starts `program` as a worker pointed at `socket`, with `coordinator` as the pid it trusts.
fn worker_env(cmd: &mut Command, socket: &Path, coordinator: &str) {
    cmd.env(env::SOCKET, socket)
        .env(env::TOKEN, to_hex(&[7u8; TOKEN_LEN]))
        .env(env::WORKER_ID, "0")
        .env(env::COORDINATOR_PID, coordinator)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
}

/// Waits for the worker to exit; returns its status code and stderr.
fn finish(mut child: std::process::Child) -> (Option<i32>, String) {
    let mut err = child.stderr.take().expect("piped");
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the worker did not exit");
    });
    let mut text = String::new();
    let _ = err.read_to_string(&mut text);
    (status.code(), text)
}

/// What the worker sent on `conn` before closing it (nothing, if it refused us).
fn sent(mut conn: UnixStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut bytes = Vec::new();
    let _ = conn.read_to_end(&mut bytes);
    bytes
}

#[test]
fn defect_17_15_a_worker_refuses_a_socket_directory_that_is_not_private() {
    for mode in [0o755, 0o711, 0o770] {
        let dir = TempDir::new("notprivate");
        chmod(&dir.0, mode);
        let socket = dir.0.join("pool.sock");
        let listener = UnixListener::bind(&socket).expect("binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut cmd = Command::new(bin("powerpool-worker"));
        worker_env(&mut cmd, &socket, &std::process::id().to_string());
        let (code, stderr) = finish(cmd.spawn().expect("spawns"));
        assert_eq!(code, Some(3), "mode {mode:o}: {stderr}");
        assert!(stderr.contains("refusing to connect") && stderr.contains("mode"), "{stderr}");
        assert!(listener.accept().is_err(), "mode {mode:o}: the worker connected anyway");
    }
}

#[test]
fn defect_17_15_a_worker_refuses_a_socket_directory_of_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED defect_17_15 (owner): needs root to give a directory to another uid");
        return;
    }
    let dir = TempDir::new("theirs");
    chmod(&dir.0, 0o700);
    let socket = dir.0.join("pool.sock");
    let listener = UnixListener::bind(&socket).expect("binds");
    listener.set_nonblocking(true).expect("nonblocking");
    std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).expect("chown");
    let mut cmd = Command::new(bin("powerpool-worker"));
    worker_env(&mut cmd, &socket, &std::process::id().to_string());
    let (code, stderr) = finish(cmd.spawn().expect("spawns"));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
    assert!(listener.accept().is_err(), "the worker connected anyway");
}

#[test]
fn defect_17_15_a_worker_says_nothing_to_a_socket_held_by_another_process() {
    let dir = TempDir::new("impostor");
    chmod(&dir.0, 0o700);
    let socket = dir.0.join("pool.sock");
    // This test process listens; the worker trusts its parent, a shell, whose pid it is given.
    let listener = UnixListener::bind(&socket).expect("binds");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("export {}=$$; \"$0\"; exit $?", env::COORDINATOR_PID))
        .arg(bin("powerpool-worker"));
    worker_env(&mut cmd, &socket, "0");
    let child = cmd.spawn().expect("spawns");
    let (conn, _) = listener.accept().expect("the worker connects");
    let bytes = sent(conn);
    let (code, stderr) = finish(child);
    assert!(bytes.is_empty(), "the worker sent {} bytes (its hello and token)", bytes.len());
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("not the coordinator's"), "{stderr}");
}

#[test]
fn defect_17_15_a_temp_dir_writable_by_all_without_the_sticky_bit_is_named_and_ours_stays_private()
{
    let dir = TempDir::new("open-tmp");
    chmod(&dir.0, 0o777);
    // Executed workers: a run whose workers are all forked makes no socket directory.
    let child = powerpool(["map", "slow-square", "--range", "0..2000", "--chunk-size", "10"])
        .arg("--worker-cmd")
        .arg(bin("powerpool-worker"))
        .env("POWERPOOL_TEST_TASKS", "1")
        .env("TMPDIR", &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    wait_for(Duration::from_secs(10), || !dir.entries().is_empty());
    let made = dir.entries().first().map(|name| dir.0.join(name)).expect("a socket directory");
    let mode = std::fs::metadata(&made).expect("there").permissions().mode();
    let out = wait_output(child, TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout, squares_lines(0, 2000));
    assert_eq!(mode & 0o7777, 0o700, "{}", made.display());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&*dir.0.to_string_lossy()) && stderr.contains("sticky"), "{stderr}");
    // With the sticky bit, as /tmp has it, not a word.
    chmod(&dir.0, 0o1777);
    let out = run(powerpool(["map", "square", "--range", "0..10"]).env("TMPDIR", &dir.0));
    assert!(out.status.success() && out.stderr.is_empty());
}

#[test]
fn defect_17_18_a_missing_or_too_long_temp_dir_is_named_with_the_reason() {
    let missing = std::env::temp_dir().join("pp-test-no-such-dir/below");
    let out = run(powerpool(["map", "square", "--range", "0..10"]).env("TMPDIR", &missing));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("TMPDIR") && stderr.contains("does not exist"), "{stderr}");
    let long = TempDir::new("long");
    let deep = long.0.join("d".repeat(100));
    std::fs::create_dir_all(&deep).expect("creates");
    let out = run(powerpool(["map", "square", "--range", "0..10"]).env("TMPDIR", &deep));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&*deep.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("shorter directory") && stderr.contains("107"), "{stderr}");
}

/// Starts a run long enough to be attacked; returns it and its socket's path.
fn attacked_run(rt: &TempDir) -> (std::process::Child, std::path::PathBuf) {
    // Executed workers: only a run that executes one has a socket to attack.
    let child = powerpool(["map", "slow-square", "--range", "0..10000", "--workers", "2"])
        .args(["--chunk-size", "50", "--worker-cmd"])
        .arg(bin("powerpool-worker"))
        .env("POWERPOOL_TEST_TASKS", "1")
        .env("XDG_RUNTIME_DIR", &rt.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    wait_for_workers(child.id(), 2);
    let dirs = rt.entries();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    (child, rt.0.join(&dirs[0]).join("pool.sock"))
}

/// A field of /proc/PID/status in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = text.lines().find(|l| l.starts_with(field)).expect("field");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
}

#[test]
fn defect_17_16_large_first_frames_from_strangers_cost_no_memory() {
    use std::io::Write;
    let rt = TempDir::new("bigframes");
    let (child, socket) = attacked_run(&rt);
    let before = status_kb(child.id(), "VmRSS:");
    let attackers: Vec<_> = (0..40)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let Ok(mut conn) = UnixStream::connect(&socket) else { return };
                let len = (16u32 << 20) - 1;
                let _ = conn.write_all(&len.to_le_bytes());
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..16 {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    for attacker in attackers {
        attacker.join().expect("attacker");
    }
    let peak = status_kb(child.id(), "VmHWM:");
    let out = wait_output(child, TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, squares_lines(0, 10000));
    assert!(peak < before + 64 * 1024, "the coordinator grew from {before} kB to {peak} kB");
}

#[test]
fn defect_17_16_handshakes_in_progress_are_bounded() {
    let rt = TempDir::new("handshakes");
    let (child, socket) = attacked_run(&rt);
    let silent: Vec<UnixStream> =
        (0..400).filter_map(|_| UnixStream::connect(&socket).ok()).collect();
    assert!(silent.len() > 300, "connected {} times", silent.len());
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", child.id())).map_or(0, |d| d.count());
    // Accepting takes a moment; the count must settle under the bound, not at 400.
    std::thread::sleep(Duration::from_millis(500));
    let open = fds();
    let out = wait_output(child, TIMEOUT);
    drop(silent);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, squares_lines(0, 10000));
    assert!(open < 250, "the coordinator holds {open} descriptors for 400 silent connections");
}

#[test]
fn a_socket_base_we_cannot_write_to_fails_the_run_at_its_start_not_at_a_replacement() {
    // The socket directory is made at the first executed worker, perhaps a replacement in the
    // middle of a run: a base directory it could not be made in must fail every run at once,
    // not only the runs in which a worker happens to die.
    let dir = TempDir::new("readonly-base");
    chmod(&dir.0, 0o555);
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        // Root may write anywhere: run as nobody, if nobody can run the binary at all.
        let mut probe = Command::new("setpriv");
        probe.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
        let reachable = probe.arg(bin("powerpool")).arg("--version").output();
        let mut probe = Command::new("setpriv");
        probe.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "test", "-x"]);
        let reaches_dir = probe.arg(&dir.0).status();
        if !reachable.is_ok_and(|out| out.status.success())
            || !reaches_dir.is_ok_and(|s| s.success())
        {
            eprintln!(
                "SKIPPED: user nobody cannot run {} or reach {}",
                bin("powerpool").display(),
                dir.0.display()
            );
            return;
        }
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]).arg(bin("powerpool"));
        cmd
    } else {
        Command::new(bin("powerpool"))
    };
    cmd.args(["map", "square", "--range", "0..10", "--workers", "2"])
        .env("XDG_RUNTIME_DIR", &dir.0);
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "the run went on: {:?}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&*dir.0.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("cannot hold the socket directory"), "{stderr}");
}

#[test]
fn a_worker_takes_as_its_connection_only_a_unix_stream_socket_it_holds() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // Descriptor 3 of the worker: a pipe (the worker must not write its hello, token and all,
    // into it), a datagram socket, or nothing at all; then garbage and the standard three.
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array we pass.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both were just made and are owned here alone.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    };
    let (datagram, _other) = UnixDatagram::pair().expect("a datagram pair");
    let (pipe_read, pipe_write) = pipe();
    let mut cases: Vec<(String, Option<i32>)> = vec![
        ("3".into(), Some(pipe_write.as_raw_fd())),
        ("3".into(), Some(datagram.as_raw_fd())),
        ("three".into(), None),
        ("1".into(), None),
    ];
    // Descriptors that are not open when the worker starts, among them the numbers its own
    // runtime takes next (its event loop, its signal sockets): taken after the runtime
    // started, one of those would be mistaken for the connection.
    cases.extend((3..=12).map(|n| (n.to_string(), None)));
    for (value, at_3) in cases {
        let mut cmd = Command::new(bin("powerpool-worker"));
        cmd.env(env::CONNECTION_FD, &value)
            .env(env::TOKEN, to_hex(&[7u8; TOKEN_LEN]))
            .env(env::WORKER_ID, "0")
            .env(env::COORDINATOR_PID, std::process::id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec the closure only calls dup2 and close.
        unsafe {
            cmd.pre_exec(move || {
                for fd in 3..=12 {
                    if Some(fd) != at_3 {
                        libc::close(fd);
                    }
                }
                if let Some(fd) = at_3 {
                    libc::dup2(fd, 3);
                    if fd != 3 {
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let (code, stderr) = finish(cmd.spawn().expect("spawns"));
        assert_eq!(code, Some(2), "{value} {at_3:?}: {stderr}");
        assert!(stderr.contains(env::CONNECTION_FD), "{stderr}");
    }
    drop(pipe_write);
    let mut written = Vec::new();
    std::fs::File::from(pipe_read).read_to_end(&mut written).expect("reads");
    assert!(written.is_empty(), "the worker wrote into a pipe: {written:?}");
}
