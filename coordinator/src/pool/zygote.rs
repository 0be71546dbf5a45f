//! The start-up fork server: the first workers of a run are forked, not executed.
//!
//! Starting a worker by `exec` costs the dynamic loader, the program's relocations and its
//! runtime set-up, again in every worker: most of a tiny job's time. So `main`, while the
//! coordinator still has one thread and before the runtime is built, forks one small process,
//! the *zygote*, that waits on a socket pair. When the pool has its socket and secret, it asks
//! the zygote for its first wave of workers in one request; the zygote forks all but the last
//! of them and then *becomes* the last one. Each worker then runs the same entry as an
//! executed one (`powerpool_worker::run`), so it reads the same variables and arms the same
//! parent-death signal; only the exec is gone. Workers started later (replacements, recycling,
//! a second run) are executed as before, and so is every `--worker-cmd` and the typed library,
//! whose caller may already have threads.
//!
//! # Caveats
//!
//! - The zygote forks its siblings with `clone(CLONE_PARENT)`: their parent is the coordinator,
//!   as for an executed worker, so the coordinator reaps each one and names how it ended, and
//!   `PR_SET_PDEATHSIG` follows the coordinator's *main* thread (the one that forked the
//!   zygote), which runs the whole program. The zygote itself is never a lasting extra child:
//!   it ends as a worker, or on end of file when the run needed no worker.
//! - A raw `clone` skips glibc's fork bookkeeping. The zygote has one thread and holds no lock,
//!   so what that bookkeeping resets is already in its reset state; the one stale field, the
//!   thread's cached tid, is read by nothing a worker calls (glibc's `raise` asks the kernel).
//! - The zygote arms its own parent-death signal and checks its parent at once, so a
//!   coordinator killed at any moment leaves no zygote behind.

use powerpool_shared::env;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// The largest request: the variables of a run and each worker's id and slot number.
const MAX_REQUEST: usize = 64 << 10;
/// How long the coordinator waits for the zygote's answer before it executes the workers.
const ANSWER_TIMEOUT_S: libc::time_t = 5;

/// This process's zygote, until the first run takes it.
static ZYGOTE: Mutex<Option<Zygote>> = Mutex::new(None);

/// The coordinator's end of a waiting zygote.
#[derive(Debug)]
pub struct Zygote {
    pid: libc::pid_t,
    socket: OwnedFd,
}

/// Forks the zygote, if this process has one thread (otherwise nothing is forked and workers
/// are executed). Call it from `main`, before anything starts a thread.
pub fn start() {
    if !single_threaded() {
        return;
    }
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array we pass.
    let made = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if made != 0 {
        return;
    }
    // SAFETY: both descriptors were just made and are owned here alone.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid has no preconditions.
    let coordinator = unsafe { libc::getpid() };
    // SAFETY: this process has one thread (checked above), so the child may do anything the
    // parent could; it never returns into the caller (`serve` ends in exit).
    match unsafe { libc::fork() } {
        0 => {
            drop(ours);
            serve(theirs, coordinator)
        }
        pid if pid > 0 => {
            *ZYGOTE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Zygote { pid, socket: ours });
        }
        _ => {}
    }
}

/// The zygote, for the first run that wants one.
pub fn take() -> Option<Zygote> {
    ZYGOTE.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Ends a zygote no run took (an empty range, a run that failed before its workers).
pub fn dismiss() {
    drop(take());
}

impl Drop for Zygote {
    /// A zygote that was never asked for workers, or failed to answer, is ended and reaped;
    /// one that answered is a worker now, reaped by its slot.
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: kill touches no memory; the pid is our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            reap(self.pid);
        }
    }
}

impl Zygote {
    /// Forks the workers `(id, number)` with the variables `vars`; returns each one's pid, in
    /// order, or why it was not forked. Workers it gives no answer for were not forked.
    pub fn fork_workers(
        mut self,
        vars: &[(&str, String)],
        workers: &[(u64, u64)],
    ) -> Vec<io::Result<u32>> {
        let request = encode(vars, workers);
        let mut pids = Vec::with_capacity(workers.len());
        let sent = timeout(&self.socket).and_then(|()| send(&self.socket, &request));
        if sent.is_ok() {
            while pids.len() < workers.len() {
                let mut answer = [0u8; 4];
                match recv(&self.socket, &mut answer) {
                    Ok(4) => {}
                    _ => break,
                }
                pids.push(match i32::from_le_bytes(answer) {
                    pid if pid > 0 => Ok(pid as u32),
                    errno => Err(io::Error::from_raw_os_error(-errno)),
                });
            }
        }
        if pids.len() == workers.len() {
            // The zygote is the last worker now: its slot reaps it.
            self.pid = 0;
        }
        // Otherwise it died or stalled before it became the last worker: dropping it ends it.
        for pid in pids.iter().flatten() {
            // The worker makes itself a group leader too; doing it here as well means no
            // signal to its group can miss it, whichever of the two runs first.
            // SAFETY: setpgid touches no memory; the pid is our child, which has not exec'd.
            unsafe { libc::setpgid(*pid as libc::pid_t, *pid as libc::pid_t) };
        }
        pids
    }
}

