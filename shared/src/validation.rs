//! The verdicts of `validate` as every reader sees them: the dataset report's serde types (its
//! JSON schema, `validate/1`) and how to load them — one report for a validated range
//! ([`load`]), or the latest verdict per symbol-day across every report of a dataset
//! ([`Verdicts`]), which is how a downstream job asks "may I use symbol S on day D?".
//! Polars-free; the checks and the classification that produce these live in `jobs/validate`.
//!
//! A report (`reports/validate/<market>/<dataset>/<start>_<end>/report.json`) holds, per symbol:
//! its first and last data time, and per day of the range a [`DayReport`] — a [`DayStatus`],
//! row counts and the gaps of that day, each `[start_us, end_us)` with its [`GapClass`]; plus
//! the errors, warnings and notes found, each naming its day and row time.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::{Dataset, ValidationPath, validation_dataset_dir};
use crate::plan::DateRange;
use crate::store::Store;

/// The `schema` field of a dataset report.
pub const SCHEMA: &str = "validate/1";

/// What a symbol-day is, as one word. Ordered from best to worst, so `max` of two is the worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayStatus {
    /// Every row the interval implies is there (or the dataset has no grid and the day has rows).
    Ok,
    /// Most of the day lies before the symbol's first data in the range.
    BeforeListing,
    /// Most of the day lies after the symbol's last data in the range.
    AfterDelisting,
    /// Rows are missing only where most symbols of the market miss them too (maintenance).
    Outage,
    /// Rows are missing inside the day, not at its edges and not in most symbols.
    Gap,
    /// The file is present but its rows stop early or start late (or it holds none of the day).
    Partial,
    /// The archive answered 404 for the file of this day.
    MissingFile,
    /// A check failed on a row of this day (schema, duplicates, order, OHLC, …): do not use it.
    Error,
}

impl DayStatus {
    pub const ALL: [DayStatus; 8] = [
        DayStatus::Ok,
        DayStatus::BeforeListing,
        DayStatus::AfterDelisting,
        DayStatus::Outage,
        DayStatus::Gap,
        DayStatus::Partial,
        DayStatus::MissingFile,
        DayStatus::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DayStatus::Ok => "ok",
            DayStatus::BeforeListing => "before_listing",
            DayStatus::AfterDelisting => "after_delisting",
            DayStatus::Outage => "outage",
            DayStatus::Gap => "gap",
            DayStatus::Partial => "partial",
            DayStatus::MissingFile => "missing_file",
            DayStatus::Error => "error",
        }
    }

    /// Whether rows of this day failed a check (downstream jobs exclude such days).
    pub fn is_error(self) -> bool {
        self == DayStatus::Error
    }
}

/// Why a stretch of time has no rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapClass {
    /// The archive answered 404 for the file covering it.
    MissingFile,
    /// The file is present; its rows stop early or start late.
    Partial,
    /// The same stretch is missing in most symbols of the market at once (maintenance).
    Outage,
    /// Before the symbol's first data in the range.
    BeforeListing,
    /// After the symbol's last data in the range.
    AfterDelisting,
    /// Anything else.
    Gap,
}

impl GapClass {
    pub const ALL: [GapClass; 6] = [
        GapClass::MissingFile,
        GapClass::Partial,
        GapClass::Outage,
        GapClass::BeforeListing,
        GapClass::AfterDelisting,
        GapClass::Gap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GapClass::MissingFile => "missing_file",
            GapClass::Partial => "partial",
            GapClass::Outage => "outage",
            GapClass::BeforeListing => "before_listing",
            GapClass::AfterDelisting => "after_delisting",
            GapClass::Gap => "gap",
        }
    }
}

/// A stretch without rows, `[start_us, end_us)` in µs since the epoch, within one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub start_us: i64,
    pub end_us: i64,
    pub class: GapClass,
}

