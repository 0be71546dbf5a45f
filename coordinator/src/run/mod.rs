//! `powerpool run`: a command per input, GNU parallel's job, as a client of the pool.
//!
//! Three parts run at once. A reader thread streams the inputs (`inputs.rs`), expands the
//! template for each job (`template.rs`) and hands the pool one item per job, a command the
//! worker runs as its child; the pool runs them, one at a time per worker, and hands back each
//! job's outcome as it finishes; a writer thread (`output.rs`) puts outputs in order (or not),
//! writes them whole, logs each job (`joblog.rs`) and counts failures. Job failures are
//! results, not pool failures: the pool's own retries are for workers that die.

mod emit;
mod inputs;
mod joblog;
mod output;
mod plan;
mod report;
mod template;

pub use plan::RunPlan;

use crate::errors::Error;
use crate::pool::{self, Batching, Item, Job, Observers, Stop};
use crate::signal::Interrupt;
use inputs::{Inputs, Source};
use output::{Meta, Settings, Written};
use plan::InputSpec;
use powerpool_shared::jobs::{JobCommand, JobSpec};
use powerpool_shared::Input;
use std::io::{self, Write};
use std::time::Instant;
use tokio::sync::mpsc;

/// The most bytes of one stream a worker sends back in a record; more goes to a spill file.
const INLINE_MAX: u64 = 1 << 20;
/// How long a job's group has between SIGTERM and SIGKILL.
const TERM_GRACE_MS: u64 = 200;

/// Runs `plan` to the end; the error says how it stopped short.
pub async fn run(
    plan: RunPlan,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<(), Error> {
    if plan.dry_run {
        return dry_run(&plan);
    }
    let started = Instant::now();
    let spill = tempfile::Builder::new()
        .prefix("powerpool-run-")
        .tempdir()
        .map_err(|e| Error::Usage(format!("cannot create a spill directory: {e}")))?;
    let joblog = open_joblog(&plan)?;
    let (items_tx, items_rx) = mpsc::channel::<Item>(256);
    let (metas_tx, metas_rx) = std::sync::mpsc::channel::<Meta>();
    let reader_plan = plan.clone();
    let reader = tokio::task::spawn_blocking(move || feed(&reader_plan, &items_tx, &metas_tx));
    let spec = JobSpec {
        timeout_ms: plan.job_timeout.map(|d| d.as_millis() as u64),
        term_grace_ms: TERM_GRACE_MS,
        retries: plan.job_retries,
        inline_max: INLINE_MAX.min(plan.buffer),
        spill_dir: spill.path().as_os_str().as_encoded_bytes().to_vec().into(),
    };
    let job = Job {
        task: "run".into(),
        work: pool::Work::Commands {
            source: items_rx,
            batching: Batching {
                max_items: 1,
                max_bytes: 1 << 20,
                window_bytes: Some(16 << 20),
                target: None,
            },
            input: Input::Jobs(spec),
        },
        config: plan.pool.clone(),
        ordered: false,
    };
    let (mut sender, receiver) = pool::results();
    let bar = plan.progress.then(|| crate::progress::for_run(None));
    let settings = Settings {
        ordered: plan.ordered,
        tag: plan.tag,
        buffer: plan.buffer,
        halt_on_error: plan.halt_on_error,
        spill_dir: spill.path().to_path_buf(),
        template: plan.template.clone(),
        joblog,
        progress: bar,
    };
    let shard = plan.shard.clone();
    let writer =
        tokio::task::spawn_blocking(move || write_out(receiver, metas_rx, settings, shard));
    let mut observers = Observers::default();
    let (stats, result) = pool::run(job, &mut sender, interrupts, &mut observers).await;
    sender.finish(result.is_ok());
    let written = writer.await.map_err(|e| Error::Output(io::Error::other(e)))?;
    crate::progress::finish();
    let read = if result.is_ok() { reader.await.ok() } else { None };
    let outcome = conclude(result, written.as_ref(), read);
    if let Ok(w) = &written {
        list_failures(w);
    }
    if let Some(path) = &plan.report {
        let report =
            report::RunReport::new(&plan, &stats, written.as_ref().ok(), started, &outcome);
        if let Err(err) = report.write(path) {
            tracing::warn!("cannot write --report '{}': {err}", path.display());
        }
    }
    drop(spill);
    outcome
}

/// The run's verdict from the pool's end, the writer's and the reader's.
fn conclude(
    pool: Result<(), Stop>,
    written: Result<&Written, &Error>,
    read: Option<Result<(), Error>>,
) -> Result<(), Error> {
    let w = match written {
        Ok(w) => w,
        Err(Error::Output(e)) => {
            return Err(Error::Output(io::Error::new(e.kind(), e.to_string())))
        }
        Err(e) => return Err(Error::Usage(e.to_string())),
    };
    if let Some(halt) = &w.halted {
        return Err(Error::Halted { seq: halt.seq, why: halt.why.clone() });
    }
    match pool {
        Ok(()) | Err(Stop::ConsumerGone) if w.complete => {}
        Ok(()) => {}
        Err(stop) => return Err(Error::from(stop)),
    }
    if let Some(Err(err)) = read {
        return Err(err);
    }
    match w.failed {
        0 => Ok(()),
        failed => Err(Error::JobsFailed { failed, total: w.jobs }),
    }
}

/// The failed jobs, on stderr, after the outputs.
fn list_failures(w: &Written) {
    let shown = w.failures.len() as u64;
    crate::progress::suspend(|| {
        for f in &w.failures {
            eprintln!("powerpool: failed job {} ({}): {}", f.seq, f.input, f.why);
        }
        if w.failed > shown {
            eprintln!("powerpool: ... and {} more failed job(s)", w.failed - shown);
        }
    });
}

fn open_joblog(plan: &RunPlan) -> Result<Option<io::BufWriter<std::fs::File>>, Error> {
    let Some(path) = &plan.joblog else { return Ok(None) };
    let cannot =
        |e: io::Error| Error::Usage(format!("cannot write --joblog '{}': {e}", path.display()));
    let keep = if plan.append { plan.joblog_whole } else { 0 };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(keep == 0)
        .open(path)
        .map_err(cannot)?;
    if keep > 0 {
        // A resumed log: whole lines kept, a line cut short by a stopped run dropped.
        file.set_len(keep).map_err(cannot)?;
        io::Seek::seek(&mut file, io::SeekFrom::End(0)).map_err(cannot)?;
    }
    let mut out = io::BufWriter::new(file);
    if keep == 0 {
        writeln!(out, "{}", joblog::HEADER).map_err(cannot)?;
    }
    Ok(Some(out))
}

/// The writer thread: stdout, or a shard file that appears only when complete.
fn write_out(
    receiver: pool::ResultReceiver,
    metas: std::sync::mpsc::Receiver<Meta>,
    settings: Settings,
    shard: Option<(crate::shard_run::RunHeader, std::path::PathBuf)>,
) -> Result<Written, Error> {
    match shard {
        None => {
            let mut out = io::BufWriter::with_capacity(256 << 10, io::stdout().lock());
            output::consume(receiver, metas, settings, &mut out).map_err(Error::Output)
        }
        Some((header, path)) => {
            let cannot =
                |e| Error::Usage(format!("cannot write --output '{}': {e}", path.display()));
            let (pending, file) = crate::output::PendingFile::create(&path).map_err(cannot)?;
            let mut out = crate::shard_run::RunShardWriter::new(file, header).map_err(cannot)?;
            let written =
                output::consume(receiver, metas, settings, &mut out).map_err(Error::Output)?;
            if written.complete && written.halted.is_none() && written.failed == 0 {
                out.finish().map_err(Error::Output)?;
                pending.commit().map_err(Error::Output)?;
                crate::shard::sync_parent_dir(&path).map_err(Error::Output)?;
            }
            Ok(written)
        }
    }
}

/// The jobs of `plan`, read as they are needed.
fn jobs(plan: &RunPlan) -> Result<Inputs, Error> {
    let source = match &plan.input {
        InputSpec::Args(sources) => Source::Args(sources.clone()),
        InputSpec::Stdin => Source::Reader(Box::new(io::BufReader::new(io::stdin()))),
        InputSpec::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| {
                Error::Usage(format!("cannot read --input '{}': {e}", path.display()))
            })?;
            Source::Reader(Box::new(io::BufReader::with_capacity(64 << 10, file)))
        }
    };
    Ok(Inputs::new(source, plan.shape.clone()))
}

