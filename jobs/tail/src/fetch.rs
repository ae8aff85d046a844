//! The REST endpoints behind each dataset and how their rows become the archive's CSV lines:
//! klines and the mark/index/premium-index families (paged by `limit` candles), fundingRate
//! (paged by time, the interval hours from the spacing of settlements), metrics (the five
//! `/futures/data/*` endpoints at 5m, joined on their timestamp) and aggTrades (an hour window to
//! find the first trade, then `fromId`). Lines carry the REST strings unchanged, so the parser
//! `convert` uses reads REST rows to exactly the values the archive's file would give.

use std::collections::BTreeMap;

use shared::paths::{DataType, Dataset, Interval, Market};
use shared::{Error, Result};

use crate::budget::{Bucket, Cost, futures_kline_weight};
use crate::client::{RestClient, RestError};
use crate::sink::DaySink;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const FIVE_MIN_MS: i64 = 300_000;

/// The run-wide settings the fetchers need.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FetchSettings {
    /// How far back `/fapi/v1/aggTrades` serves (48 h since 2026-08; binance-live.md 0.1).
    pub um_agg_trades_window_ms: i64,
    /// How far back `/dapi/v1/aggTrades` serves (24 h).
    pub cm_agg_trades_window_ms: i64,
    /// How far back `/futures/data/*` serves (30 days).
    pub metrics_window_ms: i64,
    /// Added to a `/futures/data/*` `timestamp` to give the archive's `create_time`: the
    /// alignment is UNCONFIRMED (binance-live.md §1.8), 0 matches the simulator.
    pub metrics_time_offset_ms: i64,
}

/// What a dataset is fetched as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Klines {
        path: &'static str,
        /// `symbol`, or `pair` for index-price klines.
        key: &'static str,
        interval: Interval,
        ms: i64,
        max_rows: u32,
    },
    Funding,
    Metrics,
    AggTrades,
}

/// How `tail` fetches `ds`, or why it cannot.
pub fn kind_of(ds: &Dataset) -> Result<Kind> {
    let m = ds.market;
    let unsupported = |why: &str| {
        Err(Error::usage(format!(
            "tail cannot fill {}: {why}",
            ds.scope()
        )))
    };
    let prefix = match m {
        Market::Um => "/fapi/v1/",
        Market::Cm => "/dapi/v1/",
        Market::Spot => "/api/v3/",
        Market::Option => return unsupported("options have no public REST history"),
    };
    match ds.data_type {
        t if t.is_kline_family() => {
            let interval = ds.interval.expect("kline datasets have an interval");
            let name = match t {
                DataType::Klines => "klines",
                DataType::MarkPriceKlines => "markPriceKlines",
                DataType::IndexPriceKlines => "indexPriceKlines",
                DataType::PremiumIndexKlines => "premiumIndexKlines",
                _ => return unsupported("no REST endpoint"),
            };
            if m == Market::Spot && t != DataType::Klines {
                return unsupported("spot has only klines");
            }
            let ms = match interval.millis() {
                Some(ms) if ms <= 86_400_000 => ms,
                _ => {
                    return unsupported(
                        "only intervals up to 1d are filled (3d, 1w and 1M candles do not align to days)",
                    );
                }
            };
            if interval == Interval::S1 && m != Market::Spot {
                return unsupported("1s klines exist only on spot");
            }
            let path = kline_path(prefix, name);
            Ok(Kind::Klines {
                path,
                key: if t == DataType::IndexPriceKlines {
                    "pair"
                } else {
                    "symbol"
                },
                interval,
                ms,
                max_rows: if m == Market::Spot { 1000 } else { 1500 },
            })
        }
        DataType::FundingRate if m != Market::Spot => Ok(Kind::Funding),
        DataType::Metrics if m == Market::Um => Ok(Kind::Metrics),
        DataType::Metrics => unsupported(
            "COIN-M's /futures/data endpoints are per pair and contract type, with other fields; only USD-M metrics are filled",
        ),
        DataType::AggTrades => Ok(Kind::AggTrades),
        _ => unsupported("no public REST history for this data type"),
    }
}