/// What a finding is about. Errors make a day `error`; warnings and notes do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    // Errors.
    /// Columns or types differ from the normalized schema.
    Schema,
    /// Two rows with the same key in the optimized data.
    Duplicate,
    /// Rows out of order (time or id decreasing).
    Order,
    /// A kline's open time off the interval grid.
    Grid,
    /// `close_time != open_time + interval - 1 ms`.
    CloseTime,
    /// `low <= open, close <= high` violated.
    Ohlc,
    /// A price that must be positive is not.
    NonPositivePrice,
    /// A negative volume or quantity.
    NegativeVolume,
    /// `taker_buy_volume > volume`.
    TakerBuyVolume,
    /// An aggTrade whose `last_trade_id < first_trade_id`.
    TradeIds,
    // Warnings.
    /// A price moved by more than the threshold from one row to the next.
    PriceJump,
    /// Trade ids do not follow on (`first_trade_id` after the previous `last_trade_id`).
    IdGap,
    /// The archive published duplicated rows; `optimize` removed them.
    SourceDuplicates,
    // Notes.
    /// The funding interval changed (real: 8h → 4h → 1h happen).
    FundingIntervalChange,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl FindingKind {
    pub fn severity(self) -> Severity {
        use FindingKind::*;
        match self {
            Schema | Duplicate | Order | Grid | CloseTime | Ohlc | NonPositivePrice
            | NegativeVolume | TakerBuyVolume | TradeIds => Severity::Error,
            PriceJump | IdGap | SourceDuplicates => Severity::Warning,
            FundingIntervalChange => Severity::Note,
        }
    }

    pub fn as_str(self) -> &'static str {
        use FindingKind::*;
        match self {
            Schema => "schema",
            Duplicate => "duplicate",
            Order => "order",
            Grid => "grid",
            CloseTime => "close_time",
            Ohlc => "ohlc",
            NonPositivePrice => "non_positive_price",
            NegativeVolume => "negative_volume",
            TakerBuyVolume => "taker_buy_volume",
            TradeIds => "trade_ids",
            PriceJump => "price_jump",
            IdGap => "id_gap",
            SourceDuplicates => "source_duplicates",
            FundingIntervalChange => "funding_interval_change",
        }
    }
}

/// One finding: what, on which day, at which row (its time, µs), and the values involved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub day: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_us: Option<i64>,
    pub detail: String,
}

/// One symbol-day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayReport {
    pub status: DayStatus,
    /// Rows of the day in the optimized data.
    pub rows: u64,
    /// Rows the grid implies between the symbol's first and last data (grid datasets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// Grid slots without a row between the first and last data (grid datasets only).
    #[serde(default)]
    pub missing: u64,
    /// Klines with zero volume and `open = high = low = close` (counted, not errors).
    #[serde(default)]
    pub zero_volume: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub warnings: u64,
    /// Duplicated rows the archive had and `optimize` removed.
    #[serde(default)]
    pub source_duplicates: u64,
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// The day's rows came from the REST API (`tail`): the archive has not published it yet,
    /// and its file will replace them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
}

/// One symbol over the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolReport {
    /// Time of the first and last row in the range (µs).
    pub first_data_us: Option<i64>,
    pub last_data_us: Option<i64>,
    /// Where the data the store can hold ends when the range reaches past what `tail` has
    /// fetched (µs, exclusive): later times are not yet fetched, not gaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_until_us: Option<i64>,
    /// Every day of the range.
    pub days: BTreeMap<NaiveDate, DayReport>,
    /// Up to a bounded number per kind; `error_count` and `warning_count` count them all.
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    pub notes: Vec<Finding>,
    pub error_count: u64,
    pub warning_count: u64,
}

/// A stretch missing in most symbols at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub start_us: i64,
    pub end_us: i64,
    /// The symbols missing it.
    pub symbols: Vec<String>,
}

/// The parameters the verdicts depend on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportParams {
    pub price_jump_threshold: f64,
    pub outage_share: f64,
}

/// Totals over every symbol.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub symbols: u64,
    pub symbol_days: u64,
    /// Symbol-days per status (every status listed, zeros included).
    pub status: BTreeMap<DayStatus, u64>,
    /// Gaps per class.
    pub gaps: BTreeMap<GapClass, u64>,
    pub errors: u64,
    pub warnings: u64,
    pub notes: u64,
    /// Symbol-days whose rows came from REST (provisional until the archive publishes them).
    #[serde(default)]
    pub provisional_days: u64,
}

