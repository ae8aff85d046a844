//! Checkpoints of a bar history, one JSON object per (bar spec, symbol, day) at
//! `_state/bars/<market>/<bar spec>/symbol=S/date=D.json`: the engine state at the end of day D,
//! where the history began, and the ledger of the upstream fingerprints of every day it has
//! consumed — what tells a later run whether it may continue after D or must go back.
//!
//! Kept: the last day of every month, and every day of the latest month (a rerun after upstream
//! changes goes back to the day before the first changed day; for earlier months, to the month's
//! start). Nothing in a checkpoint depends on when or by which run it was written, so an
//! extended history writes the very same bytes as one computed at once.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use shared::checksum::sha256_hex;
use shared::paths::BarsKey;
use shared::{Error, Result, Store};

use crate::engine::State;
use crate::spec::BarSpec;

/// The upstream fingerprints a history has consumed: per day for the latest month or two, and
/// one hash per earlier month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// `YYYY-MM` → hash of the month's day fingerprints in order.
    pub months: BTreeMap<String, String>,
    /// Days of the latest month (and of the one before, until the latest has two days).
    pub days: BTreeMap<NaiveDate, String>,
}

pub fn month_key(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

pub fn is_month_end(d: NaiveDate) -> bool {
    d.succ_opt().is_none_or(|n| n.month() != d.month())
}

fn fold<'a>(fps: impl Iterator<Item = (NaiveDate, &'a str)>) -> String {
    let mut s = String::new();
    for (d, fp) in fps {
        s.push_str(&format!("{d} {fp}\n"));
    }
    sha256_hex(s.as_bytes())[..16].to_string()
}

impl Ledger {
    /// Record a consumed day (days come in order). Months before the previous day's month are
    /// folded into one hash each: the last day of a month keeps its own entry until the next
    /// month has a day past its first, as the first day of a month is the neighbour whose arrival
    /// may change it.
    pub fn record(&mut self, day: NaiveDate, fingerprint: String) {
        self.days.insert(day, fingerprint);
        let keep_from = month_key(day.pred_opt().unwrap_or(day));
        while let Some((&first, _)) = self.days.first_key_value() {
            let month = month_key(first);
            if month >= keep_from {
                break;
            }
            let days: Vec<(NaiveDate, String)> = self
                .days
                .iter()
                .take_while(|(d, _)| month_key(**d) == month)
                .map(|(d, f)| (*d, f.clone()))
                .collect();
            for (d, _) in &days {
                self.days.remove(d);
            }
            let h = fold(days.iter().map(|(d, f)| (*d, f.as_str())));
            self.months.insert(month, h);
        }
    }

    /// The first consumed day whose upstream changed, by `fingerprint` now: the day itself in
    /// the month in progress, the first consumed day of the month for a completed month.
    pub fn first_change(
        &self,
        history_start: NaiveDate,
        fingerprint: impl Fn(NaiveDate) -> String,
    ) -> Option<NaiveDate> {
        for (month, h) in &self.months {
            let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()?;
            let first = first.max(history_start);
            let days: Vec<NaiveDate> = first
                .iter_days()
                .take_while(|d| month_key(*d) == *month)
                .collect();
            let fps: Vec<(NaiveDate, String)> =
                days.iter().map(|d| (*d, fingerprint(*d))).collect();
            if fold(fps.iter().map(|(d, f)| (*d, f.as_str()))) != *h {
                return Some(first);
            }
        }
        self.days
            .iter()
            .find(|(d, f)| fingerprint(**d) != **f)
            .map(|(d, _)| *d)
    }
}

/// The state of one history at the end of one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub job_version: String,
    pub spec: String,
    pub symbol: String,
    /// The first day of the history (its first trade has bar 0's sign rule start).
    pub history_start: NaiveDate,
    /// The day this checkpoint closes (for a history not begun yet: the day before its start).
    pub day: NaiveDate,
    pub engine: State,
    pub ledger: Ledger,
}

impl Checkpoint {
    /// The state before the first day of a history.
    pub fn fresh(spec: &BarSpec, symbol: &str, history_start: NaiveDate) -> Checkpoint {
        Checkpoint {
            job_version: crate::JOB_VERSION.to_string(),
            spec: spec.name(),
            symbol: symbol.to_string(),
            history_start,
            day: history_start.pred_opt().unwrap_or(history_start),
            engine: State::fresh(spec),
            ledger: Ledger::default(),
        }
    }
}

/// The days that have a checkpoint, in order.
pub async fn days(store: &Store, key: &BarsKey) -> Result<Vec<NaiveDate>> {
    let mut out: Vec<NaiveDate> = store
        .list(&key.state_prefix())
        .await?
        .into_iter()
        .filter_map(|(p, _)| BarsKey::parse_state_path(&p).ok())
        .filter(|(k, _)| k == key)
        .map(|(_, d)| d)
        .collect();
    out.sort();
    Ok(out)
}

