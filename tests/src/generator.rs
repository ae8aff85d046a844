//! The deterministic generator: from a [`SimConfig`] it produces every archive file's rows, as
//! typed values (for tests to compare against) and as CSV text in the archive's exact format.
//! It owns the market model (price walk, trades, aggregation) and the per-format quirks; it does
//! not own which files exist (that is `archive`) nor zips and HTTP.
//!
//! Model, per symbol:
//! * The day's opening price is `base_price * exp(Σ drift(k))` over the days since listing,
//!   each drift a cheap hash of (seed, symbol, day): no previous day has to be generated.
//! * Each minute has `n` trades (uniform in `trades_per_minute`) filled by `m <= n` taker orders;
//!   both counts are one hash of (seed, symbol, day, minute), so trade and aggTrade ids are
//!   contiguous across days without generating earlier days' content.
//! * Order prices follow a Brownian bridge from the day's open to the next day's open, rounded
//!   to the tick; the fills of one order share price, side and time (one aggTrade).
//! * 1m klines are the exact OHLCV of the trades in each minute (integer arithmetic), other
//!   intervals aggregate the 1m klines, 1s klines (spot) aggregate the trades of each second.
//!
//! All epoch times in the typed rows are **microseconds** (the pipeline's normalised unit),
//! whatever unit the file writes: a ms file's `close_time` `…999` is `…999000` here.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};
use shared::paths::{ArchiveFile, DataType, FileDate, Interval, Market};

use crate::config::{SimConfig, SymbolSpec};

// ---------------------------------------------------------------------------------------------
// Hashing and random numbers

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn h(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x1234_5678_9abc_def0, |acc, p| mix(acc ^ *p))
}

/// SplitMix64: tiny, fast, and fully specified here so output never changes with a crate bump.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

const TAG_DRIFT: u64 = 1;
const TAG_MINUTE: u64 = 2;
const TAG_FUNDING: u64 = 3;
const TAG_METRICS: u64 = 4;
const TAG_DEPTH: u64 = 5;
const TAG_TICKER: u64 = 6;
const TAG_LIQ: u64 = 7;
const TAG_BVOL: u64 = 8;
const TAG_EOH: u64 = 9;
const TAG_MARK: u64 = 10;
const TAG_IDBASE: u64 = 11;

const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 86_400_000_000;

fn epoch_day(d: NaiveDate) -> i64 {
    d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
        .num_days()
}

fn day_start_us(d: NaiveDate) -> i64 {
    epoch_day(d) * DAY_US
}

fn pow10(n: u32) -> i64 {
    10i64.pow(n)
}

fn units_to_f64(units: i64, scale: u32) -> f64 {
    units as f64 / pow10(scale) as f64
}

// ---------------------------------------------------------------------------------------------
// Number formatting

/// `units / 10^scale` with exactly `decimals` decimals (`decimals >= scale`).
fn push_fixed(out: &mut String, units: i64, scale: u32, decimals: u32) {
    debug_assert!(decimals >= scale);
    if units < 0 {
        out.push('-');
    }
    let a = units.unsigned_abs();
    let p = 10u64.pow(scale);
    let _ = write!(out, "{}", a / p);
    if decimals > 0 {
        out.push('.');
        if scale > 0 {
            let _ = write!(out, "{:0w$}", a % p, w = scale as usize);
        }
        for _ in scale..decimals {
            out.push('0');
        }
    }
}

/// `units / 10^scale` without trailing zeros (at least one decimal).
fn push_trimmed(out: &mut String, units: i64, scale: u32) {
    let start = out.len();
    push_fixed(out, units, scale, scale.max(1));
    while out.ends_with('0') && !out[start..].ends_with(".0") {
        out.pop();
    }
}

fn push_int(out: &mut String, v: i64) {
    let _ = write!(out, "{v}");
}

fn push_bool(out: &mut String, v: bool, spot: bool) {
    out.push_str(match (v, spot) {
        (true, true) => "True",
        (false, true) => "False",
        (true, false) => "true",
        (false, false) => "false",
    });
}

// ---------------------------------------------------------------------------------------------
// Typed rows (public)

/// A kline-shaped row (klines, markPriceKlines, indexPriceKlines, premiumIndexKlines). Times in
/// µs; for the price-index families the volumes are 0 and `count` is the number of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Kline {
    pub open_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub close_time: i64,
    pub quote_volume: f64,
    pub count: u64,
    pub taker_buy_volume: f64,
    pub taker_buy_quote_volume: f64,
}

/// A trade. `quote_qty` is `price*qty` (spot `quoteQty`, UM `quote_qty`) or, for CM, the
/// `base_qty` column (contracts × contract size / price). `time` in µs.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub id: u64,
    pub price: f64,
    pub qty: f64,
    pub quote_qty: f64,
    pub time: i64,
    pub is_buyer_maker: bool,
}

/// An aggregated trade (the fills of one taker order). `transact_time` in µs.
#[derive(Debug, Clone, PartialEq)]
pub struct AggTrade {
    pub agg_trade_id: u64,
    pub price: f64,
    pub quantity: f64,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub transact_time: i64,
    pub is_buyer_maker: bool,
}

/// A funding settlement. `calc_time` in µs (the file's ms × 1000, jitter included).
#[derive(Debug, Clone, PartialEq)]
pub struct FundingRate {
    pub calc_time: i64,
    pub funding_interval_hours: u32,
    pub last_funding_rate: f64,
}

/// A metrics row; blank cells are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub create_time: NaiveDateTime,
    pub symbol: String,
    pub sum_open_interest: f64,
    pub sum_open_interest_value: f64,
    pub count_toptrader_long_short_ratio: Option<f64>,
    pub sum_toptrader_long_short_ratio: Option<f64>,
    pub count_long_short_ratio: Option<f64>,
    pub sum_taker_long_short_vol_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BookDepth {
    pub timestamp: NaiveDateTime,
    pub percentage: f64,
    pub depth: f64,
    pub notional: f64,
}

/// Times in µs.
#[derive(Debug, Clone, PartialEq)]
pub struct BookTicker {
    pub update_id: u64,
    pub best_bid_price: f64,
    pub best_bid_qty: f64,
    pub best_ask_price: f64,
    pub best_ask_qty: f64,
    pub transaction_time: i64,
    pub event_time: i64,
}

/// A liquidation order; files write every row twice, and so does [`Generator::liquidations`].
#[derive(Debug, Clone, PartialEq)]
pub struct Liquidation {
    pub time: i64,
    pub side: String,
    pub original_quantity: f64,
    pub price: f64,
    pub average_price: f64,
    pub last_fill_quantity: f64,
    pub accumulated_fill_quantity: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BvolIndex {
    pub calc_time: i64,
    pub symbol: String,
    pub index_value: f64,
}

// ---------------------------------------------------------------------------------------------
// Raw (integer) rows

#[derive(Debug, Clone, Copy)]
struct RawTrade {
    id: u64,
    price: i64,
    qty: i64,
    /// spot/UM: price*qty at scale pd+qd; CM: base qty at scale 8.
    quote: i64,
    time_us: i64,
    buyer_maker: bool,
}

#[derive(Debug, Clone, Copy)]
struct RawAgg {
    id: u64,
    price: i64,
    qty: i64,
    first: u64,
    last: u64,
    time_us: i64,
    buyer_maker: bool,
}

#[derive(Debug, Clone, Copy)]
struct RawKline {
    open_us: i64,
    /// Exclusive end in µs (open + interval).
    end_us: i64,
    o: i64,
    h: i64,
    l: i64,
    c: i64,
    vol: i64,
    quote: i64,
    count: u64,
    tbv: i64,
    tbq: i64,
}

impl RawKline {
    fn flat(open_us: i64, end_us: i64, price: i64) -> Self {
        RawKline {
            open_us,
            end_us,
            o: price,
            h: price,
            l: price,
            c: price,
            vol: 0,
            quote: 0,
            count: 0,
            tbv: 0,
            tbq: 0,
        }
    }

    fn add_trade(&mut self, t: &RawTrade) {
        if self.count == 0 {
            self.o = t.price;
            self.h = t.price;
            self.l = t.price;
        }
        self.h = self.h.max(t.price);
        self.l = self.l.min(t.price);
        self.c = t.price;
        self.vol += t.qty;
        self.quote += t.quote;
        self.count += 1;
        if !t.buyer_maker {
            self.tbv += t.qty;
            self.tbq += t.quote;
        }
    }

    /// Append a later kline of the same bucket.
    fn merge(&mut self, k: &RawKline) {
        self.h = self.h.max(k.h);
        self.l = self.l.min(k.l);
        self.c = k.c;
        self.vol += k.vol;
        self.quote += k.quote;
        self.count += k.count;
        self.tbv += k.tbv;
        self.tbq += k.tbq;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KlineKind {
    Trade,
    Mark,
    Index,
    Premium,
}

#[derive(Debug, Clone, Copy)]
struct RawFunding {
    time_ms: i64,
    hours: u32,
    rate: i64,
}

#[derive(Debug, Clone)]
struct RawMetric {
    time: NaiveDateTime,
    oi: i64,
    oi_value: i64,
    ratios: Option<[i64; 3]>,
    taker: i64,
}

#[derive(Debug, Clone, Copy)]
struct RawDepth {
    time: NaiveDateTime,
    pct: i64,
    depth: i64,
    notional: i64,
}

#[derive(Debug, Clone, Copy)]
struct RawTicker {
    id: u64,
    bid: i64,
    bid_qty: i64,
    ask: i64,
    ask_qty: i64,
    tx_ms: i64,
    ev_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct RawLiq {
    time_ms: i64,
    sell: bool,
    qty: i64,
    price: i64,
    avg: i64,
}

#[derive(Debug, Clone, Copy)]
struct RawBvol {
    time_ms: i64,
    value: i64,
}

#[derive(Debug, Clone)]
struct RawEoh {
    date: NaiveDate,
    hour: u32,
    expiry: String,
    strike: i64,
    call: bool,
    price: i64,
    volume: i64,
    bid: i64,
    ask: i64,
    mark_iv: i64,
    delta: i64,
    oi: i64,
}

#[derive(Debug, Clone)]
enum RawRows {
    Klines(Vec<RawKline>),
    Trades(Vec<RawTrade>),
    Aggs(Vec<RawAgg>),
    Funding(Vec<RawFunding>),
    Metrics(Vec<RawMetric>),
    Depth(Vec<RawDepth>),
    Ticker(Vec<RawTicker>),
    Liq(Vec<RawLiq>),
    Bvol(Vec<RawBvol>),
    Eoh(Vec<RawEoh>),
}

impl RawRows {
    /// A republished version `v >= 1` differs from version 0 in one row's quantity-like field.
    fn perturb(&mut self, v: u32) {
        if v == 0 {
            return;
        }
        let d = v as i64;
        let pick = |n: usize| (v as usize).wrapping_mul(7919) % n.max(1);
        match self {
            RawRows::Klines(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].vol += d;
                r[i].count += 1;
            }
            RawRows::Trades(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].qty += d;
            }
            RawRows::Aggs(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].qty += d;
            }
            RawRows::Funding(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].rate += d;
            }
            RawRows::Metrics(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].oi += d;
            }
            RawRows::Depth(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].depth += d;
            }
            RawRows::Ticker(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].bid_qty += d;
            }
            RawRows::Liq(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].qty += d;
            }
            RawRows::Bvol(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].value += d;
            }
            RawRows::Eoh(r) if !r.is_empty() => {
                let i = pick(r.len());
                r[i].oi += d;
            }
            // An empty file (e.g. a day without liquidations) gets one comment-free blank line
            // less... keep it simple: nothing to perturb, the version still changes Last-Modified.
            _ => {}
        }
    }
}

