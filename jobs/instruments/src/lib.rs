//! The `instruments` job: the registry of a market's symbols, `reference/<market>/instruments.parquet`,
//! from the bucket listing — every symbol the archive has, delisted ones included, with what its
//! spelling says (base, quote and margin asset, perpetual or delivery with its date, spot) and
//! the first and last day of each data type's files — merged with `exchangeInfo` when a REST
//! host is given. Rebuilt incrementally: a symbol already registered is listed only after its
//! last known day, and one delisted long ago not at all.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use frames::polars::prelude::*;
use futures::StreamExt;
use serde::Serialize;
use shared::cli::{CommonSpec, SymbolSelection};
use shared::http::RetryPolicy;
use shared::instruments::Instrument;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::listing::{discover_symbols, listed_span};
use shared::paths::{Dataset, Market};
use shared::{Context, Error, Result};

pub const JOB_VERSION: &str = "1";

/// Listings in flight at once.
const CONCURRENCY: usize = 16;

/// A symbol whose files stopped this long before the run is delisted; its folders are not listed
/// again (`--full` does).
const SETTLED_AFTER_DAYS: u64 = 60;

/// The archive publishes a day's files the next morning: a symbol whose last file is at most
/// this old is still trading.
const TRADING_WITHIN_DAYS: u64 = 3;

/// Where a market's registry lives.
pub fn registry_path(market: Market) -> String {
    format!("reference/{}/instruments.parquet", market.storage_name())
}

/// The column prefix of a dataset's span: `klines_1m`, `fundingRate`.
pub fn span_column(ds: &Dataset) -> String {
    ds.name().replace('-', "_")
}

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    pub listing_url: String,
    /// The REST host whose `exchangeInfo` adds onboard dates and trading status, if any.
    pub rest_url: Option<String>,
    /// List every symbol's folders again, ignoring the registry in the store.
    pub full: bool,
    #[serde(skip)]
    pub retry: RetryPolicy,
}

#[derive(Serialize)]
pub struct Instruments {
    #[serde(flatten)]
    spec: Spec,
    #[serde(skip)]
    http: reqwest::Client,
}

impl Instruments {
    pub fn new(spec: Spec, http: reqwest::Client) -> Instruments {
        Instruments { spec, http }
    }
}

/// The first and last day a data type's files cover.
type Span = (NaiveDate, NaiveDate);

/// A symbol's span as registered, and the listing's answer (`None`: not listed, settled).
type Listed = (String, Option<Span>, Result<Option<(Option<Span>, usize)>>);

/// One registry row in the making.
#[derive(Debug, Clone, Default)]
struct Row {
    spans: BTreeMap<String, (NaiveDate, NaiveDate)>,
    onboard: Option<NaiveDate>,
    status: Option<String>,
}

/// What the run did, for the report.
#[derive(Debug, Default, Serialize)]
pub struct Built {
    pub symbols: usize,
    pub listed: usize,
    pub unchanged: usize,
    pub pages: usize,
    pub exchange_info: bool,
    pub bytes: u64,
}

impl Job for Instruments {
    const NAME: JobName = JobName::INSTRUMENTS;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "registries";
    type Unit = Market;
    type Done = Built;
    type Totals = Built;

    fn common(&self) -> &CommonSpec {
        &self.spec.common
    }

    fn params_hash(&self) -> String {
        String::new()
    }

    /// One unit: the market's registry, rebuilt at every run (incrementally).
    async fn plan(&self, _p: &mut Planner<'_>) -> Result<Vec<Market>> {
        Ok(vec![self.spec.common.market])
    }

    fn unit_key(m: &Market) -> String {
        registry_path(*m)
    }

    fn dry_run_line(&self, m: &Market) -> String {
        format!("build      {}", registry_path(*m))
    }

    async fn execute(job: Arc<Self>, ctx: Context, _stamp: Stamp, m: Market) -> Result<Built> {
        job.build(&ctx, m).await
    }

    fn absorb(&self, t: &mut Built, _key: &str, b: Built) -> Finished<Market> {
        *t = b;
        Finished::Done
    }

    fn bytes(&self, t: &Built) -> u64 {
        t.bytes
    }

    async fn finish(&self, _ctx: &Context, t: Built, end: &mut End) -> Result<serde_json::Value> {
        if t.symbols == 0 && end.tally.counts.done > 0 {
            end.tally
                .warn("the bucket listing has no symbol for the selection: the registry is empty");
        }
        Ok(serde_json::to_value(&t).unwrap_or_default())
    }
}

