//! The simulated Binance public REST market-data API (binance-live.md §1–§4), served from the
//! same generator as the archive and bounded by the archive's simulated clock: routing of
//! `fapi/v1/*`, `dapi/v1/*`, `api/v3/*` and `futures/data/*`, parameter checks and Binance's
//! error bodies, row selection, the unclosed last candle, and weights against the limiter
//! (`limits`). Rows come from the clean CSV text of the archive files (`tables`), so every
//! decimal is the very string the archive's CSV cell holds. Sockets, faults and the request log
//! stay in `server`.
//!
//! # Conventions the simulator picks where Binance is silent (binance-live.md §8)
//!
//! * Klines: a row is selected iff `startTime <= openTime <= endTime`; startTime → the first
//!   `limit` from it; only endTime, or neither → the last `limit` up to it (or now). COIN-M
//!   (dapi) pages backward: the last `limit` rows counting back from endTime; startTime only →
//!   endTime = startTime + 200 days; endTime only → startTime = endTime − 200 days; a window over
//!   200 days is -1130. The candle containing now is served unclosed (see
//!   `tables::partial_candle`).
//! * `fundingRate` without times: the most recent [`FUNDING_DEFAULT_ROWS`] (UNCONFIRMED: the
//!   docs say 100 and 200 in different places), or `limit` when given. `markPrice` is the close
//!   of the 1m mark-price candle that ends just before the funding time. fapi and dapi
//!   fundingRate and fundingInfo weigh 0 and share the 500/5min bucket.
//! * aggTrades: `fromId` wins over start/end times (they are then ignored); a startTime,
//!   endTime or fromId trade older than the history window (UM 48 h, CM 24 h) is -1130.
//! * `/futures/data/*`: only `period=5m` is served (any other period is -1130); `timestamp` is
//!   the archive row's `create_time` in ms, as an integer, for all five endpoints (the
//!   simulator's convention; Binance documents period end for four and period start for taker
//!   volume). Rows whose archive cell is blank are absent. Selection as for UM klines. COIN-M
//!   (`pair`, optional `contractType`, default PERPETUAL) serves openInterestHist and the three
//!   ratio endpoints; `takerlongshortRatio` with `pair` is -1130 (COIN-M's `takerBuySellVol` is
//!   not served). Data older than 30 days before now is not served; an older startTime is
//!   -1130.
//! * `startTime > endTime` is -1023 everywhere. A limit below 1 or above the maximum is -1130.
//! * The limiter keeps one state for all clients (the simulator serves one IP); the message of a
//!   429 names the peer's IP and the limit broken ("per minute" or "per 5 minutes").

mod limits;
mod tables;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Value, json};
use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Interval, Market};

use crate::archive::Archive;
use crate::config::SymbolSpec;
use crate::generator::cm_pair;

pub use limits::{Bucket, Pool};
use limits::{Limiter, Verdict};
use tables::{Table, Tables, fmt_dec, parse_dec, partial_candle};

/// Rows of `fapi/v1/fundingRate` without startTime/endTime and without `limit`. UNCONFIRMED:
/// Binance's page says "most recent 200" and "limit default 100" (binance-live.md §0.5).
pub const FUNDING_DEFAULT_ROWS: usize = 100;

/// Perpetuals' `deliveryDate` (2100-12-25).
const PERPETUAL_DELIVERY_MS: i64 = 4_133_404_800_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Whether a decoded path (no leading `/`) belongs to the REST API.
pub fn is_rest_path(path: &str) -> bool {
    ["fapi/", "dapi/", "api/v3/", "futures/data/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The weight pool a REST path charges and reports.
pub fn pool_of(path: &str) -> Pool {
    if path.starts_with("api/") {
        Pool::Spot
    } else {
        Pool::Futures
    }
}

/// One REST answer, before HTTP framing.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After` seconds (429 and 418).
    pub retry_after: Option<u64>,
    /// `X-MBX-USED-WEIGHT-1M`: the pool's weight in the current minute.
    pub used_weight: u64,
    /// Weight this request charged (0 when refused).
    pub weight: u32,
}

/// The REST side's state: the limiter and the row cache.
#[derive(Debug, Default)]
pub struct Rest {
    limiter: Mutex<Limiter>,
    tables: Tables,
    /// A pinned wall clock (Unix ms) for tests; `None` = the system clock.
    wall: Mutex<Option<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

/// A Binance error: HTTP status, code, message.
#[derive(Debug, Clone, PartialEq)]
struct ApiError {
    status: u16,
    code: i32,
    msg: String,
}

type Res<T> = Result<T, ApiError>;

fn bad(code: i32, msg: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        code,
        msg: msg.into(),
    }
}

fn invalid_symbol() -> ApiError {
    bad(-1121, "Invalid symbol.")
}

fn invalid_param(p: &str) -> ApiError {
    bad(
        -1130,
        format!("Data sent for parameter '{p}' is not valid."),
    )
}

fn mandatory(p: &str) -> ApiError {
    bad(
        -1102,
        format!("Mandatory parameter '{p}' was not sent, was empty/null, or malformed."),
    )
}

fn unknown_path(path: &str) -> ApiError {
    ApiError {
        status: 404,
        code: -5000,
        msg: format!("Path /{path}, Method GET is invalid"),
    }
}

fn too_many(ip: IpAddr, limit: u32, per: &str) -> Value {
    json!({"code": -1003, "msg": format!(
        "Too many requests; current limit of IP({ip}) is {limit} requests per {per}. Please use the websocket for live updates to avoid polling the API."
    )})
}

fn banned(until_ms: u64) -> Value {
    json!({"code": -1003, "msg": format!(
        "Way too many requests; IP banned until {until_ms}. Please use the websocket for live updates to avoid bans."
    )})
}

/// Which statistics endpoint of `/futures/data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    OpenInterest,
    TopAccount,
    TopPosition,
    GlobalAccount,
    Taker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// A kline family; `key` is the parameter naming the series (`symbol` or `pair`).
    Klines {
        market: Market,
        data_type: DataType,
        key: &'static str,
    },
    AggTrades(Market),
    FundingRate(Market),
    FundingInfo(Market),
    PremiumIndex(Market),
    Stats(Stat),
    ExchangeInfo(Market),
    Time,
    Ping,
}

fn route(path: &str) -> Option<Endpoint> {
    if let Some(name) = path.strip_prefix("futures/data/") {
        return Some(Endpoint::Stats(match name {
            "openInterestHist" => Stat::OpenInterest,
            "topLongShortAccountRatio" => Stat::TopAccount,
            "topLongShortPositionRatio" => Stat::TopPosition,
            "globalLongShortAccountRatio" => Stat::GlobalAccount,
            "takerlongshortRatio" => Stat::Taker,
            _ => return None,
        }));
    }
    let (market, name) = if let Some(n) = path.strip_prefix("fapi/v1/") {
        (Market::Um, n)
    } else if let Some(n) = path.strip_prefix("dapi/v1/") {
        (Market::Cm, n)
    } else if let Some(n) = path.strip_prefix("api/v3/") {
        (Market::Spot, n)
    } else {
        return None;
    };
    let futures = market != Market::Spot;
    let kl = |data_type, key| {
        Some(Endpoint::Klines {
            market,
            data_type,
            key,
        })
    };
    match name {
        "klines" => kl(DataType::Klines, "symbol"),
        "markPriceKlines" if futures => kl(DataType::MarkPriceKlines, "symbol"),
        "indexPriceKlines" if futures => kl(DataType::IndexPriceKlines, "pair"),
        "premiumIndexKlines" if futures => kl(DataType::PremiumIndexKlines, "symbol"),
        "aggTrades" => Some(Endpoint::AggTrades(market)),
        "fundingRate" if futures => Some(Endpoint::FundingRate(market)),
        "fundingInfo" if futures => Some(Endpoint::FundingInfo(market)),
        "premiumIndex" if futures => Some(Endpoint::PremiumIndex(market)),
        "exchangeInfo" => Some(Endpoint::ExchangeInfo(market)),
        "time" => Some(Endpoint::Time),
        "ping" => Some(Endpoint::Ping),
        _ => None,
    }
}

/// What a request weighs (binance-live.md §1–§3) and which bucket it counts in.
fn cost(ep: Endpoint, q: &HashMap<String, String>) -> (u32, Option<Bucket>) {
    match ep {
        Endpoint::Klines {
            market: Market::Spot,
            ..
        } => (2, None),
        Endpoint::Klines { .. } => {
            let limit = q
                .get("limit")
                .and_then(|l| l.parse::<u64>().ok())
                .unwrap_or(500);
            (
                match limit {
                    0..100 => 1,
                    100..500 => 2,
                    500..=1000 => 5,
                    _ => 10,
                },
                None,
            )
        }
        Endpoint::AggTrades(Market::Spot) => (4, None),
        Endpoint::AggTrades(_) => (20, None),
        Endpoint::FundingRate(_) | Endpoint::FundingInfo(_) => (0, Some(Bucket::Funding)),
        Endpoint::Stats(_) => (0, Some(Bucket::FuturesData)),
        Endpoint::PremiumIndex(Market::Um) if q.contains_key("symbol") => (1, None),
        Endpoint::PremiumIndex(_) => (10, None),
        Endpoint::ExchangeInfo(Market::Spot) => (20, None),
        Endpoint::ExchangeInfo(_) | Endpoint::Time | Endpoint::Ping => (1, None),
    }
}

