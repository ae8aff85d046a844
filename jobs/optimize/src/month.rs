//! Compacting one (dataset, symbol, month): for each day in order, take the rows whose own time
//! falls in that day from the chosen partitions of the day and its neighbours, sort them, drop
//! duplicates on the dataset's key, and append them as row groups to the month's file. Only three
//! days of partitions are held at a time.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use frames::polars::prelude::*;
use frames::{FloatEncoding, ParquetOptions, ParquetSink, PolarsContext};
use serde::Serialize;
use shared::formats::format_of;
use shared::job::Stamp;
use shared::manifest::UnitStatus;
use shared::paths::Period;
use shared::{Context, Error, Result};

use crate::{DayInput, MonthUnit, Spec};

/// A day present in both a daily and a monthly archive, and which one was kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceChoice {
    pub date: NaiveDate,
    pub daily_rows: u64,
    pub monthly_rows: u64,
    pub kept: Period,
}

#[derive(Debug, Clone, Default)]
pub struct MonthResult {
    /// Rows read for the month's days, before deduplication.
    pub rows_in: u64,
    pub rows_out: u64,
    pub duplicates_removed: u64,
    /// The days that had duplicates, and how many were removed from each.
    pub duplicate_days: Vec<(NaiveDate, u64)>,
    pub bytes: u64,
    pub choices: Vec<SourceChoice>,
}

/// Per day, the partition to read: the more complete of the daily and monthly sources (more
/// rows; the monthly one on a tie, as the consolidated publication).
pub fn choose_sources(inputs: &[DayInput]) -> (BTreeMap<NaiveDate, DayInput>, Vec<SourceChoice>) {
    let mut by_day: BTreeMap<NaiveDate, Vec<&DayInput>> = BTreeMap::new();
    for i in inputs {
        by_day.entry(i.date).or_default().push(i);
    }
    let mut chosen = BTreeMap::new();
    let mut choices = Vec::new();
    for (date, v) in by_day {
        let daily = v.iter().find(|i| i.source == Period::Daily);
        let monthly = v.iter().find(|i| i.source == Period::Monthly);
        let pick = match (daily, monthly) {
            (Some(d), Some(m)) => {
                let kept = if d.rows > m.rows { *d } else { *m };
                choices.push(SourceChoice {
                    date,
                    daily_rows: d.rows,
                    monthly_rows: m.rows,
                    kept: kept.source,
                });
                kept
            }
            (Some(x), None) | (None, Some(x)) => *x,
            (None, None) => continue,
        };
        chosen.insert(date, pick.clone());
    }
    (chosen, choices)
}

