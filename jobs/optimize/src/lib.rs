//! The `optimize` job: compacts a symbol's daily Parquet partitions into one file per month
//! (`optimized/<market>/<dataset>/symbol=S/year=Y/month=MM/part-0.parquet`), sorted by time and
//! deduplicated on the dataset's key, with scan-sized row groups. Where a day came from both a
//! monthly and a daily archive, the more complete one is kept and the difference reported. A
//! month is rewritten only when the fingerprints of its input partitions change. It streams day
//! by day, so a month never has to fit in memory.

#![forbid(unsafe_code)]

mod month;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use shared::cli::CommonSpec;
use shared::exec::{self, Tally};
use shared::manifest::{Manifest, ManifestKey, ManifestWriter, UnitStatus, select_symbols};
use shared::paths::{Dataset, FileDate, Partition, Period};
use shared::report::{RunHeader, RunReport};
use shared::{Context, Result};

pub use month::{MonthResult, SourceChoice};

pub const JOB: &str = "optimize";
/// Bumped whenever a month's bytes or path change, so every month is written anew: 3 spells the
/// month partition unpadded (`month=3`, read as an integer by every reader) and removes the
/// padded month (`month=03`) a store held before.
pub const JOB_VERSION: &str = "3";
pub const UPSTREAM: &str = "convert";

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

/// One input partition: a converted day from one source period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayInput {
    pub date: NaiveDate,
    pub source: Period,
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    pub time_span: Option<[i64; 2]>,
}

use shared::time::DAY_US;

/// The ` duplicate_days=D:N,D:N` tail of a month's manifest detail (empty without duplicates):
/// which days the archive had duplicated rows on, so `validate` can name them.
pub fn format_duplicate_days(days: &[(NaiveDate, u64)]) -> String {
    if days.is_empty() {
        return String::new();
    }
    let list: Vec<String> = days
        .iter()
        .map(|(d, n)| format!("{}:{n}", d.format("%Y-%m-%d")))
        .collect();
    format!(" duplicate_days={}", list.join(","))
}

/// The days and counts [`format_duplicate_days`] wrote into a manifest detail.
pub fn parse_duplicate_days(detail: &str) -> Vec<(NaiveDate, u64)> {
    detail
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("duplicate_days="))
        .flat_map(|list| list.split(','))
        .filter_map(|x| {
            let (d, n) = x.split_once(':')?;
            Some((
                NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?,
                n.parse().ok()?,
            ))
        })
        .collect()
}

pub(crate) use shared::time::day_start_us;

/// One unit: a (dataset, symbol, month) and the partitions it reads — the month's days and the
/// day on either side (rows near midnight can sit in a neighbour's file).
pub(crate) struct MonthUnit {
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
}

pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    let t0 = Instant::now();
    let header = RunHeader {
        job: JOB,
        job_version: JOB_VERSION,
        store: spec.common.store.clone(),
        started_at: ctx.clock.now(),
        params: serde_json::to_value(&spec).unwrap_or_default(),
    };
    let phash = shared::manifest::params_hash(&(spec.row_group_rows,));
    let mut tally = Tally::default();
    let mut units = Vec::new();

    for ds in &spec.common.datasets {
        let scope = ds.scope();
        let symbols = select_symbols(
            &ctx.store,
            UPSTREAM,
            &scope,
            &spec.common.symbols,
            &mut tally,
        )
        .await?;
        for sym in spec.common.shard_of(&symbols) {
            let upstream =
                Manifest::load(&ctx.store, &ManifestKey::new(UPSTREAM, &scope, &sym)).await?;
            let mut days: BTreeMap<NaiveDate, Vec<DayInput>> = BTreeMap::new();
            for e in upstream.entries().filter(|e| e.status == UnitStatus::Done) {
                for o in &e.outputs {
                    if let Ok(Partition::Day { date, source, .. }) = Partition::parse(&o.path) {
                        days.entry(date).or_default().push(DayInput {
                            date,
                            source,
                            path: o.path.clone(),
                            sha256: o.sha256.clone(),
                            rows: o.rows.unwrap_or(0),
                            time_span: o.time_span,
                        });
                    }
                }
            }
            let (writer, mine) =
                ManifestWriter::open(&ctx.store, &ManifestKey::new(JOB, &scope, &sym)).await?;
            let writer = Arc::new(writer);
            for month in spec.common.range.months() {
                let (first, last) = (month.first_day(), month.last_day());
                if !days.range(first..=last).any(|_| true) {
                    continue; // nothing converted in this month
                }
                let lo = first.pred_opt().unwrap_or(first);
                let hi = last.succ_opt().unwrap_or(last);
                let (m0, m1) = (day_start_us(first), day_start_us(last) + DAY_US);
                // A neighbour day's partition is an input only if its rows reach into the month
                // (or its span is unknown): then a change on Dec 31 rewrites December alone.
                let inputs: Vec<DayInput> = days
                    .range(lo..=hi)
                    .flat_map(|(_, v)| v.clone())
                    .filter(|i| {
                        (first..=last).contains(&i.date)
                            || (i.rows > 0 && i.time_span.is_none_or(|[a, b]| b >= m0 && a < m1))
                    })
                    .collect();
                let fingerprint = inputs
                    .iter()
                    .map(|i| (i.path.clone(), i.sha256.clone()))
                    .collect();
                let unit = MonthUnit {
                    dataset: *ds,
                    symbol: sym.clone(),
                    month,
                    inputs,
                    writer: writer.clone(),
                };
                let done = mine
                    .get(&unit.key())
                    .is_some_and(|p| p.is_done_with(&fingerprint, JOB_VERSION, &phash));
                if done && !spec.common.force {
                    tally.skip();
                    continue;
                }
                units.push(unit);
            }
        }
    }

    if spec.common.dry_run {
        for u in &units {
            println!(
                "optimize {} ({} input partitions) -> {}",
                u.key(),
                u.inputs.len(),
                u.dataset.optimized_partition(
                    &u.symbol,
                    u.month.first_day().year(),
                    u.month.first_day().month()
                )
            );
        }
        return Ok(header.dry_run(ctx, tally, units.len() as u64, serde_json::Value::Null));
    }
    tracing::info!(
        months = units.len(),
        up_to_date = tally.counts.skipped,
        "plan ready"
    );

    let spec = Arc::new(spec);
    let (mut bytes, mut rows_in, mut rows_out, mut dups) = (0u64, 0u64, 0u64, 0u64);
    let mut both_sources = Vec::new();
    let work = {
        let (spec, ctx, phash) = (spec.clone(), ctx.clone(), phash.clone());
        move |u: MonthUnit| {
            let (spec, ctx, phash) = (spec.clone(), ctx.clone(), phash.clone());
            async move {
                let key = format!("{}/{}", u.dataset.scope(), u.key());
                (key, month::optimize(&spec, &ctx, &phash, u).await)
            }
        }
    };
    let not_run = exec::for_each_bounded(("optimize", "months"), units, spec.common.concurrency, &ctx.cancel, work, |key, r| {
        if let Some(m) = tally.record(&key, r) {
            bytes += m.bytes;
            rows_in += m.rows_in;
            rows_out += m.rows_out;
            dups += m.duplicates_removed;
            for c in m.choices {
                tracing::warn!(unit = %key, day = %c.date, daily_rows = c.daily_rows, monthly_rows = c.monthly_rows, kept = ?c.kept, "day present in both a daily and a monthly archive");
                both_sources.push(serde_json::json!({"unit": key, "choice": c}));
            }
        }
    })
    .await?;
    tally.counts.not_run += not_run;
    let outcome = tally.outcome(ctx.cancel.is_cancelled());
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let details = serde_json::json!({
        "rows_in": rows_in,
        "rows_out": rows_out,
        "duplicates_removed": dups,
        "days_in_both_sources": both_sources,
        "seconds": secs,
        "rows_per_sec": rows_in as f64 / secs,
    });
    Ok(header.report(ctx, outcome, tally, bytes, details))
}
