//! The worker side of powerpool: what runs inside each worker process.
//!
//! # Theory of operation
//!
//! A worker is started by the coordinator, never by hand. It reads where and how to connect from
//! its environment ([`powerpool_shared::env`]: a socket's path, or, for a worker the
//! coordinator's zygote forked, the descriptor of the connection it was born with), arms the
//! parent-death signal, connects, says
//! `Hello` and learns its job (a task and an output format) from `Welcome`. It then answers each
//! `Run` chunk with the chunk's whole output in one frame, in the order the chunks arrived, until
//! `Shutdown` or end of file. A task that panics fails that chunk only: the panic message goes
//! back to the coordinator and the worker takes the next chunk.
//!
//! Command jobs are served by `commands.rs`: `run`'s jobs (`jobs.rs`), each a child of the
//! worker in a process group of its own, and `map --exec`'s line command (`lines.rs`), started
//! once and fed lines; `child.rs` makes sure no child outlives its worker.
//!
//! The coordinator's own binary runs this code in its hidden `worker` mode; the `powerpool-worker`
//! binary runs it standalone, for `--worker-cmd`. Either way the entry point is [`main`].

mod arena;
pub mod bytes;
mod child;
mod commands;
mod connection;
pub mod diag;
mod fault;
mod jobs;
mod ledger;
mod lines;
mod registry;
mod serve;
mod serve_typed;
pub mod typed;

pub use registry::{collatz, square, ChunkOutput, Registry};

use std::process::ExitCode;

/// Exit statuses of a worker process, as the coordinator reports them.
pub mod exit {
    /// Shut down as asked, or the coordinator went away.
    pub const OK: u8 = 0;
    /// Not started by a coordinator: the environment lacks what it needs.
    pub const USAGE: u8 = 2;
    /// The coordinator refused the handshake, or the job named an unknown task.
    pub const REFUSED: u8 = 3;
    /// The connection broke or carried something that is not the protocol.
    pub const PROTOCOL: u8 = 4;
    /// A command job broke its contract (`map --exec`: a line with no input outstanding).
    pub const BROKEN: u8 = 5;
}

/// Runs a worker process with the built-in tasks and returns its exit status.
pub fn main() -> ExitCode {
    main_with(Registry::builtin())
}

/// Runs a worker process with the tasks of `registry`.
pub fn main_with(registry: Registry) -> ExitCode {
    ExitCode::from(run(registry))
}

/// Whether this process was started by a powerpool coordinator as one of its workers: the
/// coordinator's variables are set. Whether that coordinator is still alive does not matter:
/// a worker whose coordinator is gone exits in [`run`], it never goes on as the program
/// itself. (A worker removes the variables once read, so what it starts never inherits them.)
pub fn is_worker_process() -> bool {
    std::env::var_os(powerpool_shared::env::SOCKET).is_some()
        && std::env::var_os(powerpool_shared::env::COORDINATOR_PID).is_some()
        && std::env::var_os(powerpool_shared::env::WORKER_ID).is_some()
}

/// Runs a worker process with the tasks of `registry` (and every typed task of the program);
/// returns its exit status.
pub fn run(registry: Registry) -> u8 {
    connection::restore_nofile_limit();
    init_logging();
    connection::arm_parent_death_signal();
    let config = match connection::Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("powerpool-worker: {err}");
            return exit::USAGE;
        }
    };
    if !connection::parent_is(config.coordinator_pid) {
        // The coordinator died before we armed the parent-death signal.
        return exit::OK;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("powerpool-worker: cannot start the runtime: {err}");
            return exit::PROTOCOL;
        }
    };
    runtime.block_on(serve::run(config, registry))
}

/// Warnings and errors to stderr; `RUST_LOG` (which workers inherit from the coordinator) can
/// ask for more.
fn init_logging() {
    diag::init_worker_logging();
    tracing::debug!(pid = std::process::id(), "worker started");
}
