//! `powerpool`: see the crate documentation of the `powerpool` library.

fn main() -> std::process::ExitCode {
    powerpool::main()
}
