//! The one place that spells names: archive keys and URLs, raw/csv/parquet/optimized paths,
//! manifest, run and validation report, staging and quarantine paths. Every `format` here has a
//! `parse` twin, and the tests check them as pairs. Nothing else in the workspace builds such a
//! string by hand.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::DateRange;

/// A market of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Market {
    Spot,
    Um,
    Cm,
    Option,
}

impl Market {
    pub const ALL: [Market; 4] = [Market::Spot, Market::Um, Market::Cm, Market::Option];

    /// The CLI spelling: `spot`, `um`, `cm`, `option`.
    pub fn cli_name(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::Um => "um",
            Market::Cm => "cm",
            Market::Option => "option",
        }
    }

    /// The archive's path segment: `spot`, `futures/um`, `futures/cm`, `option`.
    pub fn archive_segment(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::Um => "futures/um",
            Market::Cm => "futures/cm",
            Market::Option => "option",
        }
    }

    /// The name in our storage layout: `spot`, `futures-um`, `futures-cm`, `option`.
    pub fn storage_name(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::Um => "futures-um",
            Market::Cm => "futures-cm",
            Market::Option => "option",
        }
    }

    pub fn from_storage_name(s: &str) -> Option<Market> {
        Market::ALL.into_iter().find(|m| m.storage_name() == s)
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

impl FromStr for Market {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "spot" => Ok(Market::Spot),
            "um" | "futures-um" | "futures/um" => Ok(Market::Um),
            "cm" | "futures-cm" | "futures/cm" => Ok(Market::Cm),
            "option" => Ok(Market::Option),
            _ => Err(Error::usage(format!(
                "unknown market `{s}` (expected spot, um, cm or option)"
            ))),
        }
    }
}

/// Whether an archive file covers a day or a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }
}

/// Where a day partition's rows came from: a daily or a monthly archive file, or the REST API
/// (`tail`), which fills what the archive has not published yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Daily,
    Monthly,
    Rest,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Daily => "daily",
            Source::Monthly => "monthly",
            Source::Rest => "rest",
        }
    }

    /// Whether the rows came from the archive (final) rather than REST (provisional).
    pub fn is_archive(self) -> bool {
        self != Source::Rest
    }
}

impl From<Period> for Source {
    fn from(p: Period) -> Source {
        match p {
            Period::Daily => Source::Daily,
            Period::Monthly => Source::Monthly,
        }
    }
}

impl FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "daily" => Ok(Source::Daily),
            "monthly" => Ok(Source::Monthly),
            "rest" => Ok(Source::Rest),
            _ => Err(Error::usage(format!("unknown partition source `{s}`"))),
        }
    }
}

impl FromStr for Period {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "daily" => Ok(Period::Daily),
            "monthly" => Ok(Period::Monthly),
            _ => Err(Error::usage(format!("unknown period `{s}`"))),
        }
    }
}

/// A data type, spelled as the archive spells its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DataType {
    #[serde(rename = "klines")]
    Klines,
    #[serde(rename = "markPriceKlines")]
    MarkPriceKlines,
    #[serde(rename = "indexPriceKlines")]
    IndexPriceKlines,
    #[serde(rename = "premiumIndexKlines")]
    PremiumIndexKlines,
    #[serde(rename = "aggTrades")]
    AggTrades,
    #[serde(rename = "trades")]
    Trades,
    #[serde(rename = "fundingRate")]
    FundingRate,
    #[serde(rename = "metrics")]
    Metrics,
    #[serde(rename = "bookTicker")]
    BookTicker,
    #[serde(rename = "bookDepth")]
    BookDepth,
    #[serde(rename = "liquidationSnapshot")]
    LiquidationSnapshot,
    #[serde(rename = "BVOLIndex")]
    BvolIndex,
    #[serde(rename = "EOHSummary")]
    EohSummary,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Klines,
        DataType::MarkPriceKlines,
        DataType::IndexPriceKlines,
        DataType::PremiumIndexKlines,
        DataType::AggTrades,
        DataType::Trades,
        DataType::FundingRate,
        DataType::Metrics,
        DataType::BookTicker,
        DataType::BookDepth,
        DataType::LiquidationSnapshot,
        DataType::BvolIndex,
        DataType::EohSummary,
    ];

    /// The archive's folder name.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Klines => "klines",
            DataType::MarkPriceKlines => "markPriceKlines",
            DataType::IndexPriceKlines => "indexPriceKlines",
            DataType::PremiumIndexKlines => "premiumIndexKlines",
            DataType::AggTrades => "aggTrades",
            DataType::Trades => "trades",
            DataType::FundingRate => "fundingRate",
            DataType::Metrics => "metrics",
            DataType::BookTicker => "bookTicker",
            DataType::BookDepth => "bookDepth",
            DataType::LiquidationSnapshot => "liquidationSnapshot",
            DataType::BvolIndex => "BVOLIndex",
            DataType::EohSummary => "EOHSummary",
        }
    }

    /// Kline-shaped types have an interval folder and name their files after the interval.
    pub fn is_kline_family(self) -> bool {
        matches!(
            self,
            DataType::Klines
                | DataType::MarkPriceKlines
                | DataType::IndexPriceKlines
                | DataType::PremiumIndexKlines
        )
    }

    /// Which periods the archive publishes this type in, for a market (binance-archive.md §1.3).
    /// Empty when the market does not have the type at all.
    pub fn periods(self, market: Market) -> &'static [Period] {
        use DataType::*;
        use Market::*;
        const BOTH: &[Period] = &[Period::Daily, Period::Monthly];
        const DAILY: &[Period] = &[Period::Daily];
        const MONTHLY: &[Period] = &[Period::Monthly];
        match (self, market) {
            (Klines | AggTrades | Trades, Spot | Um | Cm) => BOTH,
            (MarkPriceKlines | IndexPriceKlines | PremiumIndexKlines, Um | Cm) => BOTH,
            (FundingRate, Um | Cm) => MONTHLY,
            (BookTicker, Um | Cm) => BOTH,
            (BookDepth | Metrics, Um | Cm) => DAILY,
            (LiquidationSnapshot, Um | Cm) => DAILY,
            (BvolIndex | EohSummary, Option) => DAILY,
            _ => &[],
        }
    }

    pub fn has_period(self, market: Market, period: Period) -> bool {
        self.periods(market).contains(&period)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DataType::ALL
            .into_iter()
            .find(|d| d.name() == s || d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = DataType::ALL.iter().map(|d| d.name()).collect();
                Error::usage(format!(
                    "unknown data type `{s}` (expected one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// A kline interval, spelled as the archive spells it (`1mo`, not `1M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Interval {
    #[serde(rename = "1s")]
    S1,
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "3m")]
    M3,
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "30m")]
    M30,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "2h")]
    H2,
    #[serde(rename = "4h")]
    H4,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "8h")]
    H8,
    #[serde(rename = "12h")]
    H12,
    #[serde(rename = "1d")]
    D1,
    #[serde(rename = "3d")]
    D3,
    #[serde(rename = "1w")]
    W1,
    #[serde(rename = "1mo")]
    Mo1,
}

