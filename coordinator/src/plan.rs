//! Raw flags validated once into plans that the rest of the program trusts.

use crate::chunk::{self, Chunks};
use crate::cli::{FetchArgs, MapArgs, OutputFormat};
use crate::errors::Error;
use crate::shard::{Header, MAX_TASK_LEN};
use powerpool_shared::task::{self, TaskKind};
use powerpool_shared::Format;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a `map` run needs, checked.
#[derive(Debug, Clone)]
pub struct MapPlan {
    pub task: String,
    pub chunks: Chunks,
    /// Worker processes to start: never more than there are chunks.
    pub workers: usize,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub fetch: Option<FetchPlan>,
    pub worker: WorkerCommand,
    pub retries: u32,
    pub keep_going: bool,
    pub task_timeout: Option<Duration>,
    pub max_tasks_per_worker: Option<u64>,
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
    pub workers: usize,
    pub worker: WorkerCommand,
    pub budget: u64,
    pub retries: u32,
    pub task_timeout: Option<Duration>,
}

/// The program (and arguments) that becomes a worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment for the workers (they inherit the coordinator's otherwise).
    pub env: Vec<(OsString, OsString)>,
}

impl WorkerCommand {
    /// This very executable, in its hidden `worker` mode.
    pub fn current_exe() -> Result<WorkerCommand, Error> {
        let program = std::env::current_exe()
            .map_err(|e| Error::Usage(format!("cannot find this program's own path: {e}")))?;
        Ok(WorkerCommand { program, args: vec!["worker".into()], env: Vec::new() })
    }

    /// A user-chosen worker executable: a path, or a bare name looked up in `PATH`.
    pub fn resolve(given: &Path) -> Result<WorkerCommand, Error> {
        let bad = |why: &str| Error::Usage(format!("--worker-cmd '{}' {why}", given.display()));
        let program = if given.components().count() == 1 && !given.is_absolute() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .map(|dir| dir.join(given))
                .find(|p| is_executable_file(p))
                .ok_or_else(|| bad("is not an executable in PATH"))?
        } else {
            let meta =
                std::fs::metadata(given).map_err(|e| bad(&format!("cannot be used: {e}")))?;
            if !meta.is_file() {
                return Err(bad("is not a file"));
            }
            if !is_executable_file(given) {
                return Err(bad("is not executable"));
            }
            given.to_path_buf()
        };
        Ok(WorkerCommand { program, args: Vec::new(), env: Vec::new() })
    }
}

fn is_executable_file(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The worker command for `task`, which must be of `kind`. The built-in worker's tasks are known
/// here; a custom worker's are checked in its handshake.
pub fn worker_for(
    task: &str,
    worker_cmd: Option<&Path>,
    kind: TaskKind,
) -> Result<WorkerCommand, Error> {
    if let Some(path) = worker_cmd {
        return WorkerCommand::resolve(path);
    }
    match task::kind_of(task) {
        Some(k) if k == kind => WorkerCommand::current_exe(),
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
        let worker = worker_for(&args.task, args.worker_cmd.as_deref(), TaskKind::Int)?;
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
        let whole = args.range;
        let (start, end) = match args.shard {
            Some(shard) => {
                let (a, b) = shard.slice(Chunks::new(whole.0, whole.1, 1).items());
                // Both offsets lie within the range, so start + offset fits an i64.
                let at = |off: u128| (i128::from(whole.0) + off as i128) as i64;
                (at(a), at(b))
            }
            None => whole,
        };
        let wanted = args.workers.unwrap_or_else(default_workers);
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
        if args.shard.is_some() && args.task.len() > MAX_TASK_LEN {
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
            task: args.task.clone(),
        });
        let workers = wanted.min(usize::try_from(chunks.count()).unwrap_or(usize::MAX));
        if args.timeout.is_some() && args.fetch.is_empty() {
            return Err(Error::Usage(
                "--timeout limits each --fetch, and none is given (the limit on a chunk is \
                 --task-timeout)"
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
            task: args.task,
            chunks,
            workers,
            format,
            output: args.output,
            fetch,
            worker,
            retries: args.retries,
            keep_going: args.keep_going,
            task_timeout: args.task_timeout,
            max_tasks_per_worker: args.max_tasks_per_worker,
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
            Some(task) => Some(ProcessPlan {
                task: task.clone(),
                workers: args.workers.unwrap_or_else(default_workers),
                worker: worker_for(task, args.worker_cmd.as_deref(), TaskKind::Bytes)?,
                budget: args.budget,
                retries: args.retries,
                task_timeout: args.task_timeout,
            }),
            None => None,
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
        Format::Text => "text",
    }
}

/// The default worker count: the cores this process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(crate::cli::MAX_WORKERS)
}

/// Refuses an output path that cannot be written, before any work starts.
fn check_output_path(path: &Path) -> Result<(), Error> {
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
