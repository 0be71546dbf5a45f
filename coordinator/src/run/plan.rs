//! `run`'s flags validated into a plan: the template, where the inputs come from, how they
//! become jobs, and the pool. Everything a user can get wrong is refused here, with one line.

use super::inputs::{self, Shape};
use super::template::Template;
use crate::cli::{RunArgs, MAX_DURATION};
use crate::errors::Error;
use crate::plan::{check_writable, pool_config};
use crate::pool::{PoolConfig, WorkerCommand};
use crate::shard_run::RunHeader;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the inputs come from.
#[derive(Debug, Clone)]
pub enum InputSpec {
    /// `:::` sources.
    Args(Vec<Vec<Vec<u8>>>),
    File(PathBuf),
    Stdin,
}

/// Everything a `run` needs, checked.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub template: Template,
    pub input: InputSpec,
    pub shape: Shape,
    pub dry_run: bool,
    pub tag: bool,
    pub ordered: bool,
    pub buffer: u64,
    pub halt_on_error: bool,
    pub joblog: Option<PathBuf>,
    /// Append to the joblog (`--resume`, `--resume-failed`) instead of starting it anew,
    /// after its first `joblog_whole` bytes (its whole lines).
    pub append: bool,
    pub joblog_whole: u64,
    pub report: Option<PathBuf>,
    pub shard: Option<(RunHeader, PathBuf)>,
    /// The pool; its retries count worker deaths, `job_retries` failed jobs.
    pub pool: PoolConfig,
    pub job_retries: u32,
    pub job_timeout: Option<Duration>,
    pub progress: bool,
}