impl Interval {
    pub const ALL: [Interval; 16] = [
        Interval::S1,
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H2,
        Interval::H4,
        Interval::H6,
        Interval::H8,
        Interval::H12,
        Interval::D1,
        Interval::D3,
        Interval::W1,
        Interval::Mo1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H2 => "2h",
            Interval::H4 => "4h",
            Interval::H6 => "6h",
            Interval::H8 => "8h",
            Interval::H12 => "12h",
            Interval::D1 => "1d",
            Interval::D3 => "3d",
            Interval::W1 => "1w",
            Interval::Mo1 => "1mo",
        }
    }

    /// Length in milliseconds; `None` for `1mo`, whose length varies.
    pub fn millis(self) -> Option<i64> {
        const S: i64 = 1000;
        const M: i64 = 60 * S;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        Some(match self {
            Interval::S1 => S,
            Interval::M1 => M,
            Interval::M3 => 3 * M,
            Interval::M5 => 5 * M,
            Interval::M15 => 15 * M,
            Interval::M30 => 30 * M,
            Interval::H1 => H,
            Interval::H2 => 2 * H,
            Interval::H4 => 4 * H,
            Interval::H6 => 6 * H,
            Interval::H8 => 8 * H,
            Interval::H12 => 12 * H,
            Interval::D1 => D,
            Interval::D3 => 3 * D,
            Interval::W1 => 7 * D,
            Interval::Mo1 => return None,
        })
    }

    /// Daily files exist only up to `1d` (binance-archive.md §1.4).
    pub fn has_daily_files(self) -> bool {
        !matches!(self, Interval::D3 | Interval::W1 | Interval::Mo1)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        // `1M` is the API's spelling of a month; the archive uses `1mo`.
        let s = if s == "1M" { "1mo" } else { s };
        Interval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| Error::usage(format!("unknown interval `{s}`")))
    }
}

/// The date an archive file covers: one UTC day or one calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileDate {
    Day(NaiveDate),
    Month { year: i32, month: u32 },
}

impl FileDate {
    pub fn period(self) -> Period {
        match self {
            FileDate::Day(_) => Period::Daily,
            FileDate::Month { .. } => Period::Monthly,
        }
    }

    pub fn month_of(d: NaiveDate) -> FileDate {
        FileDate::Month {
            year: d.year(),
            month: d.month(),
        }
    }

    /// First day covered.
    pub fn first_day(self) -> NaiveDate {
        match self {
            FileDate::Day(d) => d,
            FileDate::Month { year, month } => {
                NaiveDate::from_ymd_opt(year, month, 1).expect("valid month")
            }
        }
    }

    /// Last day covered (inclusive).
    pub fn last_day(self) -> NaiveDate {
        match self {
            FileDate::Day(d) => d,
            FileDate::Month { year, month } => {
                let (ny, nm) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                NaiveDate::from_ymd_opt(ny, nm, 1)
                    .expect("valid month")
                    .pred_opt()
                    .expect("not the first day of time")
            }
        }
    }

    /// Every day covered, in order.
    pub fn days(self) -> impl Iterator<Item = NaiveDate> {
        let last = self.last_day();
        self.first_day().iter_days().take_while(move |d| *d <= last)
    }
}

impl fmt::Display for FileDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileDate::Day(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            FileDate::Month { year, month } => write!(f, "{year:04}-{month:02}"),
        }
    }
}

impl FromStr for FileDate {
    type Err = Error;
    /// `YYYY-MM-DD` or `YYYY-MM`; also the odd unpadded month the archive has shown (`2020-8`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::bad_name(format!("bad archive date `{s}`"));
        let parts: Vec<&str> = s.split('-').collect();
        let num = |p: &str| -> Result<u32> {
            if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        match parts.as_slice() {
            [y, m, d] if y.len() == 4 => NaiveDate::from_ymd_opt(num(y)? as i32, num(m)?, num(d)?)
                .map(FileDate::Day)
                .ok_or_else(bad),
            [y, m] if y.len() == 4 => {
                let (year, month) = (num(y)? as i32, num(m)?);
                if (1..=12).contains(&month) {
                    Ok(FileDate::Month { year, month })
                } else {
                    Err(bad())
                }
            }
            _ => Err(bad()),
        }
    }
}

/// A dataset in our storage: market, data type and, for kline families, the interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dataset {
    pub market: Market,
    pub data_type: DataType,
    pub interval: Option<Interval>,
}

