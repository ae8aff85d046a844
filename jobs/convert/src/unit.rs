//! Converting one staged CSV: parse it in a blocking thread in fixed-size reads, route rows to
//! their day partitions (a daily archive is one partition; a monthly archive is split by each
//! row's UTC day and days are flushed once the stream has moved past them), write each partition
//! to a staging path, and only when the whole file parsed, move them into place and record the
//! unit. A malformed row fails the unit and leaves what was converted before untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use chrono::NaiveDate;
use frames::polars::prelude::{ChunkAgg, DataFrame};
use frames::{ParquetOptions, PolarsContext};
use shared::formats::{ColumnData, Columns, Parser, format_of};
use shared::manifest::{Entry, Output, UnitStatus};
use shared::paths::FileDate;
use shared::{Context, Error, Result};

use crate::{JOB, JOB_VERSION, Spec, Unit};

/// Rows parsed before they are routed to days (bounds memory between flushes).
const ROUTE_EVERY_ROWS: usize = 1 << 20;

/// What a converted unit produced.
#[derive(Debug, Clone, Default)]
pub struct UnitResult {
    pub rows: u64,
    pub dropped_invalid: u64,
    pub partitions: u64,
    pub bytes: u64,
}

pub(crate) async fn convert(
    spec: &Spec,
    ctx: &Context,
    phash: &str,
    u: Unit,
) -> Result<UnitResult> {
    let key = u.file.key();
    let r = convert_inner(spec, ctx, &u).await;
    match r {
        Ok((outputs, res)) => {
            // Outputs of an earlier conversion of this unit that it no longer produces.
            let now: BTreeSet<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
            for old in &u.previous {
                if !now.contains(old.as_str()) {
                    ctx.store.delete(old).await?;
                }
            }
            let entry = Entry {
                unit: key,
                status: UnitStatus::Done,
                inputs: [("csv".to_string(), u.csv_sha.clone())].into(),
                job_version: JOB_VERSION.into(),
                params_hash: phash.to_string(),
                outputs,
                recorded_at: ctx.clock.now(),
                run_id: ctx.run_id.clone(),
                detail: Some(format!(
                    "rows={} dropped_invalid={}",
                    res.rows, res.dropped_invalid
                )),
            };
            u.writer.record(entry).await?;
            Ok(res)
        }
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(e) => {
            let entry = Entry {
                unit: key,
                status: UnitStatus::Failed,
                inputs: [("csv".to_string(), u.csv_sha.clone())].into(),
                job_version: JOB_VERSION.into(),
                params_hash: phash.to_string(),
                outputs: vec![],
                recorded_at: ctx.clock.now(),
                run_id: ctx.run_id.clone(),
                detail: Some(e.to_string()),
            };
            u.writer.record(entry).await?;
            Err(e)
        }
    }
}

async fn convert_inner(spec: &Spec, ctx: &Context, u: &Unit) -> Result<(Vec<Output>, UnitResult)> {
    // A local store is read in place; anything else is copied to a temp file first.
    let (path, _tmp) = match ctx.store.local_path(&u.csv_path) {
        Some(p) => (p, None),
        None => {
            let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::Io {
                context: "creating a temp file".into(),
                source: e,
            })?;
            ctx.store
                .download_to(&u.csv_path, tmp.path())
                .await?
                .ok_or_else(|| missing_csv(&u.csv_path))?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let staging = format!("_staging/{}/{}", ctx.run_id, JOB);
    let handle = tokio::runtime::Handle::current();
    let (store, cancel) = (ctx.store.clone(), ctx.cancel.clone());
    let file = u.file.clone();
    let csv_path = u.csv_path.clone();
    let opts = ParquetOptions {
        row_group_rows: Some(spec.row_group_rows),
    };
    let chunk = spec.read_chunk;
    let staging2 = staging.clone();
    let result = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing_csv(&csv_path),
            _ => Error::Io {
                context: format!("opening {csv_path}"),
                source: e,
            },
        })?;
        let mut conv = Converter::new(&file, &csv_path, handle, store, staging2, opts);
        conv.run(f, chunk, &cancel)
    })
    .await
    .map_err(|e| Error::Io {
        context: format!("converting {}", u.csv_path),
        source: std::io::Error::other(e.to_string()),
    })?;
    let (staged, res) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = delete_prefix(
                ctx,
                &format!(
                    "{staging}/{}",
                    u.file.dataset.parquet_symbol_dir(&u.file.symbol)
                ),
            )
            .await;
            return Err(e);
        }
    };
    // The whole file parsed: move every partition into place.
    let mut outputs = Vec::new();
    for (staged_path, mut out) in staged {
        let final_path = out.path.clone();
        ctx.store.rename(&staged_path, &final_path).await?;
        out.path = final_path;
        outputs.push(out);
    }
    Ok((outputs, res))
}

