//! Where fetched rows go: lines in the archive's CSV format, routed to their UTC day, parsed by
//! the parser `convert` uses (so the partition has exactly `convert`'s schema and values), and
//! written as `part-rest.parquet` day by day as the stream moves on; every day of the window is
//! recorded in `tail`'s manifest with the interval it holds. A day continued from an earlier run
//! keeps that run's rows up to the interval its entry records (rows a killed run wrote past it
//! are dropped), then gets the new ones: no row twice, none half-written.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use frames::polars::prelude::*;
use frames::{ParquetOptions, PolarsContext};
use shared::formats::{Columns, Format, Parser, format_of};
use shared::job::Stamp;
use shared::manifest::{Entry, ManifestWriter, RestCoverage, UnitStatus};
use shared::paths::{ArchiveFile, Dataset, FileDate, Market, Source};
use shared::time::{DAY_US, day_of_us, day_start_us};
use shared::{Error, Result, Store};

/// The manifest unit of a day: `YYYY-MM-DD`.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// What the sink wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub rows: u64,
    pub days: u64,
    pub bytes: u64,
    /// The last instant (µs, exclusive) the dataset now holds.
    pub until_us: i64,
}

/// The CSV header the archive's files of `format` carry (futures files; spot files have none,
/// and the parser takes either).
fn header(format: &Format, market: Market) -> Option<String> {
    (market != Market::Spot).then(|| {
        format
            .fields
            .iter()
            .map(|f| f.headers.first().copied().unwrap_or(f.name))
            .collect::<Vec<_>>()
            .join(",")
    })
}

pub struct DaySink {
    store: Store,
    dataset: Dataset,
    symbol: String,
    format: &'static Format,
    header: Option<String>,
    opts: ParquetOptions,
    stamp: Stamp,
    writer: Arc<ManifestWriter>,
    /// `tail`'s latest entry of each day of the window.
    prev: BTreeMap<NaiveDate, Entry>,
    from_us: i64,
    until_us: i64,
    fetched_at: chrono::DateTime<chrono::Utc>,
    /// The first day not yet recorded.
    next_day: NaiveDate,
    open: Option<(NaiveDate, String, u64)>,
    written: Written,
}

