//! The simulator's configuration: the symbol universe, the coverage range, the simulated clock,
//! the archive quirks, the REST rate limits and the fault rules. Plain serde structs (the binary
//! reads them from JSON); no behaviour beyond defaults, the per-symbol precision rules and the
//! RFC 3339 clock parser.

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use shared::paths::{DataType, Market};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid literal date")
}

/// Everything the simulated archive is made of. Every field has a default (those of
/// [`SimConfig::demo`]), so a JSON config may name only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every generated value.
    pub seed: u64,
    /// First day of coverage (inclusive).
    pub start: NaiveDate,
    /// Last day of coverage (inclusive). Monthly files exist for months fully inside.
    pub end: NaiveDate,
    /// The symbol universe, all markets together.
    pub symbols: Vec<SymbolSpec>,
    /// Default `max-keys` of the listing (S3: 1000).
    pub page_size: usize,
    /// Trades per minute, drawn uniformly in `[min, max]` per symbol-minute (0 allowed).
    pub trades_per_minute: (u32, u32),
    /// Futures klines/aggTrades/trades carry a header from this day on (none before).
    pub futures_header_from: NaiveDate,
    /// Spot klines/aggTrades/trades switch from ms to µs timestamps on this day.
    pub spot_micros_from: NaiveDate,
    /// UM metrics are labelled by the end of their 5 minutes before this day, by the start from
    /// it on (binance-archive.md §3.8). CM is always start-labelled.
    pub um_metrics_start_labels_from: NaiveDate,
    /// Keys that do not exist (404, absent from the listing). A zip key removes the zip and its
    /// CHECKSUM; a `.CHECKSUM` key removes only the CHECKSUM (a zip without CHECKSUM).
    pub missing: Vec<String>,
    /// Monthly zip keys whose content lacks one day's rows.
    pub monthly_missing_day: Vec<(String, NaiveDate)>,
    /// Exchange-wide trading halts `[start, end)` (UTC, whole minutes): no trades, aggTrades or
    /// kline rows inside them, in every symbol of every market; ids carry on after them
    /// (binance-archive.md §4.4: "when trading is suspended, the kline will not be generated").
    pub maintenance: Vec<(NaiveDateTime, NaiveDateTime)>,
    /// Zip keys whose rows stop at this time (rows from it on are absent): a partial file.
    pub truncated: Vec<(String, NaiveDateTime)>,
    /// Zip keys whose row at this index is written twice in a row (binance-archive.md §4.5).
    pub duplicated_rows: Vec<(String, usize)>,
    /// Kline zip keys whose candle opening at this time has its high below its low.
    pub broken_ohlc: Vec<(String, NaiveDateTime)>,
    /// Fault injection rules, first match wins.
    pub faults: Vec<FaultRule>,
    /// Byte bound of the in-memory zip cache.
    pub cache_bytes: usize,
    /// The simulated "now" (UTC). `None`: the clock stands at `end + 1 day, 00:00` and every
    /// archive file is published. `Some`: an archive file (zip and CHECKSUM) exists only once
    /// its version-0 Last-Modified is `<= now`, and the REST API serves rows up to `now`. In JSON
    /// either `2025-01-20T10:17:30` or RFC 3339 (`2025-01-20T10:17:30Z`).
    #[serde(deserialize_with = "de_opt_datetime")]
    pub now: Option<NaiveDateTime>,
    /// The REST API's rate limits (Binance's defaults).
    pub rest: RestLimits,
    /// Kline intervals the archive has (default: every interval). A market of hundreds of
    /// symbols over years holds tens of millions of keys with all of them.
    pub intervals: Option<Vec<shared::paths::Interval>>,
    /// Kline files hold one row per day of their period instead of every candle: a listing of
    /// a whole market (every listed file's MD5 is computed from its bytes) and a mirror of it
    /// then cost what their requests cost. Other types are generated as usual.
    pub tiny_files: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::demo()
    }
}

