//! Executing planned units: at most N at once, no new ones once the run is cancelled, and a
//! [`Tally`] of how each ended (done, failed with its reason, interrupted) that becomes the run
//! report's counts. Jobs keep only what is their own: planning and the work of one unit.

use std::future::Future;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::report::{Counts, Outcome, UnitFailure};

/// How the units of a run ended.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: Counts,
    pub failures: Vec<UnitFailure>,
    pub missing: Vec<String>,
    /// Why a run did less than asked without failing: a symbol with nothing upstream, a range
    /// before a listing, an empty result. Logged as it happens and kept for the report.
    pub warnings: Vec<String>,
    /// A verdict on the data failed the run (`validate`'s errors) though every unit ran.
    pub verdict_failed: bool,
}

impl Tally {
    /// A unit the plan found up to date.
    pub fn skip(&mut self) {
        self.counts.skipped += 1;
    }

    /// A unit that failed, before or while running.
    pub fn fail(&mut self, unit: impl Into<String>, reason: impl Into<String>) {
        let (unit, reason) = (unit.into(), reason.into());
        tracing::error!(unit = %unit, error = %reason, "failed");
        self.counts.failed += 1;
        self.failures.push(UnitFailure { unit, reason });
    }

    /// Something the user should know that is not a failure: logged now, listed in the report.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    /// A failure of the run's verdict, not of a unit (data errors `validate` found): listed with
    /// the failures, and the run fails.
    pub fn fail_verdict(&mut self, failure: UnitFailure) {
        self.failures.push(failure);
        self.verdict_failed = true;
    }

    /// A unit whose input does not exist upstream.
    pub fn miss(&mut self, unit: impl Into<String>) {
        self.counts.missing += 1;
        self.missing.push(unit.into());
    }

    /// Count one finished unit; returns its value when it succeeded.
    pub fn record<T>(&mut self, unit: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.counts.done += 1;
                Some(v)
            }
            Err(Error::Interrupted) => {
                self.counts.not_run += 1;
                None
            }
            Err(e) => {
                self.fail(unit, e.to_string());
                None
            }
        }
    }

    /// Close the tally: `planned` is everything counted, the outcome follows from failures and
    /// cancellation.
    pub fn outcome(&mut self, cancelled: bool) -> Outcome {
        let c = &mut self.counts;
        c.planned = c.done + c.skipped + c.missing + c.failed + c.not_run;
        if cancelled {
            Outcome::Interrupted
        } else if c.failed > 0 || self.verdict_failed {
            Outcome::Failed
        } else {
            Outcome::Ok
        }
    }
}

/// Run `work` over `units`, at most `concurrency` at a time, handing each `(key, result)` to
/// `done` as it completes, and showing their progress as `what` (`progress`). Once `cancel` fires
/// no unit starts; those never started are returned (for `not_run`). A panicking unit ends the
/// run with an error.
pub async fn for_each_bounded<U, T, W, Fut>(
    what: (&str, &'static str),
    units: impl IntoIterator<Item = U>,
    concurrency: usize,
    cancel: &CancellationToken,
    work: W,
    mut done: impl FnMut(String, Result<T>),
) -> Result<u64>
where
    W: Fn(U) -> Fut,
    Fut: Future<Output = (String, Result<T>)> + Send + 'static,
    T: Send + 'static,
{
    let units: Vec<U> = units.into_iter().collect();
    let progress = crate::progress::Progress::start(what.0, what.1, units.len() as u64);
    let mut queue = units.into_iter();
    let mut tasks: JoinSet<(String, Result<T>)> = JoinSet::new();
    loop {
        while tasks.len() < concurrency.max(1) && !cancel.is_cancelled() {
            let Some(u) = queue.next() else { break };
            tasks.spawn(work(u));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (key, r) = joined.map_err(|e| Error::Io {
            context: "a unit task panicked".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        progress.inc(1);
        done(key, r);
    }
    Ok(queue.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread")]
    async fn bounded_and_tallied() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tally = Tally::default();
        let cancel = CancellationToken::new();
        let (r2, p2) = (running.clone(), peak.clone());
        let not_run = for_each_bounded(
            ("test", "units"),
            0..10u32,
            3,
            &cancel,
            move |i| {
                let (running, peak) = (r2.clone(), p2.clone());
                async move {
                    let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    let r = if i == 4 {
                        Err(Error::bad_name("bad row"))
                    } else {
                        Ok(i)
                    };
                    (format!("u{i}"), r)
                }
            },
            |k, r| {
                tally.record(&k, r);
            },
        )
        .await
        .unwrap();
        assert_eq!(not_run, 0);
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(tally.outcome(false), Outcome::Failed);
        assert_eq!(
            (tally.counts.done, tally.counts.failed, tally.counts.planned),
            (9, 1, 10)
        );
        assert_eq!(tally.failures[0].unit, "u4");
    }

    #[tokio::test]
    async fn nothing_starts_after_cancel() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut tally = Tally::default();
        let not_run = for_each_bounded(
            ("test", "units"),
            0..5u32,
            2,
            &cancel,
            |i| async move { (i.to_string(), Ok(i)) },
            |k, r| {
                tally.record(&k, r);
            },
        )
        .await
        .unwrap();
        tally.counts.not_run += not_run;
        assert_eq!(tally.outcome(true), Outcome::Interrupted);
        assert_eq!(tally.counts.not_run, 5);
    }
}
