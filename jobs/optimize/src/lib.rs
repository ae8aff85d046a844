//! The `optimize` job: compacts a symbol's daily Parquet partitions into one file per month
//! (`optimized/<market>/<dataset>/symbol=S/year=Y/month=MM/part-0.parquet`), sorted by time and
//! deduplicated on the dataset's key, with scan-sized row groups. Where a day came from both a
//! monthly and a daily archive, the more complete one is kept and the difference reported. A
//! month is rewritten only when the fingerprints of its input partitions change. It streams day
//! by day, so a month never has to fit in memory. Days `tail` filled from REST are read only
//! where the archive has no partition; once the archive's arrives it wins, and the report says
//! what REST had differently (`rest_vs_archive`).

#![forbid(unsafe_code)]

mod month;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{ManifestWriter, UnitStatus};
use shared::paths::{Dataset, FileDate, Partition, Source};
use shared::time::{DAY_US, day_start_us};
use shared::{Context, Result};

pub use month::{MonthResult, RestVsArchive, SourceChoice};

/// Bumped whenever a month's layout, path or manifest entry change, so every month is written
/// anew: 5 gathers a month's days into row groups of `--row-group-rows` (a row group per day
/// before) and compresses PLAIN float pages with LZ4. A codec's level alone is no reason: months
/// written at either read the same, and a store is not rewritten for a few percent of bytes.
pub const JOB_VERSION: &str = "5";
/// The job whose manifest lists the inputs.
pub const UPSTREAM: JobName = JobName::CONVERT;
/// The job whose manifest lists the REST partitions of the days the archive does not have yet.
pub const REST_UPSTREAM: JobName = JobName::TAIL;

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// Rows per row group of the compacted files.
    pub row_group_rows: usize,
    /// Float pages zstd only ([`frames::FloatEncoding::Chosen`]): the smallest files, where by
    /// default PLAIN ones may be LZ4 to read faster ([`frames::FloatEncoding::ChosenLz4`]). Not
    /// part of the params hash: the values are the same either way, so months already written
    /// keep their pages until rewritten (`--force`).
    pub smallest_floats: bool,
}

/// One input partition: a converted day from one source period, or a day filled from REST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayInput {
    pub date: NaiveDate,
    pub source: Source,
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    pub time_span: Option<[i64; 2]>,
    /// For a REST partition: the interval it holds (µs), `[from, until)`.
    pub coverage: Option<[i64; 2]>,
}

/// One unit: a (dataset, symbol, month) and the partitions it reads — the month's days and the
/// day on either side (rows near midnight can sit in a neighbour's file).
pub struct MonthUnit {
    pub dataset: Dataset,
    pub symbol: String,
    pub month: FileDate,
    pub inputs: Vec<DayInput>,
    pub writer: Arc<ManifestWriter>,
}

impl MonthUnit {
    pub fn key(&self) -> String {
        format!("{}/{}", self.symbol, self.month)
    }

    /// The month's input partitions and their hashes: a change to any rewrites the month.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        self.inputs
            .iter()
            .map(|i| (i.path.clone(), i.sha256.clone()))
            .collect()
    }
}

#[derive(Default)]
pub struct Totals {
    bytes: u64,
    rows_in: u64,
    rows_out: u64,
    duplicates: u64,
    both_sources: Vec<serde_json::Value>,
    rest_days: u64,
    rest_vs_archive: Vec<serde_json::Value>,
}