impl SimConfig {
    /// A small universe: spot BTCUSDT + ETHUSDT; UM BTCUSDT, ETHUSDT (funding interval
    /// 8h → 4h on 2024-12-21 → 1h on 2025-01-10), SOLUSDT (listed late, 2024-12-10) and FTTUSDT
    /// (delisted early: last day 2025-01-15); CM BTCUSD_PERP. Coverage 2024-12-01 ..
    /// 2025-01-31: two whole months, a month boundary, and the spot ms → µs switch.
    pub fn demo() -> Self {
        let start = date(2024, 12, 1);
        let mut eth_um = SymbolSpec::new(Market::Um, "ETHUSDT", start, 3600.0);
        eth_um.funding_intervals =
            vec![(start, 8), (date(2024, 12, 21), 4), (date(2025, 1, 10), 1)];
        let mut ftt = SymbolSpec::new(Market::Um, "FTTUSDT", date(2022, 1, 1), 2.5);
        ftt.delisted = Some(date(2025, 1, 15));
        SimConfig {
            seed: 42,
            start,
            end: date(2025, 1, 31),
            symbols: vec![
                SymbolSpec::new(Market::Spot, "BTCUSDT", date(2017, 8, 17), 96000.0),
                SymbolSpec::new(Market::Spot, "ETHUSDT", date(2017, 8, 17), 3600.0),
                SymbolSpec::new(Market::Um, "BTCUSDT", date(2019, 9, 8), 96000.0),
                eth_um,
                SymbolSpec::new(Market::Um, "SOLUSDT", date(2024, 12, 10), 230.0),
                ftt,
                SymbolSpec::new(Market::Cm, "BTCUSD_PERP", date(2020, 8, 10), 96000.0),
            ],
            page_size: 1000,
            trades_per_minute: (5, 20),
            futures_header_from: date(2022, 8, 11),
            spot_micros_from: date(2025, 1, 1),
            um_metrics_start_labels_from: date(2026, 6, 25),
            missing: Vec::new(),
            monthly_missing_day: Vec::new(),
            maintenance: Vec::new(),
            truncated: Vec::new(),
            duplicated_rows: Vec::new(),
            broken_ohlc: Vec::new(),
            faults: Vec::new(),
            cache_bytes: 512 << 20,
            now: None,
            rest: RestLimits::default(),
            intervals: None,
            tiny_files: false,
        }
    }

