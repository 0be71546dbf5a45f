//! The command line as typed: clap's derive types and the syntax-level parsers. `plan.rs` turns
//! these raw flags into a validated plan that the rest of the program trusts.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// A process pool: shards an integer range over worker processes and gathers the results in
/// order, while fetching URLs on the same async runtime.
#[derive(Debug, Parser)]
#[command(name = "powerpool", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every subcommand takes.
#[derive(Debug, Args)]
pub struct Globals {
    /// More logs on stderr (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl Cli {
    /// Parses the command line (`args`, the program's name first). A `map` command line is
    /// parsed first against `map`'s arguments and the global options alone: building every
    /// subcommand's arguments (`run`'s and `fetch`'s above all) is most of what clap costs at
    /// the start of a run, 0.38 ms against 0.20 ms (cold, as every run is). Whatever that does
    /// not parse, help and every error included, is parsed again against the whole interface,
    /// so each message is the one the whole interface gives; the unit tests check that both
    /// ways give the same `Cli`.
    pub fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
        // Only the global flags (no values) may come before the subcommand.
        let names_map = args.iter().skip(1).find(|a| !a.as_encoded_bytes().starts_with(b"-"))
            == Some(&std::ffi::OsString::from("map"));
        match names_map.then(|| Cli::map_only(&args)).flatten() {
            Some(cli) => Ok(cli),
            None => Cli::try_parse_from(args),
        }
    }

    fn map_only(args: &[std::ffi::OsString]) -> Option<Cli> {
        use clap::FromArgMatches;
        let command = Globals::augment_args(clap::Command::new("powerpool"))
            .subcommand(MapArgs::augment_args(clap::Command::new("map")))
            .subcommand_required(true);
        let matches = command.try_get_matches_from(args).ok()?;
        let ("map", map) = matches.subcommand()? else { return None };
        Some(Cli {
            globals: Globals::from_arg_matches(&matches).ok()?,
            command: Command::Map(MapArgs::from_arg_matches(map).ok()?),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply TASK to every integer of a range in worker processes; print the results in order.
    Map(MapArgs),
    /// GET URLs concurrently; print one line per URL, in input order.
    Fetch(FetchArgs),
    /// Run a command once per input (GNU parallel's interface): `run -- echo {} ::: a b c`.
    Run(RunArgs),
    /// Check shard files from `map --shard` or `run --shard` and stream their results in
    /// order, as one run.
    Merge(MergeArgs),
    /// List the built-in tasks.
    Tasks,
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) to stdout: `powerpool man > powerpool.1`, `powerpool man map >
    /// powerpool-map.1`; or write every page into a directory with --dir.
    Man {
        /// The subcommand whose page to print (map, fetch, merge, tasks, completions, man)
        /// [default: the top-level page].
        #[arg(value_name = "SUBCOMMAND")]
        page: Option<String>,
        /// Write every page (powerpool.1, powerpool-map.1, ...) into DIR instead, and list them.
        #[arg(long, value_name = "DIR", conflicts_with = "page")]
        dir: Option<PathBuf>,
    },
    /// Run as a worker process (started by powerpool itself).
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Args)]
pub struct MapArgs {
    /// The task to apply (see `powerpool tasks`); none with --exec.
    #[arg(required_unless_present = "exec")]
    pub task: Option<String>,
    /// Half-open input range START..END, like Python's range(START, END); any i64, negative too.
    #[arg(long, value_name = "START..END", value_parser = parse_range, allow_hyphen_values = true)]
    pub range: Option<(i64, i64)>,
    /// Read the inputs from FILE (`-` for stdin), one per line, instead of a range: for byte
    /// tasks (sha256, wc) and --exec. Each line is one item; results come one per line.
    #[arg(long, value_name = "FILE", conflicts_with = "range")]
    pub input: Option<PathBuf>,
    /// Persistent line workers: each worker starts COMMAND once, writes it one input line per
    /// item and reads back exactly one line per item (see docs/python.md).
    /// COMMAND is split into words like a shell would, without running one (unless --shell).
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["task", "range"])]
    pub exec: Option<String>,
    /// --exec: run COMMAND with `sh -c` instead of splitting it into words.
    #[arg(long, requires = "exec")]
    pub shell: bool,
    /// With --input or --exec: write results as they come instead of in input order.
    #[arg(long)]
    pub unordered: bool,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Inputs per chunk [default: automatic, see docs/cli.md].
    #[arg(long, value_name = "N", value_parser = parse_chunk_size)]
    pub chunk_size: Option<u64>,
    /// Output format: decimal lines, an exact sum, or 16-byte little-endian integers.
    #[arg(long, value_enum, default_value_t = OutputFormat::Lines)]
    pub format: OutputFormat,
    /// Write the output to PATH (created only when the run succeeds) instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// GET this URL concurrently with the map and report it on stderr (repeatable).
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub fetch: Vec<url::Url>,
    /// Timeout for each --fetch (e.g. 30s, 1500ms; a bare number is seconds) [default: 30s].
    /// Only with --fetch: the limit on a unit of work is --task-timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// On a failed item, go on: write every other result, list the failed items on stderr
    /// at the end and exit 5 (partial output). Without it the run stops before the first
    /// failed item, having written every result before it, and exits 4.
    #[arg(long)]
    pub keep_going: bool,
    /// With --keep-going and --format lines: what a failed input leaves in the output.
    /// `skip` (default): no line, so later lines move up; `mark`: the line `ERR:failed`, so
    /// line N is still input N.
    #[arg(long, value_enum, value_name = "WHAT", requires = "keep_going")]
    pub on_fail: Option<OnFail>,
    /// Compute only slice K of N (K from 0 to N-1) of the range, into a shard file for
    /// `powerpool merge` (needs --output). Fits Slurm arrays and Kubernetes indexed jobs.
    #[arg(long, value_name = "K/N", value_parser = crate::shard::parse_shard, requires = "output")]
    pub shard: Option<crate::shard::Shard>,
    /// At the end, write a JSON report of the run to PATH (counts, timings, failed inputs).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Write one JSON line per chunk attempt to PATH (range, worker pid, attempt, start,
    /// duration, outcome), like GNU parallel's --joblog.
    #[arg(long, value_name = "PATH")]
    pub joblog: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Replacement strings (as in GNU parallel): {} the input, {.} without \
