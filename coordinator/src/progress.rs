//! The live progress bar on stderr (indicatif), and the one rule that keeps it readable: every
//! other line written to stderr while a bar is shown goes through [`suspend`], which lifts the
//! bar, writes, and redraws it, so logs and the bar never tear each other. The bar exists only
//! when stderr is a terminal and `-q` is not given; stdout never sees it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

/// Below this much elapsed time, or before the first result, there is no rate to estimate an
/// ETA from: the bar shows `-`, not `0s`.
const ETA_AFTER: Duration = Duration::from_secs(1);

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
        .with_key("rate", |s: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = w.write_str(&human_rate(s.per_sec()));
        })
        .with_key("eta_or_dash", |s: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = match eta(s.pos(), s.elapsed(), s.eta()) {
                Some(eta) if eta < Duration::from_secs(1) => w.write_str("<1s"),
                Some(eta) => write!(w, "{:#}", indicatif::HumanDuration(eta)),
                None => w.write_str("-"),
            };
        })
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(10))
        .with_style(style)
}

/// The bar for `map`: items written, rate, ETA; its message carries restarts.
pub fn for_map(items: u64) -> ProgressBar {
    install(styled(
        items,
        "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} items {rate} ETA {eta_or_dash} {msg}",
    ))
}

/// The bar for `fetch`: URLs done, rate; its message carries failures.
pub fn for_fetch(urls: u64) -> ProgressBar {
    install(styled(urls, "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} URLs {rate} {msg}"))
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

/// A rate with three significant digits and a unit: `850/s`, `12.3k/s`, `1.07M/s`.
fn human_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "-/s".to_owned();
    }
    let (value, unit) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| per_sec >= *scale)
        .map_or((per_sec, ""), |(scale, unit)| (per_sec / scale, unit));
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{unit}/s")
}

/// The ETA once there is something to estimate it from: a first result and a second of time.
fn eta(pos: u64, elapsed: Duration, eta: Duration) -> Option<Duration> {
    (pos > 0 && elapsed >= ETA_AFTER).then_some(eta)
}

/// Whether a bar may be shown: stderr is a terminal and the user did not ask for quiet.
pub fn wanted(quiet: bool) -> bool {
    !quiet && io::IsTerminal::is_terminal(&io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_three_significant_digits() {
        assert_eq!(human_rate(0.0), "-/s");
        assert_eq!(human_rate(f64::NAN), "-/s");
        assert_eq!(human_rate(2.71), "2.71/s");
        assert_eq!(human_rate(850.4), "850/s");
        assert_eq!(human_rate(1595.3944), "1.60k/s");
        assert_eq!(human_rate(12_345.0), "12.3k/s");
        assert_eq!(human_rate(56_000_000.0), "56.0M/s");
    }

    #[test]
    fn no_eta_before_the_first_result_and_the_first_second() {
        let second = Duration::from_secs(1);
        assert_eq!(eta(0, second * 5, Duration::ZERO), None);
        assert_eq!(eta(10, Duration::from_millis(200), Duration::ZERO), None);
        assert_eq!(eta(10, second * 2, second * 7), Some(second * 7));
    }
}
