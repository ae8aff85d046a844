//! Run reports: the JSON every job writes to `reports/<job>/<run id>.json` and prints on stdout,
//! and the human summary it prints on stderr.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, exit};
use crate::paths::report_path;
use crate::store::Store;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Interrupted,
    DryRun,
}

/// Unit counts. `planned = done + skipped + missing + failed + not_run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub planned: u64,
    /// Units that did work and finished.
    pub done: u64,
    /// Units the manifest already had as done with the same inputs, version and parameters.
    pub skipped: u64,
    /// Units whose input does not exist upstream.
    pub missing: u64,
    pub failed: u64,
    /// Units never started (interrupted run).
    pub not_run: u64,
}

/// A failed unit and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitFailure {
    pub unit: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub job: String,
    pub job_version: String,
    pub run_id: String,
    pub store: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub counts: Counts,
    /// Bytes the run wrote (or downloaded, for `download`).
    pub bytes: u64,
    pub failures: Vec<UnitFailure>,
    /// Units missing upstream.
    pub missing: Vec<String>,
    /// Why the run did less than asked without failing (see `exec::Tally::warn`).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The validated parameters the job ran with.
    pub params: serde_json::Value,
    /// Job-specific figures (retries, per-day diagnostics, …).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// What every report of one run shares, fixed when the run starts; builds the report when it
/// ends (or when `--dry-run` stops it after planning).
#[derive(Debug, Clone)]
pub struct RunHeader {
    pub job: &'static str,
    pub job_version: &'static str,
    /// The store URL as given.
    pub store: String,
    pub started_at: DateTime<Utc>,
    /// The validated parameters the job runs with.
    pub params: serde_json::Value,
}

impl RunHeader {
    /// The report of a run that ended now, from its tally.
    pub fn report(
        &self,
        ctx: &crate::Context,
        outcome: Outcome,
        tally: crate::exec::Tally,
        bytes: u64,
        details: serde_json::Value,
    ) -> RunReport {
        RunReport {
            job: self.job.into(),
            job_version: self.job_version.into(),
            run_id: ctx.run_id.clone(),
            store: self.store.clone(),
            started_at: self.started_at,
            finished_at: ctx.clock.now().max(self.started_at),
            outcome,
            counts: tally.counts,
            bytes,
            failures: tally.failures,
            missing: tally.missing,
            warnings: tally.warnings,
            params: self.params.clone(),
            details,
        }
    }

    /// The report of a `--dry-run`: `not_run` units would have run.
    pub fn dry_run(
        &self,
        ctx: &crate::Context,
        mut tally: crate::exec::Tally,
        not_run: u64,
        details: serde_json::Value,
    ) -> RunReport {
        tally.counts.not_run += not_run;
        tally.outcome(false);
        self.report(ctx, Outcome::DryRun, tally, 0, details)
    }
}

impl RunReport {
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Outcome::Ok | Outcome::DryRun => exit::OK,
            Outcome::Failed => exit::FAILED_UNITS,
            Outcome::Interrupted => exit::INTERRUPTED,
        }
    }

    pub fn path(&self) -> String {
        report_path(&self.job, &self.run_id)
    }

    /// Write the report into the store.
    pub async fn write(&self, store: &Store) -> Result<String> {
        let path = self.path();
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::Json {
            context: format!("serializing report {path}"),
            source: e,
        })?;
        store.put(&path, body).await?;
        Ok(path)
    }

    /// A few lines for a person.
    pub fn human_summary(&self) -> String {
        let c = &self.counts;
        let secs = (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0;
        let mut s = format!(
            "{} {}: {:?} in {:.1}s — planned {}, done {}, up to date {}, missing upstream {}, failed {}",
            self.job,
            self.run_id,
            self.outcome,
            secs,
            c.planned,
            c.done,
            c.skipped,
            c.missing,
            c.failed
        );
        if c.not_run > 0 {
            s.push_str(&format!(", not run {}", c.not_run));
        }
        if self.bytes > 0 {
            s.push_str(&format!(", {}", human_bytes(self.bytes)));
        }
        if c.done == 0
            && c.failed == 0
            && c.missing == 0
            && c.planned > 0
            && self.outcome == Outcome::Ok
        {
            s.push_str("\nnothing to do: everything is up to date");
        }
        if c.planned == 0 && self.outcome == Outcome::Ok {
            s.push_str("\nnothing planned: no input in the range for the symbols asked");
        }
        for w in &self.warnings {
            s.push_str(&format!("\n  warning: {w}"));
        }
        const SHOWN: usize = 20;
        for f in self.failures.iter().take(SHOWN) {
            s.push_str(&format!("\n  FAILED {}: {}", f.unit, f.reason));
        }
        if self.failures.len() > SHOWN {
            s.push_str(&format!(
                "\n  … and {} more failures (see {})",
                self.failures.len() - SHOWN,
                self.path()
            ));
        }
        for m in self.missing.iter().take(SHOWN) {
            s.push_str(&format!("\n  missing upstream: {m}"));
        }
        if self.missing.len() > SHOWN {
            s.push_str(&format!(
                "\n  … and {} more missing",
                self.missing.len() - SHOWN
            ));
        }
        s
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn report_round_trips_through_the_store() {
        let store = Store::open("memory://").unwrap();
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let r = RunReport {
            job: "download".into(),
            job_version: "1".into(),
            run_id: "r1".into(),
            store: "memory://".into(),
            started_at: t,
            finished_at: t,
            outcome: Outcome::Failed,
            counts: Counts {
                planned: 3,
                done: 1,
                failed: 1,
                missing: 1,
                ..Default::default()
            },
            bytes: 2048,
            failures: vec![UnitFailure {
                unit: "u1".into(),
                reason: "checksum mismatch".into(),
            }],
            missing: vec!["u2".into()],
            warnings: vec!["BTC: nothing upstream".into()],
            params: serde_json::json!({}),
            details: serde_json::Value::Null,
        };
        let path = r.write(&store).await.unwrap();
        assert_eq!(path, "reports/download/r1.json");
        let back: RunReport =
            serde_json::from_slice(&store.get_opt(&path).await.unwrap().unwrap()).unwrap();
        assert_eq!(back.counts, r.counts);
        assert_eq!(r.exit_code(), exit::FAILED_UNITS);
        let s = r.human_summary();
        assert!(s.contains("FAILED u1: checksum mismatch"), "{s}");
        assert!(s.contains("missing upstream: u2"), "{s}");
        assert!(s.contains("2.0 KiB"), "{s}");
        assert!(s.contains("warning: BTC: nothing upstream"), "{s}");
        assert_eq!(back.warnings, r.warnings);
    }
}