extension, {/} basename, {//} dirname, {/.} basename without extension, {#} job number, {%} \
worker slot, {N} the N-th argument (source, column or -n input), also {N.} {N/} {N//} {N/.}. \
Without any, the arguments are appended. Exit status: 0 every job succeeded, 4 stopped by a \
failed job (--halt-on-error), 5 finished with failed jobs (listed on stderr).")]
pub struct RunArgs {
    /// The command and its arguments, then optional `::: A B C` sources (several sources give
    /// every combination). Put them after `--`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<std::ffi::OsString>,
    /// Read the inputs from FILE, one per line (default: stdin, unless ::: is given).
    #[arg(long, short = 'a', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Inputs are separated by NUL instead of newline (as from `find -print0`).
    #[arg(short = '0', long = "null")]
    pub null: bool,
    /// Split each input line into columns {1}, {2}... at SEP (a literal string; `\t` is a tab).
    #[arg(long, value_name = "SEP")]
    pub colsep: Option<String>,
    /// Give N inputs to each job.
    #[arg(short = 'n', long = "max-args", value_name = "N", value_parser = parse_per_job)]
    pub max_args: Option<usize>,
    /// Print the commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Run each command with `sh -c`: the command words are shell text, joined by spaces, and
    /// every replacement value is quoted for the shell.
    #[arg(long)]
    pub shell: bool,
    /// Prefix each output line with the job's arguments and a tab.
    #[arg(long)]
    pub tag: bool,
    /// Write each job's output as soon as it finishes instead of in input order.
    #[arg(long, short = 'u', conflicts_with = "keep_order")]
    pub unordered: bool,
    /// Keep input order (the default; accepted for GNU parallel's `-k`).
    #[arg(long, short = 'k')]
    pub keep_order: bool,
    /// Outputs waiting for their turn are kept in memory up to SIZE, then in temporary files.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub buffer: u64,
    /// Stop at the first failed job (exit 4); by default every job runs (exit 5 if any failed).
    #[arg(long)]
    pub halt_on_error: bool,
    /// Log every job to FILE in GNU parallel's tab-separated joblog format.
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,
    /// Skip the jobs --joblog FILE shows as run (GNU parallel's --resume); append to it.
    #[arg(long, requires = "joblog")]
    pub resume: bool,
    /// Like --resume, but run the jobs the joblog shows as failed again.
    #[arg(long, requires = "joblog", conflicts_with = "resume")]
    pub resume_failed: bool,
    /// Run only slice K of N (K from 0 to N-1) of the input lines, into a shard file for
    /// `powerpool merge` (needs --input FILE and --output).
    #[arg(long, value_name = "K/N", value_parser = crate::shard::parse_shard,
          requires_all = ["input", "output"])]
    pub shard: Option<crate::shard::Shard>,
    /// With --shard: the shard file to write.
    #[arg(long, short, value_name = "PATH", requires = "shard")]
    pub output: Option<PathBuf>,
    /// At the end, write a JSON report of the run to PATH.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub pool: PoolArgs,
}

