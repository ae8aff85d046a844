//! The bars dataset: bars as Polars columns (features.md §3 "Bar columns"), and the year files
//! of one (bar spec, symbol) rewritten as a history grows — the bars a file keeps, then the new
//! ones, in row groups of [`ROW_GROUP`] bars counted from the file's start, so a file holds the
//! same bytes whether its history was computed in one run or several.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike};
use frames::polars::prelude::*;
use frames::{ParquetOptions, ParquetSink, to_column};
use shared::formats::ColumnData;
use shared::paths::BarsKey;
use shared::{Error, Result, Store};
use tokio::runtime::Handle;

use crate::engine::Bar;
use crate::input::{self, LocalCopy, ParquetFile};

/// Bars per row group.
pub const ROW_GROUP: usize = 65_536;

/// The columns, in file order.
pub const COLUMNS: [&str; 14] = [
    "bar",
    "open_time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "dollar_volume",
    "buy_volume",
    "ticks",
    "vwap",
    "imbalance",
    "threshold",
];

fn frames_err(e: frames::Error) -> Error {
    e.into()
}

/// Bars as a DataFrame.
pub fn bars_frame(bars: &[Bar]) -> Result<DataFrame> {
    let f = |g: fn(&Bar) -> f64| ColumnData::F64(bars.iter().map(g).collect());
    let data = [
        ColumnData::I64(bars.iter().map(|b| b.bar as i64).collect()),
        ColumnData::TimeUs(bars.iter().map(|b| b.open_time).collect()),
        ColumnData::TimeUs(bars.iter().map(|b| b.close_time).collect()),
        f(|b| b.open),
        f(|b| b.high),
        f(|b| b.low),
        f(|b| b.close),
        f(|b| b.volume),
        f(|b| b.dollar_volume),
        f(|b| b.buy_volume),
        ColumnData::I64(bars.iter().map(|b| b.ticks as i64).collect()),
        ColumnData::OptF64(bars.iter().map(Bar::vwap).collect()),
        f(|b| b.imbalance),
        f(|b| b.threshold),
    ];
    let columns = COLUMNS
        .iter()
        .zip(data)
        .map(|(name, d)| to_column(name, d))
        .collect::<frames::Result<Vec<_>>>()
        .map_err(frames_err)?;
    DataFrame::new(bars.len(), columns).map_err(|e| Error::internal(format!("bars frame: {e}")))
}

/// Decoded [`COLUMNS`] back into bars.
pub fn series_to_bars(cols: &[Series], name: &str) -> Result<Vec<Bar>> {
    let [bar, ot, ct, o, h, l, c, v, dv, bv, t, _vwap, imb, th] = cols else {
        return Err(Error::bad_data(
            name,
            format!("expected {} columns", COLUMNS.len()),
        ));
    };
    let (bar, ot, ct, t) = (
        input::i64s(bar, name)?,
        input::i64s(ot, name)?,
        input::i64s(ct, name)?,
        input::i64s(t, name)?,
    );
    let (o, h, l, c, v, dv, bv, imb, th) = (
        input::f64s(o, name)?,
        input::f64s(h, name)?,
        input::f64s(l, name)?,
        input::f64s(c, name)?,
        input::f64s(v, name)?,
        input::f64s(dv, name)?,
        input::f64s(bv, name)?,
        input::f64s(imb, name)?,
        input::f64s(th, name)?,
    );
    Ok((0..bar.len())
        .map(|i| Bar {
            bar: bar[i] as u64,
            open_time: ot[i],
            close_time: ct[i],
            open: o[i],
            high: h[i],
            low: l[i],
            close: c[i],
            volume: v[i],
            dollar_volume: dv[i],
            buy_volume: bv[i],
            ticks: t[i] as u64,
            imbalance: imb[i],
            threshold: th[i],
        })
        .collect())
}

/// The year a bar lives in: the UTC year of its close.
pub fn year_of(close_time_us: i64) -> i32 {
    DateTime::from_timestamp_micros(close_time_us)
        .map(|t| t.year())
        .unwrap_or(1970)
}

/// A year file written, to put in the store (or removed, when it ended up empty).
pub struct YearFile {
    pub year: i32,
    pub path: String,
    /// `None`: delete the file.
    pub sink: Option<ParquetSink>,
    pub bars: u64,
    /// First bar's open and last bar's close, µs.
    pub time_span: Option<[i64; 2]>,
}

struct Open {
    year: i32,
    sink: ParquetSink,
    buf: Vec<Bar>,
    rows: u64,
    span: Option<[i64; 2]>,
}