impl Job for Spec {
    const NAME: JobName = JobName::OPTIMIZE;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "months";
    type Unit = MonthUnit;
    type Done = MonthResult;
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.common
    }

    fn params_hash(&self) -> String {
        shared::manifest::params_hash(&(self.row_group_rows,))
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<MonthUnit>> {
        let mut units = Vec::new();
        for ds in &self.common.datasets {
            let scope = ds.scope();
            // A symbol only REST has filled so far (listed after the archive's last day) counts.
            let symbols = p.symbols_of(&[UPSTREAM, REST_UPSTREAM], &scope).await?;
            p.load_ahead(&[UPSTREAM, REST_UPSTREAM], &scope, &symbols);
            for sym in symbols {
                let upstream = p.upstream(UPSTREAM, &scope, &sym).await?;
                let rest = p.upstream(REST_UPSTREAM, &scope, &sym).await?;
                let mut days: BTreeMap<NaiveDate, Vec<DayInput>> = BTreeMap::new();
                for e in upstream
                    .entries()
                    .chain(rest.entries())
                    .filter(|e| e.status == UnitStatus::Done)
                {
                    for o in &e.outputs {
                        if let Ok(Partition::Day { date, source, .. }) = Partition::parse(&o.path) {
                            days.entry(date).or_default().push(DayInput {
                                date,
                                source,
                                path: o.path.clone(),
                                sha256: o.sha256.clone(),
                                rows: o.rows.unwrap_or(0),
                                time_span: o.time_span,
                                coverage: e.rest.map(|r| [r.from_us, r.until_us]),
                            });
                        }
                    }
                }
                let (writer, mine) = p.manifest(&scope, &sym).await?;
                for month in self.common.range.months() {
                    let (first, last) = (month.first_day(), month.last_day());
                    if !days.range(first..=last).any(|_| true) {
                        continue; // nothing converted in this month
                    }
                    let lo = first.pred_opt().unwrap_or(first);
                    let hi = last.succ_opt().unwrap_or(last);
                    let (m0, m1) = (day_start_us(first), day_start_us(last) + DAY_US);
                    // A neighbour day's partition is an input only if its rows reach into the
                    // month (or its span is unknown): then a change on Dec 31 rewrites December
                    // alone.
                    let inputs: Vec<DayInput> = days
                        .range(lo..=hi)
                        .flat_map(|(_, v)| v.clone())
                        .filter(|i| {
                            (first..=last).contains(&i.date)
                                || (i.rows > 0
                                    && i.time_span.is_none_or(|[a, b]| b >= m0 && a < m1))
                        })
                        .collect();
                    let unit = MonthUnit {
                        dataset: *ds,
                        symbol: sym.clone(),
                        month,
                        inputs,
                        writer: writer.clone(),
                    };
                    if !p.is_current(mine.get(&unit.key()), &unit.fingerprint()) {
                        units.push(unit);
                    }
                }
            }
        }
        Ok(units)
    }

    fn unit_key(u: &MonthUnit) -> String {
        format!("{}/{}", u.dataset.scope(), u.key())
    }

    fn dry_run_line(&self, u: &MonthUnit) -> String {
        format!(
            "optimize {} ({} input partitions) -> {}",
            u.key(),
            u.inputs.len(),
            u.dataset.optimized_partition(
                &u.symbol,
                u.month.first_day().year(),
                u.month.first_day().month()
            )
        )
    }

    async fn execute(
        job: Arc<Self>,
        ctx: Context,
        stamp: Stamp,
        u: MonthUnit,
    ) -> Result<MonthResult> {
        month::optimize(&job, &ctx, &stamp, u).await
    }

    fn absorb(&self, t: &mut Totals, key: &str, m: MonthResult) -> Finished<MonthUnit> {
        t.bytes += m.bytes;
        t.rows_in += m.rows_in;
        t.rows_out += m.rows_out;
        t.duplicates += m.duplicates_removed;
        t.rest_days += m.rest_days;
        for d in m.rest_vs_archive {
            if d.identical() {
                tracing::info!(unit = %key, day = %d.date, "the archive replaces REST rows: identical");
            } else {
                tracing::warn!(unit = %key, day = %d.date, rows_only_rest = d.rows_only_rest, rows_only_archive = d.rows_only_archive, cells = ?d.cells_differ, "the archive replaces REST rows that differ");
            }
            t.rest_vs_archive.push(serde_json::json!({
                "unit": key,
                "identical": d.identical(),
                "diff": d,
            }));
        }
        for c in m.choices {
            if c.identical() {
                tracing::info!(unit = %key, day = %c.date, "day present in both a daily and a monthly archive: identical");
            } else {
                tracing::warn!(unit = %key, day = %c.date, daily_rows = c.daily_rows, monthly_rows = c.monthly_rows, kept = ?c.kept, rows_only_daily = c.rows_only_daily, rows_only_monthly = c.rows_only_monthly, cells = ?c.cells_differ, "day present in both a daily and a monthly archive, and they differ");
            }
            t.both_sources
                .push(serde_json::json!({"unit": key, "identical": c.identical(), "choice": c}));
        }
        Finished::Done
    }

    fn bytes(&self, t: &Totals) -> u64 {
        t.bytes
    }

    async fn finish(&self, _ctx: &Context, t: Totals, end: &mut End) -> Result<serde_json::Value> {
        let secs = end.seconds;
        Ok(serde_json::json!({
            "rows_in": t.rows_in,
            "rows_out": t.rows_out,
            "duplicates_removed": t.duplicates,
            "days_in_both_sources": t.both_sources,
            "days_from_rest": t.rest_days,
            "rest_vs_archive": t.rest_vs_archive,
            "seconds": secs,
            "rows_per_sec": t.rows_in as f64 / secs,
        }))
    }
}
