//! powerpool: a process pool in the spirit of Python's `multiprocessing.Pool` and `asyncio`.
//!
//! # Theory of operation
//!
//! `main` parses the command line ([`cli`]) and validates it once into a plan ([`plan`]). Each
//! command is then a *client* of one engine, the [`pool`]: it describes a job (a task over an
//! integer range, or over a stream of opaque items) and a pool configuration, and consumes the
//! outcomes. `map` ([`map`]) runs a range and writes the outcomes in order ([`output`]);
//! `fetch --process` ([`fetch`]) turns fetched bodies into items; the typed library
//! ([`typed`]) runs the caller's own functions over their own types. The pool imports none of
//! them.
//!
//! Inside the pool, a private socket directory, worker processes (this very executable in its
//! hidden `worker` mode, or `--worker-cmd`), one task per worker owning its process and
//! connection, and one supervisor loop whose decisions (which unit to which idle worker, what
//! to re-run when a worker dies, when to stop) are a pure state machine. Dispatch stays within
//! a small window of what the consumer has taken, so memory is bounded however long the input.
//! HTTP fetches ([`fetch`]) run on the same runtime, beside the pool.
//!
//! Errors are [`errors::Error`]; this file alone prints them, as one line on stderr, and maps
//! them to the exit statuses of [`exit_codes`].
//!
//! # As a library
//!
//! Your own function over your own serde types, in worker processes that are this same
//! executable: [`task!`] declares it, [`init`] (first in `main`) serves it in a worker,
//! [`Pool`] maps it, blocking or async; see [`typed`]. Workers for `--worker-cmd` with custom
//! integer or byte tasks are built on the `powerpool-worker` crate.

pub mod chunk;
pub mod cli;
pub mod errors;
pub mod exit_codes;
pub mod fetch;
pub mod joblog;
pub mod limits;
pub mod lines;
pub mod man;
pub mod map;
pub mod merge;
pub mod outfile;
pub mod output;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod report;
pub mod run;
pub mod shard;
pub mod shard_run;
pub mod signal;

pub mod typed;

pub use errors::Error;
#[doc(hidden)]
pub use typed::__private;
pub use typed::{
    init, Map, MapStream, Pool, PoolBuilder, Progress, Submitted, Task, TaskError, Unordered,
};

use cli::{Cli, Command};
use std::process::ExitCode;

/// The `powerpool` program: parses arguments, runs, prints any error, returns the exit status.
pub fn main() -> ExitCode {
    // Worker mode first, before clap builds the whole command line: every worker start pays
    // for what happens here, and `worker` takes no arguments.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "worker") && args.next().is_none() {
        return powerpool_worker::main();
    }
    // Before any thread or worker exists, so that all of them inherit the mask, and the
    // allocator's settings.
    signal::unblock_handled();
    keep_freed_memory();
    let words = Words::new(std::env::args_os().skip(1));
    if may_fork_workers(&words) {
        // First, while this process has one thread and before clap has filled the heap: the
        // zygote's children copy its page tables, and fault in the pages they write (see
        // `pool::zygote`). Measured against a zygote forked after parsing: 0.95x the time of
        // an empty run, 0.98x the canonical job's.
        pool::zygote::start();
        // And at once its first wave, when the command line names it (`map --range`): the
        // zygote forks the workers while clap parses and the run is set up (0.97x the time
        // of the canonical job, 60 interleaved pairs); a guess the plan disagrees with costs
        // a worker ended or executed, as for a wave asked later. Not for a run its limits
        // will refuse or cut down (its workers would fail as they start, each with its own
        // message), nor for a wave so large that forking it for a command line clap then
        // refuses would be felt (such a run asks after its plan, as any other).
        if let Some(count) = early_wave(&words).filter(|&count| {
            count <= EARLY_WAVE_MAX
                && limits::files_fit(count)
                && limits::check_processes(RUNTIME_THREADS_MAX + 1, count).is_ok()
        }) {
            pool::zygote::ask_early(count);
        }
    }
    let code = parse_and_run();
    // Whatever the path (help, an error, a run that needed no worker): no zygote is left.
    pool::zygote::dismiss();
    code
}