fn missing_csv(path: &str) -> Error {
    Error::Parse(format!(
        "{path} is not in the store (pruned or never extracted): run `extract --force` for it"
    ))
}

async fn delete_prefix(ctx: &Context, prefix: &str) -> Result<()> {
    for (p, _) in ctx.store.list(prefix).await? {
        ctx.store.delete(&p).await?;
    }
    Ok(())
}

/// The blocking half: parse, route, write staged partitions.
struct Converter<'a> {
    file: &'a shared::paths::ArchiveFile,
    csv_path: &'a str,
    handle: tokio::runtime::Handle,
    store: shared::Store,
    staging: String,
    opts: ParquetOptions,
    /// Day → rows not yet written.
    open: BTreeMap<NaiveDate, DataFrame>,
    /// Day → (staged path, output) already written.
    written: BTreeMap<NaiveDate, (String, Output)>,
    rows: u64,
}

impl<'a> Converter<'a> {
    fn new(
        file: &'a shared::paths::ArchiveFile,
        csv_path: &'a str,
        handle: tokio::runtime::Handle,
        store: shared::Store,
        staging: String,
        opts: ParquetOptions,
    ) -> Self {
        Converter {
            file,
            csv_path,
            handle,
            store,
            staging,
            opts,
            open: BTreeMap::new(),
            written: BTreeMap::new(),
            rows: 0,
        }
    }