impl RawRows {
    /// Drop the rows from `cut_us` on: a file that stops early.
    fn truncate_at(&mut self, cut_us: i64) {
        let us = |t: NaiveDateTime| t.and_utc().timestamp_micros();
        match self {
            RawRows::Klines(r) => r.retain(|x| x.open_us < cut_us),
            RawRows::Trades(r) => r.retain(|x| x.time_us < cut_us),
            RawRows::Aggs(r) => r.retain(|x| x.time_us < cut_us),
            RawRows::Funding(r) => r.retain(|x| x.time_ms * 1000 < cut_us),
            RawRows::Metrics(r) => r.retain(|x| us(x.time) < cut_us),
            RawRows::Depth(r) => r.retain(|x| us(x.time) < cut_us),
            RawRows::Ticker(r) => r.retain(|x| x.tx_ms * 1000 < cut_us),
            RawRows::Liq(r) => r.retain(|x| x.time_ms * 1000 < cut_us),
            RawRows::Bvol(r) => r.retain(|x| x.time_ms * 1000 < cut_us),
            RawRows::Eoh(r) => r.retain(|x| {
                x.date
                    .and_hms_opt(x.hour, 0, 0)
                    .is_some_and(|t| us(t) < cut_us)
            }),
        }
    }

    /// Write row `i` twice in a row.
    fn duplicate(&mut self, i: usize) {
        fn dup<T: Clone>(r: &mut Vec<T>, i: usize) {
            if let Some(x) = r.get(i).cloned() {
                r.insert(i + 1, x);
            }
        }
        match self {
            RawRows::Klines(r) => dup(r, i),
            RawRows::Trades(r) => dup(r, i),
            RawRows::Aggs(r) => dup(r, i),
            RawRows::Funding(r) => dup(r, i),
            RawRows::Metrics(r) => dup(r, i),
            RawRows::Depth(r) => dup(r, i),
            RawRows::Ticker(r) => dup(r, i),
            RawRows::Liq(r) => dup(r, i),
            RawRows::Bvol(r) => dup(r, i),
            RawRows::Eoh(r) => dup(r, i),
        }
    }
}

/// The trades of one symbol-day, in order.
struct DayTrades {
    trades: Vec<RawTrade>,
    aggs: Vec<RawAgg>,
    /// Opening price in ticks (the price of minutes before the first trade).
    open: i64,
}

// ---------------------------------------------------------------------------------------------
// The generator

/// A file's formatting context.
struct Ctx<'a> {
    spec: &'a SymbolSpec,
    market: Market,
    pd: u32,
    qd: u32,
    /// Scale of `RawTrade::quote` and kline quote sums.
    qs: u32,
    micros: bool,
    header: bool,
}

/// Produces every archive file's rows from the config. Cheap to share (`&self` everywhere; the
/// internal caches are behind mutexes).
pub struct Generator {
    cfg: SimConfig,
    counts: Mutex<HashMap<(u64, i64), (u64, u64)>>,
    days: Mutex<DayCache>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("seed", &self.cfg.seed)
            .finish()
    }
}

const DAY_CACHE: usize = 8;

/// Recently generated symbol-days, keyed by (symbol hash, epoch day).
type DayCache = VecDeque<((u64, i64), Arc<DayTrades>)>;

impl Generator {
    pub fn new(config: SimConfig) -> Self {
        Generator {
            cfg: config,
            counts: Mutex::new(HashMap::new()),
            days: Mutex::new(VecDeque::new()),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The spec behind a file's symbol. CM `indexPriceKlines` is keyed by the pair (`BTCUSD`),
    /// which maps to the first CM contract of that pair.
    pub fn spec_for(
        &self,
        market: Market,
        data_type: DataType,
        symbol: &str,
    ) -> Option<&SymbolSpec> {
        if market == Market::Cm && data_type == DataType::IndexPriceKlines {
            return self
                .cfg
                .symbols
                .iter()
                .find(|s| s.market == Market::Cm && cm_pair(&s.symbol) == symbol);
        }
        self.cfg.spec(market, symbol)
    }

    fn sym_hash(&self, spec: &SymbolSpec) -> u64 {
        h(&[self.cfg.seed, spec.market as u64, hash_str(&spec.symbol)])
    }

    fn ctx<'a>(&self, spec: &'a SymbolSpec, file: &ArchiveFile) -> Ctx<'a> {
        let market = spec.market;
        let pd = spec.price_decimals();
        let qd = spec.qty_decimals();
        let qs = if market == Market::Cm { 8 } else { pd + qd };
        let first = file.date.first_day();
        let micros = market == Market::Spot && first >= self.cfg.spot_micros_from;
        let dt = file.dataset.data_type;
        let header = match market {
            Market::Spot => false,
            Market::Option => true,
            _ => {
                if dt.is_kline_family() || matches!(dt, DataType::AggTrades | DataType::Trades) {
                    first >= self.cfg.futures_header_from
                } else {
                    true
                }
            }
        };
        Ctx {
            spec,
            market,
            pd,
            qd,
            qs,
            micros,
            header,
        }
    }

    /// Opening price of `day` (before tick rounding).
    pub fn day_open_price(&self, spec: &SymbolSpec, day: NaiveDate) -> f64 {
        let sh = self.sym_hash(spec);
        let mut logp = 0.0;
        let mut d = spec.listed;
        while d < day {
            let mut r = Rng::new(h(&[sh, TAG_DRIFT, epoch_day(d) as u64]));
            logp += 0.02 * r.normal();
            d = d.succ_opt().unwrap_or(d);
            if d == NaiveDate::MAX {
                break;
            }
        }
        spec.base_price * logp.exp()
    }

    fn to_ticks(price: f64, pd: u32) -> i64 {
        ((price * pow10(pd) as f64).round() as i64).max(1)
    }

    /// (trades, orders) in one minute: the first two draws of the minute's stream.
    fn minute_counts(&self, r: &mut Rng) -> (u64, u64) {
        let (lo, hi) = self.cfg.trades_per_minute;
        let (lo, hi) = (lo.min(hi) as u64, lo.max(hi) as u64);
        let n = lo + r.below(hi - lo + 1);
        let k = r.below(n / 3 + 1);
        let m = if n == 0 { 0 } else { (n - k).max(1) };
        (n, m)
    }

    fn minute_rng(&self, sh: u64, day: NaiveDate, minute: u64) -> Rng {
        Rng::new(h(&[sh, TAG_MINUTE, epoch_day(day) as u64, minute]))
    }

    /// Whether trading is halted in this minute of `day` (a configured maintenance window).
    fn halted(&self, day: NaiveDate, minute: u64) -> bool {
        if self.cfg.maintenance.is_empty() {
            return false;
        }
        let t = day.and_time(NaiveTime::MIN) + Duration::minutes(minute as i64);
        self.cfg.maintenance.iter().any(|(a, b)| *a <= t && t < *b)
    }

    /// Trades and orders of a whole day (1440 hashes, cached).
    fn day_counts(&self, spec: &SymbolSpec, day: NaiveDate) -> (u64, u64) {
        let sh = self.sym_hash(spec);
        let key = (sh, epoch_day(day));
        if let Some(c) = lock(&self.counts).get(&key) {
            return *c;
        }
        let mut tot = (0, 0);
        for minute in 0..1440 {
            if self.halted(day, minute) {
                continue;
            }
            let mut r = self.minute_rng(sh, day, minute);
            let (n, m) = self.minute_counts(&mut r);
            tot.0 += n;
            tot.1 += m;
        }
        lock(&self.counts).insert(key, tot);
        tot
    }

    /// First trade id and first aggTrade id of `day`: contiguous since the listing day.
    fn first_ids(&self, spec: &SymbolSpec, day: NaiveDate) -> (u64, u64) {
        let sh = self.sym_hash(spec);
        let mut r = Rng::new(h(&[sh, TAG_IDBASE]));
        let mut t = 100_000_000 + r.below(900_000_000);
        let mut a = 10_000_000 + r.below(90_000_000);
        let mut d = spec.listed;
        while d < day {
            let (n, m) = self.day_counts(spec, d);
            t += n;
            a += m;
            match d.succ_opt() {
                Some(n) => d = n,
                None => break,
            }
        }
        (t, a)
    }

    fn day_trades(&self, spec: &SymbolSpec, day: NaiveDate) -> Arc<DayTrades> {
        let sh = self.sym_hash(spec);
        let key = (sh, epoch_day(day));
        if let Some((_, d)) = lock(&self.days).iter().find(|(k, _)| *k == key) {
            return d.clone();
        }
        let d = Arc::new(self.build_day(spec, day));
        let mut cache = lock(&self.days);
        cache.push_back((key, d.clone()));
        while cache.len() > DAY_CACHE {
            cache.pop_front();
        }
        d
    }

