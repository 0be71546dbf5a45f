//! Concurrent GETs on the coordinator's runtime: the `fetch` command, and `map --fetch` beside
//! the pool.

mod client;

pub use client::{build, fetch_one, FetchOutcome};

use crate::errors::Error;
use crate::plan::FetchPlan;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::io::Write;

/// Runs every fetch of `plan`, at most `concurrency` at once, calling `report` with each outcome
/// in input order as soon as it and all before it are done. Returns how many failed.
pub async fn run_ordered(
    plan: &FetchPlan,
    mut report: impl FnMut(&FetchOutcome) -> std::io::Result<()>,
) -> Result<usize, Error> {
    let client = build(plan.concurrency, plan.timeout).map_err(Error::Http)?;
    let client = &client;
    let mut outcomes = futures::stream::iter(plan.urls.iter().cloned().enumerate())
        .map(|(i, url)| async move { (i, fetch_one(client, url, plan.max_body).await) })
        .buffer_unordered(plan.concurrency);
    let mut pending = BTreeMap::new();
    let mut next = 0;
    let mut failed = 0;
    while let Some((i, outcome)) = outcomes.next().await {
        pending.insert(i, outcome);
        while let Some(outcome) = pending.remove(&next) {
            if !outcome.is_success() {
                failed += 1;
            }
            report(&outcome).map_err(Error::Output)?;
            next += 1;
        }
    }
    Ok(failed)
}

/// `powerpool fetch`: one line per URL on stdout, in input order.
pub async fn command(plan: FetchPlan) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let total = plan.urls.len();
    let failed = run_ordered(&plan, |outcome| {
        let mut out = stdout.lock();
        writeln!(out, "{}", outcome.line())?;
        out.flush()
    })
    .await?;
    if failed > 0 {
        return Err(Error::FetchFailed { failed, total });
    }
    Ok(())
}

/// `map --fetch`: each outcome on stderr as it completes in order; returns how many failed.
pub async fn beside_map(plan: FetchPlan) -> Result<usize, Error> {
    run_ordered(&plan, |outcome| {
        eprintln!("fetch: {}", outcome.line());
        Ok(())
    })
    .await
}
