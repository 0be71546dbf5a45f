//! The live progress bar on stderr (indicatif), and the one rule that keeps it readable: every
//! other line written to stderr while a bar is shown goes through [`suspend`], which lifts the
//! bar, writes, and redraws it, so logs and the bar never tear each other. The bar exists only
//! when stderr is a terminal and `-q` is not given; stdout never sees it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn current() -> Option<ProgressBar> {
    BAR.lock().ok().and_then(|bar| bar.clone())
}

/// Runs `f` (which writes to stderr) with the bar, if any, lifted out of the way.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match current() {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// stderr for the logger: each write goes through [`suspend`].
#[derive(Debug, Clone, Copy)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        suspend(|| io::stderr().write_all(buf)).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

fn install(bar: ProgressBar) -> ProgressBar {
    bar.enable_steady_tick(Duration::from_millis(200));
    if let Ok(mut slot) = BAR.lock() {
        *slot = Some(bar.clone());
    }
    bar
}

fn styled(len: u64, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(10))
        .with_style(style)
}

/// The bar for `map`: items written, rate, ETA; its message carries restarts.
pub fn for_map(items: u64) -> ProgressBar {
    install(styled(
        items,
        "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} items {per_sec} ETA {eta} {msg}",
    ))
}

/// The bar for `fetch`: URLs done, rate; its message carries failures.
pub fn for_fetch(urls: u64) -> ProgressBar {
    install(styled(urls, "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} URLs {per_sec} {msg}"))
}

/// The bar for `run` and line inputs: items done, rate, and a length when it is known.
pub fn for_run(items: Option<u64>) -> ProgressBar {
    match items {
        Some(n) => for_map(n),
        None => {
            let bar = styled(0, "{spinner} {elapsed_precise} {human_pos} done {per_sec} {msg}");
            bar.set_length(u64::MAX);
            install(bar)
        }
    }
}

/// Removes the bar from the screen and from [`suspend`]'s reach.
pub fn finish() {
    if let Ok(mut slot) = BAR.lock() {
        if let Some(bar) = slot.take() {
            bar.finish_and_clear();
        }
    }
}

/// Whether a bar may be shown: stderr is a terminal and the user did not ask for quiet.
pub fn wanted(quiet: bool) -> bool {
    !quiet && io::IsTerminal::is_terminal(&io::stderr())
}