impl Dataset {
    pub fn new(market: Market, data_type: DataType, interval: Option<Interval>) -> Result<Self> {
        match (data_type.is_kline_family(), interval) {
            (true, None) => Err(Error::usage(format!(
                "data type `{data_type}` needs --interval"
            ))),
            (false, Some(i)) => Err(Error::usage(format!(
                "data type `{data_type}` takes no interval (got `{i}`)"
            ))),
            _ => {
                if data_type.periods(market).is_empty() {
                    return Err(Error::usage(format!(
                        "the archive has no `{data_type}` for market `{market}`"
                    )));
                }
                if interval == Some(Interval::S1) && market != Market::Spot {
                    return Err(Error::usage("interval `1s` exists only on spot"));
                }
                Ok(Dataset {
                    market,
                    data_type,
                    interval,
                })
            }
        }
    }

    /// The dataset's folder name: `klines-1m`, `markPriceKlines-1h`, `aggTrades`.
    pub fn name(&self) -> String {
        match self.interval {
            Some(i) => format!("{}-{}", self.data_type.name(), i.as_str()),
            None => self.data_type.name().to_string(),
        }
    }

    /// Parse a dataset folder name back (inverse of [`Dataset::name`]).
    pub fn parse_name(market: Market, name: &str) -> Result<Self> {
        let (dt, iv) = match name.split_once('-') {
            Some((dt, iv)) => (dt, Some(iv.parse::<Interval>()?)),
            None => (name, None),
        };
        Dataset::new(market, dt.parse()?, iv)
    }

    /// `<storage market>/<dataset name>`, e.g. `futures-um/klines-1m`: the scope of manifests
    /// and reports.
    pub fn scope(&self) -> String {
        format!("{}/{}", self.market.storage_name(), self.name())
    }

    /// Whether the archive publishes daily files of this dataset: its type has them, and its
    /// kline interval (if any) is one with daily files.
    pub fn has_daily_files(&self) -> bool {
        self.data_type.has_period(self.market, Period::Daily)
            && self.interval.is_none_or(|i| i.has_daily_files())
    }

    /// Whether the archive publishes monthly files of this dataset.
    pub fn has_monthly_files(&self) -> bool {
        self.data_type.has_period(self.market, Period::Monthly)
    }

    /// Archive prefix whose sub-folders are the symbols, e.g. `data/futures/um/daily/klines/`.
    pub fn symbols_prefix(&self, period: Period) -> String {
        format!(
            "data/{}/{}/{}/",
            self.market.archive_segment(),
            period.as_str(),
            self.data_type.name()
        )
    }

    /// `parquet/<market>/<dataset>/symbol=S/date=D/part-<source>.parquet`: one file per
    /// symbol-day and source (`part-daily` or `part-monthly` from the archive, `part-rest` from
    /// `tail`), so that a day present in several keeps each until `optimize` chooses.
    pub fn parquet_partition(
        &self,
        symbol: &str,
        date: NaiveDate,
        source: impl Into<Source>,
    ) -> String {
        format!(
            "{}part-{}.parquet",
            self.parquet_day_dir(symbol, date),
            source.into().as_str()
        )
    }

    /// `parquet/<market>/<dataset>/symbol=S/date=D/`.
    pub fn parquet_day_dir(&self, symbol: &str, date: NaiveDate) -> String {
        format!(
            "{}date={}/",
            self.parquet_symbol_dir(symbol),
            date.format("%Y-%m-%d")
        )
    }

    /// `parquet/<market>/<dataset>/symbol=S/`.
    pub fn parquet_symbol_dir(&self, symbol: &str) -> String {
        format!(
            "parquet/{}/{}/symbol={symbol}/",
            self.market.storage_name(),
            self.name()
        )
    }

    /// `optimized/<market>/<dataset>/symbol=S/year=Y/month=M/part-0.parquet`, the month
    /// unpadded (`month=3`): DuckDB types a Hive value with a leading zero as text, and an
    /// unpadded one as an integer, as PyArrow, Polars and pandas do.
    pub fn optimized_partition(&self, symbol: &str, year: i32, month: u32) -> String {
        format!(
            "optimized/{}/{}/symbol={symbol}/year={year}/month={month}/part-0.parquet",
            self.market.storage_name(),
            self.name()
        )
    }

    /// Where stores written before the month went unpadded hold the same month
    /// (`month=03`): `optimize` deletes it when it writes the month anew, so no reader sees a
    /// month twice. `None` for months 10–12, whose spelling did not change.
    pub fn legacy_optimized_partition(
        &self,
        symbol: &str,
        year: i32,
        month: u32,
    ) -> Option<String> {
        (month < 10).then(|| {
            format!(
                "optimized/{}/{}/symbol={symbol}/year={year}/month=0{month}/part-0.parquet",
                self.market.storage_name(),
                self.name()
            )
        })
    }
}

/// A parsed partition path (`parquet/...` or `optimized/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partition {
    Day {
        dataset: Dataset,
        symbol: String,
        date: NaiveDate,
        /// Which archive period, or REST, the rows came from.
        source: Source,
    },
    Month {
        dataset: Dataset,
        symbol: String,
        year: i32,
        month: u32,
    },
}