    fn run(
        &mut self,
        mut f: std::fs::File,
        chunk: usize,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(Vec<(String, Output)>, UnitResult)> {
        let format = format_of(&self.file.dataset);
        let mut parser = Parser::new(format, self.csv_path, self.file);
        let mut cols = Columns::new(format);
        let mut buf = vec![0u8; chunk];
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            let n = f.read(&mut buf).map_err(|e| Error::Io {
                context: format!("reading {}", self.csv_path),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            parser.feed(&buf[..n], &mut cols)?;
            if cols.len() >= ROUTE_EVERY_ROWS {
                self.route(std::mem::replace(&mut cols, Columns::new(format)))?;
            }
        }
        parser.finish(&mut cols)?;
        self.route(cols)?;
        // A monthly archive answers for every day of its month: a day without rows gets an
        // empty partition, so `optimize` can tell "the monthly file lacks this day" from "no
        // monthly file" and report it when a daily file has the rows.
        if let FileDate::Month { .. } = self.file.date {
            for day in self.file.date.days() {
                if !self.open.contains_key(&day) && !self.written.contains_key(&day) {
                    self.append(day, Columns::new(format))?;
                }
            }
        }
        self.flush_before(None)?;
        let stats = parser.stats();
        let staged: Vec<(String, Output)> =
            std::mem::take(&mut self.written).into_values().collect();
        let res = UnitResult {
            rows: self.rows,
            dropped_invalid: stats.dropped_invalid,
            partitions: staged.len() as u64,
            bytes: staged.iter().map(|(_, o)| o.size).sum(),
        };
        Ok((staged, res))
    }

    /// Send parsed rows to their day partitions, then write the days the stream has left behind.
    fn route(&mut self, cols: Columns) -> Result<()> {
        if cols.is_empty() {
            return Ok(());
        }
        self.rows += cols.len() as u64;
        match self.file.date {
            FileDate::Day(d) => self.append(d, cols)?,
            FileDate::Month { .. } => {
                let format = format_of(&self.file.dataset);
                let (first, last) = (self.file.date.first_day(), self.file.date.last_day());
                let times = match cols.column(format.time_field) {
                    Some(ColumnData::TimeUs(v)) => v,
                    _ => {
                        return Err(Error::Parse(format!(
                            "{}: no time column `{}`",
                            self.csv_path, format.time_field
                        )));
                    }
                };
                // Rows outside the month (never seen, but possible) are kept, clamped to its
                // first or last day; `optimize` files rows by their own time.
                let mut by_day: BTreeMap<NaiveDate, Vec<usize>> = BTreeMap::new();
                for (i, t) in times.iter().enumerate() {
                    let day = day_of_us(*t).clamp(first, last);
                    by_day.entry(day).or_default().push(i);
                }
                if by_day.len() == 1 {
                    let day = *by_day.keys().next().expect("one day");
                    self.append(day, cols)?;
                } else {
                    for (day, idx) in by_day {
                        let part = cols.take_rows(&idx);
                        self.append(day, part)?;
                    }
                }
                let newest = *self.open.keys().next_back().expect("rows were routed");
                // Monthly files are day-ordered up to small disorder: a day two behind the newest
                // is complete.
                self.flush_before(newest.pred_opt().and_then(|d| d.pred_opt()))?;
            }
        }
        Ok(())
    }

    fn append(&mut self, day: NaiveDate, cols: Columns) -> Result<()> {
        let df = frames::to_frame(cols).map_err(Error::from)?;
        match self.open.get_mut(&day) {
            Some(acc) => {
                acc.vstack_mut_owned(df)
                    .ctx(|| format!("appending rows of {day}"))
                    .map_err(Error::from)?;
            }
            None => {
                self.open.insert(day, df);
            }
        }
        Ok(())
    }

    /// Write every open day strictly before `cutoff` (all when `None`).
    fn flush_before(&mut self, cutoff: Option<NaiveDate>) -> Result<()> {
        let days: Vec<NaiveDate> = self
            .open
            .keys()
            .copied()
            .filter(|d| cutoff.is_none_or(|c| *d < c))
            .collect();
        for day in days {
            let mut df = self.open.remove(&day).expect("listed");
            if let Some((staged, _)) = self.written.get(&day) {
                // Late rows for a day already written: merge with what was written.
                let staged = staged.clone();
                let prev = self
                    .handle
                    .block_on(frames::read_parquet(&self.store, &staged))
                    .map_err(Error::from)?
                    .ok_or_else(|| Error::Parse(format!("staged partition {staged} vanished")))?;
                let mut merged = prev;
                merged
                    .vstack_mut_owned(df)
                    .ctx(|| format!("merging late rows of {day}"))
                    .map_err(Error::from)?;
                df = merged;
            }
            df.rechunk_mut();
            let final_path =
                self.file
                    .dataset
                    .parquet_partition(&self.file.symbol, day, self.file.period());
            let staged = format!("{}/{final_path}", self.staging);
            let mut out = self
                .handle
                .block_on(frames::write_parquet(
                    &self.store,
                    &staged,
                    &mut df,
                    &self.opts,
                ))
                .map_err(Error::from)?;
            out.path = final_path;
            out.time_span = time_span(&df, format_of(&self.file.dataset).time_field);
            self.written.insert(day, (staged, out));
        }
        Ok(())
    }
}

/// Min and max of a frame's time column, in µs.
fn time_span(df: &DataFrame, time_field: &str) -> Option<[i64; 2]> {
    let c = df
        .column(time_field)
        .ok()?
        .cast(&frames::polars::prelude::DataType::Int64)
        .ok()?;
    let ca = c.i64().ok()?;
    Some([ca.min()?, ca.max()?])
}

/// The UTC day of a µs timestamp.
pub fn day_of_us(t: i64) -> NaiveDate {
    let days = t.div_euclid(86_400_000_000);
    NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32).unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_of_timestamps() {
        assert_eq!(day_of_us(0), NaiveDate::from_ymd_opt(1970, 1, 1).unwrap());
        assert_eq!(
            day_of_us(-1),
            NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()
        );
        // 2026-09-15 00:00:00 and 23:59:59.999999 UTC.
        let d = NaiveDate::from_ymd_opt(2026, 9, 15).unwrap();
        assert_eq!(day_of_us(1_789_430_400_000_000), d);
        assert_eq!(day_of_us(1_789_516_799_999_999), d);
        assert_eq!(
            day_of_us(1_789_516_800_000_000),
            NaiveDate::from_ymd_opt(2026, 9, 16).unwrap()
        );
    }
}