/// The command line's words as given, read before clap parses them (a word that is not
/// UTF-8 reads as empty: no guess below depends on one).
struct Words(Vec<String>);

impl Words {
    fn new(args: impl Iterator<Item = std::ffi::OsString>) -> Words {
        Words(args.map(|a| a.into_string().unwrap_or_default()).collect())
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The first word that is not an option.
    fn command(&self) -> Option<&str> {
        self.iter().find(|a| !a.starts_with('-'))
    }

    /// Whether `flag` is given, alone or as `flag=value`.
    fn has(&self, flag: &str) -> bool {
        self.iter()
            .any(|a| a.strip_prefix(flag).is_some_and(|v| v.is_empty() || v.starts_with('=')))
    }

    /// The value of `long` (`--long V`, `--long=V`) or `short` (`-s V`, `-sV`, `-s=V`); of
    /// the last one, if repeated (which clap refuses).
    fn value(&self, long: &str, short: Option<&str>) -> Option<&str> {
        let mut found = None;
        for (i, a) in self.iter().enumerate() {
            if let Some(v) = a.strip_prefix(long).and_then(|v| v.strip_prefix('=')) {
                found = Some(v);
            } else if a == long || Some(a) == short {
                found = self.0.get(i + 1).map(String::as_str);
            } else if let Some(v) = short.and_then(|s| a.strip_prefix(s)).filter(|v| !v.is_empty())
            {
                found = Some(v.strip_prefix('=').unwrap_or(v));
            }
        }
        found
    }
}

/// Whether the command line may ask for a pool of this program's own workers, read before
/// clap parses it: the first word that is not an option is `map`, `run` or `fetch` (with
/// `--process`), and `--worker-cmd` is nowhere. A wrong guess costs nothing but time: a
/// zygote started for nothing is dismissed, and a run without one executes its workers.
fn may_fork_workers(words: &Words) -> bool {
    let own = !words.has("--worker-cmd");
    match words.command() {
        Some("map" | "run") => own,
        Some("fetch") => own && words.has("--process"),
        _ => false,
    }
}

/// The largest first wave `main` asks for before the command line is parsed.
const EARLY_WAVE_MAX: usize = 32;

/// The first wave of a `map --range A..B` run, read before clap parses the command line: as
/// many workers as `--workers` (or `-j`) says, or the default, but no more than there are
/// items. `None` for anything else, or a command line it does not follow.
fn early_wave(words: &Words) -> Option<usize> {
    if words.command() != Some("map")
        || words.iter().any(|a| matches!(a, "-h" | "--help" | "--exec" | "--input"))
    {
        return None;
    }
    let (start, end) = words.value("--range", None)?.split_once("..")?;
    let items = end.parse::<i64>().ok()?.checked_sub(start.parse::<i64>().ok()?)?;
    let workers = match words.value("--workers", Some("-j")) {
        Some(n) => n.parse::<usize>().ok().filter(|&n| n <= pool::MAX_WORKERS)?,
        None => pool::default_workers(),
    };
    Some(workers.min(usize::try_from(items).ok()?)).filter(|&n| n > 0)
}

fn parse_and_run() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(err) => return clap_exit(&err),
    };
    if matches!(cli.command, Command::Worker) {
        return powerpool_worker::main();
    }
    if !forks_workers(&cli.command) {
        // The guess above was wrong: this command starts no worker of ours.
        pool::zygote::dismiss();
    }
    install_panic_hook();
    init_logging(cli.globals.verbose, cli.globals.quiet);
    let result = run(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader went away (`| head`): not an error, as for ripgrep.
            ExitCode::SUCCESS
        }
        Err(err) => {
            if !matches!(err, Error::FetchFailed { .. }) {
                eprintln!("powerpool: error: {err}");
            } else {
                tracing::warn!("{err}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let quiet = cli.globals.quiet;
    match cli.command {
        Command::Tasks => {
            let mut text = format!("{:<12} {:<6} ABOUT\n", "TASK", "INPUT");
            for task in powerpool_shared::task::public() {
                text += &format!("{:<12} {:<6} {}\n", task.name, task.kind.name(), task.about);
            }
            output::write_stdout(text.as_bytes())
        }
        Command::Map(args) if args.exec.is_some() || args.input.is_some() => {
            limits::check_files()?;
            let mut plan = lines::LinesPlan::from_args(args)?;
            plan.progress = progress::wanted(quiet);
            let rt = runtime()?;
            let result = rt.block_on(async {
                let mut interrupts = signal::listen().map_err(Error::Runtime)?;
                lines::run(plan, &mut interrupts).await
            });
            rt.shutdown_background();
            result
        }
        Command::Run(args) => {
            limits::check_files()?;
            let mut plan = run::RunPlan::from_args(args)?;
            plan.progress = progress::wanted(quiet);
            let rt = runtime()?;
            let result = rt.block_on(async {
                let mut interrupts = signal::listen().map_err(Error::Runtime)?;
                run::run(plan, &mut interrupts).await
            });
            rt.shutdown_background();
            result
        }
        Command::Map(args) => {
            let mut plan = plan::MapPlan::from_args(args)?;
            plan.progress = progress::wanted(quiet);
            let files = limits::raise_nofile();
            limits::check_files()?;
            let connections = plan.fetch.as_ref().map_or(0, |f| f.concurrency);
            plan.pool.workers = limits::fit_workers(plan.pool.workers, connections, files);
            let files = plan.output.is_some() || plan.joblog.is_some() || plan.report.is_some();
            let flavor = map_flavor(plan.format, plan.fetch.is_some(), files);
            // The runtime's threads and the output thread; a worker is one process each.
            let threads = match flavor {
                Flavor::CurrentThread => 1,
                Flavor::MultiThread => runtime_threads() + 1,
            };
            // Workers of a wave asked early are counted already: they run, or were made room
            // for before they were asked.
            let to_start = plan.pool.workers.saturating_sub(pool::zygote::asked_early());
            limits::check_processes(threads, to_start)?;
            // The first workers are forked now, while the runtime and the output are set up,
            // unless `main` asked for them already (then the zygote is taken: this does
            // nothing).
            pool::zygote::ask_early(pool::first_wave(plan.pool.workers, &plan.chunks));
            let rt = match flavor {
                Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?,
                Flavor::MultiThread => runtime()?,
            };
            let result = rt.block_on(async {
                let mut interrupts = signal::listen().map_err(Error::Runtime)?;
                map::run(plan, &mut interrupts).await
            });
            // Every worker is reaped and the output flushed by now: waiting for idle runtime
            // threads to wind down would only add milliseconds to every run.
            rt.shutdown_background();
            result
        }
        Command::Fetch(args) => {
            let mut plan = plan::FetchPlan::from_args(args)?;
            plan.progress = progress::wanted(quiet);
            let files = limits::raise_nofile();
            limits::check_files()?;
            let workers = plan.process.as_ref().map_or(0, |p| p.pool.workers);
            plan.concurrency = limits::fit_concurrency(plan.concurrency, workers, files);
            // The runtime's threads and one for name lookups (tokio's blocking pool).
            limits::check_processes(runtime_threads() + 1, workers)?;
            let rt = runtime()?;
            let result = rt.block_on(async {
                let mut interrupts = signal::listen().map_err(Error::Runtime)?;
                fetch::command(plan, &mut interrupts).await
            });
            rt.shutdown_background();
            result
        }
        Command::Merge(args) => merge::run(args),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a write error.
            let mut script = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "powerpool", &mut script);
            output::write_stdout(&script)
        }
        Command::Man { page, dir: None } => output::write_stdout(&man::render(page.as_deref())?),
        Command::Man { dir: Some(dir), .. } => {
            let names = man::write_all(&dir)?;
            output::write_stdout(format!("{}\n", names.join("\n")).as_bytes())
        }
        Command::Worker => unreachable!("handled before logging starts"),
    }
}