fn parse_per_job(text: &str) -> Result<usize, String> {
    parse_count(text, 100_000).map(|n| n as usize)
}

/// The worker pool's flags, the same for every command that runs one.
#[derive(Debug, Args, Default)]
pub struct PoolArgs {
    /// Worker processes [default: the number of available cores]. `-j N` as in GNU parallel
    /// and make.
    #[arg(long, short = 'j', value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Worker executable to launch instead of this program's own worker mode.
    #[arg(long, value_name = "PATH")]
    pub worker_cmd: Option<PathBuf>,
    /// Times a failed unit of work is run again before it is split to find the failing
    /// input, and times that input is run again before it is given up [default: 2]. For
    /// `run`: times a failed job is run again [default: 0].
    #[arg(long, value_name = "N", value_parser = parse_retries)]
    pub retries: Option<u32>,
    /// End a worker whose unit of work runs longer than this (SIGTERM, then SIGKILL 500 ms
    /// later); the unit is retried like any failure. For `run` and `--exec`: per job or line,
    /// its process group gets SIGTERM, then SIGKILL 200 ms later. E.g. 500ms, 30s, 2m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub task_timeout: Option<Duration>,
    /// Replace each worker with a fresh process after it has run N units of work (Python's
    /// maxtasksperchild).
    #[arg(long, value_name = "N", value_parser = parse_max_tasks)]
    pub max_tasks_per_worker: Option<u64>,
    /// Replace a worker whose resident memory passes SIZE after a unit of work (e.g. 512M,
    /// 2G), as loky does; it finishes what it holds first.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_worker_memory: Option<u64>,
}

impl PoolArgs {
    /// The flags given, by name, for a command that accepts them only in some modes.
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let flags = [
            (self.workers.is_some(), "--workers"),
            (self.worker_cmd.is_some(), "--worker-cmd"),
            (self.retries.is_some(), "--retries"),
            (self.task_timeout.is_some(), "--task-timeout"),
            (self.max_tasks_per_worker.is_some(), "--max-tasks-per-worker"),
            (self.max_worker_memory.is_some(), "--max-worker-memory"),
        ];
        for (set, name) in flags {
            if set {
                given.push(name);
            }
        }
        given
    }
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Shard files written by `map --shard K/N --output FILE` or `run --shard K/N --output
    /// FILE`, in any order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format [default: the shards' own]. bin and lines shards convert to any format;
    /// sum shards only to sum.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Write the merged output to PATH (created only when the merge succeeds) instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The URLs to GET (http or https).
    #[arg(value_name = "URL", value_parser = parse_url, required_unless_present = "from")]
    pub urls: Vec<url::Url>,
    /// Also read URLs from FILE, one per line (`-` for stdin; blank lines and lines starting
    /// with `#` are skipped); they come after the URLs given as arguments.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value = "100", value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// Timeout for each request: connect, headers and body together (e.g. 30s, 1500ms; a bare
    /// number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The largest response body accepted (e.g. 512K, 100M, 2G; binary units); a longer one
    /// ends that request as ERR:too-large.
    #[arg(long, value_name = "SIZE", default_value = "100M", value_parser = parse_size)]
    pub max_body: u64,
    /// At the end, write a JSON report to PATH (status counts, latency percentiles, rate).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Compute each 2xx body with byte task TASK (sha256, wc; see `powerpool tasks`) in worker
    /// processes; its result ends the URL's line.
    #[arg(long, value_name = "TASK")]
    pub process: Option<String>,
    /// Bytes fetched but not yet computed, at most (--process): fetching waits when it is spent.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub budget: u64,
    /// The worker pool of --process (each body is one unit of work; a body that still fails
    /// after its retries gets ERR:task).
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// The default `--timeout` of each fetch: 30 s.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `--max-body`: 100 MiB.
pub const DEFAULT_MAX_BODY: u64 = 100 << 20;

/// Parses a size in bytes: digits and an optional binary unit `K`, `M`, `G` (also `KiB`, `MiB`,
/// `GiB`); at least 1 byte, at most 1 TiB.
///
/// ```
/// use powerpool::cli::parse_size;
/// assert_eq!(parse_size("512K"), Ok(512 << 10));
/// assert_eq!(parse_size("100MiB"), Ok(100 << 20));
/// assert!(parse_size("0").is_err() && parse_size("1.5G").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a size (for example 65536, 512K, 100M, 2G)");
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(bad)?;
    if bytes == 0 || bytes > 1 << 40 {
        return Err(format!("'{text}' must be at least 1 byte and at most 1 TiB"));
    }
    Ok(bytes)
}