    /// A whole market's worth of life cycles over 2024-10-01 .. 2025-01-31, for the instruments
    /// registry, selections and listing plans: UM perpetuals in USDT and USDC, quarterly
    /// delivery contracts (one delivered inside the coverage), late listings, delistings, a
    /// stable pair and a 1000-prefixed name; CM perpetuals and deliveries; spot pairs with
    /// a leveraged token and stable pairs. Futures carry klines and fundingRate (deliveries
    /// klines only), spot klines only, in kline files of one row a day: a listing of the whole
    /// life stays cheap.
    pub fn universe() -> Self {
        let start = date(2024, 10, 1);
        let end = date(2025, 1, 31);
        let mut symbols = Vec::new();
        let mut add = |market: Market,
                       symbol: &str,
                       listed: NaiveDate,
                       delisted: Option<NaiveDate>,
                       price: f64| {
            let mut s = SymbolSpec::new(market, symbol, listed, price);
            s.delisted = delisted;
            let delivery = symbol.split_once('_').is_some_and(|(_, d)| d != "PERP");
            s.data_types = Some(match market {
                Market::Spot => vec![DataType::Klines],
                _ if delivery => vec![DataType::Klines],
                _ => vec![DataType::Klines, DataType::FundingRate],
            });
            symbols.push(s);
        };
        let old = date(2020, 1, 1);
        for (sym, price) in [
            ("BTCUSDT", 96000.0),
            ("ETHUSDT", 3600.0),
            ("BNBUSDT", 700.0),
            ("XRPUSDT", 2.3),
            ("DOGEUSDT", 0.35),
            ("ADAUSDT", 1.0),
            ("LINKUSDT", 24.0),
            ("AVAXUSDT", 45.0),
            ("DOTUSDT", 8.5),
            ("LTCUSDT", 110.0),
            ("TRXUSDT", 0.25),
            ("ATOMUSDT", 7.0),
            ("1000PEPEUSDT", 0.02),
            ("USDCUSDT", 1.0),
            ("BTCUSDC", 96000.0),
            ("ETHUSDC", 3600.0),
        ] {
            add(Market::Um, sym, old, None, price);
        }
        // Late listings and delistings inside the coverage.
        add(Market::Um, "SOLUSDT", date(2024, 11, 12), None, 230.0);
        add(Market::Um, "NEWUSDT", date(2025, 1, 20), None, 0.5);
        add(Market::Um, "FTTUSDT", old, Some(date(2024, 11, 10)), 2.5);
        add(Market::Um, "OLDUSDT", old, Some(date(2024, 10, 5)), 0.1);
        add(Market::Um, "SOLUSDC", date(2024, 12, 3), None, 230.0);
        // Quarterly deliveries: one delivered inside the coverage, one trading at its end.
        add(
            Market::Um,
            "BTCUSDT_241227",
            date(2024, 6, 28),
            Some(date(2024, 12, 27)),
            96000.0,
        );
        add(
            Market::Um,
            "ETHUSDT_250328",
            date(2024, 9, 27),
            None,
            3600.0,
        );
        add(Market::Cm, "BTCUSD_PERP", old, None, 96000.0);
        add(Market::Cm, "ETHUSD_PERP", old, None, 3600.0);
        add(
            Market::Cm,
            "BTCUSD_241227",
            date(2024, 6, 28),
            Some(date(2024, 12, 27)),
            96000.0,
        );
        add(
            Market::Cm,
            "BTCUSD_250328",
            date(2024, 9, 27),
            None,
            96000.0,
        );
        for (sym, listed, delisted, price) in [
            ("BTCUSDT", old, None, 96000.0),
            ("ETHUSDT", old, None, 3600.0),
            ("ETHBTC", old, None, 0.037),
            ("BTCFDUSD", old, None, 96000.0),
            ("USDCUSDT", old, None, 1.0),
            ("FDUSDUSDT", old, None, 1.0),
            // A leveraged token, delisted inside the coverage.
            ("BTCUPUSDT", old, Some(date(2024, 12, 2)), 40.0),
            ("BTCDOWNUSDT", old, Some(date(2024, 12, 2)), 0.004),
            ("SOLUSDT", date(2024, 11, 12), None, 230.0),
        ] {
            add(Market::Spot, sym, listed, delisted, price);
        }
        SimConfig {
            seed: 7,
            start,
            end,
            symbols,
            trades_per_minute: (1, 3),
            spot_micros_from: date(2025, 1, 1),
            // What these symbols are and which files exist matters here, not their rows.
            tiny_files: true,
            ..SimConfig::demo()
        }
    }

    /// The same universe with a different seed and coverage (symbols listed before `start` keep
    /// their listing dates).
    pub fn with_range(mut self, start: NaiveDate, end: NaiveDate) -> Self {
        self.start = start;
        self.end = end;
        self
    }

    pub fn spec(&self, market: Market, symbol: &str) -> Option<&SymbolSpec> {
        self.symbols
            .iter()
            .find(|s| s.market == market && s.symbol == symbol)
    }
}

/// The REST API's limits (binance-live.md §4.1). Windows are fixed and aligned to the wall
/// clock (not the simulated one): weights per minute, the two request buckets per 5 minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestLimits {
    /// Weight per minute shared by `fapi` and `dapi` (and the `X-MBX-USED-WEIGHT-1M` of
    /// `/futures/data`). Default 2400.
    pub futures_weight_per_minute: u32,
    /// Weight per minute of `api/v3`. Default 6000.
    pub spot_weight_per_minute: u32,
    /// Requests per 5 minutes shared by `fundingRate` and `fundingInfo` (fapi and dapi).
    /// Default 500.
    pub funding_per_5min: u32,
    /// Requests per 5 minutes shared by the `/futures/data/*` endpoints. Default 1000.
    pub futures_data_per_5min: u32,
    /// 429s tolerated in one window: the next refused request starts a ban. Default 5.
    pub ban_after_429: u32,
    /// Length of a ban (418 to every REST request). Default 120.
    pub ban_secs: u32,
}