/// The zygote's life: one request, a fork for each worker but the last, then the last worker.
fn serve(socket: OwnedFd, coordinator: libc::pid_t) -> ! {
    // SAFETY: plain system calls on this process; the prctl takes a signal number.
    unsafe {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != coordinator {
            libc::_exit(0);
        }
    }
    tidy_descriptors(socket.as_raw_fd());
    let mut buf = vec![0u8; MAX_REQUEST];
    let Ok(len) = recv(&socket, &mut buf) else { exit(0) };
    let Some((vars, workers)) = decode(&buf[..len]) else { exit(0) };
    drop(buf);
    for (key, value) in vars {
        // The zygote has one thread: nothing reads the environment beside this.
        std::env::set_var(key, value);
    }
    let Some((&last, first)) = workers.split_last() else { exit(0) };
    let shown = Shown::read();
    for &(id, number) in first {
        // The child is born with its own variables, and shows them (`Shown`) from its first
        // moment: whoever lists the coordinator's children finds a worker's environment.
        set_ids(id, number, shown.as_ref());
        // SAFETY: a fork (no new stack: the child runs on a copy of this one) whose parent is
        // the coordinator; see the module's caveats on glibc. The child never returns here.
        let pid = unsafe {
            libc::syscall(libc::SYS_clone, libc::CLONE_PARENT | libc::SIGCHLD, 0, 0, 0, 0)
        };
        if pid == 0 {
            drop(socket);
            worker();
        }
        let answer = if pid > 0 {
            pid as i32
        } else {
            -io::Error::last_os_error().raw_os_error().unwrap_or(libc::EAGAIN)
        };
        if send(&socket, &answer.to_le_bytes()).is_err() {
            exit(0);
        }
    }
    set_ids(last.0, last.1, shown.as_ref());
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if send(&socket, &me.to_le_bytes()).is_err() {
        exit(0);
    }
    drop(socket);
    worker()
}

/// Gives this process (and a child forked next) worker `id`'s variables, on show too.
fn set_ids(id: u64, number: u64, shown: Option<&Shown>) {
    std::env::set_var(env::WORKER_ID, id.to_string());
    std::env::set_var(env::SLOT, number.to_string());
    if let Some(shown) = shown {
        shown.show();
    }
}

/// Runs the worker whose variables are set, as an executed worker would run, and exits.
fn worker() -> ! {
    // SAFETY: setpgid on this process only.
    unsafe { libc::setpgid(0, 0) };
    exit(powerpool_worker::run(powerpool_worker::Registry::builtin()))
}

fn exit(code: u8) -> ! {
    std::process::exit(i32::from(code))
}

/// The kernel's record of where a process's memory areas are (`struct prctl_mm_map`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct MmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: *mut u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// What `/proc/PID/cmdline` and `environ` show: an executed worker's command line (`powerpool
/// worker`) and environment (with the run's variables), not the coordinator's, which a forked
/// process would otherwise show. Monitoring tools, and anyone tracing a worker by hand, see what
/// they would see of an executed one.
struct Shown {
    map: MmMap,
    args: &'static [u8],
}