    fn build_day(&self, spec: &SymbolSpec, day: NaiveDate) -> DayTrades {
        struct Order {
            time_us: i64,
            fills: Vec<i64>,
            step: f64,
            buyer_maker_noise: f64,
        }
        let sh = self.sym_hash(spec);
        let pd = spec.price_decimals();
        let qd = spec.qty_decimals();
        let micros = spec.market == Market::Spot && day >= self.cfg.spot_micros_from;
        let p0 = self.day_open_price(spec, day);
        let p1 = match day.succ_opt() {
            Some(n) => self.day_open_price(spec, n),
            None => p0,
        };
        let typical = match spec.market {
            Market::Cm => 5.0,
            _ => 500.0 / spec.base_price.max(1e-9),
        };
        let lot = pow10(qd) as f64;
        let start = day_start_us(day);
        let mut orders: Vec<Order> = Vec::new();
        for minute in 0..1440u64 {
            let mut r = self.minute_rng(sh, day, minute);
            let (n, m) = self.minute_counts(&mut r);
            if m == 0 || self.halted(day, minute) {
                continue;
            }
            let mut times: Vec<i64> = (0..m)
                .map(|_| {
                    if micros {
                        r.below(MINUTE_US as u64) as i64
                    } else {
                        r.below(60_000) as i64 * 1000
                    }
                })
                .collect();
            times.sort_unstable();
            let mut fills = vec![1u64; m as usize];
            for _ in 0..(n - m) {
                let i = r.below(m) as usize;
                fills[i] += 1;
            }
            for (i, f) in fills.iter().enumerate() {
                let qtys = (0..*f)
                    .map(|_| {
                        let q = typical * (0.8 * r.normal()).exp() / (*f as f64).sqrt();
                        ((q * lot).round() as i64).max(1)
                    })
                    .collect();
                orders.push(Order {
                    time_us: start + minute as i64 * MINUTE_US + times[i],
                    fills: qtys,
                    step: r.normal(),
                    buyer_maker_noise: r.f64(),
                });
            }
        }
        // Brownian bridge in log price from p0 to p1.
        let n = orders.len().max(1) as f64;
        let sigma = 0.02 / n.sqrt();
        let total: f64 = orders.iter().map(|o| o.step * sigma).sum();
        let target = (p1 / p0).ln();
        let (mut t_id, mut a_id) = self.first_ids(spec, day);
        let mut trades = Vec::new();
        let mut aggs = Vec::with_capacity(orders.len());
        let mut s = 0.0;
        let cs = spec.contract_size();
        for (j, o) in orders.iter().enumerate() {
            s += o.step * sigma;
            let frac = (j + 1) as f64 / n;
            let price = Self::to_ticks(p0 * (s - frac * (total - target)).exp(), pd);
            let buyer_maker = if o.buyer_maker_noise < 0.8 {
                o.step < 0.0
            } else {
                o.buyer_maker_noise < 0.9
            };
            let first = t_id;
            let mut qsum = 0;
            for &q in &o.fills {
                let quote = if spec.market == Market::Cm {
                    // base qty = contracts × face / price, 8 decimals
                    let num = q as i128 * (cs * 1e8).round() as i128 * pow10(pd) as i128;
                    ((num + price as i128 / 2) / price as i128) as i64
                } else {
                    price * q
                };
                trades.push(RawTrade {
                    id: t_id,
                    price,
                    qty: q,
                    quote,
                    time_us: o.time_us,
                    buyer_maker,
                });
                t_id += 1;
                qsum += q;
            }
            aggs.push(RawAgg {
                id: a_id,
                price,
                qty: qsum,
                first,
                last: t_id - 1,
                time_us: o.time_us,
                buyer_maker,
            });
            a_id += 1;
        }
        DayTrades {
            trades,
            aggs,
            open: Self::to_ticks(p0, pd),
        }
    }

    /// The days a file holds rows for: its days within the listing, minus a configured missing
    /// day of a monthly file.
    pub fn days_in_file(&self, file: &ArchiveFile) -> Vec<NaiveDate> {
        let Some(spec) = self.spec_for(file.dataset.market, file.dataset.data_type, &file.symbol)
        else {
            return Vec::new();
        };
        let key = file.key();
        file.date
            .days()
            .filter(|d| spec.is_listed_on(*d))
            .filter(|d| {
                !self
                    .cfg
                    .monthly_missing_day
                    .iter()
                    .any(|(k, m)| *k == key && m == d)
            })
            .collect()
    }

    fn klines_1m(&self, spec: &SymbolSpec, day: NaiveDate, kind: KlineKind) -> Vec<RawKline> {
        let dt = self.day_trades(spec, day);
        let start = day_start_us(day);
        let mut out: Vec<RawKline> = Vec::with_capacity(1440);
        let mut last = dt.open;
        let mut ti = 0;
        for m in 0..1440 {
            if self.halted(day, m as u64) {
                continue; // no candle while trading is suspended
            }
            let o = start + m * MINUTE_US;
            let mut k = RawKline::flat(o, o + MINUTE_US, last);
            while ti < dt.trades.len() && dt.trades[ti].time_us < o + MINUTE_US {
                k.add_trade(&dt.trades[ti]);
                ti += 1;
            }
            last = k.c;
            out.push(k);
        }
        if kind == KlineKind::Trade {
            return out;
        }
        let sh = self.sym_hash(spec);
        let mut r = Rng::new(h(&[sh, TAG_MARK, kind as u64, epoch_day(day) as u64]));
        for k in &mut out {
            let (samples, a, b, c) = (
                if kind == KlineKind::Premium { 12 } else { 60 },
                r.below(3) as i64,
                r.below(3) as i64,
                r.below(4) as i64,
            );
            let adj = |p: i64| -> i64 {
                match kind {
                    KlineKind::Index => (p - c).max(1),
                    _ => p,
                }
            };
            let (o, hh, l, cl) = if kind == KlineKind::Premium {
                // (mark - index) / index at 8 decimals, from the trade price and an offset.
                let prem = |p: i64| -> i64 {
                    let idx = (p - c).max(1) as i128;
                    (((p as i128 - idx) * 100_000_000) / idx) as i64
                };
                let o = prem(k.o) - r.below(50) as i64;
                let cl = prem(k.c) - r.below(50) as i64;
                (o, o.max(cl) + a * 10, o.min(cl) - b * 10, cl)
            } else {
                (adj(k.o), adj(k.h) + a, (adj(k.l) - b).max(1), adj(k.c))
            };
            *k = RawKline {
                open_us: k.open_us,
                end_us: k.end_us,
                o,
                h: hh.max(o).max(cl),
                l: l.min(o).min(cl),
                c: cl,
                vol: 0,
                quote: 0,
                count: samples,
                tbv: 0,
                tbq: 0,
            };
        }
        out
    }

    fn klines_1s(&self, spec: &SymbolSpec, day: NaiveDate) -> Vec<RawKline> {
        let dt = self.day_trades(spec, day);
        let start = day_start_us(day);
        let mut out = Vec::with_capacity(86_400);
        let mut last = dt.open;
        let mut ti = 0;
        for s in 0..86_400 {
            if self.halted(day, s as u64 / 60) {
                continue;
            }
            let o = start + s * 1_000_000;
            let mut k = RawKline::flat(o, o + 1_000_000, last);
            while ti < dt.trades.len() && dt.trades[ti].time_us < o + 1_000_000 {
                k.add_trade(&dt.trades[ti]);
                ti += 1;
            }
            last = k.c;
            out.push(k);
        }
        out
    }

    /// Aggregate consecutive klines into buckets given by `bucket(open_us) -> (open, end)`.
    fn aggregate(src: &[RawKline], bucket: impl Fn(i64) -> (i64, i64)) -> Vec<RawKline> {
        let mut out: Vec<RawKline> = Vec::new();
        for k in src {
            let (o, e) = bucket(k.open_us);
            match out.last_mut() {
                Some(last) if last.open_us == o => last.merge(k),
                _ => {
                    let mut n = *k;
                    n.open_us = o;
                    n.end_us = e;
                    out.push(n);
                }
            }
        }
        out
    }

    fn kline_rows(
        &self,
        spec: &SymbolSpec,
        file: &ArchiveFile,
        days: &[NaiveDate],
    ) -> Vec<RawKline> {
        let kind = match file.dataset.data_type {
            DataType::MarkPriceKlines => KlineKind::Mark,
            DataType::IndexPriceKlines => KlineKind::Index,
            DataType::PremiumIndexKlines => KlineKind::Premium,
            _ => KlineKind::Trade,
        };
        let iv = file.dataset.interval.unwrap_or(Interval::M1);
        let mut out = Vec::new();
        match iv {
            Interval::S1 => {
                for d in days {
                    out.extend(self.klines_1s(spec, *d));
                }
            }
            Interval::D3 | Interval::W1 | Interval::Mo1 => {
                // Candles whose open falls in the file's month; each spans whole days.
                let first = file.date.first_day();
                let last = file.date.last_day();
                let mut starts: Vec<(NaiveDate, NaiveDate)> = Vec::new();
                let mut d = first;
                while d <= last {
                    let (s, e) = match iv {
                        Interval::D3 => {
                            let ed = epoch_day(d);
                            let s = d - Duration::days(ed.rem_euclid(3));
                            (s, s + Duration::days(3))
                        }
                        Interval::W1 => {
                            let s = d - Duration::days(d.weekday().num_days_from_monday() as i64);
                            (s, s + Duration::days(7))
                        }
                        _ => (first, last + Duration::days(1)),
                    };
                    if s >= first && starts.last().is_none_or(|x| x.0 != s) {
                        starts.push((s, e));
                    }
                    d += Duration::days(1);
                }
                for (s, e) in starts {
                    let span: Vec<NaiveDate> = s
                        .iter_days()
                        .take_while(|x| *x < e)
                        .filter(|x| spec.is_listed_on(*x))
                        .collect();
                    if span.is_empty() {
                        continue;
                    }
                    let mut k: Option<RawKline> = None;
                    for day in span {
                        for m in self.klines_1m(spec, day, kind) {
                            match &mut k {
                                Some(k) => k.merge(&m),
                                None => k = Some(m),
                            }
                        }
                    }
                    if let Some(mut k) = k {
                        k.open_us = day_start_us(s);
                        k.end_us = day_start_us(e);
                        out.push(k);
                    }
                }
            }
            _ => {
                let len = iv.millis().unwrap_or(60_000) * 1000;
                for d in days {
                    let m1 = self.klines_1m(spec, *d, kind);
                    if iv == Interval::M1 {
                        out.extend(m1);
                    } else {
                        out.extend(Self::aggregate(&m1, |o| {
                            let s = o - o.rem_euclid(len);
                            (s, s + len)
                        }));
                    }
                }
            }
        }
        out
    }