/// Whether the command runs a pool of this program's own workers, whose first wave the zygote
/// forks (`--worker-cmd` workers are executed).
fn forks_workers(command: &Command) -> bool {
    match command {
        Command::Map(args) => args.pool.worker_cmd.is_none(),
        Command::Run(args) => args.pool.worker_cmd.is_none(),
        Command::Fetch(args) => args.process.is_some() && args.pool.worker_cmd.is_none(),
        _ => false,
    }
}

/// Result frames are large (up to a few MiB) and short-lived. glibc serves such blocks with
/// fresh `mmap`s, or trims them back to the kernel when freed, so every frame would pay its
/// page faults again (expensive on VMs; a third of the coordinator's time at 1e9 `bin` items).
/// Keeping freed blocks for reuse costs nothing in memory: the reorder window bounds how many
/// frames live at once. Set before the zygote is forked, so its workers keep theirs too
/// (without it, each gave its freed buffers back to the kernel).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Which runtime a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// All tasks on the calling thread: no thread to start, no wake-up that crosses threads.
    CurrentThread,
    /// Worker threads, 2 to 4 ([`runtime_threads`]).
    MultiThread,
}

/// `map`'s runtime. Gathering results in order and handing them to the output thread is one
/// thread's work: on the caller's thread a run saves the runtime's threads and their wake-ups
/// (the canonical job took 0.90x the time, 1e7 and 1e8 lines 0.95x-0.97x, 20 and 4 interleaved
/// pairs on 2 vCPUs). Binary results move gigabytes through the sockets, which several threads
/// read faster; HTTP fetches beside the map want the threads too; and a run that opens files
/// (`--output`, `--joblog`, `--report`) may wait for a FIFO's reader in blocking code that
/// polls for signals, which only another thread can receive meanwhile.
fn map_flavor(format: powerpool_shared::Format, fetch: bool, files: bool) -> Flavor {
    if fetch || files || format == powerpool_shared::Format::Bin {
        Flavor::MultiThread
    } else {
        Flavor::CurrentThread
    }
}

