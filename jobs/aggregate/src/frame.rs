//! Between Polars frames and the plain columns the feature core works on: optimized klines,
//! fundingRate and metrics in, feature bars out and back (to keep unchanged rows of a year file).

use chrono::NaiveDate;
use frames::Buffer;
use frames::direct::{Dest, Reader};
use frames::polars::prelude::*;
use frames::time_dtype;
use shared::{Error, Result};

use crate::features::{Bars, Funding, Metrics, Minutes};

fn col<'a>(df: &'a DataFrame, name: &str, what: &str) -> Result<&'a Column> {
    df.column(name)
        .map_err(|_| Error::bad_data(what, format!("no column `{name}`")))
}

fn i64s(df: &DataFrame, name: &str, what: &str) -> Result<Vec<i64>> {
    opt_i64s(df, name, what)?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::bad_data(what, format!("null in `{name}`")))
}

fn opt_i64s(df: &DataFrame, name: &str, what: &str) -> Result<Vec<Option<i64>>> {
    let c = col(df, name, what)?
        .cast(&DataType::Int64)
        .map_err(|e| Error::bad_data(what, format!("`{name}`: {e}")))?;
    let ca = c
        .i64()
        .map_err(|e| Error::bad_data(what, format!("`{name}`: {e}")))?;
    Ok(ca.iter().collect())
}

fn f64s(df: &DataFrame, name: &str, what: &str) -> Result<Vec<f64>> {
    float_column(df, name, what)?
        .iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::bad_data(what, format!("null in `{name}`")))
}

/// A nullable float column with NaN for null (as [`Bars`] holds them).
fn nan_f64s(df: &DataFrame, name: &str, what: &str) -> Result<Vec<f64>> {
    Ok(float_column(df, name, what)?
        .iter()
        .map(|x| x.unwrap_or(crate::features::NULL))
        .collect())
}

fn float_column<'a>(df: &'a DataFrame, name: &str, what: &str) -> Result<&'a Float64Chunked> {
    col(df, name, what)?
        .f64()
        .map_err(|e| Error::bad_data(what, format!("`{name}`: {e}")))
}

/// The columns read of each kind of input.
pub const KLINE_COLUMNS: [&str; 10] = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
];
pub const FUNDING_COLUMNS: [&str; 3] = ["calc_time", "last_funding_rate", "funding_interval_hours"];
pub const METRICS_COLUMNS: [&str; 7] = [
    "snapshot_time",
    "sum_open_interest",
    "sum_open_interest_value",
    "count_toptrader_long_short_ratio",
    "sum_toptrader_long_short_ratio",
    "count_long_short_ratio",
    "sum_taker_long_short_vol_ratio",
];

/// The kinds of input file a unit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Klines,
    Funding,
    Metrics,
}

/// One optimized input file: its kind, its month (first day), its path (named in errors) and
/// where its bytes are.
#[derive(Clone)]
pub struct InputFile {
    pub kind: Kind,
    pub month: NaiveDate,
    pub path: String,
    pub source: Source,
}

/// Where an input file's bytes are.
#[derive(Clone)]
pub enum Source {
    /// In memory: fetched from a remote store, or made by a test.
    Bytes(Buffer<u8>),
    /// A local store's file, read whole by the thread that decodes it. Read, not mapped: a
    /// mapping costs a page-table fill and an unmap (with its TLB shootdown to the other cores)
    /// per file, ≈ 10% of a one-symbol run's CPU, where a read is one copy into heap memory
    /// that the next month's read reuses (tests/README.md, "Aggregate benchmark").
    Local(std::path::PathBuf),
}

impl InputFile {
    /// The file's bytes.
    pub fn bytes(&self) -> Result<Buffer<u8>> {
        match &self.source {
            Source::Bytes(b) => Ok(b.clone()),
            Source::Local(p) => match std::fs::read(p) {
                Ok(v) => Ok(Buffer::from(v)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing(&self.path)),
                Err(source) => Err(Error::Io {
                    context: format!("reading {}", self.path),
                    source,
                }),
            },
        }
    }
}

/// The error for an input file the optimize manifest lists but the store does not hold.
pub(crate) fn missing(path: &str) -> Error {
    Error::upstream_missing(path, shared::job::JobName::OPTIMIZE)
}

