//! Logging and panic text, shared by the worker process and the coordinator binary (which links
//! this crate for its hidden worker mode), so both look alike on stderr.

use std::panic::PanicHookInfo;

/// Logs to stderr without timestamps or targets, coloured only on a terminal. `RUST_LOG`
/// overrides `default_filter` (an `EnvFilter` directive such as `warn`).
pub fn init_logging(default_filter: &str) {
    init_logging_to(default_filter, std::io::stderr);
}

/// A worker's logging: warnings and errors to stderr, `RUST_LOG` for more. Set once: a worker
/// forked from a zygote that set it already keeps the zygote's.
pub fn init_worker_logging() {
    if !tracing::dispatcher::has_been_set() {
        init_logging("warn");
    }
}

/// [`init_logging`] through `writer` (the coordinator passes one that lifts its progress bar
/// out of the way of each line).
pub fn init_logging_to<W>(default_filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

/// A panic's message and where it happened, on one line.
pub fn panic_text(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    match info.location() {
        Some(loc) => format!("{text} at {}:{}", loc.file(), loc.line()),
        None => text,
    }
}