/// `prefix` + `name` as a static path (the kline family's twelve endpoints).
fn kline_path(prefix: &str, name: &str) -> &'static str {
    const PATHS: [&str; 12] = [
        "/fapi/v1/klines",
        "/fapi/v1/markPriceKlines",
        "/fapi/v1/indexPriceKlines",
        "/fapi/v1/premiumIndexKlines",
        "/dapi/v1/klines",
        "/dapi/v1/markPriceKlines",
        "/dapi/v1/indexPriceKlines",
        "/dapi/v1/premiumIndexKlines",
        "/api/v3/klines",
        "/api/v3/markPriceKlines",
        "/api/v3/indexPriceKlines",
        "/api/v3/premiumIndexKlines",
    ];
    PATHS
        .into_iter()
        .find(|p| p.strip_prefix(prefix) == Some(name))
        .expect("every market prefix and kline endpoint is listed")
}

/// The half-open interval of row times to fetch, in ms, and the server's clock when it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: i64,
    pub until_ms: i64,
    pub server_now_ms: i64,
}

/// The oldest row time REST still serves for `kind` when the server's clock reads `now_ms`,
/// and why, for the data types whose history is a sliding window.
pub fn oldest_served(
    kind: Kind,
    market: Market,
    settings: &FetchSettings,
    now_ms: i64,
) -> Option<(i64, String)> {
    match (kind, market) {
        // A minute (an hour) of margin: the window is counted from the server's now at each
        // request, and a run takes a while.
        (Kind::AggTrades, Market::Um | Market::Cm) => {
            let h = if market == Market::Um {
                settings.um_agg_trades_window_ms
            } else {
                settings.cm_agg_trades_window_ms
            };
            Some((
                now_ms - h + 10 * MINUTE_MS,
                format!("REST serves only the last {} h of aggTrades", h / HOUR_MS),
            ))
        }
        (Kind::Metrics, _) => {
            let t = now_ms - settings.metrics_window_ms + HOUR_MS;
            Some((
                t + (FIVE_MIN_MS - t.rem_euclid(FIVE_MIN_MS)) % FIVE_MIN_MS,
                format!(
                    "REST serves only the last {} days of metrics",
                    settings.metrics_window_ms / (24 * HOUR_MS)
                ),
            ))
        }
        _ => None,
    }
}

/// The end (exclusive) of what `kind` can hold as closed rows when the window ends at `until`:
/// candles that closed by then, 5-minute periods that ended.
pub fn closed_until(kind: Kind, until_ms: i64, metrics_end_labelled: bool) -> i64 {
    match kind {
        Kind::Klines { ms, .. } => until_ms - until_ms.rem_euclid(ms),
        Kind::Metrics => {
            let u = until_ms - until_ms.rem_euclid(FIVE_MIN_MS);
            // An end-labelled row stamped U covers the period that ended at U.
            if metrics_end_labelled { u + 1 } else { u }
        }
        Kind::Funding | Kind::AggTrades => until_ms,
    }
}

/// The requests a window costs at least, and their weight: the dry run's estimate.
pub fn estimate(kind: Kind, market: Market, w: &Window) -> (u64, u64, &'static str) {
    let span = (w.until_ms - w.from_ms).max(0);
    match kind {
        Kind::Klines {
            ms, max_rows, path, ..
        } => {
            let rows = (span / ms) as u64;
            let full = rows / u64::from(max_rows);
            let rest = (rows % u64::from(max_rows)) as u32;
            let weight_of = |n: u32| {
                if market == Market::Spot {
                    2
                } else {
                    futures_kline_weight(n)
                }
            };
            let weight = full * u64::from(weight_of(max_rows))
                + if rest > 0 {
                    u64::from(weight_of(rest))
                } else {
                    0
                };
            (full + u64::from(rest > 0), weight, path)
        }
        Kind::Funding => (
            1,
            if market == Market::Cm { 1 } else { 0 },
            "fundingRate (500 / 5 min bucket)",
        ),
        Kind::Metrics => (
            5 * (span / (500 * FIVE_MIN_MS) + 1) as u64,
            0,
            "/futures/data/* (1000 / 5 min bucket)",
        ),
        Kind::AggTrades => {
            let w = if market == Market::Spot { 4 } else { 20 };
            (1, w, "aggTrades (more pages as volume needs)")
        }
    }
}