/// Parse a query string (`+` and percent escapes decoded; the last of a repeated name wins).
pub fn query_params(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                percent_encoding::percent_decode_str(&s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

impl Rest {
    pub fn new() -> Self {
        Rest::default()
    }

    /// The wall clock the windows run on (Unix ms).
    pub fn wall_ms(&self) -> u64 {
        lock(&self.wall).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        })
    }

    /// Pin the limiter's wall clock (tests), or give it back to the system clock.
    #[cfg(test)]
    pub(crate) fn set_wall_ms(&self, ms: Option<u64>) {
        *lock(&self.wall) = ms;
    }

    /// The answer an injected fault gives on a REST path: `status` 404, 418, 429 or 500 (served
    /// as 503), with Binance's bodies. Charges nothing.
    pub fn fault_reply(
        &self,
        archive: &Archive,
        path: &str,
        status: u16,
        retry_after_secs: Option<u64>,
        ip: IpAddr,
    ) -> Reply {
        let wall = self.wall_ms();
        let used_weight = lock(&self.limiter).used(wall, pool_of(path));
        let limits = &archive.config().rest;
        let (status, body) = match status {
            404 => {
                let e = unknown_path(path);
                (404, json!({"code": e.code, "msg": e.msg}))
            }
            418 => (
                418,
                banned(wall + retry_after_secs.unwrap_or(0).saturating_mul(1000)),
            ),
            429 => {
                let limit = match pool_of(path) {
                    Pool::Futures => limits.futures_weight_per_minute,
                    Pool::Spot => limits.spot_weight_per_minute,
                };
                (429, too_many(ip, limit, "minute"))
            }
            _ => (503, json!({"code": -1000, "msg": "Service Unavailable."})),
        };
        Reply {
            status,
            body: json_body(&body),
            retry_after: retry_after_secs,
            used_weight,
            weight: 0,
        }
    }

    /// Serve one REST request (blocking: it may generate days of data).
    pub fn serve(&self, archive: &Archive, path: &str, query: &str, ip: IpAddr) -> Reply {
        let wall = self.wall_ms();
        let pool = pool_of(path);
        let q = query_params(query);
        let limits = &archive.config().rest;
        let (ep, weight, bucket) = match route(path) {
            Some(ep) => {
                let (w, b) = cost(ep, &q);
                (Some(ep), w, b)
            }
            None => (None, 0, None),
        };
        let verdict = lock(&self.limiter).admit(wall, pool, weight, bucket, limits);
        let used = match verdict {
            Verdict::Admitted { used } => used,
            Verdict::Refused {
                used,
                retry_after_secs,
                limit,
                per,
            } => {
                return Reply {
                    status: 429,
                    body: json_body(&too_many(ip, limit, per)),
                    retry_after: Some(retry_after_secs),
                    used_weight: used,
                    weight: 0,
                };
            }
            Verdict::Banned {
                used,
                until_ms,
                retry_after_secs,
            } => {
                return Reply {
                    status: 418,
                    body: json_body(&banned(until_ms)),
                    retry_after: Some(retry_after_secs),
                    used_weight: used,
                    weight: 0,
                };
            }
        };
        let result = match ep {
            None => Err(unknown_path(path)),
            Some(ep) => {
                let now = archive.now();
                let ctx = Ctx {
                    archive,
                    tables: &self.tables,
                    q: &q,
                    now,
                    now_ms: now.and_utc().timestamp_millis(),
                };
                ctx.dispatch(ep)
            }
        };
        let (status, body) = match result {
            Ok(v) => (200, v),
            Err(e) => (e.status, json!({"code": e.code, "msg": e.msg})),
        };
        Reply {
            status,
            body: json_body(&body),
            retry_after: None,
            used_weight: used,
            weight,
        }
    }
}

/// How rows are picked from a time-ordered series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// The first `limit` rows from `lo` on.
    Forward,
    /// The last `limit` rows up to `hi`.
    Backward,
}

/// A time-ordered series of one symbol: consecutive files of one dataset.
struct Series<'a> {
    ctx: &'a Ctx<'a>,
    dataset: Dataset,
    /// The files' symbol (CM indexPriceKlines: the pair).
    symbol: String,
    spec: &'a SymbolSpec,
    /// Monthly files (fundingRate, 3d/1w/1M klines) instead of daily ones.
    monthly: bool,
    /// A file's last row may carry the next day's first time (UM metrics labelled by the end of
    /// their 5 minutes), so a forward walk starts one file early.
    spills: bool,
}

fn day_of_ms(ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.date_naive())
        .unwrap_or(NaiveDate::MIN)
}

fn day_start_ms(d: NaiveDate) -> i64 {
    d.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

impl<'a> Series<'a> {
    fn seg_of(&self, day: NaiveDate) -> FileDate {
        if self.monthly {
            FileDate::month_of(day)
        } else {
            FileDate::Day(day)
        }
    }

    fn next(&self, seg: FileDate) -> Option<FileDate> {
        seg.last_day().succ_opt().map(|d| self.seg_of(d))
    }

    fn prev(&self, seg: FileDate) -> Option<FileDate> {
        seg.first_day().pred_opt().map(|d| self.seg_of(d))
    }

    fn table(&self, seg: FileDate) -> Option<Arc<Table>> {
        let file = ArchiveFile::new(self.dataset, self.symbol.clone(), seg);
        self.ctx.tables.get(self.ctx.archive.generator(), &file)
    }

    /// The first and last day the symbol has rows by now.
    fn days(&self) -> (NaiveDate, NaiveDate) {
        let today = self.ctx.now.date();
        let last = self.spec.delisted.map_or(today, |d| d.min(today));
        (self.spec.listed, last)
    }

    /// Rows with `lo <= t <= hi` (and `t <= now`) that `keep` accepts: the first or last
    /// `limit` of them, ascending, as (table, row index).
    fn select(
        &self,
        lo: i64,
        hi: i64,
        limit: usize,
        dir: Dir,
        keep: &dyn Fn(&Table, usize) -> bool,
    ) -> Vec<(Arc<Table>, usize)> {
        let (first, last) = self.days();
        let lo = lo.max(day_start_ms(first) - if self.spills { DAY_MS } else { 0 });
        let hi = hi.min(self.ctx.now_ms);
        let mut out = Vec::new();
        if lo > hi || limit == 0 || first > last {
            return out;
        }
        let (first_seg, last_seg) = (self.seg_of(first), self.seg_of(last));
        match dir {
            Dir::Forward => {
                let mut seg = self.seg_of(day_of_ms(lo).max(first));
                if self.spills && seg > first_seg {
                    seg = self.prev(seg).unwrap_or(seg);
                }
                while seg <= last_seg && day_start_ms(seg.first_day()) <= hi {
                    if let Some(t) = self.table(seg) {
                        let mut i = t.first_at_or_after(lo);
                        while i < t.len() && t.time(i) <= hi {
                            if keep(&t, i) {
                                out.push((t.clone(), i));
                                if out.len() == limit {
                                    return out;
                                }
                            }
                            i += 1;
                        }
                    }
                    match self.next(seg) {
                        Some(n) => seg = n,
                        None => break,
                    }
                }
            }
            Dir::Backward => {
                let mut seg = self.seg_of(day_of_ms(hi).min(last));
                let stop = day_of_ms(lo) - Duration::days(if self.spills { 1 } else { 0 });
                while seg >= first_seg && seg.last_day() >= stop {
                    if let Some(t) = self.table(seg) {
                        let mut i = t.first_at_or_after(hi + 1);
                        while i > 0 && t.time(i - 1) >= lo {
                            i -= 1;
                            if keep(&t, i) {
                                out.push((t.clone(), i));
                                if out.len() == limit {
                                    out.reverse();
                                    return out;
                                }
                            }
                        }
                    }
                    match self.prev(seg) {
                        Some(p) => seg = p,
                        None => break,
                    }
                }
                out.reverse();
            }
        }
        out
    }
}

/// One request's view: the archive, the query, the clock.
struct Ctx<'a> {
    archive: &'a Archive,
    tables: &'a Tables,
    q: &'a HashMap<String, String>,
    now: NaiveDateTime,
    now_ms: i64,
}

fn keep_all(_: &Table, _: usize) -> bool {
    true
}

fn num(s: &str) -> Value {
    s.parse::<i64>().map_or_else(|_| json!(s), |v| json!(v))
}

/// (base, quote, margin) assets of a symbol.
fn assets(market: Market, symbol: &str) -> (String, String, String) {
    if market == Market::Cm {
        let pair = cm_pair(symbol);
        let base = pair.strip_suffix("USD").unwrap_or(pair).to_string();
        return (base.clone(), "USD".into(), base);
    }
    let plain = symbol.split('_').next().unwrap_or(symbol);
    for quote in [
        "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USD", "BTC", "ETH", "BNB", "EUR", "TRY",
    ] {
        if let Some(base) = plain.strip_suffix(quote)
            && !base.is_empty()
        {
            return (base.into(), quote.into(), quote.into());
        }
    }
    (plain.into(), String::new(), String::new())
}

/// `PERPETUAL` for `_PERP` and plain symbols, `CURRENT_QUARTER` for dated contracts.
fn contract_type(symbol: &str) -> &'static str {
    match symbol.split_once('_') {
        Some((_, "PERP")) | None => "PERPETUAL",
        Some(_) => "CURRENT_QUARTER",
    }
}