/// The most worker threads a runtime of ours has ([`runtime_threads`]). The early wave's
/// process check counts these rather than ask for the cores, which reads the cgroup's CPU
/// quota from /proc and /sys (eight system calls) on the path of every run that names its
/// worker count.
const RUNTIME_THREADS_MAX: usize = 4;

/// The runtime's worker threads: 2 to 4, by the cores available.
fn runtime_threads() -> usize {
    pool::default_workers().clamp(2, RUNTIME_THREADS_MAX)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_threads())
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// clap's errors are several lines (usage, tips): keep the first paragraph as one line, with
/// exit status 2; help and version go to stdout with status 0.
fn clap_exit(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let printed = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                return ExitCode::from(exit_codes::USAGE);
            }
            match printed {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("powerpool: error: {}", Error::Output(e));
                    ExitCode::from(exit_codes::FAILURE)
                }
                _ => ExitCode::SUCCESS,
            }
        }
        _ => {
            let text = err.render().to_string();
            let first: Vec<&str> =
                text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let mut line = first.join(" ");
            // clap's "did you mean" comes as a tip in a later paragraph: it stays, on the line.
            if let Some(tip) = text.lines().map(str::trim).find(|l| l.starts_with("tip: ")) {
                line = format!("{line}; {tip}");
            }
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("powerpool: error: {line} (see --help)");
            ExitCode::from(exit_codes::USAGE)
        }
    }
}

