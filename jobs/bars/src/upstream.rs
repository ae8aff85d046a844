//! What `optimize` has produced for one (trades dataset, symbol), from its manifest: the month
//! files to read, the last day with data, and a fingerprint per day.
//!
//! A day's rows in the month file come from the day's converted partitions and its neighbours'
//! (optimize README: rows near midnight can sit in a neighbour's file), so the fingerprint of
//! day D covers the partitions of D-1, D and D+1 that the optimize entry of D's month lists as
//! its inputs (a neighbour month's partition only when its rows reach into the month), and
//! optimize's job version: it changes exactly when the rows of D may have. Fingerprinting days
//! rather than month files (whose sha256 changes with every day appended to the month) lets a
//! nightly run continue after yesterday instead of recomputing the month.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use shared::checksum::sha256_hex;
use shared::manifest::{Manifest, ManifestKey, UnitStatus};
use shared::paths::{Dataset, FileDate, Partition};
use shared::{Result, Store};

pub const UPSTREAM: shared::job::JobName = shared::job::JobName::OPTIMIZE;

/// One optimized month file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthFile {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Default)]
pub struct Upstream {
    /// Months optimize has done; `None` when the month has no file (no rows in it).
    pub months: BTreeMap<FileDate, Option<MonthFile>>,
    /// Per month, the input partitions its entry lists, by their date: (path, sha256).
    partitions: BTreeMap<FileDate, BTreeMap<NaiveDate, BTreeSet<(String, String)>>>,
    /// Optimize's job version per month.
    versions: BTreeMap<FileDate, String>,
    /// Days with a partition listed by their own month's entry.
    present: BTreeSet<NaiveDate>,
}

impl Upstream {
    pub async fn load(store: &Store, dataset: &Dataset, symbol: &str) -> Result<Upstream> {
        let m = Manifest::load(store, &ManifestKey::new(UPSTREAM, dataset.scope(), symbol)).await?;
        Ok(Upstream::from_manifest(&m))
    }

    pub fn from_manifest(m: &Manifest) -> Upstream {
        let mut u = Upstream::default();
        for e in m.entries().filter(|e| e.status == UnitStatus::Done) {
            let Some(month) = e
                .unit
                .rsplit_once('/')
                .and_then(|(_, m)| m.parse::<FileDate>().ok())
                .filter(|m| matches!(m, FileDate::Month { .. }))
            else {
                continue;
            };
            let file = e.outputs.first().map(|o| MonthFile {
                path: o.path.clone(),
                sha256: o.sha256.clone(),
            });
            u.months.insert(month, file);
            u.versions.insert(month, e.job_version.clone());
            for (path, sha) in &e.inputs {
                if let Ok(Partition::Day { date, .. }) = Partition::parse(path) {
                    u.partitions
                        .entry(month)
                        .or_default()
                        .entry(date)
                        .or_default()
                        .insert((path.clone(), sha.clone()));
                    if FileDate::month_of(date) == month {
                        u.present.insert(date);
                    }
                }
            }
        }
        u
    }

    /// The last day up to `end` that has data upstream; `None` when there is none.
    pub fn horizon(&self, end: NaiveDate) -> Option<NaiveDate> {
        self.present.range(..=end).next_back().copied()
    }

    /// The month file of `month`, if optimize wrote one.
    pub fn month_file(&self, month: FileDate) -> Option<&MonthFile> {
        self.months.get(&month).and_then(Option::as_ref)
    }

    /// The fingerprint of a day's rows (module docs).
    pub fn fingerprint(&self, day: NaiveDate) -> String {
        let mut s = format!(
            "optimize {}\n",
            self.versions
                .get(&FileDate::month_of(day))
                .map_or("-", String::as_str)
        );
        let lo = day.pred_opt().unwrap_or(day);
        let hi = day.succ_opt().unwrap_or(day);
        if let Some(month) = self.partitions.get(&FileDate::month_of(day)) {
            for (_, parts) in month.range(lo..=hi) {
                for (p, sha) in parts {
                    s.push_str(&format!("{p} {sha}\n"));
                }
            }
        }
        sha256_hex(s.as_bytes())[..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::manifest::{Entry, ManifestWriter, Output};
    use shared::paths::{DataType, Market, Period};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[tokio::test]
    async fn horizon_and_fingerprints_follow_the_optimize_manifest() {
        let store = Store::open("memory://").unwrap();
        let ds = Dataset::new(Market::Um, DataType::AggTrades, None).unwrap();
        let key = ManifestKey::new(UPSTREAM, ds.scope(), "BTCUSDT");
        let (w, _) = ManifestWriter::open(&store, &key).await.unwrap();
        let part = |day: &str, sha: &str| {
            (
                ds.parquet_partition("BTCUSDT", d(day), Period::Daily),
                sha.to_string(),
            )
        };
        let entry = |inputs: Vec<(String, String)>| Entry {
            unit: "BTCUSDT/2025-01".into(),
            status: UnitStatus::Done,
            inputs: inputs.into_iter().collect(),
            job_version: "1".into(),
            params_hash: "p".into(),
            outputs: vec![Output {
                path: ds.optimized_partition("BTCUSDT", 2025, 1),
                size: 1,
                sha256: "m1".into(),
                rows: Some(1),
                time_span: None,
            }],
            recorded_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            run_id: "r".into(),
            detail: None,
            duplicate_days: Default::default(),
            rest: None,
        };
        w.record(entry(vec![
            part("2024-12-31", "a"),
            part("2025-01-01", "b"),
            part("2025-01-02", "c"),
        ]))
        .await
        .unwrap();
        let u = Upstream::load(&store, &ds, "BTCUSDT").await.unwrap();
        // Dec 31 is a neighbour input of January, not a day January has.
        assert_eq!(u.horizon(d("2025-01-31")), Some(d("2025-01-02")));
        assert_eq!(u.horizon(d("2025-01-01")), Some(d("2025-01-01")));
        assert_eq!(u.horizon(d("2024-12-31")), None);
        assert!(u.month_file(FileDate::month_of(d("2025-01-05"))).is_some());
        let before = (
            u.fingerprint(d("2025-01-01")),
            u.fingerprint(d("2025-01-02")),
        );
        // Jan 3 arrives: Jan 2 (its neighbour) and Jan 3 change, Jan 1 does not.
        w.record(entry(vec![
            part("2024-12-31", "a"),
            part("2025-01-01", "b"),
            part("2025-01-02", "c"),
            part("2025-01-03", "d"),
        ]))
        .await
        .unwrap();
        let u = Upstream::load(&store, &ds, "BTCUSDT").await.unwrap();
        assert_eq!(u.fingerprint(d("2025-01-01")), before.0);
        assert_ne!(u.fingerprint(d("2025-01-02")), before.1);
        assert_eq!(u.horizon(d("2025-01-31")), Some(d("2025-01-03")));
    }
}