/// One dataset over one range of days: what `validate` writes as `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetReport {
    /// [`SCHEMA`].
    pub schema: String,
    pub dataset: Dataset,
    /// `<market>/<dataset>`, e.g. `futures-um/klines-1m`.
    pub scope: String,
    pub range: DateRange,
    pub generated_at: DateTime<Utc>,
    pub run_id: String,
    /// The grid step of the dataset in µs (klines: the interval; metrics: 5 minutes), if any.
    pub grid_us: Option<i64>,
    pub params: ReportParams,
    /// sha256 over the per-symbol results and parameters this report was assembled from.
    pub fingerprint: String,
    pub totals: Totals,
    pub outages: Vec<Outage>,
    pub symbols: BTreeMap<String, SymbolReport>,
}

impl DatasetReport {
    /// The status of `symbol` on `day`, if this report covers them.
    pub fn status(&self, symbol: &str, day: NaiveDate) -> Option<DayStatus> {
        self.symbols
            .get(symbol)
            .and_then(|s| s.days.get(&day))
            .map(|d| d.status)
    }

    /// Every (symbol, day) whose status is `error`.
    pub fn error_days(&self) -> Vec<(String, NaiveDate)> {
        self.symbols
            .iter()
            .flat_map(|(s, r)| {
                r.days
                    .iter()
                    .filter(|(_, d)| d.status.is_error())
                    .map(move |(day, _)| (s.clone(), *day))
            })
            .collect()
    }

    pub fn path(&self) -> String {
        ValidationPath::Report {
            dataset: self.dataset,
            range: self.range,
        }
        .path()
    }
}

fn parse_report(path: &str, bytes: &[u8]) -> Result<DatasetReport> {
    let r: DatasetReport = serde_json::from_slice(bytes).map_err(|e| Error::Json {
        context: format!("reading validation report {path}"),
        source: e,
    })?;
    if r.schema != SCHEMA {
        return Err(Error::bad_data(
            path,
            format!("schema `{}`, expected `{SCHEMA}`", r.schema),
        ));
    }
    Ok(r)
}

/// The report of one validated range, if it exists.
pub async fn load(
    store: &Store,
    dataset: &Dataset,
    range: DateRange,
) -> Result<Option<DatasetReport>> {
    let path = ValidationPath::Report {
        dataset: *dataset,
        range,
    }
    .path();
    match store.get_opt(&path).await? {
        None => Ok(None),
        Some(b) => parse_report(&path, &b).map(Some),
    }
}

/// The latest verdict per symbol-day over every validation report of a dataset: where ranges
/// overlap (a backfill, then nightly runs), the report generated last wins for the days it
/// covers.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    days: BTreeMap<(String, NaiveDate), (DateTime<Utc>, DayStatus)>,
}

impl Verdicts {
    /// Read every `report.json` of the dataset.
    pub async fn load(store: &Store, dataset: &Dataset) -> Result<Verdicts> {
        let mut v = Verdicts::default();
        for (path, _) in store.list(&validation_dataset_dir(dataset)).await? {
            if !matches!(
                ValidationPath::parse(&path),
                Ok(ValidationPath::Report { .. })
            ) {
                continue;
            }
            if let Some(b) = store.get_opt(&path).await? {
                v.add(&parse_report(&path, &b)?);
            }
        }
        Ok(v)
    }

    /// Merge one report: its days replace older verdicts.
    pub fn add(&mut self, report: &DatasetReport) {
        for (sym, s) in &report.symbols {
            for (day, d) in &s.days {
                let e = self
                    .days
                    .entry((sym.clone(), *day))
                    .or_insert((report.generated_at, d.status));
                if report.generated_at >= e.0 {
                    *e = (report.generated_at, d.status);
                }
            }
        }
    }

    /// The latest status of `symbol` on `day`; `None` when no report covers it.
    pub fn status(&self, symbol: &str, day: NaiveDate) -> Option<DayStatus> {
        self.days.get(&(symbol.to_string(), day)).map(|(_, s)| *s)
    }