impl Partition {
    /// Inverse of [`Dataset::parquet_partition`] and [`Dataset::optimized_partition`].
    pub fn parse(path: &str) -> Result<Partition> {
        let bad = || Error::bad_name(format!("not a partition path: `{path}`"));
        let parts: Vec<&str> = path.split('/').collect();
        let kv = |seg: &str, key: &str| -> Result<String> {
            seg.strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(bad)
        };
        match parts.as_slice() {
            ["parquet", m, ds, sym, date, file] => {
                let source: Source = file
                    .strip_prefix("part-")
                    .and_then(|f| f.strip_suffix(".parquet"))
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                let market = Market::from_storage_name(m).ok_or_else(bad)?;
                let date = match kv(date, "date")?.parse::<FileDate>()? {
                    FileDate::Day(d) => d,
                    _ => return Err(bad()),
                };
                Ok(Partition::Day {
                    dataset: Dataset::parse_name(market, ds)?,
                    symbol: kv(sym, "symbol")?,
                    date,
                    source,
                })
            }
            ["optimized", m, ds, sym, y, mo, "part-0.parquet"] => {
                let market = Market::from_storage_name(m).ok_or_else(bad)?;
                Ok(Partition::Month {
                    dataset: Dataset::parse_name(market, ds)?,
                    symbol: kv(sym, "symbol")?,
                    year: kv(y, "year")?.parse().map_err(|_| bad())?,
                    month: kv(mo, "month")?.parse().map_err(|_| bad())?,
                })
            }
            _ => Err(bad()),
        }
    }
}

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ArchiveFile {
    pub dataset: Dataset,
    pub symbol: String,
    pub date: FileDate,
}

/// Characters left as they are in a URL path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode one path segment (UTF-8 symbols such as `币安人生USDT` occur in UM).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-encode a `/`-separated key segment by segment, keeping the slashes.
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// Decode a percent-encoded URL path (the inverse of [`encode_key`]).
pub fn decode_key(path: &str) -> Result<String> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::bad_name(format!("path `{path}` is not UTF-8 once decoded")))
}

impl ArchiveFile {
    pub fn new(dataset: Dataset, symbol: impl Into<String>, date: FileDate) -> Self {
        ArchiveFile {
            dataset,
            symbol: symbol.into(),
            date,
        }
    }

    pub fn period(&self) -> Period {
        self.date.period()
    }

    /// `BTCUSDT-1m-2024-01-01.zip` or `BTCUSDT-aggTrades-2024-01.zip`.
    pub fn file_name(&self) -> String {
        let middle = match self.dataset.interval {
            Some(i) => i.as_str(),
            None => self.dataset.data_type.name(),
        };
        format!("{}-{}-{}.zip", self.symbol, middle, self.date)
    }

    /// The folder key, ending in `/`.
    pub fn folder(&self) -> String {
        let mut s = format!(
            "{}{}/",
            self.dataset.symbols_prefix(self.period()),
            self.symbol
        );
        if let Some(i) = self.dataset.interval {
            s.push_str(i.as_str());
            s.push('/');
        }
        s
    }

    /// The object key in the bucket, unencoded: `data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip`.
    pub fn key(&self) -> String {
        format!("{}{}", self.folder(), self.file_name())
    }

    pub fn checksum_key(&self) -> String {
        format!("{}.CHECKSUM", self.key())
    }

