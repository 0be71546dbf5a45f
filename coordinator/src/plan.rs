//! Raw flags validated once into plans that the rest of the program trusts.

use crate::chunk::{self, Chunks};
use crate::cli::{FetchArgs, MapArgs, OnFail, OutputFormat, PoolArgs};
use crate::errors::Error;
use crate::pool::{PoolConfig, WorkerCommand};
use crate::shard::{Header, MAX_TASK_LEN};
use powerpool_shared::task::{self, TaskKind};
use powerpool_shared::Format;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a `map` run needs, checked.
#[derive(Debug, Clone)]
pub struct MapPlan {
    pub task: String,
    pub chunks: Chunks,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub fetch: Option<FetchPlan>,
    /// The pool; its workers are never more than there are chunks.
    pub pool: PoolConfig,
    /// What a failed input leaves in the output (`--on-fail`; `lines` only).
    pub on_fail: OnFail,
    /// `--shard`: the header of the shard file to write (length and checksum filled at the end).
    pub shard: Option<Header>,
    /// The range as given (under `--shard`, the whole range, not the slice).
    pub range: [i64; 2],
    pub report: Option<PathBuf>,
    pub joblog: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Everything a batch of fetches needs.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    pub urls: Vec<url::Url>,
    pub concurrency: usize,
    pub timeout: Duration,
    /// The largest body accepted, in bytes.
    pub max_body: u64,
    pub report: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// `--process`: compute each body in the pool.
    pub process: Option<ProcessPlan>,
}

/// `fetch --process TASK` and its pool settings.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub task: String,
    pub budget: u64,
    pub pool: PoolConfig,
}

/// The pool configuration of `args` around `command`, with the command line's defaults.
pub(crate) fn pool_config(args: &PoolArgs, command: WorkerCommand, keep_going: bool) -> PoolConfig {
    let workers = args.workers.unwrap_or_else(crate::pool::default_workers);
    let defaults = PoolConfig::with_workers(command, workers);
    PoolConfig {
        retries: args.retries.unwrap_or(defaults.retries),
        keep_going,
        task_timeout: args.task_timeout,
        max_tasks_per_worker: args.max_tasks_per_worker,
        max_worker_memory: args.max_worker_memory,
        ..defaults
    }
}

/// The worker command for `task`, which must be of `kind`. The built-in worker's tasks are known
/// here; a custom worker's are checked in its handshake.
pub fn worker_for(
    task: &str,
    worker_cmd: Option<&Path>,
    kind: TaskKind,
) -> Result<WorkerCommand, Error> {
    let usage = |e: crate::pool::BadCommand| Error::Usage(e.0);
    if let Some(path) = worker_cmd {
        return WorkerCommand::resolve(path).map_err(usage);
    }
    match task::kind_of(task) {
        Some(k) if k == kind => WorkerCommand::current_exe().map_err(usage),
        Some(k) => Err(Error::Usage(format!(
            "task '{task}' takes {} input, not {} (see `powerpool tasks`)",
            k.name(),
            kind.name()
        ))),
        None => {
            let known: Vec<&str> =
                task::public().filter(|t| t.kind == kind).map(|t| t.name).collect();
            let hint =
                did_you_mean(task).map(|t| format!("did you mean '{t}'? ")).unwrap_or_default();
            Err(Error::Usage(format!(
                "unknown task '{task}' ({hint}built-in {} tasks: {}; see `powerpool tasks`)",
                kind.name(),
                known.join(", ")
            )))
        }
    }
}

/// The built-in task whose name is closest to `typed`, if one is close (clap's measure and
/// threshold for misspelt flags: Jaro similarity above 0.7).
pub fn did_you_mean(typed: &str) -> Option<&'static str> {
    task::public()
        .map(|t| (strsim::jaro(typed, t.name), t.name))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