/// A dated contract's delivery (08:00 UTC on its `_YYMMDD` day); perpetuals' far date.
fn delivery_ms(symbol: &str) -> i64 {
    symbol
        .split_once('_')
        .and_then(|(_, d)| NaiveDate::parse_from_str(d, "%y%m%d").ok())
        .map_or(PERPETUAL_DELIVERY_MS, |d| day_start_ms(d) + 8 * HOUR_MS)
}

impl<'a> Ctx<'a> {
    fn dispatch(&self, ep: Endpoint) -> Res<Value> {
        match ep {
            Endpoint::Klines {
                market,
                data_type,
                key,
            } => self.klines(market, data_type, key),
            Endpoint::AggTrades(m) => self.agg_trades(m),
            Endpoint::FundingRate(m) => self.funding_rate(m),
            Endpoint::FundingInfo(m) => Ok(self.funding_info(m)),
            Endpoint::PremiumIndex(m) => self.premium_index(m),
            Endpoint::Stats(s) => self.stats(s),
            Endpoint::ExchangeInfo(m) => self.exchange_info(m),
            Endpoint::Time => Ok(json!({"serverTime": self.now_ms})),
            Endpoint::Ping => Ok(json!({})),
        }
    }

    fn param(&self, p: &str) -> Option<&str> {
        self.q.get(p).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn required(&self, p: &str) -> Res<&str> {
        self.param(p).ok_or_else(|| mandatory(p))
    }

    fn time_param(&self, p: &str) -> Res<Option<i64>> {
        self.param(p)
            .map(|s| s.parse::<i64>().map_err(|_| invalid_param(p)))
            .transpose()
    }

    fn limit(&self, default: usize, max: usize) -> Res<usize> {
        match self.param("limit") {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(invalid_param("limit")),
            },
        }
    }

    fn times(&self) -> Res<(Option<i64>, Option<i64>)> {
        let (s, e) = (self.time_param("startTime")?, self.time_param("endTime")?);
        if let (Some(s), Some(e)) = (s, e)
            && s > e
        {
            return Err(bad(-1023, "Start time is greater than end time."));
        }
        Ok((s, e))
    }

