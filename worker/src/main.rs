//! `powerpool-worker`: a standalone worker with the built-in tasks, for `powerpool --worker-cmd`.

fn main() -> std::process::ExitCode {
    powerpool_worker::main()
}