    /// The download URL under `base` (e.g. `https://data.binance.vision`), percent-encoded.
    pub fn url(&self, base: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), encode_key(&self.key()))
    }

    pub fn checksum_url(&self, base: &str) -> String {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            encode_key(&self.checksum_key())
        )
    }

    /// The key without its `data/` root: the archive path our layout mirrors.
    pub fn archive_path(&self) -> String {
        self.key()
            .strip_prefix("data/")
            .expect("keys start with data/")
            .to_string()
    }

    /// `raw/<archive path>`: where the verified zip lives in the store.
    pub fn raw_path(&self) -> String {
        format!("raw/{}", self.archive_path())
    }

    /// `csv/<archive path with .csv>`: the extracted staging file.
    pub fn csv_path(&self) -> String {
        let p = self.archive_path();
        format!("csv/{}.csv", p.strip_suffix(".zip").unwrap_or(&p))
    }

    /// `_quarantine/<archive path>`: where a file that never verified is kept for inspection.
    pub fn quarantine_path(&self) -> String {
        format!("_quarantine/{}", self.archive_path())
    }

    /// `_staging/<run id>/<archive path>`: a large download in flight, renamed once verified.
    pub fn staging_path(&self, run_id: &str) -> String {
        format!("_staging/{run_id}/{}", self.archive_path())
    }

    /// Parse a bucket key (`data/...zip`) back. Inverse of [`ArchiveFile::key`].
    pub fn parse_key(key: &str) -> Result<ArchiveFile> {
        let bad = |why: &str| Error::bad_name(format!("not an archive file key `{key}`: {why}"));
        let rest = key
            .strip_prefix("data/")
            .ok_or_else(|| bad("no data/ root"))?;
        let (market, rest) = if let Some(r) = rest.strip_prefix("futures/um/") {
            (Market::Um, r)
        } else if let Some(r) = rest.strip_prefix("futures/cm/") {
            (Market::Cm, r)
        } else if let Some(r) = rest.strip_prefix("spot/") {
            (Market::Spot, r)
        } else if let Some(r) = rest.strip_prefix("option/") {
            (Market::Option, r)
        } else {
            return Err(bad("unknown market"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (period, dt, symbol, interval, file) = match parts.as_slice() {
            [p, dt, sym, iv, file] => (*p, *dt, *sym, Some(*iv), *file),
            [p, dt, sym, file] => (*p, *dt, *sym, None, *file),
            _ => return Err(bad("wrong number of segments")),
        };
        let period: Period = period.parse()?;
        let data_type: DataType = dt.parse()?;
        let interval = interval.map(str::parse::<Interval>).transpose()?;
        let dataset = Dataset::new(market, data_type, interval)?;
        let middle = match interval {
            Some(i) => i.as_str(),
            None => data_type.name(),
        };
        let stem = file.strip_suffix(".zip").ok_or_else(|| bad("not a .zip"))?;
        let date = stem
            .strip_prefix(symbol)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_prefix(middle))
            .and_then(|r| r.strip_prefix('-'))
            .ok_or_else(|| bad("file name does not match its folder"))?;
        let date: FileDate = date.parse()?;
        if date.period() != period {
            return Err(bad("date does not match the period folder"));
        }
        Ok(ArchiveFile {
            dataset,
            symbol: symbol.to_string(),
            date,
        })
    }

    /// Parse a raw store path (`raw/...zip`). Inverse of [`ArchiveFile::raw_path`].
    pub fn parse_raw_path(path: &str) -> Result<ArchiveFile> {
        let rest = path
            .strip_prefix("raw/")
            .ok_or_else(|| Error::bad_name(format!("not a raw path: `{path}`")))?;
        ArchiveFile::parse_key(&format!("data/{rest}"))
    }

    /// Parse a staging CSV path (`csv/...csv`). Inverse of [`ArchiveFile::csv_path`].
    pub fn parse_csv_path(path: &str) -> Result<ArchiveFile> {
        let rest = path
            .strip_prefix("csv/")
            .and_then(|r| r.strip_suffix(".csv"))
            .ok_or_else(|| Error::bad_name(format!("not a csv staging path: `{path}`")))?;
        ArchiveFile::parse_key(&format!("data/{rest}.zip"))
    }
}

impl fmt::Display for ArchiveFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// `features/<market>/<freq>/symbol=S/year=Y/part-0.parquet`: `aggregate`'s bars of length
/// `freq` (`1h`, `15m`, `4h`, `1d`) for one symbol-year.
pub fn features_partition(market: Market, freq: &str, symbol: &str, year: i32) -> String {
    format!(
        "{}year={year}/part-0.parquet",
        features_symbol_dir(market, freq, symbol)
    )
}

/// `features/<market>/<freq>/symbol=S/`.
pub fn features_symbol_dir(market: Market, freq: &str, symbol: &str) -> String {
    format!("features/{}/{freq}/symbol={symbol}/", market.storage_name())
}

/// `_manifest/<job>/<scope>/<symbol>/`: one manifest log per job, dataset and symbol, so that
/// shards by symbol never write the same objects.
pub fn manifest_prefix(job: &str, scope: &str, symbol: &str) -> String {
    format!("_manifest/{job}/{scope}/{symbol}/")
}

/// `reports/<job>/<run id>.json`.
pub fn report_path(job: &str, run_id: &str) -> String {
    format!("reports/{job}/{run_id}.json")
}

/// Parse a report path back into (job, run id).
pub fn parse_report_path(path: &str) -> Result<(String, String)> {
    let bad = || Error::bad_name(format!("not a report path: `{path}`"));
    let rest = path.strip_prefix("reports/").ok_or_else(bad)?;
    let (job, file) = rest.split_once('/').ok_or_else(bad)?;
    let run = file.strip_suffix(".json").ok_or_else(bad)?;
    if job.is_empty() || run.is_empty() || run.contains('/') {
        return Err(bad());
    }
    Ok((job.to_string(), run.to_string()))
}

/// `reports/validate/<market>/<dataset>/`: every validation of one dataset, a folder per range.
pub fn validation_dataset_dir(dataset: &Dataset) -> String {
    format!("reports/validate/{}/", dataset.scope())
}

/// `<start>_<end>`: how a validated range of days is spelled in paths and manifest units.
pub fn range_name(range: DateRange) -> String {
    format!(
        "{}_{}",
        range.start.format("%Y-%m-%d"),
        range.end.format("%Y-%m-%d")
    )
}

/// Parse a range spelled by [`range_name`].
pub fn parse_range_name(s: &str) -> Result<DateRange> {
    let bad = || Error::bad_name(format!("not a range `<start>_<end>`: `{s}`"));
    let (a, b) = s.split_once('_').ok_or_else(bad)?;
    let day = |x: &str| match x.parse::<FileDate>() {
        Ok(FileDate::Day(d)) => Ok(d),
        _ => Err(bad()),
    };
    DateRange::new(day(a)?, day(b)?).map_err(|_| bad())
}

/// One object of a validation (`validate`'s outputs), under
/// `reports/validate/<market>/<dataset>/<start>_<end>/`:
/// - `symbol=<S>.json`: one symbol's checks over the range, before the cross-symbol
///   classification (each shard writes its own symbols);
/// - `report.json`: the dataset report assembled from every symbol present (what downstream
///   jobs read: `shared::validation`);
/// - `report.html`: the same as a coverage heatmap for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationPath {
    Symbol {
        dataset: Dataset,
        range: DateRange,
        symbol: String,
    },
    Report {
        dataset: Dataset,
        range: DateRange,
    },
    Html {
        dataset: Dataset,
        range: DateRange,
    },
}

impl ValidationPath {
    /// The folder of one validated range.
    pub fn dir(dataset: &Dataset, range: DateRange) -> String {
        format!("{}{}/", validation_dataset_dir(dataset), range_name(range))
    }

    pub fn path(&self) -> String {
        match self {
            ValidationPath::Symbol {
                dataset,
                range,
                symbol,
            } => format!("{}symbol={symbol}.json", Self::dir(dataset, *range)),
            ValidationPath::Report { dataset, range } => {
                format!("{}report.json", Self::dir(dataset, *range))
            }
            ValidationPath::Html { dataset, range } => {
                format!("{}report.html", Self::dir(dataset, *range))
            }
        }
    }

    /// Inverse of [`ValidationPath::path`].
    pub fn parse(path: &str) -> Result<ValidationPath> {
        let bad = || Error::bad_name(format!("not a validation path: `{path}`"));
        let parts: Vec<&str> = path.split('/').collect();
        let ["reports", "validate", m, ds, range, file] = parts.as_slice() else {
            return Err(bad());
        };
        let market = Market::from_storage_name(m).ok_or_else(bad)?;
        let dataset = Dataset::parse_name(market, ds)?;
        let range = parse_range_name(range)?;
        match *file {
            "report.json" => Ok(ValidationPath::Report { dataset, range }),
            "report.html" => Ok(ValidationPath::Html { dataset, range }),
            f => {
                let symbol = f
                    .strip_prefix("symbol=")
                    .and_then(|s| s.strip_suffix(".json"))
                    .filter(|s| !s.is_empty())
                    .ok_or_else(bad)?;
                Ok(ValidationPath::Symbol {
                    dataset,
                    range,
                    symbol: symbol.to_string(),
                })
            }
        }
    }
}

