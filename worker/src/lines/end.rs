//! How a line worker's command ends: at the end of the run (its input closed, nothing more may
//! come out), when it stops answering, or when it is stopped; and the messages that say so.

use super::{LineWorker, DRAIN};
use crate::child::{self, CURRENT_GROUP};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl LineWorker {
    /// The end of the run: closes the command's input and checks that nothing more comes out
    /// before it exits. `Some(why)` if it printed lines with no input outstanding.
    pub async fn finish(&mut self) -> Option<String> {
        let mut run = self.running.take()?;
        drop(run.stdin);
        let mut extra = 0usize;
        let drained = tokio::time::timeout(DRAIN, async {
            while let Some(Some(lines)) = run.answers.recv().await {
                extra += lines.len();
            }
        })
        .await;
        if drained.is_err() || tokio::time::timeout(DRAIN, run.child.wait()).await.is_err() {
            child::end_group_blocking(run.pid as i32, Duration::from_millis(100));
            let _ = run.child.wait().await;
        }
        CURRENT_GROUP.store(0, Ordering::SeqCst);
        (extra > 0).then(|| {
            format!(
                "protocol error: `{}` (worker {}, pid {}) printed {extra} line(s) with no input \
                 line outstanding: a line worker must print exactly one line per input line",
                self.label, self.slot, run.pid
            )
        })
    }

    pub(super) fn surplus(&self, when: &str) -> String {
        let pid = self.running.as_ref().map_or(0, |r| r.pid);
        format!(
            "protocol error: `{}` (worker {}, pid {pid}) printed a line {when}: a line worker \
             must print exactly one line per input line, and nothing else on stdout",
            self.label, self.slot
        )
    }

    /// Ends the command's group (SIGTERM, grace, SIGKILL) and reaps it.
    pub(super) async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut run = self.running.take()?;
        let pgid = run.pid as i32;
        child::signal_group(pgid, libc::SIGTERM);
        let grace = Duration::from_millis(self.spec.term_grace_ms);
        let status = match tokio::time::timeout(grace, run.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                child::signal_group(pgid, libc::SIGKILL);
                run.child.wait().await.ok()
            }
        };
        child::signal_group(pgid, libc::SIGKILL);
        CURRENT_GROUP.store(0, Ordering::SeqCst);
        status
    }

    /// The command stopped answering (`what`): ends and reaps it; says how, and which lines
    /// were outstanding.
    pub(super) async fn ended(&mut self, what: &str, answered: usize, total: usize) -> String {
        let pid = self.running.as_ref().map_or(0, |r| r.pid);
        // Give a dying command a moment to be reaped with its real status.
        if let Some(run) = self.running.as_mut() {
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_millis(200), run.child.wait()).await
            {
                let how = child::describe(status);
                self.stop().await;
                return self.outstanding(pid, &how, answered, total);
            }
        }
        let how = match self.stop().await {
            Some(status) => format!("{what} and {}", child::describe(status)),
            None => what.to_owned(),
        };
        self.outstanding(pid, &how, answered, total)
    }

    fn outstanding(&self, pid: u32, how: &str, answered: usize, total: usize) -> String {
        let left = total.saturating_sub(answered);
        let lines = match left {
            0 => String::new(),
            1 => " with 1 line outstanding".to_owned(),
            n => format!(" with {n} lines outstanding"),
        };
        format!("`{}` (worker {}, pid {pid}) {how}{lines}", self.label, self.slot)
    }
}