/// Fetch `window` of `symbol`'s `ds` into `sink`, in time order.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    client: &RestClient,
    settings: &FetchSettings,
    funding_hours: &BTreeMap<String, u32>,
    ds: &Dataset,
    symbol: &str,
    kind: Kind,
    window: Window,
    sink: &mut DaySink,
) -> Result<()> {
    match kind {
        Kind::Klines {
            path,
            key,
            interval,
            ms,
            max_rows,
        } => {
            klines(
                client, ds.market, symbol, path, key, interval, ms, max_rows, window, sink,
            )
            .await
        }
        Kind::Funding => funding(client, ds.market, symbol, funding_hours, window, sink).await,
        Kind::Metrics => metrics(client, settings, symbol, window, sink).await,
        Kind::AggTrades => agg_trades(client, ds.market, symbol, window, sink).await,
    }
}

fn bad(path: &str, reason: impl Into<String>) -> Error {
    RestError::BadBody {
        url: path.to_string(),
        reason: reason.into(),
    }
    .into()
}

/// A JSON value as the CSV cell the archive would hold: strings as they are, numbers as
/// written, booleans lower-case.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn int(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn klines(
    client: &RestClient,
    market: Market,
    symbol: &str,
    path: &str,
    key: &str,
    interval: Interval,
    ms: i64,
    max_rows: u32,
    w: Window,
    sink: &mut DaySink,
) -> Result<()> {
    let mut from = w.from_ms + (ms - w.from_ms.rem_euclid(ms)) % ms;
    while from < w.until_ms {
        let n = (((w.until_ms - from) + ms - 1) / ms).min(i64::from(max_rows)) as u32;
        let last_open = from + i64::from(n - 1) * ms;
        let cost = if market == Market::Spot {
            Cost::weight(2)
        } else {
            Cost::weight(futures_kline_weight(n))
        };
        let q = [
            (key, symbol.to_string()),
            ("interval", interval.as_str().to_string()),
            ("startTime", from.to_string()),
            ("endTime", last_open.to_string()),
            ("limit", n.to_string()),
        ];
        let body = client.get(path, &q, cost, symbol).await?;
        let rows = body
            .as_array()
            .ok_or_else(|| bad(path, "not an array of klines"))?;
        for r in rows {
            let a = r
                .as_array()
                .filter(|a| a.len() >= 11)
                .ok_or_else(|| bad(path, format!("a kline that is not a 12-element array: {r}")))?;
            let open = int(&a[0]).ok_or_else(|| bad(path, format!("open time of {r}")))?;
            // Only closed candles inside the window (the server may add the unclosed one).
            if open < from || open > last_open || open + ms > w.until_ms {
                continue;
            }
            let mut line = String::with_capacity(160);
            for (i, v) in a.iter().take(12).enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&cell(v));
            }
            for _ in a.len()..12 {
                line.push_str(",0");
            }
            sink.push(open, line).await?;
        }
        from = last_open + ms;
    }
    Ok(())
}

async fn funding(
    client: &RestClient,
    market: Market,
    symbol: &str,
    hours: &BTreeMap<String, u32>,
    w: Window,
    sink: &mut DaySink,
) -> Result<()> {
    let (path, cost) = match market {
        Market::Cm => ("/dapi/v1/fundingRate", Cost::weight(1)),
        _ => ("/fapi/v1/fundingRate", Cost::bucket(Bucket::Funding)),
    };
    let mut rows: Vec<(i64, String)> = Vec::new();
    let mut from = w.from_ms;
    loop {
        let q = [
            ("symbol", symbol.to_string()),
            ("startTime", from.to_string()),
            ("endTime", (w.until_ms - 1).to_string()),
            ("limit", "1000".to_string()),
        ];
        let body = client.get(path, &q, cost, symbol).await?;
        let page = body.as_array().ok_or_else(|| bad(path, "not an array"))?;
        for r in page {
            let t = r
                .get("fundingTime")
                .and_then(int)
                .ok_or_else(|| bad(path, format!("fundingTime of {r}")))?;
            let rate = r
                .get("fundingRate")
                .map(cell)
                .ok_or_else(|| bad(path, format!("fundingRate of {r}")))?;
            if t >= from && t < w.until_ms && rows.last().is_none_or(|(p, _)| *p < t) {
                rows.push((t, rate));
            }
        }
        match rows.last() {
            Some((t, _)) if page.len() >= 1000 => from = t + 1,
            _ => break,
        }
    }
    // A settlement's interval is the time to the next one; the latest takes the symbol's
    // current interval (fundingInfo lists adjusted symbols only: others settle every 8 h).
    let current = hours.get(symbol).copied().unwrap_or(8);
    for i in 0..rows.len() {
        let h = match rows.get(i + 1) {
            Some((next, _)) => ((next - rows[i].0) as f64 / HOUR_MS as f64)
                .round()
                .max(1.0) as u32,
            None => current,
        };
        let (t, rate) = &rows[i];
        sink.push(*t, format!("{t},{h},{rate}")).await?;
    }
    Ok(())
}