impl Default for RestLimits {
    fn default() -> Self {
        RestLimits {
            futures_weight_per_minute: 2400,
            spot_weight_per_minute: 6000,
            funding_per_5min: 500,
            futures_data_per_5min: 1000,
            ban_after_429: 5,
            ban_secs: 120,
        }
    }
}

/// Parse a UTC instant: RFC 3339 (`2025-01-31T12:00:00Z`, any offset, optional fraction) or a
/// bare `2025-01-31T12:00:00` (taken as UTC).
pub fn parse_instant(s: &str) -> Result<NaiveDateTime, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.naive_utc());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|e| format!("`{s}` is not an RFC 3339 instant: {e}"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds; the clock's fraction is dropped).
pub fn format_instant(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn de_opt_datetime<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<NaiveDateTime>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_instant(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// One symbol of one market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolSpec {
    pub market: Market,
    /// Archive spelling, e.g. `BTCUSDT`, `BTCUSD_PERP`, `币安人生USDT`, `BTCBVOLUSDT`.
    pub symbol: String,
    /// First day with data.
    pub listed: NaiveDate,
    /// Last day with data (inclusive); `None` while trading.
    #[serde(default)]
    pub delisted: Option<NaiveDate>,
    /// Price on the listing day; the random walk starts here.
    pub base_price: f64,
    /// Price decimals (tick) of trades; default from the price level and market.
    #[serde(default)]
    pub price_decimals: Option<u32>,
    /// Quantity decimals (lot); default from the price level and market (CM: 0, contracts).
    #[serde(default)]
    pub qty_decimals: Option<u32>,
    /// CM contract face value in USD (default 100 for BTC pairs, 10 otherwise).
    #[serde(default)]
    pub contract_size: Option<f64>,
    /// Funding interval change points `(from day, hours)`; empty means 8h throughout.
    #[serde(default)]
    pub funding_intervals: Vec<(NaiveDate, u32)>,
    /// Restrict the data types this symbol has (default: every type of its market; option
    /// symbols containing `BVOL` get BVOLIndex, others EOHSummary).
    #[serde(default)]
    pub data_types: Option<Vec<DataType>>,
}

impl SymbolSpec {
    pub fn new(market: Market, symbol: &str, listed: NaiveDate, base_price: f64) -> Self {
        SymbolSpec {
            market,
            symbol: symbol.to_string(),
            listed,
            delisted: None,
            base_price,
            price_decimals: None,
            qty_decimals: None,
            contract_size: None,
            funding_intervals: Vec::new(),
            data_types: None,
        }
    }

    fn digits(&self) -> i32 {
        (self.base_price.max(1e-9).log10().floor() as i32) + 1
    }

    /// Decimals of a trade price (the tick).
    pub fn price_decimals(&self) -> u32 {
        self.price_decimals.unwrap_or_else(|| match self.market {
            Market::Spot => (7 - self.digits()).clamp(2, 8) as u32,
            _ => (6 - self.digits()).clamp(1, 6) as u32,
        })
    }

    /// Decimals of a trade quantity (the lot).
    pub fn qty_decimals(&self) -> u32 {
        self.qty_decimals.unwrap_or_else(|| match self.market {
            Market::Spot => self
                .digits()
                .clamp(0, 8 - self.price_decimals() as i32)
                .max(0) as u32,
            Market::Cm => 0,
            _ => (self.digits() - 2).clamp(0, 3) as u32,
        })
    }

    pub fn contract_size(&self) -> f64 {
        self.contract_size.unwrap_or_else(|| {
            if self.symbol.starts_with("BTC") {
                100.0
            } else {
                10.0
            }
        })
    }

    /// Funding interval (hours) in force on `day`.
    pub fn funding_interval_on(&self, day: NaiveDate) -> u32 {
        self.funding_intervals
            .iter()
            .filter(|(from, _)| *from <= day)
            .max_by_key(|(from, _)| *from)
            .map(|(_, h)| *h)
            .unwrap_or(8)
    }

    /// Whether the symbol trades on `day`.
    pub fn is_listed_on(&self, day: NaiveDate) -> bool {
        day >= self.listed && self.delisted.is_none_or(|d| day <= d)
    }

    /// The data types this symbol has.
    pub fn data_types(&self) -> Vec<DataType> {
        if let Some(t) = &self.data_types {
            return t.clone();
        }
        match self.market {
            Market::Option => {
                if self.symbol.contains("BVOL") {
                    vec![DataType::BvolIndex]
                } else {
                    vec![DataType::EohSummary]
                }
            }
            // UM liquidationSnapshot was removed from the archive (binance-archive.md §4.7).
            Market::Um => DataType::ALL
                .into_iter()
                .filter(|t| !t.periods(Market::Um).is_empty())
                .filter(|t| *t != DataType::LiquidationSnapshot)
                .collect(),
            m => DataType::ALL
                .into_iter()
                .filter(|t| !t.periods(m).is_empty())
                .collect(),
        }
    }
}

/// Which object of a file a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultTarget {
    Zip,
    Checksum,
    Both,
}

/// What goes wrong. `first_n` counts requests per key (GET and HEAD alike); after them the key
/// is served normally. On REST paths: `NotFound` answers the JSON 404, `ServerError` a 503
/// `{"code":-1000,"msg":"Service Unavailable."}`, `WrongChecksum` never applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FaultKind {
    /// 404 NoSuchKey, always (the file is still in the listing).
    NotFound,
    /// 404 NoSuchKey for the first N requests, then served: a CDN that answers before the
    /// object has propagated.
    NotFoundFirst { first_n: u32 },
    /// 500 InternalError for the first N requests.
    ServerError { first_n: u32 },
    /// 429 with `Retry-After` for the first N requests (REST: the JSON `-1003` body).
    TooManyRequests { first_n: u32, retry_after_secs: u32 },
    /// 418 with `Retry-After` for the first N requests (REST: the JSON "IP banned until" body);
    /// the limiter's own ban state is not touched.
    Banned { first_n: u32, retry_after_secs: u32 },
    /// Full `Content-Length`, half the body, then the connection closes.
    Truncated { first_n: u32 },
    /// The connection is reset (SO_LINGER 0) without a response.
    Reset { first_n: u32 },
    /// The CHECKSUM names a wrong hash, for the first N CHECKSUM requests or forever (`None`).
    WrongChecksum { first_n: Option<u32> },
    /// The body is served with bytes altered (same length).
    CorruptBody { first_n: u32 },
    /// The body is throttled to this rate.
    SlowBody { bytes_per_sec: u64 },
}