/// One symbol's trade bars under one bar spec (the `bars` job): the dataset
/// `bars/<market>/<bar spec>/symbol=S/year=Y/part-0.parquet` and the checkpoints of its history,
/// `_state/bars/<market>/<bar spec>/symbol=S/date=D.json`. The bar spec's own grammar (bar type
/// and parameters) belongs to the `bars` job; here it is one path segment of ASCII letters,
/// digits, `.`, `_` and `-`: no `=`, so Hive readers never take it for a partition key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BarsKey {
    pub market: Market,
    pub spec: String,
    pub symbol: String,
}

impl BarsKey {
    pub fn new(market: Market, spec: impl Into<String>, symbol: impl Into<String>) -> Result<Self> {
        let spec = spec.into();
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if spec.is_empty() || spec.starts_with('.') || !spec.chars().all(ok) {
            return Err(Error::bad_name(format!("bad bar spec name `{spec}`")));
        }
        Ok(BarsKey {
            market,
            spec,
            symbol: symbol.into(),
        })
    }

    /// `<market>/<bar spec>`, e.g. `futures-um/dollar-th_1e6-sign_aggressor-src_aggTrades`: the
    /// scope of the job's manifests.
    pub fn scope(&self) -> String {
        format!("{}/{}", self.market.storage_name(), self.spec)
    }

    /// `bars/<market>/<bar spec>/symbol=S/`.
    pub fn symbol_dir(&self) -> String {
        format!("bars/{}/symbol={}/", self.scope(), self.symbol)
    }

    /// `bars/<market>/<bar spec>/symbol=S/year=Y/part-0.parquet`: the bars that closed in year Y.
    pub fn partition(&self, year: i32) -> String {
        format!("{}year={year}/part-0.parquet", self.symbol_dir())
    }

    /// `_state/bars/<market>/<bar spec>/symbol=S/`.
    pub fn state_prefix(&self) -> String {
        format!("_state/bars/{}/symbol={}/", self.scope(), self.symbol)
    }

    /// `_state/bars/<market>/<bar spec>/symbol=S/date=D.json`: the checkpoint at the end of day D.
    pub fn state_path(&self, day: NaiveDate) -> String {
        format!(
            "{}date={}.json",
            self.state_prefix(),
            day.format("%Y-%m-%d")
        )
    }

    /// Inverse of [`BarsKey::partition`].
    pub fn parse_partition(path: &str) -> Result<(BarsKey, i32)> {
        let bad = || Error::bad_name(format!("not a bars partition: `{path}`"));
        let parts: Vec<&str> = path.split('/').collect();
        let ["bars", m, spec, sym, y, "part-0.parquet"] = parts.as_slice() else {
            return Err(bad());
        };
        let market = Market::from_storage_name(m).ok_or_else(bad)?;
        let symbol = sym.strip_prefix("symbol=").ok_or_else(bad)?;
        let year = y
            .strip_prefix("year=")
            .and_then(|y| y.parse().ok())
            .ok_or_else(bad)?;
        Ok((BarsKey::new(market, *spec, symbol)?, year))
    }

    /// Inverse of [`BarsKey::state_path`].
    pub fn parse_state_path(path: &str) -> Result<(BarsKey, NaiveDate)> {
        let bad = || Error::bad_name(format!("not a bars checkpoint: `{path}`"));
        let parts: Vec<&str> = path.split('/').collect();
        let ["_state", "bars", m, spec, sym, file] = parts.as_slice() else {
            return Err(bad());
        };
        let market = Market::from_storage_name(m).ok_or_else(bad)?;
        let symbol = sym.strip_prefix("symbol=").ok_or_else(bad)?;
        let day = match file
            .strip_prefix("date=")
            .and_then(|f| f.strip_suffix(".json"))
            .ok_or_else(bad)?
            .parse::<FileDate>()
        {
            Ok(FileDate::Day(d)) => d,
            _ => return Err(bad()),
        };
        Ok((BarsKey::new(market, *spec, symbol)?, day))
    }
}

/// `final/<name>/`: one `build` panel — `panel.parquet`, `summary.json` and the Qlib export
/// under `qlib/`. `name` must be a valid panel name ([`validate_panel_name`]).
pub fn final_dir(name: &str) -> String {
    format!("final/{name}/")
}

