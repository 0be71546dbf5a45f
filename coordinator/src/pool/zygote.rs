//! The start-up fork server: the first workers of a run are forked, not executed.
//!
//! Starting a worker by `exec` costs the dynamic loader, the program's relocations and its
//! runtime set-up, again in every worker: most of a tiny job's time. So `main`, while the
//! coordinator still has one thread, before clap has parsed the command line (so its heap is
//! small: each child copies the zygote's page tables and faults in every page it writes),
//! forks one process, the *zygote*, that sets up once what every worker would (logging, the
//! task table) and waits on a socket pair. The run asks it for its first wave of workers in
//! one request, with the run's secret ([`ask_early`]: `map --range` asks right after the
//! zygote's fork, from the command line as read before clap, so the workers are forked while
//! the run is set up); the zygote forks all but the last of them and then *becomes* the last
//! one. The zygote starts on another CPU than the coordinator's (`Cpus`).
//! Each worker is born connected: the zygote makes a socket pair for it, the child keeps one
//! end (named by `POWERPOOL_CONNECTION_FD`) and the coordinator is sent the other with the
//! child's pid (`SCM_RIGHTS`), so no socket path or listener is needed for these workers.
//! Each then runs the same entry as an executed one (`powerpool_worker::run`), so it reads the
//! same variables, arms the same parent-death signal and says the same hello; only the exec
//! and the connect are gone. Workers started later (replacements, recycling, a second run) are
//! executed as before, and so is every `--worker-cmd` and the typed library, whose caller may
//! already have threads: they connect to the socket the run makes at the first of them.
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

use super::shown::Shown;
use super::zygote_wire::{
    decode, encode, peek_len, recv, recv_fd, send, send_fd, timeout, try_recv_fd, ANSWER_TIMEOUT_S,
};
use powerpool_shared::{env, TOKEN_LEN};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::oneshot;

/// The largest request: the variables of a run and each worker's id and slot number.
const MAX_REQUEST: usize = 64 << 10;

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
    bind_thread_local_destructors();
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
    let cpus = Cpus::of_this_process();
    // SAFETY: this process has one thread (checked above), so the child may do anything the
    // parent could; it never returns into the caller (`serve` ends in exit).
    match unsafe { libc::fork() } {
        0 => {
            drop(ours);
            serve(theirs, coordinator, cpus)
        }
        pid if pid > 0 => {
            if let Some(cpus) = &cpus {
                cpus.start_elsewhere(pid);
            }
            *ZYGOTE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Zygote { pid, socket: ours });
        }
        _ => {}
    }
}