/// A fault on the keys that match: `key_contains` is a substring, or the whole key when
/// `exact` is set. Keys are decoded (`data/...zip` or `data/...zip.CHECKSUM`); a REST request
/// is matched by its path without the query (`fapi/v1/klines`), as a non-CHECKSUM key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub key_contains: String,
    #[serde(default)]
    pub exact: bool,
    pub target: FaultTarget,
    pub kind: FaultKind,
}

impl FaultRule {
    pub fn new(key_contains: &str, target: FaultTarget, kind: FaultKind) -> Self {
        FaultRule {
            key_contains: key_contains.to_string(),
            exact: false,
            target,
            kind,
        }
    }

    /// Whether this rule applies to `key` (a zip key or a CHECKSUM key).
    pub fn matches(&self, key: &str) -> bool {
        let is_checksum = key.ends_with(".CHECKSUM");
        let target_ok = match self.target {
            FaultTarget::Zip => !is_checksum,
            FaultTarget::Checksum => is_checksum,
            FaultTarget::Both => true,
        };
        if !target_ok {
            return false;
        }
        let zip_key = key.strip_suffix(".CHECKSUM").unwrap_or(key);
        if self.exact {
            key == self.key_contains || zip_key == self.key_contains
        } else {
            zip_key.contains(&self.key_contains) || key.contains(&self.key_contains)
        }
    }
}