    /// A symbol of `market` that exists by now (listed on or before today).
    fn spec(&self, market: Market, data_type: DataType, name: &str) -> Res<&'a SymbolSpec> {
        self.archive
            .generator()
            .spec_for(market, data_type, name)
            .filter(|s| s.listed <= self.now.date())
            .ok_or_else(invalid_symbol)
    }

    fn trading(&self, spec: &SymbolSpec) -> bool {
        spec.is_listed_on(self.now.date())
    }

    fn series(
        &'a self,
        market: Market,
        data_type: DataType,
        interval: Option<Interval>,
        symbol: &str,
        spec: &'a SymbolSpec,
    ) -> Series<'a> {
        let monthly =
            data_type == DataType::FundingRate || interval.is_some_and(|i| !i.has_daily_files());
        let spills = data_type == DataType::Metrics;
        Series {
            ctx: self,
            dataset: Dataset::new(market, data_type, interval).expect("served datasets are valid"),
            symbol: symbol.to_string(),
            spec,
            monthly,
            spills,
        }
    }

    // -- klines -------------------------------------------------------------------------------

    fn klines(&self, market: Market, data_type: DataType, key: &str) -> Res<Value> {
        let name = self.required(key)?;
        let iv_s = self.required("interval")?;
        let iv = match iv_s {
            "1mo" => None,
            "1s" if market != Market::Spot => None,
            s => s.parse::<Interval>().ok(),
        }
        .ok_or_else(|| bad(-1120, "Invalid interval."))?;
        let spec = self.spec(market, data_type, name)?;
        let limit = self.limit(500, if market == Market::Spot { 1000 } else { 1500 })?;
        let (start, end) = self.times()?;
        let series = self.series(market, data_type, Some(iv), name, spec);
        let rows = if market == Market::Cm {
            const WINDOW: i64 = 200 * DAY_MS;
            let (lo, hi) = match (start, end) {
                (Some(s), Some(e)) if e.saturating_sub(s) > WINDOW => {
                    return Err(invalid_param("endTime"));
                }
                (Some(s), Some(e)) => (s, e),
                (Some(s), None) => (s, s.saturating_add(WINDOW)),
                (None, Some(e)) => (e.saturating_sub(WINDOW), e),
                (None, None) => (i64::MIN, self.now_ms),
            };
            series.select(lo, hi, limit, Dir::Backward, &keep_all)
        } else {
            match (start, end) {
                (Some(s), e) => {
                    series.select(s, e.unwrap_or(i64::MAX), limit, Dir::Forward, &keep_all)
                }
                (None, e) => series.select(
                    i64::MIN,
                    e.unwrap_or(i64::MAX),
                    limit,
                    Dir::Backward,
                    &keep_all,
                ),
            }
        };
        Ok(Value::Array(
            rows.iter().map(|(t, i)| self.kline_row(t, *i)).collect(),
        ))
    }

    /// A kline row as REST sends it; the candle containing now comes out unclosed.
    fn kline_row(&self, t: &Table, i: usize) -> Value {
        let mut cells: Vec<String> = t.cells(i).iter().map(|s| s.to_string()).collect();
        cells.resize(12, "0".into());
        let open = t.time(i);
        let close = cells[6].parse::<i64>().map_or(open, |v| v / t.to_ms);
        if open <= self.now_ms && self.now_ms <= close {
            partial_candle(&mut cells, self.now_ms - open, close + 1 - open);
        }
        json!([
            open,
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            close,
            cells[7],
            num(&cells[8]),
            cells[9],
            cells[10],
            cells[11]
        ])
    }

    /// The price of a 1m kline family (mark or index) at now: the close of the candle
    /// containing now (unclosed), else of the last one before it.
    fn price_now(
        &self,
        market: Market,
        data_type: DataType,
        symbol: &str,
        spec: &SymbolSpec,
    ) -> String {
        let series = self.series(market, data_type, Some(Interval::M1), symbol, spec);
        let rows = series.select(
            self.now_ms - DAY_MS,
            self.now_ms,
            1,
            Dir::Backward,
            &keep_all,
        );
        match rows.first() {
            Some((t, i)) => match self.kline_row(t, *i).get(4) {
                Some(Value::String(s)) => s.clone(),
                _ => "0".into(),
            },
            None => "0".into(),
        }
    }

    // -- aggTrades ----------------------------------------------------------------------------

    fn agg_trades(&self, market: Market) -> Res<Value> {
        let name = self.required("symbol")?;
        let spec = self.spec(market, DataType::AggTrades, name)?;
        let limit = self.limit(500, 1000)?;
        let (start, end) = self.times()?;
        let from_id = self
            .param("fromId")
            .map(|s| s.parse::<u64>().map_err(|_| invalid_param("fromId")))
            .transpose()?;
        let window = match market {
            Market::Um => Some(48 * HOUR_MS),
            Market::Cm => Some(24 * HOUR_MS),
            _ => None,
        };
        let oldest = window.map_or(i64::MIN, |w| self.now_ms - w);
        if from_id.is_none() {
            if window.is_some()
                && let (Some(s), Some(e)) = (start, end)
                && e.saturating_sub(s) >= HOUR_MS
            {
                return Err(bad(
                    -1127,
                    "More than 1 hours between startTime and endTime.",
                ));
            }
            if start.is_some_and(|s| s < oldest) {
                return Err(invalid_param("startTime"));
            }
            if end.is_some_and(|e| e < oldest) {
                return Err(invalid_param("endTime"));
            }
        }
        let series = self.series(market, DataType::AggTrades, None, name, spec);
        let rows = match (from_id, start, end) {
            (Some(id), _, _) => self.agg_from_id(&series, id, limit, oldest)?,
            (None, Some(s), e) => {
                series.select(s, e.unwrap_or(i64::MAX), limit, Dir::Forward, &keep_all)
            }
            (None, None, e) => series.select(
                oldest,
                e.unwrap_or(i64::MAX),
                limit,
                Dir::Backward,
                &keep_all,
            ),
        };
        let spot = market == Market::Spot;
        Ok(Value::Array(
            rows.iter()
                .map(|(t, i)| {
                    let c = t.cells(*i);
                    let cell = |k: usize| c.get(k).copied().unwrap_or("");
                    let mut row = json!({
                        "a": num(cell(0)),
                        "p": cell(1),
                        "q": cell(2),
                        "f": num(cell(3)),
                        "l": num(cell(4)),
                        "T": t.time(*i),
                        "m": cell(6).eq_ignore_ascii_case("true"),
                    });
                    if spot {
                        row["M"] = json!(true);
                    }
                    row
                })
                .collect(),
        ))
    }

    /// aggTrades from id `id` on, across days; the trade at `id` must be inside the window.
    fn agg_from_id(
        &self,
        series: &Series<'_>,
        id: u64,
        limit: usize,
        oldest: i64,
    ) -> Res<Vec<(Arc<Table>, usize)>> {
        let generator = self.archive.generator();
        let (first, last) = series.days();
        if first > last {
            return Ok(Vec::new());
        }
        let first_id = |d: NaiveDate| generator.first_agg_trade_id(series.spec, d);
        // The last day whose first id is <= id (ids run on contiguously across days).
        let (mut lo, mut hi) = (first, last);
        if id < first_id(first) {
            hi = first;
        }
        while lo < hi {
            let mid = lo + Duration::days((hi - lo).num_days().div_euclid(2) + 1);
            if first_id(mid) <= id {
                lo = mid;
            } else {
                hi = mid - Duration::days(1);
            }
        }
        let mut out = Vec::new();
        let mut day = lo;
        let mut checked = false;
        while day <= last && out.len() < limit {
            if let Some(t) = series.table(FileDate::Day(day)) {
                let mut i = (0..t.len())
                    .position(|i| t.cell(i, 0).parse::<u64>().is_ok_and(|a| a >= id))
                    .unwrap_or(t.len());
                while i < t.len() && t.time(i) <= self.now_ms && out.len() < limit {
                    if !checked {
                        if t.time(i) < oldest {
                            return Err(invalid_param("fromId"));
                        }
                        checked = true;
                    }
                    out.push((t.clone(), i));
                    i += 1;
                }
                if i < t.len() && t.time(i) > self.now_ms {
                    break;
                }
            }
            day += Duration::days(1);
        }
        Ok(out)
    }

    // -- funding ------------------------------------------------------------------------------

    fn funding_rate(&self, market: Market) -> Res<Value> {
        let symbol = if market == Market::Cm {
            Some(self.required("symbol")?)
        } else {
            self.param("symbol")
        };
        let specs: Vec<&SymbolSpec> = match symbol {
            Some(s) => vec![self.spec(market, DataType::FundingRate, s)?],
            None => self
                .archive
                .config()
                .symbols
                .iter()
                .filter(|s| s.market == market && s.listed <= self.now.date())
                .collect(),
        };
        let (start, end) = self.times()?;
        let limit = match (start, end, self.param("limit")) {
            (None, None, None) => FUNDING_DEFAULT_ROWS,
            _ => self.limit(100, 1000)?,
        };
        let dir = if start.is_some() {
            Dir::Forward
        } else {
            Dir::Backward
        };
        let (lo, hi) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
        let mut rows: Vec<(i64, &SymbolSpec, Arc<Table>, usize)> = Vec::new();
        for spec in specs {
            let series = self.series(market, DataType::FundingRate, None, &spec.symbol, spec);
            for (t, i) in series.select(lo, hi, limit, dir, &keep_all) {
                rows.push((t.time(i), spec, t, i));
            }
        }
        rows.sort_by(|a, b| (a.0, &a.1.symbol).cmp(&(b.0, &b.1.symbol)));
        let rows = match dir {
            Dir::Forward => &rows[..rows.len().min(limit)],
            Dir::Backward => &rows[rows.len().saturating_sub(limit)..],
        };
        Ok(Value::Array(
            rows.iter()
                .map(|(time, spec, t, i)| {
                    let rate = t.cell(*i, 2);
                    if market == Market::Cm {
                        json!({"symbol": spec.symbol, "fundingTime": time, "fundingRate": rate})
                    } else {
                        json!({
                            "symbol": spec.symbol,
                            "fundingTime": time,
                            "fundingRate": rate,
                            "markPrice": self.mark_before(spec, *time),
                            "rateType": "Regular",
                        })
                    }
                })
                .collect(),
        ))
    }

    /// The close of the 1m mark-price candle ending just before `t_ms` (the open of the candle
    /// containing it on a listing day's first minute).
    fn mark_before(&self, spec: &SymbolSpec, t_ms: i64) -> String {
        let minute = t_ms - t_ms.rem_euclid(60_000);
        let series = self.series(
            spec.market,
            DataType::MarkPriceKlines,
            Some(Interval::M1),
            &spec.symbol,
            spec,
        );
        for (open, col) in [(minute - 60_000, 4), (minute, 1)] {
            if let Some(t) = series.table(FileDate::Day(day_of_ms(open))) {
                let i = t.first_at_or_after(open);
                if i < t.len() && t.time(i) == open {
                    return t.cell(i, col).to_string();
                }
            }
        }
        "0".into()
    }

    /// The next settlement after now: (funding time rounded to the hour, its rate).
    fn next_funding(&self, spec: &SymbolSpec) -> Option<(i64, String)> {
        let series = self.series(spec.market, DataType::FundingRate, None, &spec.symbol, spec);
        let month = FileDate::month_of(self.now.date());
        for seg in [Some(month), series.next(month)].into_iter().flatten() {
            if let Some(t) = series.table(seg) {
                let i = t.first_at_or_after(self.now_ms + 1);
                if i < t.len() {
                    let time = t.time(i);
                    return Some((time - time.rem_euclid(HOUR_MS), t.cell(i, 2).to_string()));
                }
            }
        }
        None
    }

    fn funding_info(&self, market: Market) -> Value {
        let today = self.now.date();
        Value::Array(
            self.archive
                .config()
                .symbols
                .iter()
                .filter(|s| s.market == market && self.trading(s))
                .filter(|s| s.funding_interval_on(today) != 8)
                .map(|s| {
                    json!({
                        "symbol": s.symbol,
                        "adjustedFundingRateCap": "0.02000000",
                        "adjustedFundingRateFloor": "-0.02000000",
                        "fundingIntervalHours": s.funding_interval_on(today),
                        "disclaimer": false,
                    })
                })
                .collect(),
        )
    }

    fn premium_index(&self, market: Market) -> Res<Value> {
        let symbol = self.param("symbol");
        let pair = if market == Market::Cm {
            self.param("pair")
        } else {
            None
        };
        let specs: Vec<&SymbolSpec> = match symbol {
            Some(s) => {
                let spec = self.spec(market, DataType::MarkPriceKlines, s)?;
                if !self.trading(spec) {
                    return Err(invalid_symbol());
                }
                vec![spec]
            }
            None => {
                let v: Vec<&SymbolSpec> = self
                    .archive
                    .config()
                    .symbols
                    .iter()
                    .filter(|s| s.market == market && self.trading(s))
                    .filter(|s| pair.is_none_or(|p| cm_pair(&s.symbol) == p))
                    .collect();
                if pair.is_some() && v.is_empty() {
                    return Err(invalid_symbol());
                }
                v
            }
        };
        let rows: Vec<Value> = specs
            .iter()
            .map(|spec| {
                let index_symbol = if market == Market::Cm {
                    cm_pair(&spec.symbol)
                } else {
                    &spec.symbol
                };
                let mark = self.price_now(market, DataType::MarkPriceKlines, &spec.symbol, spec);
                let index = self.price_now(market, DataType::IndexPriceKlines, index_symbol, spec);
                let (next_time, rate) = self.next_funding(spec).unwrap_or_else(|| {
                    let step = 8 * HOUR_MS;
                    (
                        self.now_ms - self.now_ms.rem_euclid(step) + step,
                        "0.00000000".into(),
                    )
                });
                let mut row = json!({
                    "symbol": spec.symbol,
                    "markPrice": mark,
                    "indexPrice": index,
                    "estimatedSettlePrice": index,
                    "lastFundingRate": rate,
                    "interestRate": "0.00010000",
                    "nextFundingTime": next_time,
                    "time": self.now_ms,
                });
                if market == Market::Cm {
                    row["pair"] = json!(cm_pair(&spec.symbol));
                }
                row
            })
            .collect();
        Ok(if market == Market::Um && symbol.is_some() {
            rows.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(rows)
        })
    }

    // -- /futures/data ------------------------------------------------------------------------

    fn stats(&self, stat: Stat) -> Res<Value> {
        let (market, name) = match (self.param("symbol"), self.param("pair")) {
            (Some(s), _) => (Market::Um, s),
            (None, Some(p)) => (Market::Cm, p),
            (None, None) => return Err(mandatory("symbol")),
        };
        let period = self.required("period")?;
        if period != "5m" {
            return Err(invalid_param("period"));
        }
        let spec = if market == Market::Um {
            self.spec(Market::Um, DataType::Metrics, name)?
        } else {
            if stat == Stat::Taker {
                return Err(invalid_param("pair"));
            }
            let ct = self.param("contractType").unwrap_or("PERPETUAL");
            if !["PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER"].contains(&ct) {
                return Err(invalid_param("contractType"));
            }
            self.archive
                .config()
                .symbols
                .iter()
                .find(|s| {
                    s.market == Market::Cm
                        && cm_pair(&s.symbol) == name
                        && contract_type(&s.symbol) == ct
                        && s.listed <= self.now.date()
                })
                .ok_or_else(invalid_symbol)?
        };
        let limit = self.limit(30, 500)?;
        let (start, end) = self.times()?;
        let oldest = self.now_ms - 30 * DAY_MS;
        if start.is_some_and(|s| s < oldest) {
            return Err(invalid_param("startTime"));
        }
        // The archive column each endpoint reads; a blank cell means no row.
        let col = match stat {
            Stat::OpenInterest => 2,
            Stat::TopAccount => 4,
            Stat::TopPosition => 5,
            Stat::GlobalAccount => 6,
            Stat::Taker => 7,
        };
        let keep = |t: &Table, i: usize| {
            let c = t.cell(i, col);
            !c.is_empty() && c != "\"\""
        };
        let series = self.series(market, DataType::Metrics, None, &spec.symbol, spec);
        let hi = end.unwrap_or(i64::MAX);
        let rows = match start {
            Some(s) => series.select(s, hi, limit, Dir::Forward, &keep),
            None => series.select(oldest, hi, limit, Dir::Backward, &keep),
        };
        let ratio_shares = |r: &str| -> (String, String) {
            let r: f64 = r.parse().unwrap_or(1.0);
            let long = (r / (1.0 + r) * 10_000.0).round() as i128;
            (fmt_dec(long, 4), fmt_dec(10_000 - long, 4))
        };
        Ok(Value::Array(
            rows.iter()
                .filter(|(t, i)| t.time(*i) >= oldest)
                .map(|(t, i)| {
                    let c = t.cells(*i);
                    let cell = |k: usize| c.get(k).copied().unwrap_or("").to_string();
                    let ts = t.time(*i);
                    let mut row = match stat {
                        Stat::OpenInterest => json!({
                            "sumOpenInterest": cell(2),
                            "sumOpenInterestValue": cell(3),
                            "timestamp": ts,
                        }),
                        Stat::Taker => {
                            let sell = c.get(2).and_then(|s| parse_dec(s)).map_or(0, |(u, sc)| {
                                u * 1000 / 10i128.pow(sc) / 100
                            });
                            let ratio = c.get(7).and_then(|s| parse_dec(s)).unwrap_or((0, 0));
                            let buy = sell * ratio.0 / 10i128.pow(ratio.1);
                            json!({
                                "buySellRatio": cell(7),
                                "buyVol": fmt_dec(buy, 3),
                                "sellVol": fmt_dec(sell, 3),
                                "timestamp": ts,
                            })
                        }
                        _ => {
                            let (long, short) = ratio_shares(&cell(col));
                            let (lk, sk) = if stat == Stat::TopPosition && market == Market::Cm {
                                ("longPosition", "shortPosition")
                            } else {
                                ("longAccount", "shortAccount")
                            };
                            json!({"longShortRatio": cell(col), lk: long, sk: short, "timestamp": ts})
                        }
                    };
                    match (market, stat) {
                        (Market::Um, Stat::Taker) => {}
                        (Market::Um, Stat::OpenInterest) => {
                            row["symbol"] = json!(spec.symbol);
                            row["CMCCirculatingSupply"] = json!("0");
                        }
                        (Market::Um, _) => row["symbol"] = json!(spec.symbol),
                        (_, Stat::OpenInterest) => {
                            row["pair"] = json!(cm_pair(&spec.symbol));
                            row["contractType"] = json!(contract_type(&spec.symbol));
                        }
                        _ => row["pair"] = json!(cm_pair(&spec.symbol)),
                    }
                    row
                })
                .collect(),
        ))
    }

    // -- exchangeInfo -------------------------------------------------------------------------

    fn exchange_info(&self, market: Market) -> Res<Value> {
        let limits = &self.archive.config().rest;
        let today = self.now.date();
        let only = if market == Market::Spot {
            self.param("symbol")
        } else {
            None
        };
        let specs: Vec<&SymbolSpec> = self
            .archive
            .config()
            .symbols
            .iter()
            .filter(|s| s.market == market && s.listed <= today)
            .filter(|s| only.is_none_or(|o| s.symbol == o))
            .collect();
        if only.is_some() && specs.is_empty() {
            return Err(invalid_symbol());
        }
        let symbols: Vec<Value> = specs
            .iter()
            .map(|s| {
                let (base, quote, margin) = assets(market, &s.symbol);
                let trading = self.trading(s);
                let onboard = day_start_ms(s.listed);
                match market {
                    Market::Spot => json!({
                        "symbol": s.symbol,
                        "status": if trading { "TRADING" } else { "BREAK" },
                        "baseAsset": base,
                        "quoteAsset": quote,
                        "baseAssetPrecision": 8,
                        "quoteAssetPrecision": 8,
                        "pricePrecision": s.price_decimals(),
                        "quantityPrecision": s.qty_decimals(),
                        "onboardDate": onboard,
                    }),
                    _ => {
                        let status = if trading { "TRADING" } else { "SETTLING" };
                        let pair = if market == Market::Cm {
                            cm_pair(&s.symbol).to_string()
                        } else {
                            s.symbol.split('_').next().unwrap_or(&s.symbol).to_string()
                        };
                        let mut v = json!({
                            "symbol": s.symbol,
                            "pair": pair,
                            "contractType": contract_type(&s.symbol),
                            "deliveryDate": delivery_ms(&s.symbol),
                            "onboardDate": onboard,
                            "baseAsset": base,
                            "quoteAsset": quote,
                            "marginAsset": margin,
                            "pricePrecision": s.price_decimals(),
                            "quantityPrecision": s.qty_decimals(),
                        });
                        if market == Market::Cm {
                            v["contractStatus"] = json!(status);
                            v["contractSize"] = json!(s.contract_size() as i64);
                        } else {
                            v["status"] = json!(status);
                        }
                        v
                    }
                }
            })
            .collect();
        let weight_limit = match market {
            Market::Spot => limits.spot_weight_per_minute,
            _ => limits.futures_weight_per_minute,
        };
        let mut rate_limits = vec![json!({
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": weight_limit,
        })];
        rate_limits.push(if market == Market::Spot {
            json!({"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100})
        } else {
            json!({"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200})
        });
        Ok(json!({
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": rate_limits,
            "exchangeFilters": [],
            "symbols": symbols,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FaultKind, FaultRule, FaultTarget, SimConfig, format_instant};
    use crate::server::{SimHandle, SimServer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn ms(s: &str) -> i64 {
        at(s).and_utc().timestamp_millis()
    }

    /// The demo universe at 2025-01-20 10:17:30.
    fn config() -> SimConfig {
        let mut c = SimConfig::demo();
        c.now = Some(at("2025-01-20 10:17:30"));
        c
    }

    struct Resp {
        status: u16,
        headers: String,
        body: Value,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }

        fn weight(&self) -> u64 {
            self.header("X-MBX-USED-WEIGHT-1M")
                .unwrap()
                .parse()
                .unwrap()
        }

        fn rows(&self) -> &Vec<Value> {
            self.body
                .as_array()
                .unwrap_or_else(|| panic!("{}", self.body))
        }

        fn code(&self) -> i64 {
            self.body["code"]
                .as_i64()
                .unwrap_or_else(|| panic!("{}", self.body))
        }
    }

    async fn get(sim: &SimHandle, target: &str) -> Resp {
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        let req = format!("GET /{target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let headers = String::from_utf8_lossy(&buf[..end]).into_owned();
        let body = &buf[end..];
        Resp {
            status: headers[9..12].parse().unwrap(),
            body: serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into())),
            headers,
        }
    }

    /// A server whose limiter runs on a pinned wall clock ([`WALL`]), so windows cannot roll
    /// over in the middle of a test.
    async fn start(c: SimConfig) -> SimHandle {
        let sim = SimServer::start(c, 0).await.unwrap();
        sim.rest().set_wall_ms(Some(WALL));
        sim
    }

    /// 20 s into a minute, 80 s into a 5-minute window.
    const WALL: u64 = 1_700_000_100_000 + 80_000;

    /// The data rows of an archive CSV, split into cells.
    fn csv_rows(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| l.as_bytes().first().is_some_and(u8::is_ascii_digit))
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    }

    fn day_key(market: &str, dataset: &str, symbol: &str, day: &str) -> String {
        let (folder, name) = match dataset.split_once('/') {
            Some((t, iv)) => (format!("{t}/{symbol}/{iv}"), format!("{symbol}-{iv}-{day}")),
            None => (
                format!("{dataset}/{symbol}"),
                format!("{symbol}-{dataset}-{day}"),
            ),
        };
        format!("data/{market}/daily/{folder}/{name}.zip")
    }

    fn kline_cells(row: &Value) -> Vec<String> {
        row.as_array()
            .unwrap()
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kline_rows_are_the_archive_csv_rows_without_its_defects() {
        let um = day_key("futures/um", "klines/1m", "BTCUSDT", "2025-01-10");
        let mut c = config();
        c.broken_ohlc = vec![(um.clone(), at("2025-01-10 12:02:00"))];
        c.duplicated_rows = vec![(um.clone(), 721)];
        let sim = start(c).await;
        let archive = sim.archive();
        let csv = csv_rows(&archive.csv(&um).unwrap());
        let t0 = ms("2025-01-10 12:00:00");
        let r = get(
            &sim,
            &format!("fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={t0}&limit=5"),
        )
        .await;
        assert_eq!(r.status, 200);
        let rows: Vec<Vec<String>> = r.rows().iter().map(kline_cells).collect();
        assert_eq!(rows.len(), 5);
        let i = csv.iter().position(|c| c[0] == t0.to_string()).unwrap();
        // Row by row, every cell is the archive's string, except the two defects.
        assert_eq!(rows[0], csv[i]);
        assert_eq!(rows[1], csv[i + 1]);
        assert_eq!(csv[i + 1], csv[i + 2], "the archive wrote 12:01 twice");
        assert_eq!(rows[2][0], ms("2025-01-10 12:02:00").to_string());
        assert_ne!(
            rows[2],
            csv[i + 3],
            "the archive's broken candle is not served"
        );
        let clean = archive
            .generator()
            .csv_clean(&ArchiveFile::parse_key(&um).unwrap())
            .unwrap();
        let clean = csv_rows(&clean);
        assert_eq!(rows[..], clean[i..i + 5]);
        // Spot µs files: the same strings, times in ms.
        let spot = day_key("spot", "klines/1h", "ETHUSDT", "2025-01-10");
        let csv = csv_rows(&archive.csv(&spot).unwrap());
        let r = get(
            &sim,
            &format!("api/v3/klines?symbol=ETHUSDT&interval=1h&startTime={t0}&limit=2"),
        )
        .await;
        let rows: Vec<Vec<String>> = r.rows().iter().map(kline_cells).collect();
        let mut want = csv[12].clone();
        for k in [0, 6] {
            want[k] = (want[k].parse::<i64>().unwrap() / 1000).to_string();
        }
        assert_eq!(rows[0], want);
        assert_eq!(rows[0][1].split('.').nth(1).unwrap().len(), 8);
        // CM index klines by pair.
        let cm = day_key("futures/cm", "indexPriceKlines/5m", "BTCUSD", "2025-01-10");
        let csv = csv_rows(&archive.csv(&cm).unwrap());
        let r = get(
            &sim,
            &format!(
                "dapi/v1/indexPriceKlines?pair=BTCUSD&interval=5m&startTime={t0}&endTime={t0}"
            ),
        )
        .await;
        assert_eq!(kline_cells(&r.rows()[0]), csv[144]);
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_end_at_now_and_the_last_candle_is_unclosed() {
        let sim = start(config()).await;
        let file =
            ArchiveFile::parse_key(&day_key("futures/um", "klines/1m", "BTCUSDT", "2025-01-20"))
                .unwrap();
        let day = csv_rows(&sim.archive().generator().csv_clean(&file).unwrap());
        let final_at = |t: &str| {
            day.iter()
                .find(|c| c[0] == ms(t).to_string())
                .unwrap()
                .clone()
        };
        let last = |r: &Resp| kline_cells(r.rows().last().unwrap());
        let q = "fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=3";
        let r = get(&sim, q).await;
        assert_eq!(r.rows().len(), 3);
        let a = last(&r);
        assert_eq!(a[0], ms("2025-01-20 10:17:00").to_string());
        assert_eq!(a[6], (ms("2025-01-20 10:18:00") - 1).to_string());
        let fin = final_at("2025-01-20 10:17:00");
        assert_ne!(a, fin, "the in-progress candle is not the final one");
        assert_eq!(a[1], fin[1], "same open");
        assert_eq!(kline_cells(&r.rows()[1]), final_at("2025-01-20 10:16:00"));
        // The clock moves: the same candle, further along.
        sim.set_now(at("2025-01-20 10:17:50"));
        let b = last(&get(&sim, q).await);
        assert_eq!(b[0], a[0]);
        assert_ne!(b, a);
        let vol = |c: &[String]| c[5].parse::<f64>().unwrap();
        assert!(vol(&a) <= vol(&b) && vol(&b) <= vol(&fin));
        // Past its close it is final, and the next one is in progress.
        sim.set_now(at("2025-01-20 10:18:00"));
        let r = get(&sim, q).await;
        assert_eq!(kline_cells(&r.rows()[1]), fin);
        assert_eq!(last(&r)[0], ms("2025-01-20 10:18:00").to_string());
        // Nothing after now, whatever the window asks; the clock over HTTP.
        let t = ms("2025-01-20 10:19:00");
        let r = get(
            &sim,
            &format!("fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={t}"),
        )
        .await;
        assert!(r.rows().is_empty());
        let c = get(&sim, "_sim/clock").await;
        assert_eq!(c.body, json!("2025-01-20T10:18:00Z"));
        let c = get(&sim, "_sim/clock?now=2025-02-03T00:30:00Z").await;
        assert_eq!((c.status, sim.now()), (200, at("2025-02-03 00:30:00")));
        // Days after the config's end are served too.
        let r = get(&sim, "fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=30").await;
        assert_eq!(last(&r)[0], ms("2025-02-03 00:00:00").to_string());
        assert_eq!(r.rows().len(), 30);
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn archive_files_appear_once_published() {
        let mut c = config();
        c.now = Some(at("2025-01-20 06:00:00"));
        let sim = start(c).await;
        let a = sim.archive_arc();
        let key = day_key("futures/um", "klines/1d", "BTCUSDT", "2025-01-19");
        let published = a.publication_time(&key).unwrap();
        assert!(published > at("2025-01-20 07:40:00") && published < at("2025-01-20 09:00:00"));
        let folder = "data/futures/um/daily/klines/BTCUSDT/1d/";
        // The page after the 18th's CHECKSUM: the 19th's zip once published.
        let marker = format!("{folder}BTCUSDT-1d-2025-01-18.zip.CHECKSUM");
        let listed = |a: &Archive| {
            a.list(folder, Some("/"), Some(&marker), 1)
                .unwrap()
                .contents
                .iter()
                .any(|m| m.key == key)
        };
        let status = |k: String| {
            let sim = &sim;
            async move { get(sim, &k).await.status }
        };
        assert_eq!(status(key.clone()).await, 404);
        assert_eq!(status(format!("{key}.CHECKSUM")).await, 404);
        assert!(!listed(&a) && !a.files().iter().any(|f| f.key() == key));
        let prev = day_key("futures/um", "klines/1d", "BTCUSDT", "2025-01-18");
        assert!(a.exists(&prev) && listed(&a) == a.exists(&key));
        a.set_now(published - Duration::seconds(1));
        assert!(!a.exists(&key) && !listed(&a));
        let t = format_instant(published);
        assert_eq!(get(&sim, &format!("_sim/clock?now={t}")).await.status, 200);
        assert_eq!(status(key.clone()).await, 200);
        assert_eq!(status(format!("{key}.CHECKSUM")).await, 200);
        assert!(listed(&a) && a.keys().any(|k| k == key));
        // Monthly files: three days after their month.
        let m = "data/futures/um/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2025-01.zip";
        assert!(!a.exists(m));
        a.set_now(at("2025-02-04 12:00:00"));
        assert!(a.exists(m));
        // Without a clock every file is there, now at end + 1 day.
        let b = Archive::new(SimConfig::demo());
        assert!(b.exists(m) && b.now() == at("2025-02-01 00:00:00"));
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn weights_add_up_per_pool() {
        let sim = start(config()).await;
        let mut want = 0;
        for (q, w) in [
            ("fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=99", 1),
            ("fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=100", 2),
            ("fapi/v1/markPriceKlines?symbol=BTCUSDT&interval=1m", 5),
            (
                "dapi/v1/klines?symbol=BTCUSD_PERP&interval=1m&limit=1000",
                5,
            ),
            (
                "fapi/v1/premiumIndexKlines?symbol=BTCUSDT&interval=1m&limit=1001",
                10,
            ),
            ("fapi/v1/aggTrades?symbol=BTCUSDT&limit=5", 20),
            ("dapi/v1/aggTrades?symbol=BTCUSD_PERP&limit=5", 20),
            ("fapi/v1/fundingRate?symbol=BTCUSDT", 0),
            ("fapi/v1/fundingInfo", 0),
            ("futures/data/openInterestHist?symbol=BTCUSDT&period=5m", 0),
            ("fapi/v1/premiumIndex?symbol=BTCUSDT", 1),
            ("fapi/v1/premiumIndex", 10),
            ("fapi/v1/exchangeInfo", 1),
            ("fapi/v1/time", 1),
            ("fapi/v1/klines?symbol=NOPE&interval=1m", 5),
        ] {
            let r = get(&sim, q).await;
            want += w;
            assert_eq!(r.weight(), want, "{q}: {}", r.body);
            assert_eq!(r.header("Content-Type"), Some("application/json"));
        }
        // Spot is its own pool.
        for (q, w) in [
            ("api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000", 2),
            ("api/v3/aggTrades?symbol=BTCUSDT&limit=3", 6),
            ("api/v3/exchangeInfo", 26),
            ("api/v3/time", 27),
        ] {
            assert_eq!(get(&sim, q).await.weight(), w, "{q}");
        }
        // The log carries each request's weight.
        let log = sim.rest_requests();
        assert_eq!(log.len(), 19);
        assert_eq!(sim.rest_weight_used(), want + 27);
        assert!(log.iter().any(|r| r.path == "fapi/v1/aggTrades"
            && r.query == "symbol=BTCUSDT&limit=5"
            && r.weight == 20));
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_the_limit_is_429_then_a_418_ban() {
        let mut c = config();
        c.rest.futures_weight_per_minute = 30;
        c.rest.ban_after_429 = 2;
        c.rest.funding_per_5min = 1;
        let sim = start(c).await;
        let q = "fapi/v1/aggTrades?symbol=BTCUSDT&limit=1";
        assert_eq!(get(&sim, q).await.weight(), 20);
        let r = get(&sim, q).await;
        assert_eq!((r.status, r.code(), r.weight()), (429, -1003, 20));
        assert_eq!(r.header("Retry-After"), Some("40"));
        let msg = r.body["msg"].as_str().unwrap();
        assert!(
            msg.contains("current limit of IP(127.0.0.1) is 30 requests per minute"),
            "{msg}"
        );
        // Requests that fit still pass; the funding bucket refuses on its own.
        assert_eq!(get(&sim, "fapi/v1/time").await.weight(), 21);
        assert_eq!(get(&sim, "fapi/v1/fundingInfo").await.status, 200);
        let f = get(&sim, "fapi/v1/fundingInfo").await;
        assert_eq!((f.status, f.header("Retry-After")), (429, Some("220")));
        // The third refusal in one minute bans: 418 everywhere, with the ban's end.
        assert_eq!(get(&sim, q).await.status, 429);
        let r = get(&sim, q).await;
        assert_eq!((r.status, r.code()), (418, -1003));
        assert_eq!(r.header("Retry-After"), Some("120"));
        let until = WALL + 120_000;
        assert!(
            r.body["msg"]
                .as_str()
                .unwrap()
                .contains(&format!("IP banned until {until}"))
        );
        sim.rest().set_wall_ms(Some(WALL + 60_000));
        let s = get(&sim, "api/v3/time").await;
        assert_eq!((s.status, s.header("Retry-After")), (418, Some("60")));
        assert_eq!(get(&sim, "fapi/v1/nope").await.status, 418);
        sim.rest().set_wall_ms(Some(until));
        let r = get(&sim, q).await;
        assert_eq!((r.status, r.weight()), (200, 20));
        assert_eq!(sim.rest_weight_used(), 20 + 1 + 20);
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn faults_and_errors_speak_binance_json() {
        let mut c = config();
        let rule = |k: &str, kind| FaultRule::new(k, FaultTarget::Zip, kind);
        c.faults = vec![
            rule(
                "fapi/v1/klines",
                FaultKind::TooManyRequests {
                    first_n: 1,
                    retry_after_secs: 7,
                },
            ),
            rule(
                "fapi/v1/time",
                FaultKind::Banned {
                    first_n: 1,
                    retry_after_secs: 9,
                },
            ),
            rule("api/v3/time", FaultKind::ServerError { first_n: 1 }),
            rule("dapi/v1/time", FaultKind::Reset { first_n: 1 }),
        ];
        let sim = start(c).await;
        let k = "fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1";
        let r = get(&sim, k).await;
        assert_eq!(
            (r.status, r.code(), r.header("Retry-After")),
            (429, -1003, Some("7"))
        );
        assert_eq!(get(&sim, k).await.status, 200);
        let r = get(&sim, "fapi/v1/time").await;
        assert_eq!((r.status, r.header("Retry-After")), (418, Some("9")));
        assert!(
            r.body["msg"]
                .as_str()
                .unwrap()
                .contains(&format!("banned until {}", WALL + 9000))
        );
        assert_eq!(
            get(&sim, "fapi/v1/time").await.body,
            json!({"serverTime": ms("2025-01-20 10:17:30")})
        );
        let r = get(&sim, "api/v3/time").await;
        assert_eq!((r.status, r.code()), (503, -1000));
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        s.write_all(b"GET /dapi/v1/time HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert!(s.read_to_end(&mut buf).await.is_err() || buf.is_empty());
        assert_eq!(get(&sim, "dapi/v1/time").await.status, 200);
        // Parameter errors.
        for (q, status, code) in [
            ("fapi/v1/klines?symbol=ETHUSD&interval=1m", 400, -1121),
            ("dapi/v1/klines?symbol=BTCUSDT&interval=1m", 400, -1121),
            ("api/v3/aggTrades?symbol=SOLUSDT", 400, -1121),
            ("fapi/v1/klines?symbol=BTCUSDT&interval=2m", 400, -1120),
            ("fapi/v1/klines?symbol=BTCUSDT&interval=1mo", 400, -1120),
            ("fapi/v1/klines?interval=1m", 400, -1102),
            (
                "fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1501",
                400,
                -1130,
            ),
            (
                "api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1001",
                400,
                -1130,
            ),
            (
                "fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime=2&endTime=1",
                400,
                -1023,
            ),
            (
                "dapi/v1/klines?symbol=BTCUSD_PERP&interval=1d&startTime=0&endTime=17280000001",
                400,
                -1130,
            ),
            (
                "fapi/v1/indexPriceKlines?symbol=BTCUSDT&interval=1m",
                400,
                -1102,
            ),
            ("fapi/v2/klines", 404, -5000),
        ] {
            let r = get(&sim, q).await;
            assert_eq!((r.status, r.code()), (status, code), "{q}: {}", r.body);
        }
        let r = get(&sim, "fapi/v2/klines").await;
        assert_eq!(r.body["msg"], "Path /fapi/v2/klines, Method GET is invalid");
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_endpoints_map_the_csv_columns() {
        let sim = start(config()).await;
        let a = sim.archive();
        // UM files are end-labelled: 2025-01-19 00:00 is the last row of the 18th's file.
        let mut csv = csv_rows(
            &a.csv(&day_key("futures/um", "metrics", "BTCUSDT", "2025-01-18"))
                .unwrap(),
        );
        csv.extend(csv_rows(
            &a.csv(&day_key("futures/um", "metrics", "BTCUSDT", "2025-01-19"))
                .unwrap(),
        ));
        let ts = |c: &[String]| ms(&c[0]);
        let t0 = ms("2025-01-19 00:00:00");
        let t1 = ms("2025-01-19 23:55:00");
        let want: Vec<&Vec<String>> = csv.iter().filter(|c| (t0..=t1).contains(&ts(c))).collect();
        assert_eq!(want.len(), 288);
        let q = |ep: &str| {
            format!(
                "futures/data/{ep}?symbol=BTCUSDT&period=5m&startTime={t0}&endTime={t1}&limit=500"
            )
        };
        let oi = get(&sim, &q("openInterestHist")).await;
        assert_eq!(oi.rows().len(), 288);
        for (r, c) in oi.rows().iter().zip(&want) {
            assert_eq!(r["timestamp"], json!(ts(c)));
            assert_eq!(r["symbol"], "BTCUSDT");
            assert_eq!(
                (
                    r["sumOpenInterest"].as_str(),
                    r["sumOpenInterestValue"].as_str()
                ),
                (Some(c[2].as_str()), Some(c[3].as_str()))
            );
        }
        for (ep, col, field) in [
            ("topLongShortAccountRatio", 4, "longShortRatio"),
            ("topLongShortPositionRatio", 5, "longShortRatio"),
            ("globalLongShortAccountRatio", 6, "longShortRatio"),
            ("takerlongshortRatio", 7, "buySellRatio"),
        ] {
            let r = get(&sim, &q(ep)).await;
            let kept: Vec<&&Vec<String>> = want.iter().filter(|c| !c[col].is_empty()).collect();
            assert_eq!(r.rows().len(), kept.len(), "{ep}");
            for (r, c) in r.rows().iter().zip(kept) {
                assert_eq!(
                    (&r["timestamp"], r[field].as_str()),
                    (&json!(ts(c)), Some(c[col].as_str())),
                    "{ep}"
                );
            }
        }
        let blanks = want.iter().filter(|c| c[4].is_empty()).count();
        assert!(blanks > 0, "the demo day has REST gaps");
        // Defaults: the last 30 rows up to now; the 30-day window; only 5m.
        let r = get(
            &sim,
            "futures/data/takerlongshortRatio?symbol=BTCUSDT&period=5m",
        )
        .await;
        assert_eq!(r.rows().len(), 30);
        assert_eq!(r.rows()[29]["timestamp"], json!(ms("2025-01-20 10:15:00")));
        assert!(r.rows()[0].get("symbol").is_none());
        let old = ms("2024-12-20 10:00:00");
        let r = get(
            &sim,
            &format!("futures/data/openInterestHist?symbol=BTCUSDT&period=5m&startTime={old}"),
        )
        .await;
        assert_eq!(r.code(), -1130);
        let r = get(
            &sim,
            "futures/data/openInterestHist?symbol=BTCUSDT&period=1h",
        )
        .await;
        assert_eq!(r.code(), -1130);
        // COIN-M by pair.
        let r = get(
            &sim,
            "futures/data/openInterestHist?pair=BTCUSD&contractType=PERPETUAL&period=5m&limit=1",
        )
        .await;
        assert_eq!(
            (&r.rows()[0]["pair"], &r.rows()[0]["contractType"]),
            (&json!("BTCUSD"), &json!("PERPETUAL"))
        );
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn funding_rows_map_the_monthly_csv() {
        let sim = start(config()).await;
        let g = sim.archive().generator();
        let file = ArchiveFile::parse_key(
            "data/futures/um/monthly/fundingRate/ETHUSDT/ETHUSDT-fundingRate-2025-01.zip",
        )
        .unwrap();
        let now = ms("2025-01-20 10:17:30");
        let csv: Vec<Vec<String>> = csv_rows(&g.csv_clean(&file).unwrap())
            .into_iter()
            .filter(|c| c[0].parse::<i64>().unwrap() <= now)
            .collect();
        let t0 = ms("2025-01-15 00:00:00");
        let r = get(
            &sim,
            &format!("fapi/v1/fundingRate?symbol=ETHUSDT&startTime={t0}&limit=1000"),
        )
        .await;
        let want: Vec<&Vec<String>> = csv
            .iter()
            .filter(|c| c[0].parse::<i64>().unwrap() >= t0)
            .collect();
        assert_eq!(r.rows().len(), want.len());
        assert!(want.len() > 100, "1h funding from 2025-01-10");
        for (r, c) in r.rows().iter().zip(&want) {
            assert_eq!(r["fundingTime"].to_string(), c[0]);
            assert_eq!(r["fundingRate"], json!(c[2]));
            assert_eq!(
                (&r["symbol"], &r["rateType"]),
                (&json!("ETHUSDT"), &json!("Regular"))
            );
        }
        // markPrice: the close of the 1m mark candle before the funding time.
        let last = r.rows().last().unwrap();
        let t = last["fundingTime"].as_i64().unwrap();
        let mark = ArchiveFile::parse_key(&day_key(
            "futures/um",
            "markPriceKlines/1m",
            "ETHUSDT",
            "2025-01-20",
        ))
        .unwrap();
        let marks = csv_rows(&g.csv_clean(&mark).unwrap());
        let prev = marks
            .iter()
            .find(|c| c[0] == (t - t % 60_000 - 60_000).to_string())
            .unwrap();
        assert_eq!(last["markPrice"], json!(prev[4]));
        // Without times: the most recent FUNDING_DEFAULT_ROWS, ending at now.
        let r = get(&sim, "fapi/v1/fundingRate?symbol=ETHUSDT").await;
        assert_eq!(r.rows().len(), FUNDING_DEFAULT_ROWS);
        assert_eq!(
            r.rows().last().unwrap()["fundingTime"].to_string(),
            csv.last().unwrap()[0]
        );
        // dapi: no markPrice; fundingInfo lists the adjusted interval.
        let r = get(&sim, "dapi/v1/fundingRate?symbol=BTCUSD_PERP&limit=2").await;
        assert!(r.rows()[0].get("markPrice").is_none() && r.rows().len() == 2);
        assert_eq!(get(&sim, "dapi/v1/fundingRate").await.code(), -1102);
        let r = get(&sim, "fapi/v1/fundingInfo").await;
        assert_eq!(
            r.body,
            json!([{"symbol": "ETHUSDT", "adjustedFundingRateCap": "0.02000000", "adjustedFundingRateFloor": "-0.02000000", "fundingIntervalHours": 1, "disclaimer": false}])
        );
        let p = get(&sim, "fapi/v1/premiumIndex?symbol=ETHUSDT").await;
        assert_eq!(p.body["nextFundingTime"], json!(ms("2025-01-20 11:00:00")));
        assert_eq!(
            get(&sim, "fapi/v1/premiumIndex").await.rows().len(),
            3,
            "FTTUSDT is delisted"
        );
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agg_trades_window_and_from_id_paging() {
        let sim = start(config()).await;
        let a = sim.archive();
        let mut csv = csv_rows(
            &a.csv(&day_key("futures/um", "aggTrades", "SOLUSDT", "2025-01-19"))
                .unwrap(),
        );
        // Today's file is not published yet: the generator's text is what it will hold.
        let today =
            ArchiveFile::parse_key(&day_key("futures/um", "aggTrades", "SOLUSDT", "2025-01-20"))
                .unwrap();
        csv.extend(csv_rows(
            &a.generator()
                .csv_clean(&today)
                .unwrap()
                .lines()
                .take(1000)
                .collect::<Vec<_>>()
                .join("\n"),
        ));
        let now = ms("2025-01-20 10:17:30");
        // The 48 h window and the < 1 h start/end rule.
        let old = now - 48 * HOUR_MS - 1;
        let r = get(
            &sim,
            &format!("fapi/v1/aggTrades?symbol=SOLUSDT&startTime={old}"),
        )
        .await;
        assert_eq!((r.status, r.code()), (400, -1130));
        let t0 = ms("2025-01-19 23:30:00");
        let r = get(
            &sim,
            &format!(
                "fapi/v1/aggTrades?symbol=SOLUSDT&startTime={t0}&endTime={}",
                t0 + HOUR_MS
            ),
        )
        .await;
        assert_eq!(r.code(), -1127);
        let r = get(
            &sim,
            &format!(
                "fapi/v1/aggTrades?symbol=SOLUSDT&startTime={t0}&endTime={}&limit=1000",
                t0 + HOUR_MS - 1
            ),
        )
        .await;
        let in_window: Vec<&Vec<String>> = csv
            .iter()
            .filter(|c| (t0..t0 + HOUR_MS).contains(&c[5].parse().unwrap()))
            .collect();
        assert!(r.rows().len() == in_window.len().min(1000) && r.rows().len() < 1000);
        // fromId pages across midnight; every row is the CSV's.
        let start = csv
            .iter()
            .position(|c| c[5].parse::<i64>().unwrap() >= t0)
            .unwrap();
        let mut from: u64 = csv[start][0].parse().unwrap();
        let mut got: Vec<Value> = Vec::new();
        while got.len() < csv.len() - start {
            let r = get(
                &sim,
                &format!("fapi/v1/aggTrades?symbol=SOLUSDT&fromId={from}&limit=97"),
            )
            .await;
            assert_eq!(r.rows().len(), 97);
            from = r.rows().last().unwrap()["a"].as_u64().unwrap() + 1;
            got.extend(r.rows().iter().cloned());
        }
        for (r, c) in got.iter().zip(&csv[start..]) {
            let m = if c[6] == "true" {
                json!(true)
            } else {
                json!(false)
            };
            assert_eq!(
                *r,
                json!({"a": c[0].parse::<u64>().unwrap(), "p": c[1], "q": c[2], "f": c[3].parse::<u64>().unwrap(), "l": c[4].parse::<u64>().unwrap(), "T": c[5].parse::<i64>().unwrap(), "m": m})
            );
        }
        assert!(
            got.iter()
                .any(|r| r["T"].as_i64().unwrap() >= ms("2025-01-20 00:00:00"))
        );
        // A fromId before the window; the latest trades end at now.
        let first_17 = a.generator().first_agg_trade_id(
            a.config().spec(Market::Um, "SOLUSDT").unwrap(),
            NaiveDate::from_ymd_opt(2025, 1, 17).unwrap(),
        );
        let r = get(
            &sim,
            &format!("fapi/v1/aggTrades?symbol=SOLUSDT&fromId={first_17}"),
        )
        .await;
        assert_eq!(r.code(), -1130);
        let r = get(&sim, "fapi/v1/aggTrades?symbol=SOLUSDT&limit=3").await;
        assert!(r.rows().iter().all(|x| x["T"].as_i64().unwrap() <= now));
        let t = r.rows()[2]["T"].as_i64().unwrap();
        assert!(now - t < 60_000);
        // Spot: no window, `M`, µs files in ms.
        let s = ms("2024-12-05 00:00:00");
        let r = get(
            &sim,
            &format!("api/v3/aggTrades?symbol=BTCUSDT&startTime={s}&limit=2"),
        )
        .await;
        let row = &r.rows()[0];
        assert_eq!(row["M"], json!(true));
        let spot = csv_rows(
            &a.csv(&day_key("spot", "aggTrades", "BTCUSDT", "2024-12-05"))
                .unwrap(),
        );
        assert_eq!(
            (row["p"].as_str(), row["T"].to_string()),
            (Some(spot[0][1].as_str()), spot[0][5].clone())
        );
        sim.shutdown().await;
    }

    #[test]
    fn json_configs_name_the_clock_and_the_limits() {
        let c: SimConfig =
            serde_json::from_str(r#"{"now": "2025-01-20T10:17:30Z", "rest": {"ban_secs": 60}}"#)
                .unwrap();
        assert_eq!(c.now, Some(at("2025-01-20 10:17:30")));
        assert_eq!(
            (c.rest.ban_secs, c.rest.futures_weight_per_minute),
            (60, 2400)
        );
        let back: SimConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<SimConfig>(r#"{"now": "yesterday"}"#).is_err());
        assert_eq!(SimConfig::demo().now, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exchange_info_lists_the_config() {
        let mut c = config();
        c.rest.futures_weight_per_minute = 1234;
        let sim = start(c).await;
        let r = get(&sim, "fapi/v1/exchangeInfo").await;
        assert_eq!(r.body["serverTime"], json!(ms("2025-01-20 10:17:30")));
        assert_eq!(
            r.body["rateLimits"][0],
            json!({"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 1234})
        );
        assert_eq!(r.body["rateLimits"][1]["rateLimitType"], "ORDERS");
        let syms = r.body["symbols"].as_array().unwrap();
        let names: Vec<&str> = syms.iter().map(|s| s["symbol"].as_str().unwrap()).collect();
        assert_eq!(names, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "FTTUSDT"]);
        let sol = &syms[2];
        assert_eq!(
            (
                &sol["status"],
                &sol["contractType"],
                &sol["deliveryDate"],
                &sol["onboardDate"]
            ),
            (
                &json!("TRADING"),
                &json!("PERPETUAL"),
                &json!(PERPETUAL_DELIVERY_MS),
                &json!(ms("2024-12-10 00:00:00"))
            )
        );
        assert_eq!(
            (&sol["baseAsset"], &sol["quoteAsset"], &sol["marginAsset"]),
            (&json!("SOL"), &json!("USDT"), &json!("USDT"))
        );
        assert_eq!(
            (&sol["pricePrecision"], &sol["quantityPrecision"]),
            (&json!(3), &json!(1))
        );
        assert_eq!(syms[3]["status"], "SETTLING");
        let cm = get(&sim, "dapi/v1/exchangeInfo").await;
        let btc = &cm.body["symbols"][0];
        assert_eq!(
            (
                &btc["symbol"],
                &btc["pair"],
                &btc["contractStatus"],
                &btc["marginAsset"]
            ),
            (
                &json!("BTCUSD_PERP"),
                &json!("BTCUSD"),
                &json!("TRADING"),
                &json!("BTC")
            )
        );
        let spot = get(&sim, "api/v3/exchangeInfo").await;
        assert_eq!(spot.body["rateLimits"][0]["limit"], json!(6000));
        assert_eq!(spot.body["symbols"].as_array().unwrap().len(), 2);
        assert_eq!(spot.weight(), 20);
        sim.shutdown().await;
    }
}