/// The checkpoint of `day`; `None` when there is none or it does not parse (logged).
pub async fn load(store: &Store, key: &BarsKey, day: NaiveDate) -> Result<Option<Checkpoint>> {
    let path = key.state_path(day);
    let Some(bytes) = store.get_opt(&path).await? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(c) if c.day == day && c.spec == key.spec && c.symbol == key.symbol => Ok(Some(c)),
        Ok(_) => {
            tracing::warn!(path = %path, "checkpoint does not match its path; ignored");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(path = %path, error = %e, "unreadable checkpoint; ignored");
            Ok(None)
        }
    }
}

pub async fn save(store: &Store, key: &BarsKey, c: &Checkpoint) -> Result<()> {
    let path = key.state_path(c.day);
    let body = serde_json::to_vec_pretty(c).map_err(|e| Error::Json {
        context: format!("serializing {path}"),
        source: e,
    })?;
    store.put(&path, body).await
}

pub async fn delete(store: &Store, key: &BarsKey, day: NaiveDate) -> Result<()> {
    store.delete(&key.state_path(day)).await
}

/// Whether the checkpoint of `day` stays once `latest` is the newest.
pub fn retained(day: NaiveDate, latest: NaiveDate) -> bool {
    day <= latest && (is_month_end(day) || month_key(day) == month_key(latest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_ledger_finds_the_first_changed_day() {
        let fp = |day: NaiveDate| format!("v1-{day}");
        let start = d("2024-12-30");
        let mut l = Ledger::default();
        for day in start.iter_days().take_while(|x| *x <= d("2025-01-05")) {
            l.record(day, fp(day));
        }
        assert_eq!(l.months.len(), 1, "December folded");
        assert_eq!(l.days.len(), 5, "January by day");
        // On Jan 1, December's last day still stands on its own.
        let mut m = Ledger::default();
        for day in start.iter_days().take(3) {
            m.record(day, fp(day));
        }
        assert!(m.months.is_empty() && m.days.len() == 3);
        assert_eq!(l.first_change(start, fp), None);
        // A change on Jan 3: found to the day.
        let changed = |day: NaiveDate| {
            if day == d("2025-01-03") {
                "v2".into()
            } else {
                fp(day)
            }
        };
        assert_eq!(l.first_change(start, changed), Some(d("2025-01-03")));
        // A change on Dec 31 (a completed month): found as the month's first consumed day.
        let changed = |day: NaiveDate| {
            if day == d("2024-12-31") {
                "v2".into()
            } else {
                fp(day)
            }
        };
        assert_eq!(l.first_change(start, changed), Some(start));
    }

    #[test]
    fn retention_keeps_month_ends_and_the_latest_month() {
        let latest = d("2025-02-03");
        assert!(retained(d("2024-12-31"), latest));
        assert!(retained(d("2025-01-31"), latest));
        assert!(!retained(d("2025-01-30"), latest));
        assert!(retained(d("2025-02-01"), latest));
        assert!(retained(latest, latest));
        assert!(!retained(d("2025-02-04"), latest));
        assert!(is_month_end(d("2024-02-29")) && !is_month_end(d("2024-02-28")));
    }

    #[tokio::test]
    async fn checkpoints_round_trip_through_the_store() {
        let store = Store::open("memory://").unwrap();
        let spec = BarSpec::parse("dollar-th_1e6-sign_tick_rule-src_aggTrades").unwrap();
        let key = BarsKey::new(shared::paths::Market::Um, spec.name(), "BTCUSDT").unwrap();
        let mut c = Checkpoint::fresh(&spec, "BTCUSDT", d("2025-01-01"));
        assert_eq!(c.day, d("2024-12-31"));
        c.day = d("2025-01-02");
        c.engine.theta = 0.1 + 0.2;
        c.ledger.record(d("2025-01-01"), "a".into());
        save(&store, &key, &c).await.unwrap();
        assert_eq!(days(&store, &key).await.unwrap(), [d("2025-01-02")]);
        assert_eq!(load(&store, &key, d("2025-01-02")).await.unwrap(), Some(c));
        assert_eq!(load(&store, &key, d("2025-01-03")).await.unwrap(), None);
        store
            .put(&key.state_path(d("2025-01-03")), b"{".to_vec())
            .await
            .unwrap();
        assert_eq!(load(&store, &key, d("2025-01-03")).await.unwrap(), None);
        delete(&store, &key, d("2025-01-02")).await.unwrap();
        assert_eq!(days(&store, &key).await.unwrap(), [d("2025-01-03")]);
    }
}
