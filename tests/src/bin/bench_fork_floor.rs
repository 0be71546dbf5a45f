//! Baseline for scripts/bench (B1): the floor of the canonical job. Forks WORKERS children
//! before any thread exists; each formats its share of the squares of 0..N, one per line, with
//! `itoa` into one buffer and writes it to a pipe; the parent copies the pipes to stdout in
//! order. No sockets, no protocol, no runtime, no retries: what `powerpool map square --range
//! 0..N --workers WORKERS` cannot go below on this machine. The output is byte-identical.
//!
//! Usage: bench-fork-floor N WORKERS

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = match args.as_slice() {
        [_, n, w] => n.parse::<i64>().ok().zip(w.parse::<i64>().ok()),
        _ => None,
    };
    let Some((n, workers)) = parsed.filter(|&(n, w)| n >= 0 && w >= 1) else {
        eprintln!("usage: bench-fork-floor N WORKERS");
        std::process::exit(2);
    };
    let share = (n + workers - 1) / workers;
    let mut pipes = Vec::new();
    for w in 0..workers {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array we pass.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: both were just made and are owned here alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: this process has one thread; the child only computes, writes and exits.
        match unsafe { libc::fork() } {
            0 => {
                drop(read);
                let (first, end) = ((w * share).min(n), ((w + 1) * share).min(n));
                let mut out = Vec::with_capacity((end - first) as usize * 11);
                let mut digits = itoa::Buffer::new();
                for x in first..end {
                    out.extend_from_slice(digits.format(i128::from(x) * i128::from(x)).as_bytes());
                    out.push(b'\n');
                }
                let code = i32::from(std::fs::File::from(write).write_all(&out).is_err());
                // SAFETY: _exit ends this child without running the parent's clean-up.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                drop(write);
                pipes.push((pid, read));
            }
            _ => panic!("fork: {}", std::io::Error::last_os_error()),
        }
    }
    let mut stdout = std::io::stdout().lock();
    let mut buf = Vec::new();
    for (pid, read) in pipes {
        buf.clear();
        std::fs::File::from(read).read_to_end(&mut buf).expect("reads");
        stdout.write_all(&buf).expect("writes");
        let mut status = 0;
        // SAFETY: waitpid writes only the status we pass; the pid is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "a child failed");
    }
    stdout.flush().expect("flushes");
}
