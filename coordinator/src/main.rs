//! `powerpool`: see the crate documentation of the `powerpool` library.

fn main() -> std::process::ExitCode {
    powerpool::main()
}

/// tokio's multi-threaded scheduler is the one caller of `pow` (its busy-time average): given
/// here, the C maths library is no longer loaded at start-up.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