/// Decode kline file `f` into `m`, replacing its rows: the vectors keep
/// their capacity, so a buffer reused month after month is faulted in once.
pub fn read_klines(r: &mut Reader, f: &InputFile, m: &mut Minutes) -> Result<()> {
    m.clear();
    let c = KLINE_COLUMNS;
    let mut dests = [
        (c[0], Dest::I64(&mut m.open_time)),
        (c[1], Dest::F64(&mut m.open)),
        (c[2], Dest::F64(&mut m.high)),
        (c[3], Dest::F64(&mut m.low)),
        (c[4], Dest::F64(&mut m.close)),
        (c[5], Dest::F64(&mut m.volume)),
        (c[6], Dest::F64(&mut m.quote_volume)),
        (c[7], Dest::I64(&mut m.trades)),
        (c[8], Dest::F64(&mut m.taker_buy_volume)),
        (c[9], Dest::F64(&mut m.taker_buy_quote_volume)),
    ];
    decode_file(r, f, &mut dests, MONTH_MINUTES)
}

/// Decode fundingRate file `f` into `fu`, replacing its records (capacity kept).
pub fn read_funding(r: &mut Reader, f: &InputFile, fu: &mut Funding) -> Result<()> {
    fu.clear();
    let c = FUNDING_COLUMNS;
    let mut dests = [
        (c[0], Dest::I64(&mut fu.calc_time)),
        (c[1], Dest::F64(&mut fu.rate)),
        (c[2], Dest::I64(&mut fu.interval_hours)),
    ];
    decode_file(r, f, &mut dests, MONTH_MINUTES / 60 + 1)
}

/// Decode metrics file `f` into `mt`, replacing its records (capacity kept).
pub fn read_metrics(r: &mut Reader, f: &InputFile, mt: &mut Metrics) -> Result<()> {
    mt.clear();
    let c = METRICS_COLUMNS;
    let mut dests = [
        (c[0], Dest::I64(&mut mt.snapshot_time)),
        (c[1], Dest::OptF64(&mut mt.open_interest)),
        (c[2], Dest::OptF64(&mut mt.open_interest_value)),
        (c[3], Dest::OptF64(&mut mt.top_trader_account_ls_ratio)),
        (c[4], Dest::OptF64(&mut mt.top_trader_position_ls_ratio)),
        (c[5], Dest::OptF64(&mut mt.account_ls_ratio)),
        (c[6], Dest::OptF64(&mut mt.taker_ls_volume_ratio)),
    ];
    decode_file(r, f, &mut dests, MONTH_MINUTES / 5 + 1)
}

/// Minutes in a 31-day month: a thread's buffers are sized for the longest month at once, so
/// the next, longer month does not grow (copy and fault in) them again.
const MONTH_MINUTES: usize = 31 * 1440;