    fn raw_rows(&self, file: &ArchiveFile, version: u32) -> Option<(RawRows, Ctx<'_>)> {
        self.raw_rows_with(file, version, true)
    }

    /// The rows of a file; `defects` applies the configured archive defects (`truncated`,
    /// `duplicated_rows`, `broken_ohlc`, `monthly_missing_day`), which the REST API never shows.
    fn raw_rows_with(
        &self,
        file: &ArchiveFile,
        version: u32,
        defects: bool,
    ) -> Option<(RawRows, Ctx<'_>)> {
        let spec = self.spec_for(file.dataset.market, file.dataset.data_type, &file.symbol)?;
        let ctx = self.ctx(spec, file);
        let days = if defects {
            self.days_in_file(file)
        } else {
            file.date.days().filter(|d| spec.is_listed_on(*d)).collect()
        };
        let sh = self.sym_hash(spec);
        let mut rows = match file.dataset.data_type {
            t if t.is_kline_family() => RawRows::Klines(self.kline_rows(spec, file, &days)),
            DataType::Trades => RawRows::Trades(
                days.iter()
                    .flat_map(|d| self.day_trades(spec, *d).trades.clone())
                    .collect(),
            ),
            DataType::AggTrades => RawRows::Aggs(
                days.iter()
                    .flat_map(|d| self.day_trades(spec, *d).aggs.clone())
                    .collect(),
            ),
            DataType::FundingRate => RawRows::Funding(self.funding_rows(spec, sh, &days)),
            DataType::Metrics => RawRows::Metrics(self.metric_rows(spec, sh, &days)),
            DataType::BookDepth => RawRows::Depth(self.depth_rows(spec, sh, &days)),
            DataType::BookTicker => RawRows::Ticker(self.ticker_rows(spec, sh, &days)),
            DataType::LiquidationSnapshot => RawRows::Liq(self.liq_rows(spec, sh, &days)),
            DataType::BvolIndex => RawRows::Bvol(self.bvol_rows(sh, &days)),
            DataType::EohSummary => RawRows::Eoh(self.eoh_rows(spec, sh, &days)),
            _ => return None,
        };
        rows.perturb(version);
        if defects {
            self.apply_quirks(&file.key(), &mut rows);
        }
        Some((rows, ctx))
    }

    /// The configured defects of one file: rows stopping early, a broken candle, a row twice.
    fn apply_quirks(&self, key: &str, rows: &mut RawRows) {
        let us = |t: &NaiveDateTime| t.and_utc().timestamp_micros();
        for (_, cut) in self.cfg.truncated.iter().filter(|(k, _)| k == key) {
            rows.truncate_at(us(cut));
        }
        if let RawRows::Klines(r) = rows {
            for (_, at) in self.cfg.broken_ohlc.iter().filter(|(k, _)| k == key) {
                for x in r.iter_mut().filter(|x| x.open_us == us(at)) {
                    x.h = x.l.min(x.o).min(x.c) - 1;
                }
            }
        }
        for (_, i) in self.cfg.duplicated_rows.iter().filter(|(k, _)| k == key) {
            rows.duplicate(*i);
        }
    }

    fn funding_rows(&self, spec: &SymbolSpec, sh: u64, days: &[NaiveDate]) -> Vec<RawFunding> {
        let mut out = Vec::new();
        for d in days {
            let hours = spec.funding_interval_on(*d).clamp(1, 24);
            let mut r = Rng::new(h(&[sh, TAG_FUNDING, epoch_day(*d) as u64]));
            let mut hr = 0;
            while hr < 24 {
                let jitter = if r.f64() < 0.6 { r.below(10) as i64 } else { 0 };
                let rate = (10_000.0 + 8_000.0 * r.normal()).round() as i64;
                out.push(RawFunding {
                    time_ms: day_start_us(*d) / 1000 + hr as i64 * 3_600_000 + jitter,
                    hours,
                    rate,
                });
                hr += hours;
            }
        }
        out
    }

    fn metric_rows(&self, spec: &SymbolSpec, sh: u64, days: &[NaiveDate]) -> Vec<RawMetric> {
        let qd = spec.qty_decimals();
        let mut out = Vec::new();
        for d in days {
            let end_labels =
                spec.market == Market::Um && *d < self.cfg.um_metrics_start_labels_from;
            let mut r = Rng::new(h(&[sh, TAG_METRICS, epoch_day(*d) as u64]));
            let price = self.day_open_price(spec, *d);
            let mut oi = match spec.market {
                Market::Cm => 5_000_000.0,
                _ => 50_000_000.0 / spec.base_price.max(1e-9),
            } * (1.0 + 0.2 * r.normal()).clamp(0.5, 1.5);
            let midnight = d.and_time(NaiveTime::MIN);
            for i in 0..288 {
                let label = if end_labels { i + 1 } else { i };
                oi *= 1.0 + 0.002 * r.normal();
                let oi_units = (oi * pow10(qd) as f64).round() as i64;
                let value = match spec.market {
                    Market::Cm => oi * spec.contract_size() / price,
                    _ => oi * price,
                };
                let blank = r.f64() < if spec.market == Market::Cm { 0.2 } else { 0.03 };
                let ratios = [
                    (1.0 + 0.3 * r.normal()).clamp(0.3, 4.0),
                    (1.5 + 0.4 * r.normal()).clamp(0.3, 4.0),
                    (1.0 + 0.3 * r.normal()).clamp(0.3, 4.0),
                ]
                .map(|x| (x * 1e8).round() as i64);
                out.push(RawMetric {
                    time: midnight + Duration::minutes(5 * label),
                    oi: oi_units,
                    oi_value: (value * 1e4).round() as i64,
                    ratios: (!blank).then_some(ratios),
                    taker: ((1.0 + 0.25 * r.normal()).clamp(0.05, 5.0) * 1e8).round() as i64,
                });
            }
        }
        out
    }

    fn depth_rows(&self, spec: &SymbolSpec, sh: u64, days: &[NaiveDate]) -> Vec<RawDepth> {
        let mut out = Vec::new();
        for d in days {
            let mut r = Rng::new(h(&[sh, TAG_DEPTH, epoch_day(*d) as u64]));
            let price = self.day_open_price(spec, *d);
            let base = 100_000.0 / spec.base_price.max(1e-9);
            let midnight = d.and_time(NaiveTime::MIN);
            for i in 0..288 {
                let t = midnight + Duration::seconds(300 * i + 3 + r.below(8) as i64);
                for pct in [-5i64, -4, -3, -2, -1, 1, 2, 3, 4, 5] {
                    let depth = base * pct.abs() as f64 * (1.0 + 0.3 * r.f64());
                    let lvl = price * (1.0 + pct as f64 / 200.0);
                    out.push(RawDepth {
                        time: t,
                        pct: pct * 100,
                        depth: (depth * 1e8).round() as i64,
                        notional: (depth * lvl * 1e8).round() as i64,
                    });
                }
            }
        }
        out
    }

    fn ticker_rows(&self, spec: &SymbolSpec, sh: u64, days: &[NaiveDate]) -> Vec<RawTicker> {
        let mut out = Vec::new();
        for d in days {
            let dt = self.day_trades(spec, *d);
            let mut r = Rng::new(h(&[sh, TAG_TICKER, epoch_day(*d) as u64]));
            for a in &dt.aggs {
                let bid = if a.buyer_maker {
                    a.price
                } else {
                    (a.price - 1).max(1)
                };
                out.push(RawTicker {
                    id: 1_000_000_000_000 + a.id * 7 + r.below(7),
                    bid,
                    bid_qty: 1 + r.below(5_000) as i64,
                    ask: bid + 1,
                    ask_qty: 1 + r.below(5_000) as i64,
                    tx_ms: a.time_us / 1000,
                    ev_ms: a.time_us / 1000 + 1 + r.below(6) as i64,
                });
            }
        }
        out
    }

    fn liq_rows(&self, spec: &SymbolSpec, sh: u64, days: &[NaiveDate]) -> Vec<RawLiq> {
        let pd = spec.price_decimals();
        let mut out = Vec::new();
        for d in days {
            let mut r = Rng::new(h(&[sh, TAG_LIQ, epoch_day(*d) as u64]));
            let n = 1 + r.below(6);
            let price = self.day_open_price(spec, *d);
            let mut times: Vec<i64> = (0..n)
                .map(|_| day_start_us(*d) / 1000 + r.below(86_400_000) as i64)
                .collect();
            times.sort_unstable();
            for t in times {
                let sell = r.f64() < 0.5;
                let p = price * (1.0 + 0.03 * (r.f64() - 0.5));
                let qty = (1 + r.below(50)) as i64 * pow10(spec.qty_decimals());
                out.push(RawLiq {
                    time_ms: t,
                    sell,
                    qty,
                    price: Self::to_ticks(p, pd),
                    avg: Self::to_ticks(p * (1.0 + 0.001 * r.normal()), pd),
                });
            }
        }
        out
    }