impl Shown {
    /// Reads the zygote's map (`/proc/self/stat`), the same in every process it forks.
    fn read() -> Option<Shown> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
        // Fields of proc(5), numbered from 1; `rest` starts at field 3.
        let field = |n: usize| fields.get(n - 3).copied();
        let map = MmMap {
            start_code: field(26)?,
            end_code: field(27)?,
            start_data: field(45)?,
            end_data: field(46)?,
            start_brk: field(47)?,
            brk: 0,
            start_stack: field(28)?,
            arg_start: field(48)?,
            arg_end: field(49)?,
            env_start: field(50)?,
            env_end: field(51)?,
            auxv: std::ptr::null_mut(),
            auxv_size: 0,
            exe_fd: u32::MAX,
        };
        let exe = std::env::current_exe().ok()?;
        let mut args = exe.into_os_string().into_encoded_bytes();
        args.extend_from_slice(b"\0worker\0");
        Some(Shown { map, args: args.leak() })
    }

    /// Points this process's command line and environment at new copies (leaked: they live as
    /// long as the process). Unprivileged (`PR_SET_MM_MAP` without a new executable); where it is
    /// refused, the coordinator's stay on show and nothing else changes.
    fn show(&self) {
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            env.extend_from_slice(key.as_encoded_bytes());
            env.push(b'=');
            env.extend_from_slice(value.as_encoded_bytes());
            env.push(0);
        }
        let env = env.leak();
        let mut map = self.map;
        map.arg_start = self.args.as_ptr() as u64;
        map.arg_end = map.arg_start + self.args.len() as u64;
        map.env_start = env.as_ptr() as u64;
        map.env_end = map.env_start + env.len() as u64;
        // SAFETY: brk(0) only reads the current break; prctl reads the struct we pass, whose
        // other fields are this process's own (forked from the zygote that read them).
        unsafe {
            map.brk = libc::syscall(libc::SYS_brk, 0) as u64;
            libc::prctl(
                libc::PR_SET_MM,
                libc::PR_SET_MM_MAP as libc::c_ulong,
                &map as *const MmMap as libc::c_ulong,
                std::mem::size_of::<MmMap>() as libc::c_ulong,
                0,
            );
        }
    }
}

/// What an executed worker gets: stdin from /dev/null, stdout onto stderr (results travel on
/// the socket only), and no other descriptor of the coordinator's.
fn tidy_descriptors(keep: RawFd) {
    // SAFETY: open, dup2 and close_range act on this process's descriptor table only.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            if null > 2 {
                libc::close(null);
            }
        }
        libc::dup2(2, 1);
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

/// Whether this process has exactly one thread (`/proc/self/stat`, field 20).
fn single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return false };
    let Some((_, rest)) = stat.rsplit_once(')') else { return false };
    rest.split_whitespace().nth(17) == Some("1")
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid writes only the status we pass; the pid is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn timeout(socket: &OwnedFd) -> io::Result<()> {
    let limit = libc::timeval { tv_sec: ANSWER_TIMEOUT_S, tv_usec: 0 };
    // SAFETY: setsockopt reads the struct we pass, of the size we pass.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&limit as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn send(socket: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: send reads `bytes` only.
    let sent = unsafe {
        libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)
    };
    if sent == bytes.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn recv(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let got = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match got {
            n if n > 0 => return Ok(n as usize),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

/// A request: `KEY=VALUE` entries, an empty entry, then `ID,NUMBER` entries; each entry ends
/// in a NUL.
fn encode(vars: &[(&str, String)], workers: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in vars {
        out.extend_from_slice(format!("{key}={value}\0").as_bytes());
    }
    out.push(0);
    for (id, number) in workers {
        out.extend_from_slice(format!("{id},{number}\0").as_bytes());
    }
    out
}

type Request = (Vec<(String, String)>, Vec<(u64, u64)>);

fn decode(bytes: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\0')?;
    let (vars, workers) =
        text.split_once("\0\0").or_else(|| text.strip_prefix('\0').map(|w| ("", w)))?;
    let vars = vars
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<Option<Vec<_>>>()?;
    let workers = workers
        .split('\0')
        .map(|e| {
            let (id, number) = e.split_once(',')?;
            Some((id.parse().ok()?, number.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((vars, workers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips() {
        let vars = [("POWERPOOL_SOCKET", "/run/x/pool.sock".to_owned()), ("A", "b=c".to_owned())];
        let workers = [(0, 1), (1, 2), (17, 4)];
        let (v, w) = decode(&encode(&vars, &workers)).expect("decodes");
        assert_eq!(
            v,
            vec![
                ("POWERPOOL_SOCKET".into(), "/run/x/pool.sock".into()),
                ("A".into(), "b=c".into())
            ]
        );
        assert_eq!(w, workers);
        let (v, w) = decode(&encode(&[], &[(3, 1)])).expect("decodes without variables");
        assert!(v.is_empty());
        assert_eq!(w, [(3, 1)]);
    }

    #[test]
    fn a_malformed_request_is_refused() {
        assert!(decode(b"A=b\0\0x,1\0").is_none(), "a bad id");
        assert!(decode(b"A=b\0\x001,2").is_none(), "no final NUL");
        assert!(decode(b"Ab\0\x001,2\0").is_none(), "a variable without =");
    }

    #[test]
    fn this_test_process_is_not_single_threaded() {
        // The test harness runs tests on threads, so the zygote would refuse to start here.
        let _other =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(50)));
        assert!(!single_threaded());
    }
}