/// Append the columns of `dests` of file `f`, row group by row group: its pages faulted in and
/// its footer parsed on the calling thread, the one that decodes it. The columns get room for
/// the file's rows, and at least `rows`.
fn decode_file(
    r: &mut Reader,
    f: &InputFile,
    dests: &mut [(&str, Dest<'_>)],
    rows: usize,
) -> Result<()> {
    let bytes = f.bytes()?;
    let meta = frames::direct::footer(&bytes, &f.path)?;
    for (_, dest) in dests.iter_mut() {
        dest.reserve(meta.num_rows.max(rows));
    }
    for rg in &meta.row_groups {
        for (name, dest) in dests.iter_mut() {
            r.read_column(&bytes, rg, &f.path, name, dest)?;
        }
    }
    Ok(())
}

/// The output schema's column names, in order.
pub const COLUMNS: [&str; 27] = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "minutes",
    "vwap",
    "vwap_deviation",
    "realized_vol",
    "realized_variance",
    "volume_cv",
    "taker_buy_ratio",
    "parkinson_vol",
    "garman_klass_vol",
    "funding_rate",
    "funding_interval_hours",
    "open_interest",
    "open_interest_value",
    "top_trader_account_ls_ratio",
    "top_trader_position_ls_ratio",
    "account_ls_ratio",
    "taker_ls_volume_ratio",
];

/// Bars as a frame: `open_time` a UTC µs timestamp, counts Int64, features Float64 (nullable).
/// The columns move into the frame as they are (a nullable one gets a validity mask), no copy.
pub fn to_frame(b: Bars) -> Result<DataFrame> {
    let n = |i: usize| PlSmallStr::from(COLUMNS[i]);
    let f = |i: usize, v: Vec<f64>| Float64Chunked::from_vec(n(i), v).into_column();
    let o = |i: usize, v: Vec<f64>| frames::nan_null_column(COLUMNS[i], v);
    let int = |i: usize, v: Vec<i64>| Int64Chunked::from_vec(n(i), v).into_column();
    let rows = b.len();
    let time = Int64Chunked::from_vec(n(0), b.open_time)
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_column();
    let cols = vec![
        time,
        f(1, b.open),
        f(2, b.high),
        f(3, b.low),
        f(4, b.close),
        f(5, b.volume),
        f(6, b.quote_volume),
        int(7, b.trades),
        f(8, b.taker_buy_volume),
        f(9, b.taker_buy_quote_volume),
        int(10, b.minutes),
        o(11, b.vwap),
        o(12, b.vwap_deviation),
        o(13, b.realized_vol),
        o(14, b.realized_variance),
        o(15, b.volume_cv),
        o(16, b.taker_buy_ratio),
        o(17, b.parkinson_vol),
        o(18, b.garman_klass_vol),
        o(19, b.funding_rate),
        Column::new(n(20), b.funding_interval_hours.as_slice()),
        o(21, b.open_interest),
        o(22, b.open_interest_value),
        o(23, b.top_trader_account_ls_ratio),
        o(24, b.top_trader_position_ls_ratio),
        o(25, b.account_ls_ratio),
        o(26, b.taker_ls_volume_ratio),
    ];
    debug_assert_eq!(cols[0].dtype(), &time_dtype());
    DataFrame::new(rows, cols).map_err(|e| Error::internal(format!("assembling bars: {e}")))
}

/// Bars back from a frame `to_frame` wrote.
pub fn from_frame(df: &DataFrame, what: &str) -> Result<Bars> {
    Ok(Bars {
        open_time: i64s(df, COLUMNS[0], what)?,
        open: f64s(df, COLUMNS[1], what)?,
        high: f64s(df, COLUMNS[2], what)?,
        low: f64s(df, COLUMNS[3], what)?,
        close: f64s(df, COLUMNS[4], what)?,
        volume: f64s(df, COLUMNS[5], what)?,
        quote_volume: f64s(df, COLUMNS[6], what)?,
        trades: i64s(df, COLUMNS[7], what)?,
        taker_buy_volume: f64s(df, COLUMNS[8], what)?,
        taker_buy_quote_volume: f64s(df, COLUMNS[9], what)?,
        minutes: i64s(df, COLUMNS[10], what)?,
        vwap: nan_f64s(df, COLUMNS[11], what)?,
        vwap_deviation: nan_f64s(df, COLUMNS[12], what)?,
        realized_vol: nan_f64s(df, COLUMNS[13], what)?,
        realized_variance: nan_f64s(df, COLUMNS[14], what)?,
        volume_cv: nan_f64s(df, COLUMNS[15], what)?,
        taker_buy_ratio: nan_f64s(df, COLUMNS[16], what)?,
        parkinson_vol: nan_f64s(df, COLUMNS[17], what)?,
        garman_klass_vol: nan_f64s(df, COLUMNS[18], what)?,
        funding_rate: nan_f64s(df, COLUMNS[19], what)?,
        funding_interval_hours: opt_i64s(df, COLUMNS[20], what)?,
        open_interest: nan_f64s(df, COLUMNS[21], what)?,
        open_interest_value: nan_f64s(df, COLUMNS[22], what)?,
        top_trader_account_ls_ratio: nan_f64s(df, COLUMNS[23], what)?,
        top_trader_position_ls_ratio: nan_f64s(df, COLUMNS[24], what)?,
        account_ls_ratio: nan_f64s(df, COLUMNS[25], what)?,
        taker_ls_volume_ratio: nan_f64s(df, COLUMNS[26], what)?,
    })
}