/// What a failed input leaves in `lines` output under `--keep-going`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OnFail {
    /// Nothing.
    #[default]
    Skip,
    /// The line `ERR:failed`.
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One decimal result per line.
    Lines,
    /// One line: the exact sum of all results.
    Sum,
    /// Each result as a 16-byte little-endian two's-complement integer.
    Bin,
}

pub use crate::pool::MAX_WORKERS;

/// Parses `START..END`: two i64 in decimal (an optional sign, digits, `_` between digits).
///
/// ```
/// use powerpool::cli::parse_range;
/// assert_eq!(parse_range("-5..1_000"), Ok((-5, 1000)));
/// assert!(parse_range("5..").is_err());
/// ```
pub fn parse_range(text: &str) -> Result<(i64, i64), String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| "expected START..END, for example 0..100000".to_owned())?;
    Ok((parse_i64("START", start)?, parse_i64("END", end)?))
}

fn parse_i64(what: &str, text: &str) -> Result<i64, String> {
    if text.is_empty() {
        return Err(format!("{what} is missing (expected START..END, for example 0..100000)"));
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(format!("{what} '{text}' is not an integer"));
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    clean.parse().map_err(|_| {
        format!("{what} '{text}' is outside the 64-bit range {}..={}", i64::MIN, i64::MAX)
    })
}

fn parse_count(text: &str, max: u64) -> Result<u64, String> {
    let n: u64 = text.parse().map_err(|_| format!("'{text}' is not a positive integer"))?;
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    if n > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(n)
}

fn parse_workers(text: &str) -> Result<usize, String> {
    parse_count(text, MAX_WORKERS as u64).map(|n| n as usize)
}

fn parse_chunk_size(text: &str) -> Result<u64, String> {
    parse_count(text, powerpool_shared::MAX_CHUNK_ITEMS)
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    parse_count(text, 100_000).map(|n| n as usize)
}

fn parse_retries(text: &str) -> Result<u32, String> {
    let n: u32 = text.parse().map_err(|_| format!("'{text}' is not a count from 0 to 100"))?;
    if n > 100 {
        return Err("must be at most 100".to_owned());
    }
    Ok(n)
}

fn parse_max_tasks(text: &str) -> Result<u64, String> {
    parse_count(text, u64::MAX)
}

/// The longest duration any flag accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Parses a duration: a decimal number and a unit (`ms`, `s`, `m`, `h`); a bare number is
/// seconds. It must be at least 1 ms and at most a day.
///
/// ```
/// use powerpool::cli::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
/// assert!(parse_duration("0s").is_err() && parse_duration("5 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not a duration (for example 500ms, 30s, 2m, 1h)");
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let well_formed = !number.is_empty()
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit())
        && number.len() <= 20;
    if !well_formed {
        return Err(bad());
    }
    // Exact decimal arithmetic in nanoseconds: no float rounding at the edges.
    let unit_ns: u128 = match unit {
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
    let mut nanos = int * unit_ns;
    if !frac.is_empty() {
        let scale = 10u128.pow(frac.len() as u32);
        nanos += frac.parse::<u128>().map_err(|_| bad())? * unit_ns / scale;
    }
    if nanos < 1_000_000 || nanos > MAX_DURATION.as_nanos() {
        return Err(format!("'{text}' must be at least 1ms and at most 24h"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses an absolute http or https URL.
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("the URL has no host".to_owned()),
        other => Err(format!("unsupported scheme '{other}' (only http and https)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_command_line_parses_the_same_through_map_alone_as_through_the_whole_interface() {
        let lines: &[&[&str]] = &[
            &["map", "square", "--range", "0..100000", "--workers", "4"],
            &["-v", "map", "square", "--range=-5..5", "-j", "2", "-vv"],
            &["map", "collatz", "--range", "1..10", "--quiet", "--chunk-size", "3"],
            &["map", "square", "--range", "0..9", "--format", "sum", "--output", "o.txt"],
            &["map", "square", "--range", "0..9", "--keep-going", "--on-fail", "mark"],
            &["map", "square", "--range", "0..9", "--retries", "2", "--task-timeout", "3s"],
            &["map", "square", "--range", "0..9", "--max-tasks-per-worker", "5", "--unordered"],
            &["map", "--exec", "echo {}", "--input", "in.txt", "--shell", "--joblog", "j"],
            &["map", "square", "--range=0..9", "--fetch=http://127.0.0.1:1/", "--timeout=1s"],
            &["map", "square", "--range", "0..9", "--shard", "1/2", "-o", "x", "--report", "r"],
            // Parsed; the plan refuses it (no input).
            &["map", "square"],
            // Refused, or not `map`: parsed (and told) by the whole interface.
            &["map", "--range", "0..9"],
            &["map", "square", "--range", "9"],
            &["map", "square", "--range", "0..9", "--on-fail", "skip"],
            &["map", "square", "--range", "0..9", "-v", "-q"],
            &["map", "--help"],
            &["--version"],
            &["run", "--", "echo", "{}", ":::", "a"],
            &["tasks"],
            &["worker"],
            &[],
        ];
        let mut through_map = 0;
        for line in lines {
            let args: Vec<std::ffi::OsString> =
                std::iter::once("powerpool").chain(line.iter().copied()).map(Into::into).collect();
            through_map += usize::from(Cli::map_only(&args).is_some());
            let whole = Cli::try_parse_from(args.clone());
            match (Cli::parse_args(args), whole) {
                (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{line:?}"),
                (Err(a), Err(b)) => {
                    assert_eq!((a.kind(), a.to_string()), (b.kind(), b.to_string()), "{line:?}");
                }
                (a, b) => panic!("{line:?}: {a:?} against the whole interface's {b:?}"),
            }
        }
        assert_eq!(through_map, 11, "every map line clap accepts took the short way");
    }

    #[test]
    fn ranges_parse_with_signs_and_edges() {
        assert_eq!(parse_range("0..100000"), Ok((0, 100000)));
        assert_eq!(parse_range("-5..-1"), Ok((-5, -1)));
        assert_eq!(parse_range("+1..1_000"), Ok((1, 1000)));
        assert_eq!(
            parse_range("-9223372036854775808..9223372036854775807"),
            Ok((i64::MIN, i64::MAX))
        );
        for bad in [
            "5..",
            "..5",
            "a..b",
            "5",
            "1...2",
            "9223372036854775808..0",
            "1..2..3",
            "-..1",
            "_1..2",
            "1e3..2",
            "1__0..15",
            "0..1__5",
        ] {
            assert!(parse_range(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn counts_refuse_zero_and_excess() {
        assert_eq!(parse_workers("4"), Ok(4));
        assert!(parse_workers("0").is_err());
        assert!(parse_workers("513").is_err());
        assert!(parse_workers("-1").is_err());
        assert!(parse_chunk_size("0").is_err());
        assert!(parse_concurrency("0").is_err());
    }

    #[test]
    fn durations_need_a_sane_size_and_a_known_unit() {
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        for bad in
            ["", "s", "ms", "-1s", "0", "0.0001s", "25h", "1.2.3s", "1e3", "1 s", "1sec", ".s"]
        {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_retries("0"), Ok(0));
        assert!(parse_retries("101").is_err() && parse_retries("-1").is_err());
        assert!(parse_max_tasks("0").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,40}") {
            let _ = parse_range(&text);
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
            let _ = parse_url(&text);
        }

        #[test]
        fn every_range_prints_and_parses_back(start: i64, end: i64) {
            proptest::prop_assert_eq!(parse_range(&format!("{start}..{end}")), Ok((start, end)));
        }

        #[test]
        fn durations_in_milliseconds_parse_exactly(ms in 1u64..=86_400_000) {
            let parsed = parse_duration(&format!("{ms}ms")).map(|d| d.as_millis());
            proptest::prop_assert_eq!(parsed, Ok(u128::from(ms)));
        }
    }

    #[test]
    fn urls_must_be_http_or_https() {
        assert!(parse_url("http://127.0.0.1:8080/x").is_ok());
        assert!(parse_url("https://example.com").is_ok());
        assert!(parse_url("ftp://example.com").is_err());
        assert!(parse_url("file:///etc/passwd").is_err());
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("http://").is_err());
    }
}