/// The settled symbols' funding intervals (`fundingInfo`), fetched once per run.
pub async fn funding_info(client: &RestClient, market: Market) -> Result<BTreeMap<String, u32>> {
    let (path, cost) = match market {
        Market::Cm => ("/dapi/v1/fundingInfo", Cost::weight(1)),
        _ => ("/fapi/v1/fundingInfo", Cost::bucket(Bucket::Funding)),
    };
    let body = client.get(path, &[], cost, "").await?;
    let rows = body.as_array().ok_or_else(|| bad(path, "not an array"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.get("symbol")?.as_str()?.to_string(),
                u32::try_from(int(r.get("fundingIntervalHours")?)?).ok()?,
            ))
        })
        .collect())
}

/// The five metrics endpoints, the field each gives, and the archive column it fills (in the
/// archive's column order after `create_time,symbol`).
const METRICS_SOURCES: [(&str, &str); 6] = [
    ("/futures/data/openInterestHist", "sumOpenInterest"),
    ("/futures/data/openInterestHist", "sumOpenInterestValue"),
    ("/futures/data/topLongShortAccountRatio", "longShortRatio"),
    ("/futures/data/topLongShortPositionRatio", "longShortRatio"),
    (
        "/futures/data/globalLongShortAccountRatio",
        "longShortRatio",
    ),
    ("/futures/data/takerlongshortRatio", "buySellRatio"),
];

async fn metrics(
    client: &RestClient,
    settings: &FetchSettings,
    symbol: &str,
    w: Window,
    sink: &mut DaySink,
) -> Result<()> {
    let mut from = w.from_ms;
    let page = 500 * FIVE_MIN_MS;
    let mut paths: Vec<&str> = METRICS_SOURCES.iter().map(|(p, _)| *p).collect();
    paths.dedup();
    while from < w.until_ms {
        let to = (from + page).min(w.until_ms);
        let mut cells: BTreeMap<i64, [Option<String>; 6]> = BTreeMap::new();
        for path in &paths {
            let q = [
                ("symbol", symbol.to_string()),
                ("period", "5m".to_string()),
                ("startTime", from.to_string()),
                ("endTime", (to - 1).to_string()),
                ("limit", "500".to_string()),
            ];
            let body = client
                .get(path, &q, Cost::bucket(Bucket::FuturesData), symbol)
                .await?;
            let rows = body.as_array().ok_or_else(|| bad(path, "not an array"))?;
            for r in rows {
                let ts = r
                    .get("timestamp")
                    .and_then(int)
                    .ok_or_else(|| bad(path, format!("timestamp of {r}")))?;
                if ts < from || ts >= to {
                    continue;
                }
                let slot = cells.entry(ts).or_default();
                for (i, (p, field)) in METRICS_SOURCES.iter().enumerate() {
                    if p == path
                        && let Some(v) = r.get(*field)
                    {
                        slot[i] = Some(cell(v));
                    }
                }
            }
        }
        for (ts, c) in cells {
            // The archive's rows always have open interest; a period REST lacks it for is left
            // out rather than written with a made-up value.
            let (Some(oi), Some(oiv)) = (&c[0], &c[1]) else {
                continue;
            };
            let create = ts + settings.metrics_time_offset_ms;
            let stamp = chrono::DateTime::from_timestamp_millis(create)
                .ok_or_else(|| bad("/futures/data", format!("timestamp {ts}")))?
                .format("%Y-%m-%d %H:%M:%S");
            let opt = |i: usize| c[i].clone().unwrap_or_default();
            sink.push(
                create,
                format!(
                    "{stamp},{symbol},{oi},{oiv},{},{},{},{}",
                    opt(2),
                    opt(3),
                    opt(4),
                    opt(5)
                ),
            )
            .await?;
        }
        from = to;
    }
    Ok(())
}