/// A panel name is one path segment of `[A-Za-z0-9._-]`, not starting with `.` or `_`, and
/// without `=` (DuckDB would read `k=v` as a partition column).
pub fn validate_panel_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '_'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "panel name `{name}`: use letters, digits, `.`, `_` and `-` (not first)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn ds(m: Market, t: DataType, i: Option<Interval>) -> Dataset {
        Dataset::new(m, t, i).unwrap()
    }

    #[test]
    fn archive_keys_round_trip() {
        let cases = [
            (
                ArchiveFile::new(
                    ds(Market::Um, DataType::Klines, Some(Interval::M1)),
                    "BTCUSDT",
                    FileDate::Day(d("2024-01-01")),
                ),
                "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip",
            ),
            (
                ArchiveFile::new(
                    ds(Market::Spot, DataType::Klines, Some(Interval::Mo1)),
                    "ETHBTC",
                    FileDate::Month {
                        year: 2020,
                        month: 2,
                    },
                ),
                "data/spot/monthly/klines/ETHBTC/1mo/ETHBTC-1mo-2020-02.zip",
            ),
            (
                ArchiveFile::new(
                    ds(Market::Spot, DataType::AggTrades, None),
                    "BTCUSDT",
                    FileDate::Day(d("2026-09-15")),
                ),
                "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2026-09-15.zip",
            ),
            (
                ArchiveFile::new(
                    ds(Market::Cm, DataType::FundingRate, None),
                    "BTCUSD_PERP",
                    FileDate::Month {
                        year: 2023,
                        month: 5,
                    },
                ),
                "data/futures/cm/monthly/fundingRate/BTCUSD_PERP/BTCUSD_PERP-fundingRate-2023-05.zip",
            ),
            (
                ArchiveFile::new(
                    ds(Market::Um, DataType::PremiumIndexKlines, Some(Interval::H1)),
                    "BTCUSDT",
                    FileDate::Day(d("2024-02-29")),
                ),
                "data/futures/um/daily/premiumIndexKlines/BTCUSDT/1h/BTCUSDT-1h-2024-02-29.zip",
            ),
            (
                ArchiveFile::new(
                    ds(Market::Option, DataType::BvolIndex, None),
                    "BTCBVOLUSDT",
                    FileDate::Day(d("2023-09-25")),
                ),
                "data/option/daily/BVOLIndex/BTCBVOLUSDT/BTCBVOLUSDT-BVOLIndex-2023-09-25.zip",
            ),
        ];
        for (file, key) in cases {
            assert_eq!(file.key(), key);
            assert_eq!(ArchiveFile::parse_key(key).unwrap(), file);
            assert_eq!(ArchiveFile::parse_raw_path(&file.raw_path()).unwrap(), file);
            assert_eq!(ArchiveFile::parse_csv_path(&file.csv_path()).unwrap(), file);
            assert_eq!(file.checksum_key(), format!("{key}.CHECKSUM"));
        }
    }

    #[test]
    fn raw_and_csv_paths_mirror_the_archive() {
        let f = ArchiveFile::parse_key(
            "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip",
        )
        .unwrap();
        assert_eq!(
            f.raw_path(),
            "raw/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"
        );
        assert_eq!(
            f.csv_path(),
            "csv/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.csv"
        );
        assert_eq!(
            f.url("https://data.binance.vision/"),
            "https://data.binance.vision/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"
        );
    }

    #[test]
    fn non_ascii_symbols_are_percent_encoded_and_decode_back() {
        let f = ArchiveFile::new(
            ds(Market::Um, DataType::Klines, Some(Interval::M1)),
            "币安人生USDT",
            FileDate::Day(d("2025-10-08")),
        );
        let url = f.url("http://x");
        assert!(url.is_ascii(), "{url}");
        assert!(url.contains("%E5%B8%81"), "{url}");
        let path = url.strip_prefix("http://x/").unwrap();
        assert_eq!(
            ArchiveFile::parse_key(&decode_key(path).unwrap()).unwrap(),
            f
        );
    }

    #[test]
    fn parse_rejects_inconsistent_keys() {
        for key in [
            "data/spot/daily/klines/BTCUSDT/1m/ETHUSDT-1m-2024-01-01.zip",
            "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-5m-2024-01-01.zip",
            "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip",
            "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-30.zip",
            "data/spot/daily/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01-01.zip",
            "data/spot/daily/klines/BTCUSDT/BTCUSDT-klines-2024-01-01.zip",
            "data/nowhere/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip",
            "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip.CHECKSUM",
        ] {
            assert!(ArchiveFile::parse_key(key).is_err(), "{key}");
        }
    }

    #[test]
    fn unpadded_months_from_the_listing_parse() {
        // binance-archive.md §1.2: `ADABKRW-1d-2020-8.zip` has been seen.
        let f = ArchiveFile::parse_key("data/spot/monthly/klines/ADABKRW/1d/ADABKRW-1d-2020-8.zip")
            .unwrap();
        assert_eq!(
            f.date,
            FileDate::Month {
                year: 2020,
                month: 8
            }
        );
    }

    #[test]
    fn partitions_round_trip() {
        let k = ds(Market::Um, DataType::Klines, Some(Interval::M1));
        for (source, name) in [
            (Source::Daily, "daily"),
            (Source::Monthly, "monthly"),
            (Source::Rest, "rest"),
        ] {
            let p = k.parquet_partition("BTCUSDT", d("2024-02-29"), source);
            assert_eq!(
                p,
                format!(
                    "parquet/futures-um/klines-1m/symbol=BTCUSDT/date=2024-02-29/part-{name}.parquet"
                )
            );
            assert_eq!(
                Partition::parse(&p).unwrap(),
                Partition::Day {
                    dataset: k,
                    symbol: "BTCUSDT".into(),
                    date: d("2024-02-29"),
                    source,
                }
            );
        }
        let a = ds(Market::Spot, DataType::AggTrades, None);
        let p = a.optimized_partition("ETHUSDT", 2025, 3);
        assert_eq!(
            p,
            "optimized/spot/aggTrades/symbol=ETHUSDT/year=2025/month=3/part-0.parquet"
        );
        assert_eq!(
            a.legacy_optimized_partition("ETHUSDT", 2025, 3).unwrap(),
            "optimized/spot/aggTrades/symbol=ETHUSDT/year=2025/month=03/part-0.parquet"
        );
        assert_eq!(a.legacy_optimized_partition("ETHUSDT", 2025, 10), None);
        assert_eq!(
            Partition::parse(&p).unwrap(),
            Partition::Month {
                dataset: a,
                symbol: "ETHUSDT".into(),
                year: 2025,
                month: 3
            }
        );
        assert!(Partition::parse("parquet/futures-um/klines-1m/BTCUSDT/x").is_err());
    }

    #[test]
    fn dataset_names_round_trip() {
        for market in Market::ALL {
            for dt in DataType::ALL {
                if dt.periods(market).is_empty() {
                    continue;
                }
                let ivs: Vec<Option<Interval>> = if dt.is_kline_family() {
                    vec![Some(Interval::M1), Some(Interval::H4), Some(Interval::Mo1)]
                } else {
                    vec![None]
                };
                for iv in ivs {
                    let d = Dataset::new(market, dt, iv).unwrap();
                    assert_eq!(Dataset::parse_name(market, &d.name()).unwrap(), d);
                }
            }
        }
    }

    #[test]
    fn dataset_rules() {
        assert!(Dataset::new(Market::Spot, DataType::FundingRate, None).is_err());
        assert!(Dataset::new(Market::Um, DataType::Klines, None).is_err());
        assert!(Dataset::new(Market::Um, DataType::Klines, Some(Interval::S1)).is_err());
        assert!(Dataset::new(Market::Um, DataType::Metrics, Some(Interval::M1)).is_err());
        assert!(Dataset::new(Market::Spot, DataType::Klines, Some(Interval::S1)).is_ok());
    }

    #[test]
    fn file_dates() {
        let feb = FileDate::Month {
            year: 2024,
            month: 2,
        };
        assert_eq!(feb.last_day(), d("2024-02-29"));
        assert_eq!(feb.days().count(), 29);
        let dec = FileDate::Month {
            year: 2023,
            month: 12,
        };
        assert_eq!(dec.last_day(), d("2023-12-31"));
        for s in ["2024-01-01", "2024-01", "2023-12"] {
            assert_eq!(s.parse::<FileDate>().unwrap().to_string(), s);
        }
        for s in ["2024-13", "2024-1-1x", "24-01", "2023-02-29", ""] {
            assert!(s.parse::<FileDate>().is_err(), "{s}");
        }
    }

    #[test]
    fn report_paths_round_trip() {
        let p = report_path("download", "20260101T000000Z-ab12");
        assert_eq!(
            parse_report_path(&p).unwrap(),
            ("download".into(), "20260101T000000Z-ab12".into())
        );
        assert!(parse_report_path("reports/x").is_err());
    }

    #[test]
    fn validation_paths_round_trip() {
        let k = ds(Market::Um, DataType::Klines, Some(Interval::M1));
        let range = DateRange::new(d("2024-12-05"), d("2025-01-20")).unwrap();
        let cases = [
            (
                ValidationPath::Symbol {
                    dataset: k,
                    range,
                    symbol: "BTCUSDT".into(),
                },
                "reports/validate/futures-um/klines-1m/2024-12-05_2025-01-20/symbol=BTCUSDT.json",
            ),
            (
                ValidationPath::Report { dataset: k, range },
                "reports/validate/futures-um/klines-1m/2024-12-05_2025-01-20/report.json",
            ),
            (
                ValidationPath::Html {
                    dataset: ds(Market::Spot, DataType::AggTrades, None),
                    range,
                },
                "reports/validate/spot/aggTrades/2024-12-05_2025-01-20/report.html",
            ),
        ];
        for (v, p) in cases {
            assert_eq!(v.path(), p);
            assert_eq!(ValidationPath::parse(p).unwrap(), v);
        }
        assert_eq!(parse_range_name(&range_name(range)).unwrap(), range);
        assert_eq!(
            validation_dataset_dir(&k),
            "reports/validate/futures-um/klines-1m/"
        );
        for bad in [
            "reports/validate/futures-um/klines-1m/2024-12-05_2025-01-20/symbol=.json",
            "reports/validate/futures-um/klines-1m/2025-01-20_2024-12-05/report.json",
            "reports/validate/futures-um/klines-1m/report.json",
            "reports/validate/20260101T000000Z-ab12.json",
        ] {
            assert!(ValidationPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_parse_back() {
        for m in Market::ALL {
            assert_eq!(m.cli_name().parse::<Market>().unwrap(), m);
            assert_eq!(Market::from_storage_name(m.storage_name()), Some(m));
        }
        for t in DataType::ALL {
            assert_eq!(t.name().parse::<DataType>().unwrap(), t);
        }
        for i in Interval::ALL {
            assert_eq!(i.as_str().parse::<Interval>().unwrap(), i);
        }
        assert_eq!("1M".parse::<Interval>().unwrap(), Interval::Mo1);
    }
}

#[cfg(test)]
mod bars_key_tests {
    use super::*;

    #[test]
    fn bars_paths_round_trip() {
        let k = BarsKey::new(
            Market::Um,
            "dollar_imbalance-init_1e6-at_0.1-ai_0.1-min_1e5-max_1e7-sign_aggressor-src_aggTrades",
            "BTCUSDT",
        )
        .unwrap();
        let p = k.partition(2025);
        assert_eq!(
            p,
            "bars/futures-um/dollar_imbalance-init_1e6-at_0.1-ai_0.1-min_1e5-max_1e7-sign_aggressor-src_aggTrades/symbol=BTCUSDT/year=2025/part-0.parquet"
        );
        assert_eq!(BarsKey::parse_partition(&p).unwrap(), (k.clone(), 2025));
        let day = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap();
        let s = k.state_path(day);
        assert_eq!(
            s,
            format!(
                "_state/bars/{}/symbol=BTCUSDT/date=2024-12-31.json",
                k.scope()
            )
        );
        assert!(s.starts_with(&k.state_prefix()));
        assert_eq!(BarsKey::parse_state_path(&s).unwrap(), (k, day));
        for bad in ["", "a=b", "a/b", ".x", "a b"] {
            assert!(BarsKey::new(Market::Spot, bad, "X").is_err(), "{bad}");
        }
        assert!(BarsKey::parse_partition("bars/spot/x/symbol=A/year=y/part-0.parquet").is_err());
        assert!(BarsKey::parse_state_path("_state/bars/spot/x/symbol=A/2024-01-01.json").is_err());
    }
}
