//! `powerpool`: see the crate documentation of the `powerpool` library.

fn main() -> std::process::ExitCode {
    powerpool::main()
}

/// `pow`'s callers in this binary are tokio's multi-threaded scheduler (its busy-time average)
/// and the progress bar's time estimate (indicatif): given here, the C maths library is no
/// longer loaded at start-up. `build.rs` keeps the symbol local to the binary (a version
/// script): libraries loaded into the process still get the C library's.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
