//! SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2, turned into messages for the
//! supervisor.
//!
//! Every signal whose default action ends the process is handled the same way, so none can end
//! a run without its clean-up (no temporary `--output` file, no socket directory left behind):
//! the first stops dispatch and lets the units in flight finish, a second stops at once; the
//! exit status is 128 + the signal's number, as shells report it. (SIGKILL cannot be handled;
//! the workers' parent-death signal and the temporary names' randomness cover it.)
//!
//! The supervisor only sees a channel of [`Interrupt`]s, so tests can drive it without signals
//! and a library user can stop a run from code.

use crate::exit_codes;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use tokio::sync::mpsc;

/// Signals received so far, and the exit status of the last one: blocking code that polls
/// (waiting for a FIFO's reader) gives up when this count moves.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
static LAST_CODE: AtomicU8 = AtomicU8::new(0);

/// How many SIGINTs and SIGTERMs [`listen`] has received so far.
pub fn received() -> u32 {
    RECEIVED.load(Ordering::SeqCst)
}

/// The last interrupt received, if any.
pub fn last() -> Option<Interrupt> {
    let code = LAST_CODE.load(Ordering::SeqCst);
    HANDLED.iter().find(|i| i.code == code).copied()
}

fn count(which: Interrupt) {
    LAST_CODE.store(which.code, Ordering::SeqCst);
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

/// A request to stop the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// The signal's name, for messages.
    pub name: &'static str,
    /// The exit status a run stopped by it ends with.
    pub code: u8,
}

pub const SIGINT: Interrupt = Interrupt { name: "SIGINT", code: exit_codes::SIGINT };
pub const SIGTERM: Interrupt = Interrupt { name: "SIGTERM", code: exit_codes::SIGTERM };
pub const SIGHUP: Interrupt = Interrupt { name: "SIGHUP", code: exit_codes::SIGHUP };
pub const SIGQUIT: Interrupt = Interrupt { name: "SIGQUIT", code: exit_codes::SIGQUIT };
pub const SIGUSR1: Interrupt = Interrupt { name: "SIGUSR1", code: exit_codes::SIGUSR1 };
pub const SIGUSR2: Interrupt = Interrupt { name: "SIGUSR2", code: exit_codes::SIGUSR2 };

/// Every signal [`listen`] handles.
const HANDLED: [Interrupt; 6] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

/// Whether `sig` was set to be ignored when the process started (before any handler of ours).
#[cfg(unix)]
fn ignored_at_start(sig: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Unblocks every signal [`listen`] handles, in this thread (call it before any other thread
/// starts, so they all inherit the mask). A blocked signal is inherited across `exec` without
/// anyone asking for it (a background job of some shells or sandboxes starts with SIGTERM
/// blocked): it would stay pending, and `kill -TERM` would not stop the run nor reach its
/// workers. An *ignored* signal is the user's choice (`nohup`) and stays ignored: see
/// [`listen`].
pub fn unblock_handled() {
    #[cfg(unix)]
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only changes
    // this thread's mask and reads nothing else.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in
            [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2]
        {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Listens for SIGINT and SIGTERM for as long as the returned receiver lives. Must be called
/// inside the runtime.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Interrupt>> {
    let (tx, rx) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::quit(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
        ];
        for (kind, which) in kinds.into_iter().zip(HANDLED) {
            // A signal our parent set to be ignored stays ignored (`nohup`, a background job
            // of a non-interactive shell): the user asked for it to have no effect.
            if ignored_at_start(kind.as_raw_value()) {
                continue;
            }
            let mut stream = signal(kind)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    count(which);
                    if tx.send(which).is_err() {
                        break;
                    }
                }
            });
        }
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                count(SIGINT);
                if tx.send(SIGINT).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}