/// The zygote, for the first run that wants one.
pub fn take() -> Option<Zygote> {
    ZYGOTE.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Ends a zygote no run took (an empty range, a run that failed before its workers), and any
/// workers it forked for a run that never came.
pub fn dismiss() {
    drop(take());
    drop(take_early());
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
    /// Asks for the workers `(id, number)` with the variables `vars`: the zygote forks them
    /// while the caller goes on; [`Asked::answer_each`] delivers what it did.
    pub fn ask(self, vars: &[(&str, String)], workers: Vec<(u64, u64)>) -> Asked {
        let request = encode(vars, &workers);
        let sent = timeout(&self.socket).and_then(|()| send(&self.socket, &request)).is_ok();
        Asked { zygote: Some(self), workers, sent }
    }
}

/// A zygote that was asked for workers, until its answers are read.
#[derive(Debug)]
pub struct Asked {
    zygote: Option<Zygote>,
    /// The workers asked for, `(id, number)`, in order.
    pub workers: Vec<(u64, u64)>,
    sent: bool,
}

impl Asked {
    /// Reads the answers, blocking (once: the zygote's handle is taken): each worker's pid and
    /// the coordinator's end of its connection, in the order asked, or why it was not forked.
    /// Workers it gives no answer for were not forked.
    fn collect(&mut self) -> Vec<io::Result<(u32, OwnedFd)>> {
        let Some(mut zygote) = self.zygote.take() else { return Vec::new() };
        let mut forked = Vec::with_capacity(self.workers.len());
        while self.sent && forked.len() < self.workers.len() {
            let mut answer = [0u8; 4];
            match recv_fd(&zygote.socket, &mut answer) {
                Ok((4, conn)) => forked.push(zygote.take_answer(answer, conn)),
                _ => break,
            }
        }
        zygote
            .settle(forked.len() == self.workers.len() && forked.last().is_some_and(Result::is_ok));
        forked
    }

    /// Reads the answers as the zygote sends them, on a task of the current runtime, so that
    /// the run goes on meanwhile: each worker asked for gets its own answer as soon as it is
    /// forked (its slot checks its hello and sends its first units while its siblings are
    /// still being forked), in the order asked. A worker whose answer no one takes is ended.
    pub fn answer_each(mut self) -> Vec<Answer> {
        let (senders, answers): (Vec<_>, Vec<_>) =
            self.workers.iter().map(|_| oneshot::channel()).unzip();
        if let Some(zygote) = self.zygote.take() {
            tokio::spawn(read_answers(zygote, self.sent, senders));
        }
        answers
    }
}

/// One worker's answer from the zygote, delivered as it comes: its pid and the coordinator's
/// end of its connection, or why it was not forked.
pub type Answer = oneshot::Receiver<io::Result<(u32, OwnedFd)>>;

/// Reads the zygote's answers without blocking, within the same time limit as the blocking
/// reads (`ANSWER_TIMEOUT_S`), and hands each to its receiver.
async fn read_answers(
    mut zygote: Zygote,
    sent: bool,
    senders: Vec<oneshot::Sender<io::Result<(u32, OwnedFd)>>>,
) {
    let count = senders.len();
    // SAFETY: an OwnedFd (a duplicate of the zygote's socket, so the zygote keeps its own)
    // keeps its one descriptor open until the AsyncFd drops it.
    let ready = zygote.socket.try_clone().and_then(|fd| {
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(ANSWER_TIMEOUT_S as u64);
    let mut answered = 0;
    let mut last_ok = false;
    if let (true, Ok(ready)) = (sent, ready) {
        let mut senders = senders.into_iter();
        while answered < count {
            let mut answer = [0u8; 4];
            let got = loop {
                match try_recv_fd(&zygote.socket, &mut answer) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match tokio::time::timeout_at(deadline, ready.readable()).await {
                            Ok(Ok(mut guard)) => guard.clear_ready(),
                            _ => break None,
                        }
                    }
                    other => break Some(other),
                }
            };
            let Some(Ok((4, conn))) = got else { break };
            let forked = zygote.take_answer(answer, conn);
            answered += 1;
            last_ok = forked.is_ok();
            if let Some(sender) = senders.next() {
                if let Err(Ok((pid, _))) = sender.send(forked) {
                    // Its slot is gone (the run ended first): nobody else would reap it.
                    if pid as libc::pid_t == zygote.pid {
                        zygote.pid = 0;
                    }
                    end(pid as libc::pid_t);
                }
            }
        }
    }
    // Receivers left without an answer hear that their sender is gone.
    zygote.settle(answered == count && last_ok);
}

impl Zygote {
    /// One answer read from the zygote: a forked worker (made its own group leader from here
    /// too), or why it could not be.
    fn take_answer(
        &mut self,
        answer: [u8; 4],
        conn: Option<OwnedFd>,
    ) -> io::Result<(u32, OwnedFd)> {
        match (i32::from_le_bytes(answer), conn) {
            (pid, Some(conn)) if pid > 0 => {
                // The worker makes itself a group leader too; doing it here as well means no
                // signal to its group can miss it, whichever of the two runs first.
                // SAFETY: setpgid touches no memory; the pid is our child, not exec'd.
                unsafe { libc::setpgid(pid, pid) };
                Ok((pid as u32, conn))
            }
            (pid, None) if pid > 0 => {
                // A worker without its connection is no use: ended and reaped here (if it is
                // the zygote itself, its handle must not reap that pid again).
                end(pid);
                if pid == self.pid {
                    self.pid = 0;
                }
                Err(io::Error::other("the zygote sent no connection for a worker"))
            }
            (errno, _) => Err(io::Error::from_raw_os_error(-errno)),
        }
    }

    /// After its answers: if all came and the last was a worker, the zygote is that worker now
    /// (its slot reaps it); otherwise it died or stalled before, and dropping it ends it.
    fn settle(mut self, became_last: bool) {
        if became_last {
            self.pid = 0;
        }
    }
}

impl Drop for Asked {
    /// Workers asked for that no run took are ended and reaped.
    fn drop(&mut self) {
        for (pid, _) in self.collect().into_iter().flatten() {
            end(pid as libc::pid_t);
        }
    }
}

/// The zygote's first wave, asked for before the pool was set up (`ask_early`), and the
/// run's secret it was given.
static EARLY: Mutex<Option<(Asked, [u8; TOKEN_LEN])>> = Mutex::new(None);

/// Asks the zygote, if this process has one, for the first `count` workers of the next run
/// now, so that they are forked while the caller sets up its runtime and its output: ids 0 to
/// `count - 1`, numbers 1 to `count`, as a pool's first wave is. The run takes them with
/// [`take_early`]; any it does not spawn are ended.
pub fn ask_early(count: usize) {
    if count == 0 {
        return;
    }
    let Some(zygote) = take() else { return };
    let Ok(token) = super::listener::new_token() else { return };
    let vars = super::process::forked_env(&powerpool_shared::env::to_hex(&token));
    let workers = (0..count as u64).map(|i| (i, i + 1)).collect();
    *EARLY.lock().unwrap_or_else(|e| e.into_inner()) = Some((zygote.ask(&vars, workers), token));
}

/// How many workers were asked for early (`ask_early`) and not yet taken by a run.
pub fn asked_early() -> usize {
    EARLY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(0, |(asked, _)| asked.workers.len())
}

/// The first wave asked for early, and its secret, for the run that spawns it.
pub fn take_early() -> Option<(Asked, [u8; TOKEN_LEN])> {
    EARLY.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Ends and reaps `pid`, our child.
pub(super) fn end(pid: libc::pid_t) {
    // SAFETY: kill touches no memory; the pid is our unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

/// The CPUs this process may run on, when there are several.
///
/// A forked child starts on its parent's CPU, and there it waits until the parent blocks: on
/// this 2-vCPU VM the zygote first ran 0.8 ms (median) after its fork, while the other CPU was
/// idle and the coordinator went on parsing its command line. So the coordinator moves the
/// zygote off its own CPU at once (the scheduler migrates it there), and the zygote takes
/// back the whole set when the run's request comes: the request is sent after the move, so
/// the move can never undo the restore, and every worker it forks inherits the whole set.
/// Measured: 0.94x-0.96x the canonical job's time (two sets of 60 interleaved pairs).
#[derive(Clone, Copy)]
struct Cpus(libc::cpu_set_t);

impl Cpus {
    fn of_this_process() -> Option<Cpus> {
        // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most its
        // size into it; CPU_COUNT reads the set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let got = libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set);
            (got == 0 && libc::CPU_COUNT(&set) > 1).then_some(Cpus(set))
        }
    }

    /// Lets `pid` run anywhere in this set but on the CPU the caller runs on now.
    fn start_elsewhere(&self, pid: libc::pid_t) {
        // SAFETY: sched_getcpu has no preconditions.
        let here = unsafe { libc::sched_getcpu() };
        let mut others = self.0;
        let Ok(here) = usize::try_from(here) else { return };
        if here >= libc::CPU_SETSIZE as usize {
            return;
        }
        // SAFETY: CPU_CLR and CPU_COUNT touch only the set, `here` is within it;
        // sched_setaffinity reads the set we pass, of the size we pass; the pid is our child.
        // A failure leaves it where the scheduler put it.
        unsafe {
            libc::CPU_CLR(here, &mut others);
            if libc::CPU_COUNT(&others) > 0 {
                libc::sched_setaffinity(pid, std::mem::size_of_val(&others), &others);
            }
        }
    }

    /// Gives this process the whole set back.
    fn restore(&self) {
        // SAFETY: as above, on this process.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&self.0), &self.0) };
    }
}

/// The zygote's life: one request, a fork for each worker but the last, then the last worker.
fn serve(socket: OwnedFd, coordinator: libc::pid_t, cpus: Option<Cpus>) -> ! {
    // SAFETY: plain system calls on this process; the prctl takes a signal number.
    unsafe {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != coordinator {
            libc::_exit(0);
        }
    }
    tidy_descriptors(socket.as_raw_fd());
    raise_nofile();
    // What every worker would set up the same way (its logging, its table of tasks) is set up
    // once, here, before the request comes: the forked workers inherit it.
    powerpool_worker::diag::init_worker_logging();
    let registry = powerpool_worker::Registry::builtin();
    let shown = Shown::read();
    let Ok(len) = peek_len(&socket) else { exit(0) };
    // Exactly the request's size: a larger buffer would be zeroed, page by page, for nothing.
    let mut buf = vec![0u8; len.min(MAX_REQUEST)];
    let Ok(len) = recv(&socket, &mut buf) else { exit(0) };
    let Some((vars, workers)) = decode(&buf[..len]) else { exit(0) };
    drop(buf);
    if let Some(cpus) = &cpus {
        cpus.restore();
    }
    for (key, value) in vars {
        // The zygote has one thread: nothing reads the environment beside this.
        std::env::set_var(key, value);
    }
    let Some((&last, first)) = workers.split_last() else { exit(0) };
    let refused = refused_in_tests();
    for &(id, number) in first {
        if refused.contains(&number) {
            if send(&socket, &(-libc::EAGAIN).to_le_bytes()).is_err() {
                exit(0);
            }
            continue;
        }
        // Each worker's connection is a socket pair: the child keeps one end, the coordinator
        // is sent the other with the child's pid.
        let (ours, its) = match connection_pair() {
            Ok(pair) => pair,
            Err(err) => {
                let errno = -err.raw_os_error().unwrap_or(libc::EMFILE);
                if send(&socket, &errno.to_le_bytes()).is_err() {
                    exit(0);
                }
                continue;
            }
        };
        // The child is born with its own variables, and shows them (`Shown`) from its first
        // moment: whoever lists the coordinator's children finds a worker's environment.
        set_ids(id, number, its.as_raw_fd(), shown.as_ref());
        // SAFETY: a fork (no new stack: the child runs on a copy of this one) whose parent is
        // the coordinator; see the module's caveats on glibc. The child never returns here.
        let pid = unsafe {
            libc::syscall(libc::SYS_clone, libc::CLONE_PARENT | libc::SIGCHLD, 0, 0, 0, 0)
        };
        if pid == 0 {
            drop(socket);
            drop(ours);
            worker(registry, its);
        }
        // Neither end stays here: a later sibling must not inherit them.
        drop(its);
        let answered = if pid > 0 {
            // Without its connection (too many descriptors in flight), the pid alone still
            // goes: the coordinator ends and reaps the child, which is its own, and executes
            // a worker in its place.
            send_fd(&socket, &(pid as i32).to_le_bytes(), ours.as_raw_fd())
                .or_else(|_| send(&socket, &(pid as i32).to_le_bytes()))
        } else {
            let errno = -io::Error::last_os_error().raw_os_error().unwrap_or(libc::EAGAIN);
            send(&socket, &errno.to_le_bytes())
        };
        drop(ours);
        if answered.is_err() {
            exit(0);
        }
    }
    if refused.contains(&last.1) {
        let _ = send(&socket, &(-libc::EAGAIN).to_le_bytes());
        exit(0);
    }
    let Ok((ours, its)) = connection_pair() else { exit(0) };
    set_ids(last.0, last.1, its.as_raw_fd(), shown.as_ref());
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if send_fd(&socket, &me.to_le_bytes(), ours.as_raw_fd()).is_err() {
        exit(0);
    }
    drop(ours);
    drop(socket);
    worker(registry, its)
}

/// The slot numbers the tests want reported as not forked (`TEST_FAIL_FORK_ENV`, honoured only
/// with the hidden test tasks enabled); none otherwise.
fn refused_in_tests() -> Vec<u64> {
    use powerpool_shared::task::{TEST_FAIL_FORK_ENV, TEST_TASKS_ENV};
    if std::env::var_os(TEST_TASKS_ENV).is_none_or(|v| v != "1") {
        return Vec::new();
    }
    let numbers = std::env::var(TEST_FAIL_FORK_ENV).unwrap_or_default();
    numbers.split(',').filter_map(|n| n.trim().parse().ok()).collect()
}

/// Raises this process's soft limit on open descriptors to its hard limit. Each connection
/// sent to the coordinator counts against the sender's soft limit until it is received (the
/// kernel's limit on descriptors in flight), and the coordinator reads the first wave's
/// answers only when its run starts. The workers forked from here put the user's limit back
/// first thing (`NOFILE_SOFT`, set here to the limit found unless the run's request names one),
/// as executed ones do.
fn raise_nofile() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write only the struct we pass.
    let raised = unsafe {
        let found = libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0;
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        (found && soft < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0)
            .then_some(soft)
    };
    if let Some(soft) = raised {
        // The zygote has one thread: nothing reads the environment beside this.
        std::env::set_var(env::NOFILE_SOFT, soft.to_string());
    }
}

/// A connected pair of stream sockets, non-blocking (as the runtimes on both sides want them)
/// and closed on exec (a task's command inherits neither end): the coordinator's end first.
fn connection_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array we pass.
    let made = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if made != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Gives this process (and a child forked next) worker `id`'s variables, on show too: its
/// id, its number and the descriptor of its connection.
fn set_ids(id: u64, number: u64, conn: RawFd, shown: Option<&Shown>) {
    std::env::set_var(env::WORKER_ID, id.to_string());
    std::env::set_var(env::SLOT, number.to_string());
    std::env::set_var(env::CONNECTION_FD, conn.to_string());
    if let Some(shown) = shown {
        shown.show();
    }
}

/// Runs the worker whose variables are set, as an executed worker would run, and exits.
/// `conn` is its connection, named in its variables; it is the worker's to close now.
fn worker(registry: powerpool_worker::Registry, conn: OwnedFd) -> ! {
    // The worker takes the descriptor by its number (`CONNECTION_FD`).
    let _ = conn.into_raw_fd();
    // SAFETY: setpgid on this process only.
    unsafe { libc::setpgid(0, 0) };
    exit(powerpool_worker::run(registry))
}

/// Ends this process with `code`. Without the C library's exit handlers and the loader's
/// destructors: a forked worker's memory and descriptors are the kernel's to free, and its
/// output (stderr, unbuffered; stdout, flushed here) is already written.
fn exit(code: u8) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // SAFETY: _exit ends the process at once; nothing of ours runs after it.
    unsafe { libc::_exit(i32::from(code)) }
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

/// Registers a thread-local destructor on this thread before the fork. The C library resolves
/// the loader's function it needs for that lazily, at the first registration: done here, once,
/// rather than in every forked worker (each registers its own), which would pay the symbol
/// lookup and the page faults of the symbol tables it walks.
fn bind_thread_local_destructors() {
    thread_local!(static BOUND: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    BOUND.with(|_| {});
}

/// Whether this process has exactly one thread: procfs counts a process's threads in the link
/// count of its `task` directory (2 and one per thread), one `statx` where reading
/// `/proc/self/stat` costs the kernel four times as long to write out (7 against 30 µs here).
/// Anything unexpected (no `/proc`) reads as "not single-threaded": no zygote, workers are
/// executed.
fn single_threaded() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/task").is_ok_and(|task| task.nlink() == 3)
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid writes only the status we pass; the pid is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_process_is_not_single_threaded() {
        // The test harness runs tests on threads, so the zygote would refuse to start here.
        let _other =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(50)));
        assert!(!single_threaded());
    }
}
