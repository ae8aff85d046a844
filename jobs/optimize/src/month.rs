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

/// A day present in both a daily and a monthly archive, which one was kept, and how they differ
/// value by value (by the dataset's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceChoice {
    pub date: NaiveDate,
    pub daily_rows: u64,
    pub monthly_rows: u64,
    pub kept: Source,
    pub rows_only_daily: u64,
    pub rows_only_monthly: u64,
    /// Column → rows (present in both) whose value differs.
    pub cells_differ: BTreeMap<String, u64>,
}

impl SourceChoice {
    pub fn identical(&self) -> bool {
        self.rows_only_daily == 0 && self.rows_only_monthly == 0 && self.cells_differ.is_empty()
    }
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
                    rows_only_daily: 0,
                    rows_only_monthly: 0,
                    cells_differ: BTreeMap::new(),
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
            let mut groups = RowGroups::new(opts);
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
                        let df = frames::read_parquet_blocking(&handle, &store, &input.path)
                            .map_err(Error::from)?
                            .ok_or_else(|| Error::upstream_missing(&input.path, crate::UPSTREAM))?;
                        window.insert(d, df);
                    }
                }
                let parts: Vec<&DataFrame> =
                    [lo, day, hi].iter().filter_map(|d| window.get(d)).collect();
                if parts.is_empty() {
                    continue;
                }
                let (start, end) = day_bounds_us(day);
                let filtered = day_rows(format, &parts, start, end)
                    .ctx(|| format!("sorting {day}"))
                    .map_err(Error::from)?;
                let before = filtered.rows.height() as u64;
                let deduped = if filtered.unique {
                    filtered.rows
                } else {
                    let key: Option<Vec<Expr>> = if format.key.is_empty() {
                        None
                    } else {
                        Some(format.key.iter().map(|k| col(*k)).collect())
                    };
                    filtered
                        .rows
                        .lazy()
                        .unique_stable_generic(key, UniqueKeepStrategy::First)
                        .collect()
                        .ctx(|| format!("deduplicating {day}"))
                        .map_err(Error::from)?
                };
                res.rows_in += before;
                res.rows_out += deduped.height() as u64;
                res.duplicates_removed += before - deduped.height() as u64;
                if before > deduped.height() as u64 {
                    res.duplicate_days
                        .push((day, before - deduped.height() as u64));
                }
                groups.push(deduped).map_err(Error::from)?;
            }
            let sink = groups.finish().map_err(Error::from)?;
            Ok((sink, res))
        });
    let (sink, mut res) = blocking.await.map_err(|e| Error::Io {
        context: format!("optimizing {}", u.key()),
        source: std::io::Error::other(e.to_string()),
    })??;
    res.choices = choices;
    for c in &mut res.choices {
        let input = |source| {
            u.inputs
                .iter()
                .find(|i| i.date == c.date && i.source == source)
        };
        if let (Some(d), Some(m)) = (input(Source::Daily), input(Source::Monthly)) {
            let (df_d, df_m) = (read_input(ctx, d).await?, read_input(ctx, m).await?);
            let diff = compare_frames(format, (&df_d, &d.path), (&df_m, &m.path))?;
            c.rows_only_daily = diff.0;
            c.rows_only_monthly = diff.1;
            c.cells_differ = diff.2;
        }
    }
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

/// A day partition, read whole.
async fn read_input(ctx: &Context, i: &DayInput) -> Result<DataFrame> {
    frames::read_parquet(&ctx.store, &i.path)
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::upstream_missing(&i.path, crate::UPSTREAM))
}