/// A bug must still end in one line, never a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = powerpool_worker::diag::panic_text(info);
        eprintln!("powerpool: internal error: {text} (please report this)");
    }));
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    powerpool_worker::diag::init_logging_to(&format!("powerpool={level},warn"), || {
        progress::Stderr
    });
}

#[cfg(test)]
mod tests {
    use super::{may_fork_workers, Words};

    fn guess(args: &[&str]) -> bool {
        may_fork_workers(&Words::new(args.iter().map(std::ffi::OsString::from)))
    }

    #[test]
    fn map_runs_on_one_thread_unless_it_moves_binary_results_or_fetches() {
        use super::{map_flavor, Flavor};
        use powerpool_shared::Format;
        assert_eq!(map_flavor(Format::Lines, false, false), Flavor::CurrentThread);
        assert_eq!(map_flavor(Format::Sum, false, false), Flavor::CurrentThread);
        assert_eq!(map_flavor(Format::Bin, false, false), Flavor::MultiThread);
        assert_eq!(map_flavor(Format::Lines, true, false), Flavor::MultiThread, "--fetch");
        assert_eq!(map_flavor(Format::Lines, false, true), Flavor::MultiThread, "a FIFO may block");
    }

    #[test]
    fn the_zygote_is_started_for_the_commands_that_fork_our_own_workers() {
        assert!(guess(&["map", "square", "--range", "0..9"]));
        assert!(guess(&["-v", "run", "--", "echo", "{}"]));
        assert!(guess(&["fetch", "--process", "sha256", "http://127.0.0.1/"]));
        assert!(guess(&["fetch", "--process=sha256", "http://127.0.0.1/"]));
        assert!(!guess(&["map", "square", "--worker-cmd", "./w"]));
        assert!(!guess(&["map", "square", "--worker-cmd=./w"]));
        assert!(!guess(&["fetch", "http://127.0.0.1/"]), "no pool without --process");
        assert!(!guess(&["merge", "a.shard"]));
        assert!(!guess(&["tasks"]));
        assert!(!guess(&["--help"]));
        assert!(!guess(&[]));
    }

    #[test]
    fn the_first_wave_is_read_from_a_map_range_command_line_or_not_at_all() {
        use super::early_wave;
        let wave =
            |args: &[&str]| early_wave(&Words::new(args.iter().map(std::ffi::OsString::from)));
        let cores = crate::pool::default_workers();
        assert_eq!(wave(&["map", "square", "--range", "0..100000", "--workers", "4"]), Some(4));
        assert_eq!(wave(&["map", "square", "--range=0..100000", "--workers=3"]), Some(3));
        assert_eq!(wave(&["-q", "map", "square", "-j2", "--range", "-5..5"]), Some(2));
        assert_eq!(wave(&["map", "square", "-j", "8", "--range", "0..3"]), Some(3), "items");
        assert_eq!(wave(&["map", "square", "-j", "2", "-j", "5", "--range", "0..9"]), Some(5));
        assert_eq!(wave(&["map", "square", "--range", "0..100000"]), Some(cores));
        // What it does not follow, the plan decides later, as without an early wave.
        assert_eq!(wave(&["map", "square", "--range", "0..0", "-j", "4"]), None, "no items");
        assert_eq!(wave(&["map", "square", "--range", "9..0"]), None);
        assert_eq!(wave(&["map", "square", "--range", "0..9", "-j", "many"]), None);
        assert_eq!(wave(&["map", "square", "--range", "0..9", "-j", "9999"]), None);
        assert_eq!(wave(&["map", "square", "--range", "0..x"]), None);
        assert_eq!(wave(&["map", "square", "--range", "0..9", "--help"]), None);
        assert_eq!(wave(&["map", "cat", "--exec", "cat", "--range", "0..9"]), None);
        assert_eq!(wave(&["map", "square"]), None, "items from stdin");
        assert_eq!(wave(&["run", "--range", "0..9", "--", "echo"]), None);
        assert_eq!(wave(&[]), None);
    }
}