async fn agg_trades(
    client: &RestClient,
    market: Market,
    symbol: &str,
    w: Window,
    sink: &mut DaySink,
) -> Result<()> {
    let (path, cost) = match market {
        Market::Um => ("/fapi/v1/aggTrades", Cost::weight(20)),
        Market::Cm => ("/dapi/v1/aggTrades", Cost::weight(20)),
        _ => ("/api/v3/aggTrades", Cost::weight(4)),
    };
    let mut from = w.from_ms;
    let spot = market == Market::Spot;
    // Hour windows until the first trade at or after `from` (futures refuse longer windows),
    // then pages by id.
    let mut next_id: Option<i64> = None;
    loop {
        let q: Vec<(&str, String)> = match next_id {
            Some(id) => vec![
                ("symbol", symbol.to_string()),
                ("fromId", id.to_string()),
                ("limit", "1000".to_string()),
            ],
            None if from >= w.until_ms => break,
            None => vec![
                ("symbol", symbol.to_string()),
                ("startTime", from.to_string()),
                (
                    "endTime",
                    (from + HOUR_MS)
                        .min(w.until_ms)
                        .saturating_sub(1)
                        .to_string(),
                ),
                ("limit", "1000".to_string()),
            ],
        };
        let body = client.get(path, &q, cost, symbol).await?;
        let rows = body.as_array().ok_or_else(|| bad(path, "not an array"))?;
        if rows.is_empty() {
            match next_id {
                Some(_) => break, // nothing traded after the last trade yet
                None => {
                    from += HOUR_MS;
                    continue;
                }
            }
        }
        let mut reached_until = false;
        for r in rows {
            let get = |k: &str| r.get(k).ok_or_else(|| bad(path, format!("`{k}` of {r}")));
            let t = int(get("T")?).ok_or_else(|| bad(path, format!("T of {r}")))?;
            let id = int(get("a")?).ok_or_else(|| bad(path, format!("a of {r}")))?;
            if t >= w.until_ms {
                reached_until = true;
                break;
            }
            next_id = Some(id + 1);
            if t < w.from_ms {
                continue;
            }
            let mut line = format!(
                "{id},{},{},{},{},{t},{}",
                cell(get("p")?),
                cell(get("q")?),
                cell(get("f")?),
                cell(get("l")?),
                cell(get("m")?),
            );
            if spot {
                line.push_str(",true");
            }
            sink.push(t, line).await?;
        }
        // A short page by id is the newest trade there is.
        if reached_until || (q[1].0 == "fromId" && rows.len() < 1000) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_candles_and_periods_end_at_the_last_boundary() {
        let k = kind_of(&Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap())
            .unwrap();
        assert_eq!(
            closed_until(k, 10 * MINUTE_MS + 59_999, false),
            10 * MINUTE_MS
        );
        assert_eq!(closed_until(k, 10 * MINUTE_MS, false), 10 * MINUTE_MS);
        let m = Kind::Metrics;
        // Start-labelled: the row stamped 10:00 covers 10:00-10:05.
        assert_eq!(
            closed_until(m, 12 * FIVE_MIN_MS + 7, false),
            12 * FIVE_MIN_MS
        );
        // End-labelled: the row stamped 10:05 covers 10:00-10:05, closed at 10:05.
        assert_eq!(
            closed_until(m, 12 * FIVE_MIN_MS + 7, true),
            12 * FIVE_MIN_MS + 1
        );
    }

    #[test]
    fn unsupported_datasets_say_why() {
        for (m, t, i) in [
            (Market::Um, DataType::Klines, Some(Interval::W1)),
            (Market::Um, DataType::Trades, None),
            (Market::Cm, DataType::Metrics, None),
            (Market::Um, DataType::BookDepth, None),
        ] {
            let ds = Dataset::new(m, t, i).unwrap();
            let e = kind_of(&ds).unwrap_err();
            assert!(e.to_string().contains(&ds.scope()), "{e}");
        }
    }

    #[test]
    fn a_day_of_1m_klines_is_one_request_of_1440_rows() {
        let k = kind_of(&Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap())
            .unwrap();
        let w = Window {
            from_ms: 0,
            until_ms: 86_400_000,
            server_now_ms: 86_400_000,
        };
        assert_eq!(estimate(k, Market::Um, &w).0, 1);
        assert_eq!(estimate(k, Market::Um, &w).1, 10);
    }
}