/// The reader thread: each job's input to the writer, its command to the pool.
fn feed(
    plan: &RunPlan,
    items: &mpsc::Sender<Item>,
    metas: &std::sync::mpsc::Sender<Meta>,
) -> Result<(), Error> {
    for job in jobs(plan)? {
        let job = job.map_err(|e| Error::Input(format!("cannot read the input: {e}")))?;
        let cmd = plan.template.expand(&job.args, job.seq);
        let encoded = JobCommand {
            argv: cmd.argv.into_iter().map(Into::into).collect(),
            slot_marks: cmd.slot_marks,
        }
        .encode()
        .map_err(|e| Error::Input(e.to_string()))?;
        if metas.send(Meta { seq: job.seq, args: job.args }).is_err()
            || items.blocking_send(Item::from(bytes::Bytes::from(encoded))).is_err()
        {
            return Ok(()); // the run stopped
        }
    }
    Ok(())
}

/// `--dry-run`: each command as a shell would read it, one per line; nothing runs.
fn dry_run(plan: &RunPlan) -> Result<(), Error> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let workers = plan.pool.workers.max(1) as u64;
    for job in jobs(plan)? {
        let job = job.map_err(|e| Error::Input(format!("cannot read the input: {e}")))?;
        let cmd = plan.template.expand(&job.args, job.seq);
        let slot = (job.seq - 1) % workers + 1;
        out.write_all(&plan.template.display(&cmd, slot)).map_err(Error::Output)?;
        out.write_all(b"\n").map_err(Error::Output)?;
    }
    out.flush().map_err(Error::Output)
}