/// The year files of one (bar spec, symbol) as its history grows: bars arrive in order; the
/// files they land in, and every existing file that may hold bars from the discarded part of
/// the history (`bar >= keep_below`), are rewritten.
pub struct YearFiles {
    store: Store,
    handle: Handle,
    key: BarsKey,
    keep_below: u64,
    /// Existing files to rewrite, not handled yet.
    pending: BTreeSet<i32>,
    current: Option<Open>,
    done: Vec<YearFile>,
    schema: Schema,
}

impl YearFiles {
    /// `rewrite`: the existing year files that may hold bars at or after `keep_below`.
    pub fn new(
        store: Store,
        handle: Handle,
        key: BarsKey,
        keep_below: u64,
        rewrite: impl IntoIterator<Item = i32>,
    ) -> Result<YearFiles> {
        Ok(YearFiles {
            store,
            handle,
            key,
            keep_below,
            pending: rewrite.into_iter().collect(),
            current: None,
            done: Vec::new(),
            schema: bars_frame(&[])?.schema().as_ref().clone(),
        })
    }

    pub fn push(&mut self, bar: Bar) -> Result<()> {
        let year = year_of(bar.close_time);
        if self.current.as_ref().is_none_or(|c| c.year != year) {
            self.close_current()?;
            // Older files to rewrite first, in order.
            while let Some(&y) = self.pending.first() {
                if y >= year {
                    break;
                }
                self.pending.remove(&y);
                self.open(y)?;
                self.close_current()?;
            }
            self.pending.remove(&year);
            self.open(year)?;
        }
        let cur = self.current.as_mut().expect("opened");
        Self::append(cur, bar)?;
        Ok(())
    }

    fn append(cur: &mut Open, bar: Bar) -> Result<()> {
        cur.span = Some(match cur.span {
            None => [bar.open_time, bar.close_time],
            Some([a, _]) => [a, bar.close_time],
        });
        cur.buf.push(bar);
        cur.rows += 1;
        if cur.buf.len() == ROW_GROUP {
            Self::flush(cur)?;
        }
        Ok(())
    }

    fn flush(cur: &mut Open) -> Result<()> {
        if cur.buf.is_empty() {
            return Ok(());
        }
        let df = bars_frame(&cur.buf)?;
        cur.sink.write(&df).map_err(frames_err)?;
        cur.buf.clear();
        Ok(())
    }

    /// Start year `year`: a new file holding the kept bars of the existing one.
    fn open(&mut self, year: i32) -> Result<()> {
        let opts = ParquetOptions {
            row_group_rows: Some(ROW_GROUP),
            ..ParquetOptions::default()
        };
        let mut cur = Open {
            year,
            sink: ParquetSink::new(&self.schema, &opts).map_err(frames_err)?,
            buf: Vec::with_capacity(1024),
            rows: 0,
            span: None,
        };
        let path = self.key.partition(year);
        if let Some(local) = self.handle.block_on(LocalCopy::fetch(&self.store, &path))? {
            let f = ParquetFile::open(local.path(), &path)?;
            for rg in 0..f.num_row_groups() {
                let cols = f.read(rg, &COLUMNS)?;
                for b in series_to_bars(&cols, &path)? {
                    if b.bar < self.keep_below {
                        Self::append(&mut cur, b)?;
                    }
                }
            }
        }
        self.current = Some(cur);
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(mut cur) = self.current.take() {
            Self::flush(&mut cur)?;
            let path = self.key.partition(cur.year);
            self.done.push(YearFile {
                year: cur.year,
                path,
                bars: cur.rows,
                time_span: cur.span,
                sink: (cur.rows > 0).then_some(cur.sink),
            });
        }
        Ok(())
    }

    /// Every file written or rewritten.
    pub fn finish(mut self) -> Result<Vec<YearFile>> {
        self.close_current()?;
        while let Some(y) = self.pending.pop_first() {
            self.open(y)?;
            self.close_current()?;
        }
        Ok(self.done)
    }
}

/// The years that have a file for `key`.
pub async fn existing_years(store: &Store, key: &BarsKey) -> Result<Vec<i32>> {
    Ok(store
        .list(&key.symbol_dir())
        .await?
        .into_iter()
        .filter_map(|(p, _)| BarsKey::parse_partition(&p).ok())
        .filter(|(k, _)| k == key)
        .map(|(_, y)| y)
        .collect())
}

/// Put a year file in place (or remove it); the manifest output when written.
pub async fn store_year(store: &Store, f: YearFile) -> Result<Option<shared::manifest::Output>> {
    match f.sink {
        None => {
            store.delete(&f.path).await?;
            Ok(None)
        }
        Some(sink) => {
            let mut out = sink.finish(store, &f.path).await.map_err(frames_err)?;
            out.time_span = f.time_span;
            Ok(Some(out))
        }
    }
}