pub(crate) async fn optimize(
    spec: &Spec,
    ctx: &Context,
    stamp: &Stamp,
    u: MonthUnit,
) -> Result<MonthResult> {
    let (chosen, choices) = choose_sources(&u.inputs);
    let format = format_of(&u.dataset);
    let first = u.month.first_day();
    let out_path = u
        .dataset
        .optimized_partition(&u.symbol, first.year(), first.month());
    let opts = ParquetOptions {
        row_group_rows: Some(spec.row_group_rows),
        floats: FloatEncoding::optimized_months(spec.smallest_floats),
        ..ParquetOptions::default()
    };
    let handle = tokio::runtime::Handle::current();
    let (store, cancel) = (ctx.store.clone(), ctx.cancel.clone());
    let days: Vec<NaiveDate> = u.month.days().collect();
    let blocking =
        tokio::task::spawn_blocking(move || -> Result<(Option<ParquetSink>, MonthResult)> {
            let mut window: BTreeMap<NaiveDate, DataFrame> = BTreeMap::new();
            let mut sink: Option<ParquetSink> = None;
            let mut res = MonthResult::default();
            for day in days {
                if cancel.is_cancelled() {
                    return Err(Error::Interrupted);
                }
                let lo = day.pred_opt().unwrap_or(day);
                let hi = day.succ_opt().unwrap_or(day);
                window.retain(|d, _| *d >= lo);
                for d in [lo, day, hi] {
                    if window.contains_key(&d) {
                        continue;
                    }
                    if let Some(input) = chosen.get(&d) {
                        let df = handle
                            .block_on(frames::read_parquet(&store, &input.path))
                            .map_err(Error::from)?
                            .ok_or_else(|| Error::upstream_missing(&input.path, crate::UPSTREAM))?;
                        window.insert(d, df);
                    }
                }
                let parts: Vec<&DataFrame> =
                    [lo, day, hi].iter().filter_map(|d| window.get(d)).collect();
                let Some((head, rest)) = parts.split_first() else {
                    continue;
                };
                let mut all = (*head).clone();
                for p in rest {
                    all.vstack_mut(p)
                        .ctx(|| format!("stacking partitions around {day}"))
                        .map_err(Error::from)?;
                }
                let (start, end) = day_bounds_us(day);
                let t = format.time_field;
                let in_day = col(t)
                    .cast(DataType::Int64)
                    .gt_eq(lit(start))
                    .and(col(t).cast(DataType::Int64).lt(lit(end)));
                let sort_by: Vec<PlSmallStr> =
                    format.sort.iter().map(|s| PlSmallStr::from(*s)).collect();
                let key: Option<Vec<Expr>> = if format.key.is_empty() {
                    None
                } else {
                    Some(format.key.iter().map(|k| col(*k)).collect())
                };
                let filtered = all
                    .lazy()
                    .filter(in_day)
                    .sort(
                        sort_by,
                        SortMultipleOptions::default().with_maintain_order(true),
                    )
                    .collect()
                    .ctx(|| format!("sorting {day}"))
                    .map_err(Error::from)?;
                let before = filtered.height() as u64;
                let mut deduped = filtered
                    .lazy()
                    .unique_stable_generic(key, UniqueKeepStrategy::First)
                    .collect()
                    .ctx(|| format!("deduplicating {day}"))
                    .map_err(Error::from)?;
                deduped.rechunk_mut();
                res.rows_in += before;
                res.rows_out += deduped.height() as u64;
                res.duplicates_removed += before - deduped.height() as u64;
                if before > deduped.height() as u64 {
                    res.duplicate_days
                        .push((day, before - deduped.height() as u64));
                }
                if deduped.height() == 0 {
                    continue;
                }
                if sink.is_none() {
                    sink = Some(ParquetSink::new(deduped.schema(), &opts).map_err(Error::from)?);
                }
                sink.as_mut()
                    .expect("created")
                    .write(&deduped)
                    .map_err(Error::from)?;
            }
            Ok((sink, res))
        });
    let (sink, mut res) = blocking.await.map_err(|e| Error::Io {
        context: format!("optimizing {}", u.key()),
        source: std::io::Error::other(e.to_string()),
    })??;
    res.choices = choices;
    let mut outputs = Vec::new();
    match sink {
        Some(sink) => {
            let out = sink
                .finish(&ctx.store, &out_path)
                .await
                .map_err(Error::from)?;
            res.bytes = out.size;
            outputs.push(out);
        }
        // Every row of the month's partitions belongs to another month: no file.
        None => ctx.store.delete(&out_path).await?,
    }
    if let Some(legacy) =
        u.dataset
            .legacy_optimized_partition(&u.symbol, first.year(), first.month())
    {
        ctx.store.delete(&legacy).await?;
    }
    let mut entry = stamp.entry(u.key(), UnitStatus::Done, u.fingerprint(), outputs);
    entry.detail = Some(format!(
        "rows_in={} rows_out={} duplicates_removed={} days_in_both_sources={}",
        res.rows_in,
        res.rows_out,
        res.duplicates_removed,
        res.choices.len(),
    ));
    entry.duplicate_days = res.duplicate_days.iter().copied().collect();
    u.writer.record(entry).await?;
    Ok(res)
}

/// `[start, end)` of a UTC day in µs.
fn day_bounds_us(day: NaiveDate) -> (i64, i64) {
    let start = shared::time::day_start_us(day);
    (start, start + 86_400_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(day: u32, source: Period, rows: u64) -> DayInput {
        DayInput {
            date: NaiveDate::from_ymd_opt(2024, 1, day).unwrap(),
            source,
            path: format!("p{day}{source:?}"),
            sha256: String::new(),
            rows,
            time_span: None,
        }
    }

    #[test]
    fn the_more_complete_source_wins_and_is_reported() {
        let (chosen, choices) = choose_sources(&[
            input(1, Period::Monthly, 1440),
            input(2, Period::Monthly, 1440),
            input(2, Period::Daily, 1000),
            input(3, Period::Monthly, 700),
            input(3, Period::Daily, 1440),
            input(4, Period::Daily, 1440),
        ]);
        let kept: Vec<Period> = chosen.values().map(|i| i.source).collect();
        assert_eq!(
            kept,
            vec![
                Period::Monthly,
                Period::Monthly,
                Period::Daily,
                Period::Daily
            ]
        );
        assert_eq!(choices.len(), 2);
        assert_eq!(choices[0].kept, Period::Monthly);
        assert_eq!(
            (choices[1].daily_rows, choices[1].monthly_rows),
            (1440, 700)
        );
    }

    #[test]
    fn day_bounds() {
        let (s, e) = day_bounds_us(NaiveDate::from_ymd_opt(2026, 9, 15).unwrap());
        assert_eq!(s, 1_789_430_400_000_000);
        assert_eq!(e - s, 86_400_000_000);
    }
}
