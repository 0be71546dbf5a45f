//! SIGINT and SIGTERM, turned into messages for the supervisor.
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
    match LAST_CODE.load(Ordering::SeqCst) {
        exit_codes::SIGINT => Some(SIGINT),
        exit_codes::SIGTERM => Some(SIGTERM),
        _ => None,
    }
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

/// Listens for SIGINT and SIGTERM for as long as the returned receiver lives. Must be called
/// inside the runtime.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Interrupt>> {
    let (tx, rx) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            loop {
                let which = tokio::select! {
                    Some(()) = int.recv() => SIGINT,
                    Some(()) = term.recv() => SIGTERM,
                    else => break,
                };
                count(which);
                if tx.send(which).is_err() {
                    break;
                }
            }
        });
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