impl RunPlan {
    pub fn from_args(args: RunArgs) -> Result<RunPlan, Error> {
        let usage = |m: String| Error::Usage(m);
        let mut parts = args.command.split(|w| w == ":::");
        let words: Vec<Vec<u8>> =
            parts.next().unwrap_or_default().iter().map(|w| w.as_bytes().to_vec()).collect();
        if words.is_empty() {
            return Err(usage("run needs a COMMAND before any ::: (run -- COMMAND ARG...)".into()));
        }
        if words[0].starts_with(b"-") {
            // No program is named `-x`: this is a flag run does not know, which clap took for
            // the command (it takes every word from the first it cannot place).
            let flag = String::from_utf8_lossy(&words[0]);
            let name = flag.split('=').next().unwrap_or_default();
            // GNU parallel's spelling of the options run names otherwise.
            let instead = match name {
                "--jobs" => " (GNU parallel's --jobs N is --workers N, or -j N)",
                "--timeout" => " (GNU parallel's --timeout is --task-timeout)",
                _ => "",
            };
            return Err(usage(format!(
                "run has no option '{flag}'{instead} (see `powerpool run --help`); the command \
                 comes after --"
            )));
        }
        let sources: Vec<Vec<Vec<u8>>> =
            parts.map(|p| p.iter().map(|w| w.as_bytes().to_vec()).collect()).collect();
        let input = match (&args.input, sources.is_empty()) {
            (Some(_), false) => {
                return Err(usage("--input and ::: sources cannot be used together".into()))
            }
            (None, false) => InputSpec::Args(sources),
            (Some(p), true) if p.as_os_str() == "-" => InputSpec::Stdin,
            (Some(p), true) => {
                std::fs::File::open(p)
                    .map_err(|e| usage(format!("cannot read --input '{}': {e}", p.display())))?;
                InputSpec::File(p.clone())
            }
            (None, true) => InputSpec::Stdin,
        };
        let colsep = args.colsep.as_ref().map(|c| c.replace("\\t", "\t").into_bytes());
        if colsep.as_ref().is_some_and(Vec::is_empty) {
            return Err(usage("--colsep needs a separator".into()));
        }
        let mut shape = Shape {
            sep: if args.null { 0 } else { b'\n' },
            colsep,
            per_job: args.max_args.unwrap_or(1),
            ..Shape::default()
        };
        for (flag, path) in [("--joblog", &args.joblog), ("--report", &args.report)] {
            if let Some(path) = path {
                check_writable(flag, path)?;
            }
        }
        let file_input = match &input {
            InputSpec::File(path) => Some(path.as_path()),
            _ => None,
        };
        crate::plan::check_distinct(&[
            ("--input", file_input),
            ("--joblog", args.joblog.as_deref()),
            ("--report", args.report.as_deref()),
            ("--output", args.output.as_deref()),
        ])?;
        let append = args.resume || args.resume_failed;
        let mut joblog_whole = 0;
        if let (true, Some(log)) = (append, &args.joblog) {
            let text = match std::fs::read(log) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(usage(format!("cannot read --joblog '{}': {e}", log.display())))
                }
            };
            let resumed = super::joblog::done_jobs(&text, args.resume_failed)
                .map_err(|e| usage(format!("--joblog '{}': {e}", log.display())))?;
            shape.skip = resumed.done;
            joblog_whole = resumed.whole;
        }
        let template = Template::parse(&words, args.shell).map_err(usage)?;
        if shape.colsep.is_none() {
            // Without --colsep, every job has the same number of arguments (the last of
            // `-n N` may have fewer): one naming more is a mistake, not an empty word.
            let columns = match &input {
                InputSpec::Args(sources) => sources.len(),
                _ => 1,
            };
            let arity = columns * shape.per_job;
            let highest = template.highest_arg();
            if highest > arity {
                let why = match &input {
                    InputSpec::Args(_) => format!("{columns} ::: source(s)"),
                    _ => "one input line (--colsep splits a line into columns)".into(),
                };
                return Err(usage(format!(
                    "{{{highest}}} names argument {highest}, but each job has {arity} \
                     ({why}, {} input(s) per job)",
                    shape.per_job
                )));
            }
        }
        let shard = match (args.shard, &args.output, &input) {
            (None, _, _) => None,
            (Some(shard), Some(out), InputSpec::File(path)) => {
                check_writable("--output", out)?;
                let file = std::fs::File::open(path)
                    .map_err(|e| usage(format!("cannot read --input '{}': {e}", path.display())))?;
                let mut reader = std::io::BufReader::new(file);
                let records = inputs::count_records(&mut reader, shape.sep)
                    .map_err(|e| usage(format!("cannot read --input '{}': {e}", path.display())))?;
                let jobs = records.div_ceil(shape.per_job as u64);
                let header = RunHeader::new(shard, jobs, &template.text());
                shape.jobs = Some((header.first_job, header.first_job + header.jobs));
                Some((header, out.clone()))
            }
            (Some(_), _, _) => {
                return Err(usage(
                    "--shard needs --input FILE (a file, not stdin) and --output".into(),
                ))
            }
        };
        let command = match &args.pool.worker_cmd {
            Some(path) => WorkerCommand::resolve(path).map_err(|e| usage(e.0))?,
            None => WorkerCommand::current_exe().map_err(|e| usage(e.0))?,
        };
        let mut pool = pool_config(&args.pool, command, true);
        // Each job's timeout is the worker's to enforce (it ends the job's group, not itself);
        // the pool's own limit only stands in for "never", which also silences stall reports
        // (jobs may rightly take very different times).
        pool.task_timeout = Some(MAX_DURATION);
        // Jobs take very different times: none waits behind another on a busy worker.
        pool.pipeline_depth = 1;
        Ok(RunPlan {
            template,
            input,
            shape,
            dry_run: args.dry_run,
            tag: args.tag,
            ordered: !args.unordered,
            buffer: args.buffer,
            halt_on_error: args.halt_on_error,
            joblog: args.joblog,
            append,
            joblog_whole,
            report: args.report,
            shard,
            job_retries: args.pool.retries.unwrap_or(0),
            job_timeout: args.pool.task_timeout,
            pool,
            progress: false,
        })
    }
}
