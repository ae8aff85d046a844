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
use shared::paths::Source;
use shared::{Context, Error, Result};

use crate::{DayInput, MonthUnit, Spec};

/// A day present in both a daily and a monthly archive, and which one was kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceChoice {
    pub date: NaiveDate,
    pub daily_rows: u64,
    pub monthly_rows: u64,
    pub kept: Source,
}

/// What REST had for a day that the archive now covers, compared over the interval the REST
/// partition holds: rows only one source has (by the dataset's key) and cells that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestVsArchive {
    pub date: NaiveDate,
    pub rest_rows: u64,
    pub rows_only_rest: u64,
    pub rows_only_archive: u64,
    /// Column → rows whose value differs.
    pub cells_differ: BTreeMap<String, u64>,
}

impl RestVsArchive {
    pub fn identical(&self) -> bool {
        self.rows_only_rest == 0 && self.rows_only_archive == 0 && self.cells_differ.is_empty()
    }
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
    /// Days read from a REST partition (the archive has none yet).
    pub rest_days: u64,
    pub rest_vs_archive: Vec<RestVsArchive>,
}

/// Per day, the partition to read: the more complete of the daily and monthly sources (more
/// rows; the monthly one on a tie, as the consolidated publication); REST only for a day the
/// archive has no partition for.
pub fn choose_sources(inputs: &[DayInput]) -> (BTreeMap<NaiveDate, DayInput>, Vec<SourceChoice>) {
    let mut by_day: BTreeMap<NaiveDate, Vec<&DayInput>> = BTreeMap::new();
    for i in inputs {
        by_day.entry(i.date).or_default().push(i);
    }
    let mut chosen = BTreeMap::new();
    let mut choices = Vec::new();
    for (date, v) in by_day {
        let daily = v.iter().find(|i| i.source == Source::Daily);
        let monthly = v.iter().find(|i| i.source == Source::Monthly);
        let rest = v.iter().find(|i| i.source == Source::Rest);
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
            (None, None) => match rest {
                Some(r) => *r,
                None => continue,
            },
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
    let chosen_days = chosen.clone();
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
    res.rest_days = chosen_days
        .iter()
        .filter(|(d, i)| i.source == Source::Rest && u.month.days().any(|m| m == **d))
        .count() as u64;
    for (date, chosen_input) in &chosen_days {
        if !chosen_input.source.is_archive() {
            continue;
        }
        if let Some(rest) = u
            .inputs
            .iter()
            .find(|i| i.date == *date && i.source == Source::Rest)
        {
            // The archive's rows of the interval may sit in a neighbour's file (metrics
            // labelled by the end of their period: 00:00 is the day before's last row).
            let archive: Vec<&DayInput> = [date.pred_opt(), Some(*date), date.succ_opt()]
                .into_iter()
                .flatten()
                .filter_map(|d| chosen_days.get(&d))
                .filter(|i| i.source.is_archive())
                .collect();
            res.rest_vs_archive
                .push(compare_rest(ctx, format, rest, &archive).await?);
        }
    }
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

/// Compare a day's REST partition with the archive's over the interval REST holds.
async fn compare_rest(
    ctx: &Context,
    format: &shared::formats::Format,
    rest: &DayInput,
    archive: &[&DayInput],
) -> Result<RestVsArchive> {
    let read = |i: &DayInput| {
        let path = i.path.clone();
        async move {
            frames::read_parquet(&ctx.store, &path)
                .await
                .map_err(Error::from)?
                .ok_or_else(|| Error::upstream_missing(&path, crate::UPSTREAM))
        }
    };
    let r = read(rest).await?;
    let mut a: Option<DataFrame> = None;
    for i in archive {
        let df = read(i).await?;
        match &mut a {
            None => a = Some(df),
            Some(acc) => {
                acc.vstack_mut_owned(df)
                    .ctx(|| format!("{}: stacking", i.path))
                    .map_err(Error::from)?;
            }
        }
    }
    let a = a.ok_or_else(|| Error::internal(format!("{}: no archive partition", rest.path)))?;
    let archive_path = archive.first().map_or("", |i| i.path.as_str());
    let t = format.time_field;
    let [from, until] = rest.coverage.unwrap_or([i64::MIN, i64::MAX]);
    let a = a
        .lazy()
        .filter(
            col(t)
                .cast(DataType::Int64)
                .gt_eq(lit(from))
                .and(col(t).cast(DataType::Int64).lt(lit(until))),
        )
        .collect()
        .ctx(|| format!("{archive_path}: rows REST covers"))
        .map_err(Error::from)?;
    let key = format.key.first().copied().unwrap_or(t);
    let keys = |df: &DataFrame, path: &str| -> Result<Vec<i64>> {
        let c = df
            .column(key)
            .and_then(|c| c.cast(&DataType::Int64))
            .ctx(|| format!("{path}: key `{key}`"))
            .map_err(Error::from)?;
        let ca = c.i64().map_err(|e| Error::bad_data(path, e.to_string()))?;
        Ok((0..ca.len())
            .map(|i| ca.get(i).unwrap_or(i64::MIN))
            .collect())
    };
    let (rk, ak) = (keys(&r, &rest.path)?, keys(&a, archive_path)?);
    let archive_at: std::collections::HashMap<i64, usize> =
        ak.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let rest_keys: std::collections::HashSet<i64> = rk.iter().copied().collect();
    let mut out = RestVsArchive {
        date: rest.date,
        rest_rows: r.height() as u64,
        rows_only_rest: 0,
        rows_only_archive: ak.iter().filter(|k| !rest_keys.contains(k)).count() as u64,
        cells_differ: BTreeMap::new(),
    };
    let pairs: Vec<(usize, usize)> = rk
        .iter()
        .enumerate()
        .filter_map(|(i, k)| match archive_at.get(k) {
            Some(j) => Some((i, *j)),
            None => {
                out.rows_only_rest += 1;
                None
            }
        })
        .collect();
    for c in r.columns() {
        let name = c.name().as_str();
        let Ok(other) = a.column(name) else {
            out.cells_differ
                .insert(name.to_string(), pairs.len() as u64);
            continue;
        };
        let (rs, os) = (c.as_materialized_series(), other.as_materialized_series());
        let n = pairs
            .iter()
            .filter(|(i, j)| rs.get(*i).ok() != os.get(*j).ok())
            .count() as u64;
        if n > 0 {
            out.cells_differ.insert(name.to_string(), n);
        }
    }
    Ok(out)
}

/// `[start, end)` of a UTC day in µs.
fn day_bounds_us(day: NaiveDate) -> (i64, i64) {
    let start = shared::time::day_start_us(day);
    (start, start + 86_400_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(day: u32, source: Source, rows: u64) -> DayInput {
        DayInput {
            date: NaiveDate::from_ymd_opt(2024, 1, day).unwrap(),
            source,
            path: format!("p{day}{source:?}"),
            sha256: String::new(),
            rows,
            time_span: None,
            coverage: None,
        }
    }

    #[test]
    fn the_more_complete_source_wins_and_is_reported() {
        let (chosen, choices) = choose_sources(&[
            input(1, Source::Monthly, 1440),
            input(2, Source::Monthly, 1440),
            input(2, Source::Daily, 1000),
            input(3, Source::Monthly, 700),
            input(3, Source::Daily, 1440),
            input(4, Source::Daily, 1440),
            // REST only where the archive has nothing, however many rows it has.
            input(4, Source::Rest, 2000),
            input(5, Source::Rest, 600),
        ]);
        let kept: Vec<Source> = chosen.values().map(|i| i.source).collect();
        assert_eq!(
            kept,
            vec![
                Source::Monthly,
                Source::Monthly,
                Source::Daily,
                Source::Daily,
                Source::Rest
            ]
        );
        assert_eq!(choices.len(), 2);
        assert_eq!(choices[0].kept, Source::Monthly);
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