impl MapPlan {
    pub fn from_args(args: MapArgs) -> Result<MapPlan, Error> {
        let (Some(task), Some(whole)) = (args.task.clone(), args.range) else {
            return Err(Error::Usage(
                "map needs --range START..END (or --input FILE for a byte task, or --exec \
                 COMMAND)"
                    .to_owned(),
            ));
        };
        if args.unordered {
            return Err(Error::Usage(
                "--unordered works with --input and --exec, not with --range".to_owned(),
            ));
        }
        let worker = worker_for(&task, args.pool.worker_cmd.as_deref(), TaskKind::Int)?;
        if let Some(out) = &args.output {
            check_output_path(out)?;
        }
        if let Some(report) = &args.report {
            check_writable("--report", report)?;
        }
        if let Some(joblog) = &args.joblog {
            check_writable("--joblog", joblog)?;
        }
        check_distinct(&[
            ("--output", args.output.as_deref()),
            ("--report", args.report.as_deref()),
            ("--joblog", args.joblog.as_deref()),
        ])?;
        let format = match args.format {
            OutputFormat::Lines => Format::Lines,
            OutputFormat::Sum => Format::Sum,
            OutputFormat::Bin => Format::Bin,
        };
        let (start, end) = match args.shard {
            Some(shard) => {
                let (a, b) = shard.slice(Chunks::new(whole.0, whole.1, 1).items());
                // Both offsets lie within the range, so start + offset fits an i64.
                let at = |off: u128| (i128::from(whole.0) + off as i128) as i64;
                (at(a), at(b))
            }
            None => whole,
        };
        if args.on_fail.is_some() && (format != Format::Lines || args.shard.is_some()) {
            return Err(Error::Usage(
                "--on-fail works with --format lines only, and not with --shard (a shard holds \
                 every result or none)"
                    .to_owned(),
            ));
        }
        let mut pool = pool_config(&args.pool, worker, args.keep_going);
        let wanted = pool.workers;
        let len = u64::try_from(Chunks::new(start, end, 1).items()).unwrap_or(u64::MAX);
        if let Some(size) = args.chunk_size {
            if size > format.max_chunk_items() {
                return Err(Error::Usage(format!(
                    "--chunk-size {size} is too large for --format {}: at most {}",
                    format_name(format),
                    format.max_chunk_items()
                )));
            }
        }
        let size = args.chunk_size.unwrap_or_else(|| chunk::auto_size(len, wanted, format));
        let chunks = Chunks::new(start, end, size);
        if args.shard.is_some() && task.len() > MAX_TASK_LEN {
            return Err(Error::Usage(format!(
                "--shard: the task name is longer than {MAX_TASK_LEN} bytes"
            )));
        }
        let shard = args.shard.map(|shard| Header {
            format,
            range: whole,
            shard,
            items: u64::try_from(chunks.items()).unwrap_or(u64::MAX),
            payload_len: 0,
            checksum: 0,
            task: task.clone(),
        });
        pool.workers = wanted.min(usize::try_from(chunks.count()).unwrap_or(usize::MAX)).max(1);
        if args.timeout.is_some() && args.fetch.is_empty() {
            return Err(Error::Usage(
                "--timeout limits each --fetch, and none is given (the limit on a unit of work \
                 is --task-timeout)"
                    .to_owned(),
            ));
        }
        let fetch = (!args.fetch.is_empty()).then_some(FetchPlan {
            urls: args.fetch,
            concurrency: 100,
            timeout: args.timeout.unwrap_or(crate::cli::DEFAULT_FETCH_TIMEOUT),
            max_body: crate::cli::DEFAULT_MAX_BODY,
            report: None,
            progress: false,
            process: None,
        });
        Ok(MapPlan {
            task,
            chunks,
            format,
            output: args.output,
            fetch,
            pool,
            on_fail: args.on_fail.unwrap_or_default(),
            shard,
            range: [whole.0, whole.1],
            report: args.report,
            joblog: args.joblog,
            progress: false,
        })
    }
}

impl FetchPlan {
    pub fn from_args(args: FetchArgs) -> Result<FetchPlan, Error> {
        if let Some(report) = &args.report {
            check_writable("--report", report)?;
        }
        let mut urls = args.urls;
        if let Some(path) = &args.from {
            urls.extend(read_url_list(path)?);
        }
        if urls.is_empty() {
            return Err(Error::Usage("no URLs to fetch".to_owned()));
        }
        let process = match &args.process {
            Some(task) => {
                let command = worker_for(task, args.pool.worker_cmd.as_deref(), TaskKind::Bytes)?;
                // Each URL gets its line: a body that keeps failing is ERR:task, not the end.
                let mut pool = pool_config(&args.pool, command, true);
                pool.workers = pool.workers.min(urls.len()).max(1);
                Some(ProcessPlan { task: task.clone(), budget: args.budget, pool })
            }
            None => {
                if let Some(flag) = args.pool.given().first() {
                    return Err(Error::Usage(format!("{flag} needs --process TASK")));
                }
                None
            }
        };
        Ok(FetchPlan {
            urls,
            concurrency: args.concurrency,
            timeout: args.timeout,
            max_body: args.max_body,
            report: args.report,
            progress: false,
            process,
        })
    }
}

/// Reads `--from FILE`: one URL per line, each checked like a URL argument.
fn read_url_list(path: &Path) -> Result<Vec<url::Url>, Error> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| Error::Usage(format!("cannot read --from '{}': {e}", path.display())))?;
    let mut urls = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let url = crate::cli::parse_url(line).map_err(|e| {
            Error::Usage(format!("--from '{}' line {}: {e}", path.display(), n + 1))
        })?;
        urls.push(url);
    }
    Ok(urls)
}

pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Lines => "lines",
        Format::Bin => "bin",
        Format::Sum => "sum",
    }
}

/// Refuses an output path that cannot be written, before any work starts.
pub(crate) fn check_output_path(path: &Path) -> Result<(), Error> {
    check_writable("--output", path)
}

/// Refuses a path for `flag` (`--output`, `--report`, `--joblog`) that cannot be written,
/// before any work starts.
pub(crate) fn check_writable(flag: &str, path: &Path) -> Result<(), Error> {
    let bad =
        |why: String| Error::Usage(format!("cannot write {flag} '{}': {why}", path.display()));
    if path.as_os_str().is_empty() {
        return Err(bad("empty path".to_owned()));
    }
    if path.is_dir() {
        return Err(bad("it is a directory".to_owned()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(bad(format!("'{}' is not a directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(bad(format!("directory '{}' does not exist", dir.display())))
        }
        Err(e) => Err(bad(format!("directory '{}': {e}", dir.display()))),
    }
}

/// Refuses two flags that name the same file (`-o x --report x`): one would overwrite the
/// other. Paths are compared by what they name: the directory, canonical, and the file name
/// for a file yet to be created; device and inode for one that exists (links included).
pub(crate) fn check_distinct(paths: &[(&str, Option<&Path>)]) -> Result<(), Error> {
    let named: Vec<(&str, &Path, crate::outfile::Identity)> = paths
        .iter()
        .filter_map(|(flag, path)| {
            let path = (*path)?;
            Some((*flag, path, crate::outfile::identity(path)?))
        })
        .collect();
    for (i, (flag_a, path_a, id_a)) in named.iter().enumerate() {
        for (flag_b, path_b, id_b) in &named[i + 1..] {
            if id_a == id_b {
                return Err(Error::Usage(format!(
                    "{flag_a} '{}' and {flag_b} '{}' are the same file: give each its own",
                    path_a.display(),
                    path_b.display()
                )));
            }
        }
    }
    Ok(())
}