    /// How many of `symbol`'s days have each latest status.
    pub fn counts(&self, symbol: &str) -> BTreeMap<DayStatus, u64> {
        let mut out = BTreeMap::new();
        for ((s, _), (_, status)) in &self.days {
            if s == symbol {
                *out.entry(*status).or_default() += 1;
            }
        }
        out
    }

    /// Whether the latest verdict for `symbol` on `day` is `error` (unvalidated days are not).
    pub fn is_error(&self, symbol: &str, day: NaiveDate) -> bool {
        self.status(symbol, day).is_some_and(DayStatus::is_error)
    }

    pub fn len(&self) -> usize {
        self.days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{DataType, Interval, Market};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn report(range: DateRange, at: i64, statuses: &[(&str, &str, DayStatus)]) -> DatasetReport {
        let dataset = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap();
        let mut symbols: BTreeMap<String, SymbolReport> = BTreeMap::new();
        for (sym, day, status) in statuses {
            let s = symbols.entry(sym.to_string()).or_insert(SymbolReport {
                first_data_us: None,
                last_data_us: None,
                data_until_us: None,
                days: BTreeMap::new(),
                errors: vec![],
                warnings: vec![],
                notes: vec![],
                error_count: 0,
                warning_count: 0,
            });
            s.days.insert(
                d(day),
                DayReport {
                    status: *status,
                    rows: 1440,
                    expected: Some(1440),
                    missing: 0,
                    zero_volume: 0,
                    errors: 0,
                    warnings: 0,
                    source_duplicates: 0,
                    gaps: vec![],
                    provisional: false,
                },
            );
        }
        DatasetReport {
            schema: SCHEMA.into(),
            dataset,
            scope: dataset.scope(),
            range,
            generated_at: DateTime::from_timestamp(at, 0).unwrap(),
            run_id: "r".into(),
            grid_us: Some(60_000_000),
            params: ReportParams {
                price_jump_threshold: 0.2,
                outage_share: 0.6,
            },
            fingerprint: String::new(),
            totals: Totals::default(),
            outages: vec![],
            symbols,
        }
    }

    #[tokio::test]
    async fn latest_report_wins_per_symbol_day() {
        let store = Store::open("memory://").unwrap();
        let r1 = DateRange::new(d("2025-01-01"), d("2025-01-02")).unwrap();
        let r2 = DateRange::new(d("2025-01-02"), d("2025-01-02")).unwrap();
        let old = report(
            r1,
            100,
            &[
                ("BTCUSDT", "2025-01-01", DayStatus::Error),
                ("BTCUSDT", "2025-01-02", DayStatus::Partial),
            ],
        );
        let new = report(r2, 200, &[("BTCUSDT", "2025-01-02", DayStatus::Ok)]);
        for r in [&new, &old] {
            store
                .put(&r.path(), serde_json::to_vec(r).unwrap())
                .await
                .unwrap();
        }
        let back = load(&store, &old.dataset, r1).await.unwrap().unwrap();
        assert_eq!(back, old);
        assert_eq!(back.error_days(), vec![("BTCUSDT".into(), d("2025-01-01"))]);
        let v = Verdicts::load(&store, &old.dataset).await.unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.is_error("BTCUSDT", d("2025-01-01")));
        assert_eq!(v.status("BTCUSDT", d("2025-01-02")), Some(DayStatus::Ok));
        assert_eq!(v.status("ETHUSDT", d("2025-01-02")), None);
        assert!(!v.is_error("BTCUSDT", d("2025-01-03")));
    }

    #[test]
    fn names_match_serde() {
        for s in DayStatus::ALL {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        for c in GapClass::ALL {
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
        assert!(DayStatus::Error > DayStatus::MissingFile);
        assert!(DayStatus::Outage > DayStatus::Ok);
        assert_eq!(
            serde_json::to_value(FindingKind::FundingIntervalChange).unwrap(),
            serde_json::json!(FindingKind::FundingIntervalChange.as_str())
        );
    }
}