impl DaySink {
    /// A sink for rows of `[from_ms, until_ms)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        dataset: Dataset,
        symbol: &str,
        stamp: Stamp,
        writer: Arc<ManifestWriter>,
        prev: BTreeMap<NaiveDate, Entry>,
        from_ms: i64,
        until_ms: i64,
        fetched_at: chrono::DateTime<chrono::Utc>,
    ) -> DaySink {
        let format = format_of(&dataset);
        DaySink {
            store,
            dataset,
            symbol: symbol.to_string(),
            format,
            header: header(format, dataset.market),
            opts: ParquetOptions {
                zstd_level: Some(1),
                // As `convert` writes day partitions: `optimize` re-encodes them.
                floats: frames::FloatEncoding::Plain,
                ..ParquetOptions::default()
            },
            stamp,
            writer,
            prev,
            from_us: from_ms * 1000,
            until_us: until_ms * 1000,
            fetched_at,
            next_day: day_of_us(from_ms * 1000),
            open: None,
            written: Written {
                until_us: from_ms * 1000,
                ..Written::default()
            },
        }
    }

    /// One row, its time in ms; rows come in time order.
    pub async fn push(&mut self, t_ms: i64, line: String) -> Result<()> {
        let day = day_of_us(t_ms * 1000);
        match &mut self.open {
            Some((d, lines, n)) if *d == day => {
                lines.push_str(&line);
                lines.push('\n');
                *n += 1;
            }
            Some((d, _, _)) if *d > day => {
                return Err(Error::internal(format!(
                    "{} {}: REST rows out of order ({day} after {d})",
                    self.dataset.scope(),
                    self.symbol
                )));
            }
            _ => {
                self.flush().await?;
                let mut lines = self.header.clone().map(|h| h + "\n").unwrap_or_default();
                lines.push_str(&line);
                lines.push('\n');
                self.open = Some((day, lines, 1));
            }
        }
        Ok(())
    }

    /// Record the open day and the empty days before it.
    async fn flush(&mut self) -> Result<()> {
        let Some((day, lines, rows)) = self.open.take() else {
            return Ok(());
        };
        while self.next_day < day {
            self.record(self.next_day, None, 0).await?;
        }
        self.record(day, Some(lines), rows).await
    }

    /// Record every remaining day of the window; what the dataset now holds.
    pub async fn finish(mut self) -> Result<Written> {
        self.flush().await?;
        let last = day_of_us(self.until_us - 1);
        while self.next_day <= last && self.until_us > self.from_us {
            self.record(self.next_day, None, 0).await?;
        }
        self.written.until_us = self.until_us.max(self.from_us);
        Ok(self.written)
    }

    async fn record(&mut self, day: NaiveDate, lines: Option<String>, rows: u64) -> Result<()> {
        self.next_day = day.succ_opt().unwrap_or(day);
        let (d0, d1) = (day_start_us(day), day_start_us(day) + DAY_US);
        let from = self.from_us.max(d0);
        let until = self.until_us.min(d1);
        let path = self
            .dataset
            .parquet_partition(&self.symbol, day, Source::Rest);
        // An earlier run's rows of this day that this one continues.
        let carried = self.prev.get(&day).and_then(|e| {
            let r = e.rest?;
            (r.until_us == from && r.from_us < from).then_some((r, e))
        });
        let new = match lines {
            Some(text) => Some(self.parse(day, &text)?),
            None => None,
        };
        let mut frame = match (carried, new) {
            (Some((r, e)), new) if e.outputs.iter().any(|o| o.rows.unwrap_or(0) > 0) => {
                let old = frames::read_parquet(&self.store, &path)
                    .await
                    .map_err(Error::from)?
                    .ok_or_else(|| Error::upstream_missing(&path, shared::job::JobName::TAIL))?;
                let t = self.format.time_field;
                let mut kept = old
                    .lazy()
                    .filter(col(t).cast(DataType::Int64).lt(lit(r.until_us)))
                    .collect()
                    .ctx(|| format!("{path}: keeping the rows before {}", r.until_us))
                    .map_err(Error::from)?;
                if let Some(n) = new {
                    kept.vstack_mut_owned(n)
                        .ctx(|| format!("{path}: appending"))
                        .map_err(Error::from)?;
                }
                Some(kept)
            }
            (_, new) => new,
        };
        let coverage_from = carried.map_or(from, |(r, _)| r.from_us);
        let mut outputs = Vec::new();
        match frame.as_mut().filter(|f| f.height() > 0) {
            Some(df) => {
                df.rechunk_mut();
                let mut out = frames::write_parquet(&self.store, &path, df, &self.opts)
                    .await
                    .map_err(Error::from)?;
                out.time_span = frames::time_span(df, self.format.time_field);
                self.written.bytes += out.size;
                outputs.push(out);
            }
            // No row: no file (a killed run's file, if any, goes).
            None => self.store.delete(&path).await?,
        }
        let mut entry = self
            .stamp
            .entry(day_key(day), UnitStatus::Done, BTreeMap::new(), outputs);
        entry.detail = Some(format!("rows={rows} rest_until={}", fmt_us(until)));
        entry.rest = Some(RestCoverage {
            from_us: coverage_from,
            until_us: until,
            fetched_at: self.fetched_at,
        });
        self.writer.record(entry).await?;
        self.written.rows += rows;
        self.written.days += 1;
        Ok(())
    }

    fn parse(&self, day: NaiveDate, text: &str) -> Result<DataFrame> {
        let label = format!(
            "REST rows of {} {} {day}",
            self.dataset.scope(),
            self.symbol
        );
        let file = ArchiveFile::new(self.dataset, self.symbol.clone(), FileDate::Day(day));
        let mut parser = Parser::new(self.format, &label, &file);
        let mut cols = Columns::new(self.format);
        parser.feed(text.as_bytes(), &mut cols)?;
        parser.finish(&mut cols)?;
        frames::to_frame(cols).map_err(Error::from)
    }
}

pub fn fmt_us(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}
