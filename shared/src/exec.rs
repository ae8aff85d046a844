//! The [`Tally`] of a run: how each unit ended (done, up to date, missing upstream, failed with
//! its reason, interrupted) and the run's warnings, which become the report's counts, failures
//! and warnings. The harness (`crate::job`) keeps it; a job's plan adds to it.

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