/// Compare a day's REST partition with the archive's over the interval REST holds.
async fn compare_rest(
    ctx: &Context,
    format: &shared::formats::Format,
    rest: &DayInput,
    archive: &[&DayInput],
) -> Result<RestVsArchive> {
    let r = read_input(ctx, rest).await?;
    let mut a: Option<DataFrame> = None;
    for i in archive {
        let df = read_input(ctx, i).await?;
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
    let (only_rest, only_archive, cells_differ) =
        compare_frames(format, (&r, &rest.path), (&a, archive_path))?;
    Ok(RestVsArchive {
        date: rest.date,
        rest_rows: r.height() as u64,
        rows_only_rest: only_rest,
        rows_only_archive: only_archive,
        cells_differ,
    })
}

/// Two sources of the same rows compared by the dataset's key (its first column, else the time):
/// rows only the first has, rows only the second has, and per column the rows present in both
/// whose values differ.
fn compare_frames(
    format: &shared::formats::Format,
    (x, x_path): (&DataFrame, &str),
    (y, y_path): (&DataFrame, &str),
) -> Result<(u64, u64, BTreeMap<String, u64>)> {
    let key = format.key.first().copied().unwrap_or(format.time_field);
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
    let (xk, yk) = (keys(x, x_path)?, keys(y, y_path)?);
    let y_at: std::collections::HashMap<i64, usize> =
        yk.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let x_keys: std::collections::HashSet<i64> = xk.iter().copied().collect();
    let only_y = yk.iter().filter(|k| !x_keys.contains(k)).count() as u64;
    let mut only_x = 0;
    let pairs: Vec<(usize, usize)> = xk
        .iter()
        .enumerate()
        .filter_map(|(i, k)| match y_at.get(k) {
            Some(j) => Some((i, *j)),
            None => {
                only_x += 1;
                None
            }
        })
        .collect();
    let mut cells = BTreeMap::new();
    for c in x.columns() {
        let name = c.name().as_str();
        let Ok(other) = y.column(name) else {
            cells.insert(name.to_string(), pairs.len() as u64);
            continue;
        };
        let (xs, ys) = (c.as_materialized_series(), other.as_materialized_series());
        let n = pairs
            .iter()
            .filter(|(i, j)| xs.get(*i).ok() != ys.get(*j).ok())
            .count() as u64;
        if n > 0 {
            cells.insert(name.to_string(), n);
        }
    }
    Ok((only_x, only_y, cells))
}

/// The month's days gathered into row groups of `row_group_rows` rows (the last one shorter), so
/// a month of 1m klines or of funding is one row group, not one per day: readers then fetch one
/// footer entry and one page per column, and the float encoding is chosen and compressed once
/// over the month. At most a row group plus a day is held.
struct RowGroups {
    opts: ParquetOptions,
    sink: Option<ParquetSink>,
    pending: Option<DataFrame>,
}

impl RowGroups {
    fn new(opts: ParquetOptions) -> RowGroups {
        RowGroups {
            opts,
            sink: None,
            pending: None,
        }
    }

    fn target(&self) -> usize {
        self.opts.row_group_rows.unwrap_or(usize::MAX).max(1)
    }

    /// Add a day's rows; writes every full row group.
    fn push(&mut self, day: DataFrame) -> frames::Result<()> {
        if day.height() == 0 {
            return Ok(());
        }
        let mut pending = match self.pending.take() {
            None => day,
            Some(mut p) => {
                p.vstack_mut_owned(day)
                    .ctx(|| "stacking days".to_string())?;
                p
            }
        };
        let target = self.target();
        if pending.height() >= target {
            pending.rechunk_mut();
            let mut at = 0;
            while pending.height() - at >= target {
                self.write(&pending.slice(at as i64, target))?;
                at += target;
            }
            pending = pending.slice(at as i64, pending.height() - at);
        }
        self.pending = (pending.height() > 0).then_some(pending);
        Ok(())
    }

    fn write(&mut self, group: &DataFrame) -> frames::Result<()> {
        if self.sink.is_none() {
            self.sink = Some(ParquetSink::new(group.schema(), &self.opts)?);
        }
        self.sink.as_mut().expect("created").write(group)
    }

    /// Write what is pending; the sink, if any row was written.
    fn finish(mut self) -> frames::Result<Option<ParquetSink>> {
        if let Some(mut rest) = self.pending.take() {
            rest.rechunk_mut();
            self.write(&rest)?;
        }
        Ok(self.sink)
    }
}

/// A day's rows gathered from its partitions, sorted by the dataset's sort columns.
struct DayRows {
    rows: DataFrame,
    /// Whether the rows are known to be unique on the dataset's key (it strictly increases), so
    /// deduplicating would remove nothing. `false` when not known.
    unique: bool,
}

/// The rows of `parts` whose time falls in `[start, end)`, in sort order. The partitions
/// arrive sorted and hold (nearly) only their own day, so the rows usually are in order once
/// filtered and stacked: that is checked in one pass over the sort and key columns, and only a
/// day that is not (a shuffled file, an overlap between daily and monthly publications) pays
/// for a stable sort. The result is the same either way.
fn day_rows(
    format: &shared::formats::Format,
    parts: &[&DataFrame],
    start: i64,
    end: i64,
) -> PolarsResult<DayRows> {
    let t = format.time_field;
    let mut all: Option<DataFrame> = None;
    for p in parts {
        let times = p.column(t)?.cast(&DataType::Int64)?;
        let times = times.i64()?;
        let is_inside = |v: Option<i64>| v.is_some_and(|v| (start..end).contains(&v));
        let inside = times.iter().filter(|v| is_inside(*v)).count();
        // Most parts are wholly inside (the day's own) or wholly outside (its neighbours, read
        // for their late or early rows): neither needs a filter. A day's rows are a few
        // thousand, so a partial filter runs on this thread: Polars' parallel filter would wake
        // its pool for each of a store's 100 k daily files.
        let rows = if inside == p.height() {
            (*p).clone()
        } else if inside == 0 {
            continue;
        } else {
            let mask: BooleanChunked = times.iter().map(is_inside).collect();
            p.filter_seq(&mask)?
        };
        match &mut all {
            None => all = Some(rows),
            Some(acc) => {
                acc.vstack_mut_owned(rows)?;
            }
        }
    }
    // No row inside: an empty day, with the parts' columns.
    let all = match all {
        Some(all) => all,
        None => parts.first().map(|p| p.clear()).unwrap_or_default(),
    };
    if let Some(unique) = in_order(format, &all)? {
        return Ok(DayRows { rows: all, unique });
    }
    let sort_by: Vec<PlSmallStr> = format.sort.iter().map(|s| PlSmallStr::from(*s)).collect();
    let rows = all
        .lazy()
        .sort(
            sort_by,
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()?;
    Ok(DayRows {
        rows,
        unique: false,
    })
}

/// Whether `df` is already in the order of the dataset's sort columns (`Some`: a stable sort
/// would change nothing), and if so whether its key strictly increases, i.e. is unique
/// (`Some(true)`). `None` when it is out of order or that cannot be told cheaply: a sort column
/// that is not an integer or time, or has nulls.
fn in_order(format: &shared::formats::Format, df: &DataFrame) -> PolarsResult<Option<bool>> {
    let ints = |name: &str| -> PolarsResult<Option<Vec<i64>>> {
        let c = df.column(name)?;
        if !(c.dtype().is_integer() || c.dtype().is_temporal()) || c.null_count() > 0 {
            return Ok(None);
        }
        let c = c.cast(&DataType::Int64)?;
        Ok(Some(c.i64()?.into_no_null_iter().collect()))
    };
    let mut sort = Vec::with_capacity(format.sort.len());
    for name in format.sort {
        match ints(name)? {
            Some(v) => sort.push(v),
            None => return Ok(None),
        }
    }
    let n = df.height();
    // Lexicographic order of the sort columns, row by row: `Less` strictly, `Equal` ties.
    let mut strict = true;
    for i in 1..n {
        match sort.iter().map(|c| c[i - 1].cmp(&c[i])).find(|o| o.is_ne()) {
            Some(std::cmp::Ordering::Greater) => return Ok(None),
            Some(_) => {}
            None => strict = false,
        }
    }
    // The key is unique when it is the sort columns and the order is strict, or a single
    // column that strictly increases.
    let unique = match format.key {
        [] => false,
        key if key == format.sort => strict,
        [k] => match ints(k)? {
            Some(v) => v.windows(2).all(|w| w[0] < w[1]),
            None => false,
        },
        _ => false,
    };
    Ok(Some(unique))
}

/// `[start, end)` of a UTC day in µs.
fn day_bounds_us(day: NaiveDate) -> (i64, i64) {
    let start = shared::time::day_start_us(day);
    (start, start + 86_400_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_compare_value_by_value_on_the_key() {
        let frame =
            |times: &[i64], closes: &[f64]| df!("open_time" => times, "close" => closes).unwrap();
        let daily = frame(&[0, 60, 120, 180], &[1.0, 2.0, 3.0, 4.0]);
        let monthly = frame(&[0, 60, 120, 240], &[1.0, 2.5, 3.0, 5.0]);
        let klines = &shared::formats::KLINES;
        let (only_d, only_m, cells) =
            compare_frames(klines, (&daily, "d"), (&monthly, "m")).unwrap();
        assert_eq!((only_d, only_m), (1, 1));
        assert_eq!(
            cells.into_iter().collect::<Vec<_>>(),
            vec![("close".to_string(), 1)]
        );
        let (a, b, c) = compare_frames(klines, (&daily, "d"), (&daily, "d")).unwrap();
        assert_eq!((a, b, c.len()), (0, 0, 0));
    }

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

    /// A klines-shaped frame: `open_time` in µs and a value column.
    fn klines(times: &[i64]) -> DataFrame {
        let v: Vec<f64> = times.iter().map(|t| *t as f64).collect();
        DataFrame::new(
            times.len(),
            vec![
                Column::new("open_time".into(), times)
                    .cast(&frames::time_dtype())
                    .unwrap(),
                Column::new("close".into(), v),
            ],
        )
        .unwrap()
    }

    fn times(df: &DataFrame) -> Vec<i64> {
        let c = df
            .column("open_time")
            .unwrap()
            .cast(&DataType::Int64)
            .unwrap();
        c.i64().unwrap().into_no_null_iter().collect()
    }

    const M: i64 = 60_000_000;

    #[test]
    fn a_day_in_order_is_taken_as_it_is_and_its_neighbours_rows_are_cut() {
        let k = &shared::formats::KLINES;
        let (start, end) = (1_000 * M, 1_000 * M + 1_440 * M);
        let before = klines(&[start - 2 * M, start - M, start]);
        let day = klines(&[start + M, start + 2 * M]);
        let after = klines(&[end - M, end, end + M]);
        let got = day_rows(k, &[&before, &day, &after], start, end).unwrap();
        assert!(got.unique);
        assert_eq!(
            times(&got.rows),
            vec![start, start + M, start + 2 * M, end - M]
        );
    }

    #[test]
    fn a_day_whose_parts_hold_no_row_of_it_is_empty_with_their_columns() {
        let k = &shared::formats::KLINES;
        let (start, end) = (1_000 * M, 1_000 * M + 1_440 * M);
        let before = klines(&[start - 2 * M, start - M]);
        let after = klines(&[end, end + M]);
        let got = day_rows(k, &[&before, &after], start, end).unwrap();
        assert_eq!(got.rows.height(), 0);
        assert_eq!(got.rows.schema(), before.schema());
        // Only the neighbours' rows outside the day are cut, whichever part they are in.
        let mixed = klines(&[start - M, start + M]);
        let got = day_rows(k, &[&mixed, &after], start, end).unwrap();
        assert_eq!(times(&got.rows), vec![start + M]);
    }

    #[test]
    fn a_shuffled_or_duplicated_day_is_sorted_and_left_to_deduplicate() {
        let k = &shared::formats::KLINES;
        let (start, end) = (0, 1_440 * M);
        let shuffled = klines(&[2 * M, M, 3 * M]);
        let got = day_rows(k, &[&shuffled], start, end).unwrap();
        assert!(!got.unique);
        assert_eq!(times(&got.rows), vec![M, 2 * M, 3 * M]);
        // In order but with a repeated minute: no sort needed, but deduplication is.
        let repeated = klines(&[M, 2 * M, 2 * M, 3 * M]);
        let got = day_rows(k, &[&repeated], start, end).unwrap();
        assert!(!got.unique);
        assert_eq!(times(&got.rows), vec![M, 2 * M, 2 * M, 3 * M]);
        // Two partitions that overlap in time: stacked out of order, so sorted (stably).
        let (a, b) = (klines(&[M, 3 * M]), klines(&[2 * M, 4 * M]));
        let got = day_rows(k, &[&a, &b], start, end).unwrap();
        assert!(!got.unique);
        assert_eq!(times(&got.rows), vec![M, 2 * M, 3 * M, 4 * M]);
    }

    #[tokio::test]
    async fn days_are_gathered_into_row_groups_of_the_asked_size() {
        let dir = std::env::temp_dir().join(format!("optimize-rg-{}", std::process::id()));
        let store = shared::Store::open(dir.to_str().unwrap()).unwrap();
        let groups_of = |target: usize, days: Vec<DataFrame>| {
            let store = store.clone();
            let dir = dir.clone();
            async move {
                let mut g = RowGroups::new(ParquetOptions {
                    row_group_rows: Some(target),
                    ..ParquetOptions::default()
                });
                for d in days {
                    g.push(d).unwrap();
                }
                let Some(sink) = g.finish().unwrap() else {
                    return (vec![], vec![]);
                };
                sink.finish(&store, "m.parquet").await.unwrap();
                let f = frames::file::ParquetFile::open(&dir.join("m.parquet"), "m").unwrap();
                let sizes = (0..f.num_row_groups())
                    .map(|rg| f.read_frame(rg).unwrap().height())
                    .collect::<Vec<_>>();
                let all = (0..f.num_row_groups())
                    .flat_map(|rg| times(&f.read_frame(rg).unwrap()))
                    .collect::<Vec<_>>();
                (sizes, all)
            }
        };
        let days = || {
            vec![
                klines(&[1, 2, 3]),
                klines(&[]),
                klines(&[4, 5, 6]),
                klines(&[7, 8, 9]),
            ]
        };
        let (sizes, all) = groups_of(4, days()).await;
        assert_eq!(sizes, vec![4, 4, 1]);
        assert_eq!(all, (1..=9).collect::<Vec<i64>>());
        // The default: the whole month in one row group.
        let (sizes, _) = groups_of(1 << 20, days()).await;
        assert_eq!(sizes, vec![9]);
        // A day larger than a row group is cut into several.
        let (sizes, _) = groups_of(2, vec![klines(&[1, 2, 3, 4, 5])]).await;
        assert_eq!(sizes, vec![2, 2, 1]);
        // Nothing to write: no file.
        assert_eq!(groups_of(2, vec![klines(&[])]).await.0, Vec::<usize>::new());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn day_bounds() {
        let (s, e) = day_bounds_us(NaiveDate::from_ymd_opt(2026, 9, 15).unwrap());
        assert_eq!(s, 1_789_430_400_000_000);
        assert_eq!(e - s, 86_400_000_000);
    }
}