impl Instruments {
    async fn build(&self, ctx: &Context, market: Market) -> Result<Built> {
        let spec = &self.spec;
        let path = registry_path(market);
        let today = ctx.clock.now().date_naive();
        let previous = if spec.full {
            BTreeMap::new()
        } else {
            read_registry(&ctx.store, &path, &spec.common.datasets).await?
        };
        let mut rows: BTreeMap<String, Row> = BTreeMap::new();
        let mut built = Built::default();
        for ds in &spec.common.datasets {
            let mut symbols =
                discover_symbols(&self.http, &spec.listing_url, ds, &spec.retry, &ctx.cancel)
                    .await?;
            match &spec.common.symbols {
                SymbolSelection::All => {
                    symbols.retain(|s| spec.common.select.admits_name(market, s))
                }
                SymbolSelection::List(v) => symbols.retain(|s| v.contains(s)),
            }
            let col = span_column(ds);
            let settled = today
                .checked_sub_days(Days::new(SETTLED_AFTER_DAYS))
                .unwrap_or(today);
            let http = &self.http;
            let results: Vec<Listed> = futures::stream::iter(symbols)
                .map(|sym| {
                    let known = previous.get(&sym).and_then(|r| r.spans.get(&col)).copied();
                    async move {
                        // Delisted long ago: nothing new can come.
                        if known.is_some_and(|(_, last)| last < settled) {
                            return (sym, known, Ok(None));
                        }
                        let after = known.map(|(_, last)| last);
                        let r = listed_span(
                            http,
                            &spec.listing_url,
                            ds,
                            &sym,
                            after,
                            &spec.retry,
                            &ctx.cancel,
                        )
                        .await;
                        (sym, known, r.map(Some))
                    }
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            for (sym, known, r) in results {
                let span = match r? {
                    None => {
                        built.unchanged += 1;
                        known
                    }
                    Some((span, pages)) => {
                        built.listed += 1;
                        built.pages += pages;
                        match (known, span) {
                            (Some((first, _)), Some((_, last))) => Some((first, last)),
                            (k, s) => s.or(k),
                        }
                    }
                };
                if let Some(span) = span {
                    rows.entry(sym).or_default().spans.insert(col.clone(), span);
                }
            }
        }
        if let Some(url) = &spec.rest_url {
            match exchange_info(&self.http, url, market, &spec.retry, ctx).await {
                Ok(info) => {
                    built.exchange_info = true;
                    for (sym, (onboard, status)) in info {
                        if let Some(r) = rows.get_mut(&sym) {
                            r.onboard = onboard;
                            r.status = Some(status);
                        }
                    }
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    tracing::warn!(error = %e, "exchangeInfo could not be read: the registry has no onboard dates")
                }
            }
        }
        built.symbols = rows.len();
        let mut df = frame(market, &spec.common.datasets, &rows, today)?;
        let out = frames::write_parquet(
            &ctx.store,
            &path,
            &mut df,
            &frames::ParquetOptions::default(),
        )
        .await?;
        built.bytes = out.size;
        Ok(built)
    }
}

/// The registry's rows by symbol, as a previous run wrote them (spans only).
async fn read_registry(
    store: &shared::Store,
    path: &str,
    datasets: &[Dataset],
) -> Result<BTreeMap<String, Row>> {
    let Some(df) = frames::read_parquet(store, path).await? else {
        return Ok(BTreeMap::new());
    };
    let polars = |e: PolarsError| Error::Internal(format!("{path}: {e}"));
    let symbols = df
        .column("symbol")
        .map_err(polars)?
        .str()
        .map_err(polars)?
        .clone();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for ds in datasets {
        let col = span_column(ds);
        let (Ok(first), Ok(last)) = (
            df.column(&format!("{col}_first")),
            df.column(&format!("{col}_last")),
        ) else {
            continue;
        };
        let (first, last) = (
            first.cast(&DataType::Int32).map_err(polars)?,
            last.cast(&DataType::Int32).map_err(polars)?,
        );
        let (first, last) = (first.i32().map_err(polars)?, last.i32().map_err(polars)?);
        for i in 0..df.height() {
            let (Some(sym), Some(a), Some(b)) = (symbols.get(i), first.get(i), last.get(i)) else {
                continue;
            };
            let day = |n: i32| NaiveDate::from_num_days_from_ce_opt(n + EPOCH_CE);
            if let (Some(a), Some(b)) = (day(a), day(b)) {
                rows.entry(sym.to_string())
                    .or_default()
                    .spans
                    .insert(col.clone(), (a, b));
            }
        }
    }
    Ok(rows)
}

/// Days from 0001-01-01 to 1970-01-01: Parquet dates count from the Unix epoch.
const EPOCH_CE: i32 = 719_163;

fn days(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - EPOCH_CE
}

use chrono::Datelike as _;

/// The registry frame, one row per symbol in order.
fn frame(
    market: Market,
    datasets: &[Dataset],
    rows: &BTreeMap<String, Row>,
    today: NaiveDate,
) -> Result<DataFrame> {
    let polars = |e: PolarsError| Error::Internal(format!("building the registry: {e}"));
    let trading_since = today
        .checked_sub_days(Days::new(TRADING_WITHIN_DAYS))
        .unwrap_or(today);
    let mut symbol = Vec::new();
    let (mut base, mut quote, mut margin, mut contract) = (vec![], vec![], vec![], vec![]);
    let (mut delivery, mut first, mut last, mut status, mut onboard) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (sym, r) in rows {
        let i = Instrument::parse(market, sym);
        let f = r.spans.values().map(|s| s.0).min();
        let l = r.spans.values().map(|s| s.1).max();
        symbol.push(sym.clone());
        base.push(i.base);
        quote.push(i.quote);
        margin.push(i.margin);
        contract.push(i.contract.as_str().to_string());
        delivery.push(i.delivery.map(days));
        first.push(f.map(days));
        last.push(l.map(days));
        let archive_status = if l.is_some_and(|l| l >= trading_since) {
            "trading"
        } else {
            "delisted"
        };
        status.push(match r.status.as_deref() {
            Some("TRADING") => "trading".to_string(),
            Some(_) => "delisted".to_string(),
            None => archive_status.to_string(),
        });
        onboard.push(r.onboard.map(days));
    }
    let date = |name: &str, v: Vec<Option<i32>>| -> Result<Column> {
        Series::new(name.into(), v)
            .cast(&DataType::Date)
            .map(Column::from)
            .map_err(polars)
    };
    let mut cols = vec![
        Column::new("symbol".into(), symbol),
        Column::new("base_asset".into(), base),
        Column::new("quote_asset".into(), quote),
        Column::new("margin_asset".into(), margin),
        Column::new("contract_type".into(), contract),
        date("delivery_date", delivery)?,
        date("first_day", first)?,
        date("last_day", last)?,
        Column::new("status".into(), status),
        date("onboard_date", onboard)?,
    ];
    for ds in datasets {
        let col = span_column(ds);
        let get = |k: usize| -> Vec<Option<i32>> {
            rows.values()
                .map(|r| {
                    r.spans
                        .get(&col)
                        .map(|s| days(if k == 0 { s.0 } else { s.1 }))
                })
                .collect()
        };
        cols.push(date(&format!("{col}_first"), get(0))?);
        cols.push(date(&format!("{col}_last"), get(1))?);
    }
    DataFrame::new(rows.len(), cols).map_err(polars)
}

/// `exchangeInfo` of the market's REST API: per symbol, its onboard date and status.
async fn exchange_info(
    http: &reqwest::Client,
    base: &str,
    market: Market,
    retry: &RetryPolicy,
    ctx: &Context,
) -> Result<BTreeMap<String, (Option<NaiveDate>, String)>> {
    let path = match market {
        Market::Um => "fapi/v1/exchangeInfo",
        Market::Cm => "dapi/v1/exchangeInfo",
        Market::Spot => "api/v3/exchangeInfo",
        Market::Option => {
            return Err(Error::usage(
                "--rest-url: options have no exchangeInfo here",
            ));
        }
    };
    let url = format!("{}/{path}", base.trim_end_matches('/'));
    let body = shared::http::get_small(http, &url, retry, &ctx.cancel, |_, _, _| {}).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::Listing {
        url: url.clone(),
        reason: format!("exchangeInfo is not JSON: {e}"),
    })?;
    let mut out = BTreeMap::new();
    for s in v["symbols"].as_array().into_iter().flatten() {
        let Some(sym) = s["symbol"].as_str() else {
            continue;
        };
        let onboard = s["onboardDate"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.date_naive());
        let status = s["status"]
            .as_str()
            .or(s["contractStatus"].as_str())
            .unwrap_or("")
            .to_string();
        out.insert(sym.to_string(), (onboard, status));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_epoch_days() {
        let d = NaiveDate::from_ymd_opt(2024, 12, 27).unwrap();
        assert_eq!(days(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()), 0);
        assert_eq!(
            NaiveDate::from_num_days_from_ce_opt(days(d) + EPOCH_CE),
            Some(d)
        );
    }
}