    fn bvol_rows(&self, sh: u64, days: &[NaiveDate]) -> Vec<RawBvol> {
        let mut out = Vec::new();
        for d in days {
            let mut r = Rng::new(h(&[sh, TAG_BVOL, epoch_day(*d) as u64]));
            let mut v = 50.0 + 10.0 * r.normal();
            for m in 0..1440 {
                v = (v + 0.05 * r.normal()).clamp(5.0, 200.0);
                out.push(RawBvol {
                    time_ms: day_start_us(*d) / 1000 + m * 60_000,
                    value: (v * 1e4).round() as i64,
                });
            }
        }
        out
    }

    fn eoh_rows(&self, spec: &SymbolSpec, sh: u64, days: &[NaiveDate]) -> Vec<RawEoh> {
        let mut out = Vec::new();
        for d in days {
            let mut r = Rng::new(h(&[sh, TAG_EOH, epoch_day(*d) as u64]));
            let spot = self.day_open_price(spec, *d);
            let expiry = *d + Duration::days(30);
            // The archive concatenates passes, so hours come out of order: 01..23, then 00.
            for hour in (1..24).chain(0..1) {
                for (strike_k, call) in [(0.9, false), (1.0, true), (1.1, true)] {
                    let strike = ((spot * strike_k / 1000.0).round() * 1000.0) as i64;
                    let price = (spot * 0.03 * (1.0 + 0.1 * r.normal()).abs()).max(5.0);
                    let traded = r.f64() < 0.5;
                    out.push(RawEoh {
                        date: *d,
                        hour,
                        expiry: expiry.format("%y%m%d").to_string(),
                        strike,
                        call,
                        price: if traded {
                            (price * 1e8).round() as i64
                        } else {
                            0
                        },
                        volume: if traded {
                            (r.below(10_000) as i64 + 1) * 1_000_000
                        } else {
                            0
                        },
                        bid: (price * 0.98 * 1e8).round() as i64,
                        ask: (price * 1.02 * 1e8).round() as i64,
                        mark_iv: ((0.5 + 0.05 * r.normal()).abs() * 1e8).round() as i64,
                        delta: if call { 50_000_000 } else { -30_000_000 },
                        oi: r.below(1_000) as i64 * 1_000_000,
                    });
                }
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------------
    // Public row accessors

    /// The CSV text of a file at a republish `version` (0 = original), or `None` for a file of
    /// an unknown symbol or type. Does not check whether the file is in the archive.
    pub fn csv(&self, file: &ArchiveFile, version: u32) -> Option<String> {
        let (rows, ctx) = self.raw_rows(file, version)?;
        Some(format_csv(&rows, &ctx, file))
    }

    /// The CSV text of a file as generated, version 0, without the configured archive defects
    /// (`truncated`, `duplicated_rows`, `broken_ohlc`, `monthly_missing_day`): what the REST API
    /// serves. Maintenance windows are not defects and stay. Same format as [`Generator::csv`].
    pub fn csv_clean(&self, file: &ArchiveFile) -> Option<String> {
        let (rows, ctx) = self.raw_rows_with(file, 0, false)?;
        Some(format_csv(&rows, &ctx, file))
    }

    /// The first aggTrade id of `day` (ids run on contiguously from the listing day, across
    /// maintenance windows), without generating any trade.
    pub fn first_agg_trade_id(&self, spec: &SymbolSpec, day: NaiveDate) -> u64 {
        self.first_ids(spec, day).1
    }

    pub fn klines(&self, file: &ArchiveFile) -> Vec<Kline> {
        self.klines_v(file, 0)
    }

    pub fn klines_v(&self, file: &ArchiveFile, version: u32) -> Vec<Kline> {
        let Some((RawRows::Klines(rows), ctx)) = self.raw_rows(file, version) else {
            return Vec::new();
        };
        let (ps, vs, qs) = kline_scales(&ctx, file.dataset.data_type);
        rows.iter()
            .map(|k| Kline {
                open_time: k.open_us,
                open: units_to_f64(k.o, ps),
                high: units_to_f64(k.h, ps),
                low: units_to_f64(k.l, ps),
                close: units_to_f64(k.c, ps),
                volume: units_to_f64(k.vol, vs),
                close_time: close_time_us(k, ctx.micros),
                quote_volume: units_to_f64(k.quote, qs),
                count: k.count,
                taker_buy_volume: units_to_f64(k.tbv, vs),
                taker_buy_quote_volume: units_to_f64(k.tbq, qs),
            })
            .collect()
    }

    pub fn trades(&self, file: &ArchiveFile) -> Vec<Trade> {
        self.trades_v(file, 0)
    }

    pub fn trades_v(&self, file: &ArchiveFile, version: u32) -> Vec<Trade> {
        let Some((RawRows::Trades(rows), ctx)) = self.raw_rows(file, version) else {
            return Vec::new();
        };
        rows.iter()
            .map(|t| Trade {
                id: t.id,
                price: units_to_f64(t.price, ctx.pd),
                qty: units_to_f64(t.qty, ctx.qd),
                quote_qty: units_to_f64(trade_quote(t, &ctx), ctx.qs),
                time: t.time_us,
                is_buyer_maker: t.buyer_maker,
            })
            .collect()
    }

    pub fn agg_trades(&self, file: &ArchiveFile) -> Vec<AggTrade> {
        self.agg_trades_v(file, 0)
    }

    pub fn agg_trades_v(&self, file: &ArchiveFile, version: u32) -> Vec<AggTrade> {
        let Some((RawRows::Aggs(rows), ctx)) = self.raw_rows(file, version) else {
            return Vec::new();
        };
        rows.iter()
            .map(|a| AggTrade {
                agg_trade_id: a.id,
                price: units_to_f64(a.price, ctx.pd),
                quantity: units_to_f64(a.qty, ctx.qd),
                first_trade_id: a.first,
                last_trade_id: a.last,
                transact_time: a.time_us,
                is_buyer_maker: a.buyer_maker,
            })
            .collect()
    }

    pub fn funding(&self, file: &ArchiveFile) -> Vec<FundingRate> {
        let Some((RawRows::Funding(rows), _)) = self.raw_rows(file, 0) else {
            return Vec::new();
        };
        rows.iter()
            .map(|f| FundingRate {
                calc_time: f.time_ms * 1000,
                funding_interval_hours: f.hours,
                last_funding_rate: units_to_f64(f.rate, 8),
            })
            .collect()
    }

    pub fn metrics(&self, file: &ArchiveFile) -> Vec<Metric> {
        let Some((RawRows::Metrics(rows), ctx)) = self.raw_rows(file, 0) else {
            return Vec::new();
        };
        rows.iter()
            .map(|m| Metric {
                create_time: m.time,
                symbol: file.symbol.clone(),
                sum_open_interest: units_to_f64(m.oi, ctx.qd),
                sum_open_interest_value: units_to_f64(m.oi_value, 4),
                count_toptrader_long_short_ratio: m.ratios.map(|r| units_to_f64(r[0], 8)),
                sum_toptrader_long_short_ratio: m.ratios.map(|r| units_to_f64(r[1], 8)),
                count_long_short_ratio: m.ratios.map(|r| units_to_f64(r[2], 8)),
                sum_taker_long_short_vol_ratio: Some(units_to_f64(m.taker, 8)),
            })
            .collect()
    }

    pub fn book_depth(&self, file: &ArchiveFile) -> Vec<BookDepth> {
        let Some((RawRows::Depth(rows), _)) = self.raw_rows(file, 0) else {
            return Vec::new();
        };
        rows.iter()
            .map(|d| BookDepth {
                timestamp: d.time,
                percentage: units_to_f64(d.pct, 2),
                depth: units_to_f64(d.depth, 8),
                notional: units_to_f64(d.notional, 8),
            })
            .collect()
    }

    pub fn book_ticker(&self, file: &ArchiveFile) -> Vec<BookTicker> {
        let Some((RawRows::Ticker(rows), ctx)) = self.raw_rows(file, 0) else {
            return Vec::new();
        };
        rows.iter()
            .map(|t| BookTicker {
                update_id: t.id,
                best_bid_price: units_to_f64(t.bid, ctx.pd),
                best_bid_qty: units_to_f64(t.bid_qty, ctx.qd),
                best_ask_price: units_to_f64(t.ask, ctx.pd),
                best_ask_qty: units_to_f64(t.ask_qty, ctx.qd),
                transaction_time: t.tx_ms * 1000,
                event_time: t.ev_ms * 1000,
            })
            .collect()
    }

    /// As written: every row twice.
    pub fn liquidations(&self, file: &ArchiveFile) -> Vec<Liquidation> {
        let Some((RawRows::Liq(rows), ctx)) = self.raw_rows(file, 0) else {
            return Vec::new();
        };
        rows.iter()
            .flat_map(|l| {
                let row = Liquidation {
                    time: l.time_ms * 1000,
                    side: if l.sell { "SELL" } else { "BUY" }.to_string(),
                    original_quantity: units_to_f64(l.qty, ctx.qd),
                    price: units_to_f64(l.price, ctx.pd),
                    average_price: units_to_f64(l.avg, ctx.pd),
                    last_fill_quantity: units_to_f64(l.qty, ctx.qd),
                    accumulated_fill_quantity: units_to_f64(l.qty, ctx.qd),
                };
                [row.clone(), row]
            })
            .collect()
    }

    pub fn bvol(&self, file: &ArchiveFile) -> Vec<BvolIndex> {
        let Some((RawRows::Bvol(rows), _)) = self.raw_rows(file, 0) else {
            return Vec::new();
        };
        rows.iter()
            .map(|b| BvolIndex {
                calc_time: b.time_ms * 1000,
                symbol: file.symbol.clone(),
                index_value: units_to_f64(b.value, 4),
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `BTCUSD_PERP` → `BTCUSD`, `BTCUSD_250328` → `BTCUSD`.
pub fn cm_pair(symbol: &str) -> &str {
    symbol.split('_').next().unwrap_or(symbol)
}

fn trade_quote(t: &RawTrade, _ctx: &Ctx<'_>) -> i64 {
    t.quote
}

/// (price scale, volume scale, quote scale) of a kline file's integer units.
fn kline_scales(ctx: &Ctx<'_>, dt: DataType) -> (u32, u32, u32) {
    match dt {
        DataType::PremiumIndexKlines => (8, ctx.qd, ctx.qs),
        _ => (ctx.pd, ctx.qd, ctx.qs),
    }
}

fn close_time_us(k: &RawKline, micros: bool) -> i64 {
    if micros {
        k.end_us - 1
    } else {
        (k.end_us / 1000 - 1) * 1000
    }
}

pub const KLINE_HEADER: &str = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore";
pub const AGG_HEADER: &str =
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker";
pub const METRICS_HEADER: &str = "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,count_long_short_ratio,sum_taker_long_short_vol_ratio";
pub const EOH_HEADER: &str = "date,hour,symbol,underlying,type,strike,open,high,low,close,volume_contracts,volume_usdt,best_bid_price,best_ask_price,best_bid_qty,best_ask_qty,best_buy_iv,best_sell_iv,mark_price,mark_iv,delta,gamma,vega,theta,openinterest_contracts,openinterest_usdt";

/// Java BigDecimal style for EOHSummary: `0E-8` for zero, else 8 decimals.
fn push_eoh(out: &mut String, units: i64) {
    if units == 0 {
        out.push_str("0E-8");
    } else {
        push_fixed(out, units, 8, 8);
    }
}

fn format_csv(rows: &RawRows, ctx: &Ctx<'_>, file: &ArchiveFile) -> String {
    let spot = ctx.market == Market::Spot;
    let mut out = String::new();
    let time = |out: &mut String, us: i64| {
        push_int(out, if ctx.micros { us } else { us / 1000 });
    };
    let header = |out: &mut String, h: &str| {
        out.push_str(h);
        out.push('\n');
    };
    match rows {
        RawRows::Klines(rows) => {
            out.reserve(rows.len() * 130);
            if ctx.header {
                header(&mut out, KLINE_HEADER);
            }
            let dt = file.dataset.data_type;
            let (ps, vs, qs) = kline_scales(ctx, dt);
            // Spot: 8 decimals everywhere. Futures: one more price decimal than the tick.
            let (pdec, vdec, qdec) = if spot {
                (8, 8, 8)
            } else if dt == DataType::PremiumIndexKlines {
                (8, vs, qs)
            } else if ctx.market == Market::Cm {
                (ps + 1, vs, 8)
            } else {
                (ps + 1, vs, ps + 1 + vs)
            };
            let priced_only = dt != DataType::Klines;
            for k in rows {
                time(&mut out, k.open_us);
                for p in [k.o, k.h, k.l, k.c] {
                    out.push(',');
                    push_fixed(&mut out, p, ps, pdec);
                }
                out.push(',');
                if priced_only {
                    out.push('0');
                } else {
                    push_fixed(&mut out, k.vol, vs, vdec);
                }
                out.push(',');
                if ctx.micros {
                    push_int(&mut out, k.end_us - 1);
                } else {
                    push_int(&mut out, k.end_us / 1000 - 1);
                }
                out.push(',');
                if priced_only {
                    out.push('0');
                } else {
                    push_fixed(&mut out, k.quote, qs, qdec);
                }
                out.push(',');
                push_int(&mut out, k.count as i64);
                out.push(',');
                if priced_only {
                    out.push_str("0,0");
                } else {
                    push_fixed(&mut out, k.tbv, vs, vdec);
                    out.push(',');
                    push_fixed(&mut out, k.tbq, qs, qdec);
                }
                out.push_str(",0\n");
            }
        }
        RawRows::Trades(rows) => {
            out.reserve(rows.len() * 70);
            if ctx.header {
                header(
                    &mut out,
                    if ctx.market == Market::Cm {
                        "id,price,qty,base_qty,time,is_buyer_maker"
                    } else {
                        "id,price,qty,quote_qty,time,is_buyer_maker"
                    },
                );
            }
            for t in rows {
                push_int(&mut out, t.id as i64);
                out.push(',');
                if spot {
                    push_fixed(&mut out, t.price, ctx.pd, 8);
                    out.push(',');
                    push_fixed(&mut out, t.qty, ctx.qd, 8);
                    out.push(',');
                    push_fixed(&mut out, t.quote, ctx.qs, 8);
                } else {
                    push_fixed(&mut out, t.price, ctx.pd, ctx.pd);
                    out.push(',');
                    push_fixed(&mut out, t.qty, ctx.qd, ctx.qd);
                    out.push(',');
                    if ctx.market == Market::Cm {
                        push_fixed(&mut out, t.quote, 8, 8);
                    } else {
                        push_trimmed(&mut out, t.quote, ctx.qs);
                    }
                }
                out.push(',');
                time(&mut out, t.time_us);
                out.push(',');
                push_bool(&mut out, t.buyer_maker, spot);
                if spot {
                    out.push_str(",True");
                }
                out.push('\n');
            }
        }
        RawRows::Aggs(rows) => {
            out.reserve(rows.len() * 70);
            if ctx.header {
                header(&mut out, AGG_HEADER);
            }
            let (pdec, qdec) = if spot { (8, 8) } else { (ctx.pd, ctx.qd) };
            for a in rows {
                push_int(&mut out, a.id as i64);
                out.push(',');
                push_fixed(&mut out, a.price, ctx.pd, pdec);
                out.push(',');
                push_fixed(&mut out, a.qty, ctx.qd, qdec);
                out.push(',');
                push_int(&mut out, a.first as i64);
                out.push(',');
                push_int(&mut out, a.last as i64);
                out.push(',');
                time(&mut out, a.time_us);
                out.push(',');
                push_bool(&mut out, a.buyer_maker, spot);
                if spot {
                    out.push_str(",True");
                }
                out.push('\n');
            }
        }
        RawRows::Funding(rows) => {
            header(
                &mut out,
                "calc_time,funding_interval_hours,last_funding_rate",
            );
            for f in rows {
                let _ = write!(out, "{},{},", f.time_ms, f.hours);
                push_fixed(&mut out, f.rate, 8, 8);
                out.push('\n');
            }
        }
        RawRows::Metrics(rows) => {
            header(&mut out, METRICS_HEADER);
            let blank = if ctx.market == Market::Cm { "\"\"" } else { "" };
            for m in rows {
                let _ = write!(
                    out,
                    "{},{},",
                    m.time.format("%Y-%m-%d %H:%M:%S"),
                    file.symbol
                );
                push_fixed(&mut out, m.oi, ctx.qd, 16);
                out.push(',');
                push_fixed(&mut out, m.oi_value, 4, 16);
                for i in 0..3 {
                    out.push(',');
                    match m.ratios {
                        Some(r) => push_fixed(&mut out, r[i], 8, 8),
                        None => out.push_str(blank),
                    }
                }
                out.push(',');
                push_fixed(&mut out, m.taker, 8, 8);
                out.push('\n');
            }
        }
        RawRows::Depth(rows) => {
            header(&mut out, "timestamp,percentage,depth,notional");
            for d in rows {
                let _ = write!(out, "{},", d.time.format("%Y-%m-%d %H:%M:%S"));
                push_fixed(&mut out, d.pct, 2, 2);
                out.push(',');
                push_fixed(&mut out, d.depth, 8, 8);
                out.push(',');
                push_fixed(&mut out, d.notional, 8, 8);
                out.push('\n');
            }
        }
        RawRows::Ticker(rows) => {
            header(
                &mut out,
                "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time",
            );
            for t in rows {
                push_int(&mut out, t.id as i64);
                for (v, s) in [
                    (t.bid, ctx.pd),
                    (t.bid_qty, ctx.qd),
                    (t.ask, ctx.pd),
                    (t.ask_qty, ctx.qd),
                ] {
                    out.push(',');
                    push_fixed(&mut out, v, s, 8.max(s));
                }
                let _ = writeln!(out, ",{},{}", t.tx_ms, t.ev_ms);
            }
        }
        RawRows::Liq(rows) => {
            header(
                &mut out,
                "time,side,order_type,time_in_force,original_quantity,price,average_price,order_status,last_fill_quantity,accumulated_fill_quantity",
            );
            for l in rows {
                let mut line = String::new();
                let _ = write!(
                    line,
                    "{},{},LIMIT,IOC,",
                    l.time_ms,
                    if l.sell { "SELL" } else { "BUY" }
                );
                push_fixed(&mut line, l.qty, ctx.qd, ctx.qd);
                line.push(',');
                push_fixed(&mut line, l.price, ctx.pd, ctx.pd);
                line.push(',');
                push_fixed(&mut line, l.avg, ctx.pd, ctx.pd);
                line.push_str(",FILLED,");
                push_fixed(&mut line, l.qty, ctx.qd, ctx.qd);
                line.push(',');
                push_fixed(&mut line, l.qty, ctx.qd, ctx.qd);
                line.push('\n');
                // liquidationSnapshot writes every row twice (binance-archive.md §3.9).
                out.push_str(&line);
                out.push_str(&line);
            }
        }
        RawRows::Bvol(rows) => {
            header(
                &mut out,
                "calc_time,symbol,base_asset,quote_asset,index_value",
            );
            let base = file.symbol.strip_suffix("USDT").unwrap_or(&file.symbol);
            for b in rows {
                let _ = write!(out, "{},{},{},USDT,", b.time_ms, file.symbol, base);
                push_fixed(&mut out, b.value, 4, 4);
                out.push('\n');
            }
        }
        RawRows::Eoh(rows) => {
            header(&mut out, EOH_HEADER);
            let underlying = &file.symbol;
            let coin = underlying.strip_suffix("USDT").unwrap_or(underlying);
            let spec_qd = ctx.spec.qty_decimals();
            let _ = spec_qd;
            for e in rows {
                let t = if e.call { "C" } else { "P" };
                let _ = write!(
                    out,
                    "{},{:02},{}-{}-{}-{},{},{},{}-{},",
                    e.date.format("%Y-%m-%d"),
                    e.hour,
                    coin,
                    e.expiry,
                    e.strike,
                    t,
                    underlying,
                    t,
                    e.expiry,
                    e.strike
                );
                for v in [
                    e.price,
                    e.price,
                    e.price,
                    e.price,
                    e.volume,
                    e.volume * (e.price / 100_000_000).max(0),
                ] {
                    push_eoh(&mut out, v);
                    out.push(',');
                }
                for v in [e.bid, e.ask, 500_000_000, 100_000_000] {
                    push_eoh(&mut out, v);
                    out.push(',');
                }
                out.push_str("\"\",");
                for v in [
                    e.mark_iv + 1_000_000,
                    (e.bid + e.ask) / 2,
                    e.mark_iv,
                    e.delta,
                    5_159,
                    3_895_827_352,
                    -1_324_622_221,
                    e.oi,
                    e.oi * 30,
                ] {
                    push_eoh(&mut out, v);
                    out.push(',');
                }
                out.pop();
                out.push('\n');
            }
        }
    }
    out
}

/// The month of a day as a [`FileDate`].
pub fn month_of(d: NaiveDate) -> FileDate {
    FileDate::month_of(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::paths::Dataset;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn cfg() -> SimConfig {
        let mut c = SimConfig::demo().with_range(d("2024-12-30"), d("2025-01-02"));
        c.trades_per_minute = (1, 4);
        c
    }

    fn file(m: Market, t: DataType, iv: Option<Interval>, sym: &str, date: &str) -> ArchiveFile {
        ArchiveFile::new(Dataset::new(m, t, iv).unwrap(), sym, date.parse().unwrap())
    }

    #[test]
    fn same_seed_same_bytes_and_days_are_independent() {
        let f = file(
            Market::Spot,
            DataType::AggTrades,
            None,
            "BTCUSDT",
            "2025-01-01",
        );
        let a = Generator::new(cfg());
        let b = Generator::new(cfg());
        // b generates the previous day first: no influence on the next day.
        let prev = file(
            Market::Spot,
            DataType::Trades,
            None,
            "BTCUSDT",
            "2024-12-31",
        );
        let _ = b.csv(&prev, 0);
        assert_eq!(a.csv(&f, 0), b.csv(&f, 0));
        let mut other = cfg();
        other.seed = 7;
        assert_ne!(a.csv(&f, 0), Generator::new(other).csv(&f, 0));
        assert_ne!(a.csv(&f, 0), a.csv(&f, 1), "a republished version differs");
    }

    #[test]
    fn configured_defects_change_only_their_files() {
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        let kl =
            |sym: &str, day: &str| file(Market::Um, DataType::Klines, Some(Interval::M1), sym, day);
        let mut c = cfg();
        c.maintenance = vec![(at("2025-01-01 03:00"), at("2025-01-01 03:30"))];
        c.truncated = vec![(kl("BTCUSDT", "2024-12-31").key(), at("2024-12-31 18:00"))];
        c.duplicated_rows = vec![(kl("ETHUSDT", "2024-12-31").key(), 100)];
        c.broken_ohlc = vec![(kl("SOLUSDT", "2024-12-31").key(), at("2024-12-31 10:00"))];
        let (g, plain) = (Generator::new(c), Generator::new(cfg()));
        let us = |s: &str| at(s).and_utc().timestamp_micros();

        // Maintenance: no candles and no trades inside, ids carry on across it, in every market.
        for m in [Market::Um, Market::Spot] {
            let k = g.klines(&file(
                m,
                DataType::Klines,
                Some(Interval::M1),
                "BTCUSDT",
                "2025-01-01",
            ));
            assert_eq!(k.len(), 1440 - 30);
            assert!(
                !k.iter().any(
                    |x| (us("2025-01-01 03:00")..us("2025-01-01 03:30")).contains(&x.open_time)
                )
            );
            let a = g.agg_trades(&file(m, DataType::AggTrades, None, "BTCUSDT", "2025-01-01"));
            assert!(!a.iter().any(|x| {
                (us("2025-01-01 03:00")..us("2025-01-01 03:30")).contains(&x.transact_time)
            }));
            assert!(
                a.windows(2)
                    .all(|w| w[1].first_trade_id == w[0].last_trade_id + 1)
            );
        }
        // The next day's ids follow on from the shorter day.
        let a1 = g.agg_trades(&file(
            Market::Um,
            DataType::AggTrades,
            None,
            "BTCUSDT",
            "2025-01-01",
        ));
        let a2 = g.agg_trades(&file(
            Market::Um,
            DataType::AggTrades,
            None,
            "BTCUSDT",
            "2025-01-02",
        ));
        assert_eq!(a1.last().unwrap().last_trade_id + 1, a2[0].first_trade_id);

        // A file that stops at 18:00.
        let k = g.klines(&kl("BTCUSDT", "2024-12-31"));
        assert_eq!(k.len(), 18 * 60);
        assert_eq!(k[..], plain.klines(&kl("BTCUSDT", "2024-12-31"))[..18 * 60]);
        // A row written twice.
        let k = g.klines(&kl("ETHUSDT", "2024-12-31"));
        assert_eq!(k.len(), 1441);
        assert_eq!(k[100], k[101]);
        // A candle whose high is below its low; the rest as generated.
        let (k, p) = (
            g.klines(&kl("SOLUSDT", "2024-12-31")),
            plain.klines(&kl("SOLUSDT", "2024-12-31")),
        );
        let i = k
            .iter()
            .position(|x| x.open_time == us("2024-12-31 10:00"))
            .unwrap();
        assert!(k[i].high < k[i].low);
        assert_eq!(
            (k.len(), &k[..i], &k[i + 1..]),
            (p.len(), &p[..i], &p[i + 1..])
        );
        // Other files are untouched.
        assert_eq!(
            g.csv(&kl("BTCUSDT", "2024-12-30"), 0),
            plain.csv(&kl("BTCUSDT", "2024-12-30"), 0)
        );
    }

    #[test]
    fn ids_and_prices_continue_across_days() {
        let g = Generator::new(cfg());
        let t1 = g.trades(&file(
            Market::Um,
            DataType::Trades,
            None,
            "BTCUSDT",
            "2024-12-31",
        ));
        let t2 = g.trades(&file(
            Market::Um,
            DataType::Trades,
            None,
            "BTCUSDT",
            "2025-01-01",
        ));
        assert_eq!(t1.last().unwrap().id + 1, t2[0].id);
        assert!(t1.windows(2).all(|w| w[1].id == w[0].id + 1));
        let jump = (t2[0].price / t1.last().unwrap().price - 1.0).abs();
        assert!(jump < 0.01, "price jumps {jump} across midnight");
        let a1 = g.agg_trades(&file(
            Market::Um,
            DataType::AggTrades,
            None,
            "BTCUSDT",
            "2024-12-31",
        ));
        let a2 = g.agg_trades(&file(
            Market::Um,
            DataType::AggTrades,
            None,
            "BTCUSDT",
            "2025-01-01",
        ));
        assert_eq!(a1.last().unwrap().agg_trade_id + 1, a2[0].agg_trade_id);
        assert_eq!(a1.last().unwrap().last_trade_id + 1, a2[0].first_trade_id);
        // aggTrades cover the trades exactly, same price and side within one.
        for a in &a2 {
            let fills: Vec<&Trade> = t2
                .iter()
                .filter(|t| t.id >= a.first_trade_id && t.id <= a.last_trade_id)
                .collect();
            assert!(
                fills
                    .iter()
                    .all(|t| t.price == a.price && t.is_buyer_maker == a.is_buyer_maker)
            );
            let q: f64 = fills.iter().map(|t| t.qty).sum();
            assert!((q - a.quantity).abs() < 1e-9);
        }
    }

    #[test]
    fn one_minute_klines_aggregate_the_trades() {
        let g = Generator::new(cfg());
        for (m, sym) in [
            (Market::Spot, "BTCUSDT"),
            (Market::Um, "ETHUSDT"),
            (Market::Cm, "BTCUSD_PERP"),
        ] {
            let day = "2025-01-01";
            let trades = g.trades(&file(m, DataType::Trades, None, sym, day));
            let klines = g.klines(&file(m, DataType::Klines, Some(Interval::M1), sym, day));
            assert_eq!(klines.len(), 1440);
            for k in &klines {
                let ts: Vec<&Trade> = trades
                    .iter()
                    .filter(|t| t.time >= k.open_time && t.time <= k.close_time)
                    .collect();
                assert_eq!(k.count as usize, ts.len());
                if let (Some(f), Some(l)) = (ts.first(), ts.last()) {
                    assert_eq!(k.open, f.price);
                    assert_eq!(k.close, l.price);
                    assert_eq!(k.high, ts.iter().map(|t| t.price).fold(f64::MIN, f64::max));
                    assert_eq!(k.low, ts.iter().map(|t| t.price).fold(f64::MAX, f64::min));
                }
                let vol: f64 = ts.iter().map(|t| t.qty).sum();
                let quote: f64 = ts.iter().map(|t| t.quote_qty).sum();
                let tbv: f64 = ts.iter().filter(|t| !t.is_buyer_maker).map(|t| t.qty).sum();
                assert!((k.volume - vol).abs() < 1e-6, "{m:?} {k:?}");
                assert!((k.quote_volume - quote).abs() < 1e-4 * quote.max(1.0));
                assert!((k.taker_buy_volume - tbv).abs() < 1e-6);
            }
            // 1h klines aggregate the 1m klines.
            let h1 = g.klines(&file(m, DataType::Klines, Some(Interval::H1), sym, day));
            assert_eq!(h1.len(), 24);
            assert_eq!(
                h1[0].count,
                klines[..60].iter().map(|k| k.count).sum::<u64>()
            );
            assert_eq!(h1[0].open, klines[0].open);
            assert_eq!(h1[0].close, klines[59].close);
        }
    }

    #[test]
    fn spot_format_header_units_and_booleans() {
        let g = Generator::new(cfg());
        let ms = g
            .csv(
                &file(
                    Market::Spot,
                    DataType::AggTrades,
                    None,
                    "BTCUSDT",
                    "2024-12-31",
                ),
                0,
            )
            .unwrap();
        let us = g
            .csv(
                &file(
                    Market::Spot,
                    DataType::AggTrades,
                    None,
                    "BTCUSDT",
                    "2025-01-01",
                ),
                0,
            )
            .unwrap();
        for (text, digits) in [(&ms, 13), (&us, 16)] {
            let first = text.lines().next().unwrap();
            let cols: Vec<&str> = first.split(',').collect();
            assert_eq!(cols.len(), 8, "{first}");
            assert_eq!(cols[5].len(), digits, "{first}");
            assert!(cols[6] == "True" || cols[6] == "False");
            assert_eq!(cols[7], "True");
            assert_eq!(cols[1].split('.').nth(1).unwrap().len(), 8);
            assert!(!text.contains('\r'));
        }
        let tr = g
            .csv(
                &file(
                    Market::Spot,
                    DataType::Trades,
                    None,
                    "BTCUSDT",
                    "2025-01-01",
                ),
                0,
            )
            .unwrap();
        assert_eq!(tr.lines().next().unwrap().split(',').count(), 7);
        let k = g
            .csv(
                &file(
                    Market::Spot,
                    DataType::Klines,
                    Some(Interval::M1),
                    "BTCUSDT",
                    "2025-01-01",
                ),
                0,
            )
            .unwrap();
        let row: Vec<i64> = k
            .lines()
            .next()
            .unwrap()
            .split(',')
            .enumerate()
            .filter(|(i, _)| *i == 0 || *i == 6)
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert_eq!(row[1], row[0] + 60_000_000 - 1);
        let k = g
            .csv(
                &file(
                    Market::Spot,
                    DataType::Klines,
                    Some(Interval::M1),
                    "BTCUSDT",
                    "2024-12-31",
                ),
                0,
            )
            .unwrap();
        let row: Vec<i64> = k
            .lines()
            .next()
            .unwrap()
            .split(',')
            .enumerate()
            .filter(|(i, _)| *i == 0 || *i == 6)
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert_eq!(row[1], row[0] + 60_000 - 1);
        assert_eq!(row[0], 1735603200000);
    }

    #[test]
    fn futures_headers_start_on_the_configured_day() {
        let mut c = cfg();
        c.futures_header_from = d("2025-01-01");
        let g = Generator::new(c);
        for t in [DataType::AggTrades, DataType::Trades, DataType::Klines] {
            let iv = (t == DataType::Klines).then_some(Interval::M5);
            let before = g
                .csv(&file(Market::Um, t, iv, "BTCUSDT", "2024-12-31"), 0)
                .unwrap();
            let after = g
                .csv(&file(Market::Um, t, iv, "BTCUSDT", "2025-01-01"), 0)
                .unwrap();
            assert!(before.as_bytes()[0].is_ascii_digit(), "{t:?}");
            assert!(!after.as_bytes()[0].is_ascii_digit(), "{t:?}");
            assert!(after.contains("true") || after.contains("false") || t == DataType::Klines);
            assert!(!after.contains("True"));
        }
        // Always-header types.
        let m = g
            .csv(
                &file(Market::Um, DataType::Metrics, None, "BTCUSDT", "2024-12-31"),
                0,
            )
            .unwrap();
        assert!(m.starts_with(METRICS_HEADER));
        let agg = g
            .csv(
                &file(
                    Market::Um,
                    DataType::AggTrades,
                    None,
                    "BTCUSDT",
                    "2025-01-01",
                ),
                0,
            )
            .unwrap();
        assert_eq!(agg.lines().next().unwrap(), AGG_HEADER);
        assert_eq!(agg.lines().nth(1).unwrap().split(',').count(), 7);
        assert_eq!(
            agg.lines().nth(1).unwrap().split(',').nth(5).unwrap().len(),
            13
        );
    }

    #[test]
    fn metrics_labels_switch_and_cm_starts_at_midnight() {
        let mut c = cfg();
        c.um_metrics_start_labels_from = d("2025-01-01");
        let g = Generator::new(c);
        let old = g.metrics(&file(
            Market::Um,
            DataType::Metrics,
            None,
            "BTCUSDT",
            "2024-12-31",
        ));
        let new = g.metrics(&file(
            Market::Um,
            DataType::Metrics,
            None,
            "BTCUSDT",
            "2025-01-01",
        ));
        let cm = g.metrics(&file(
            Market::Cm,
            DataType::Metrics,
            None,
            "BTCUSD_PERP",
            "2024-12-31",
        ));
        assert_eq!(old.len(), 288);
        assert_eq!(old[0].create_time.to_string(), "2024-12-31 00:05:00");
        assert_eq!(old[287].create_time.to_string(), "2025-01-01 00:00:00");
        assert_eq!(new[0].create_time.to_string(), "2025-01-01 00:00:00");
        assert_eq!(new[287].create_time.to_string(), "2025-01-01 23:55:00");
        assert_eq!(cm[0].create_time.to_string(), "2024-12-31 00:00:00");
        assert!(cm.iter().any(|m| m.count_long_short_ratio.is_none()));
        let text = g
            .csv(
                &file(Market::Um, DataType::Metrics, None, "BTCUSDT", "2025-01-01"),
                0,
            )
            .unwrap();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(row.len(), 8);
        assert_eq!(row[2].split('.').nth(1).unwrap().len(), 16);
        assert_eq!(row[3].split('.').nth(1).unwrap().len(), 16);
        let cm_text = g
            .csv(
                &file(
                    Market::Cm,
                    DataType::Metrics,
                    None,
                    "BTCUSD_PERP",
                    "2024-12-31",
                ),
                0,
            )
            .unwrap();
        assert!(cm_text.contains(",\"\",\"\",\"\","));
    }

    #[test]
    fn liquidations_double_and_funding_follows_intervals() {
        let g = Generator::new(SimConfig::demo());
        let f = file(
            Market::Cm,
            DataType::LiquidationSnapshot,
            None,
            "BTCUSD_PERP",
            "2025-01-02",
        );
        let text = g.csv(&f, 0).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert!(!rows.is_empty() && rows.len().is_multiple_of(2));
        assert!(rows.chunks(2).all(|p| p[0] == p[1]));
        assert_eq!(g.liquidations(&f).len(), rows.len());
        let fr = g
            .funding(&file(
                Market::Um,
                DataType::FundingRate,
                None,
                "ETHUSDT",
                "2024-12",
            ))
            .to_vec();
        let hours: Vec<u32> = fr.iter().map(|r| r.funding_interval_hours).collect();
        assert_eq!(hours[0], 8);
        assert!(hours.contains(&4));
        let jan = g.funding(&file(
            Market::Um,
            DataType::FundingRate,
            None,
            "ETHUSDT",
            "2025-01",
        ));
        assert!(jan.iter().any(|r| r.funding_interval_hours == 1));
        for r in &fr {
            let ms = r.calc_time / 1000;
            assert!(
                ms % (3_600_000 * r.funding_interval_hours as i64) < 10,
                "{r:?}"
            );
        }
        let text = g
            .csv(
                &file(
                    Market::Um,
                    DataType::FundingRate,
                    None,
                    "BTCUSDT",
                    "2024-12",
                ),
                0,
            )
            .unwrap();
        assert!(text.starts_with("calc_time,funding_interval_hours,last_funding_rate\n"));
        assert_eq!(text.lines().count(), 1 + 31 * 3);
    }

    #[test]
    fn other_types_are_format_correct() {
        let mut c = cfg();
        c.symbols.push(SymbolSpec::new(
            Market::Option,
            "BTCBVOLUSDT",
            d("2023-06-20"),
            50.0,
        ));
        c.symbols.push(SymbolSpec::new(
            Market::Option,
            "BTCUSDT",
            d("2023-05-18"),
            42000.0,
        ));
        let g = Generator::new(c);
        let day = "2025-01-01";
        let depth = g
            .csv(
                &file(Market::Um, DataType::BookDepth, None, "BTCUSDT", day),
                0,
            )
            .unwrap();
        assert!(depth.starts_with("timestamp,percentage,depth,notional\n2025-01-01 00:0"));
        assert!(depth.contains(",-5.00,") && depth.contains(",1.00,"));
        let bt = g
            .csv(
                &file(Market::Um, DataType::BookTicker, None, "BTCUSDT", day),
                0,
            )
            .unwrap();
        assert_eq!(bt.lines().nth(1).unwrap().split(',').count(), 7);
        for t in [
            DataType::MarkPriceKlines,
            DataType::IndexPriceKlines,
            DataType::PremiumIndexKlines,
        ] {
            let sym = if t == DataType::IndexPriceKlines {
                "BTCUSD"
            } else {
                "BTCUSD_PERP"
            };
            let k = g.klines(&file(Market::Cm, t, Some(Interval::M1), sym, day));
            assert_eq!(k.len(), 1440, "{t:?}");
            assert!(
                k.iter()
                    .all(|k| k.volume == 0.0 && k.count > 0 && k.high >= k.low)
            );
        }
        let bv = g
            .csv(
                &file(
                    Market::Option,
                    DataType::BvolIndex,
                    None,
                    "BTCBVOLUSDT",
                    day,
                ),
                0,
            )
            .unwrap();
        assert!(bv.starts_with("calc_time,symbol,base_asset,quote_asset,index_value\n"));
        assert!(
            bv.lines()
                .nth(1)
                .unwrap()
                .contains(",BTCBVOLUSDT,BTCBVOL,USDT,")
        );
        let eoh = g
            .csv(
                &file(Market::Option, DataType::EohSummary, None, "BTCUSDT", day),
                0,
            )
            .unwrap();
        assert!(eoh.starts_with(EOH_HEADER));
        let row: Vec<&str> = eoh.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(row.len(), 26);
        assert_eq!(row[1], "01");
        assert_eq!(row[16], "\"\"");
        // Monthly weekly klines: Monday-aligned, close = open + 1w - 1.
        let w = g.klines(&file(
            Market::Spot,
            DataType::Klines,
            Some(Interval::W1),
            "BTCUSDT",
            "2025-01",
        ));
        assert!(!w.is_empty());
        assert!(
            w.iter()
                .all(|k| k.close_time == k.open_time + 7 * DAY_US - 1)
        );
    }

    #[test]
    fn number_formatting() {
        let mut s = String::new();
        push_fixed(&mut s, -1234, 2, 4);
        s.push(' ');
        push_trimmed(&mut s, 781530, 4);
        s.push(' ');
        push_trimmed(&mut s, 1000, 3);
        assert_eq!(s, "-12.3400 78.153 1.0");
    }
}
