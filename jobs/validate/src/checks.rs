//! The per-symbol checks: rows arrive in the optimized order, a row group at a time, and one pass
//! of plain loops over column slices counts rows per day, finds the stretches without rows
//! (against the interval's grid, or whole days for datasets without one), and checks every row:
//! keys unique and increasing, `close_time`, OHLC sanity, volumes, trade-id continuity, price
//! jumps, funding-interval changes. What a stretch without rows *is* (listing, 404, outage, …)
//! is decided later, across symbols (`classify`).

use chrono::{DateTime, NaiveDate};
use frames::polars::prelude::DataFrame;
use shared::Result;
use shared::formats::{Format, OutKind, format_of};
use shared::paths::{DataType, Dataset};
use shared::plan::DateRange;
use shared::validation::FindingKind;

use crate::read::{f64s, i64s};
use crate::result::SymbolResult;

pub use shared::time::{DAY_US, day_of_us, day_start_us};
use shared::time::{HOUR_US, MINUTE_US};
/// The metrics grid (binance-archive.md §3.8).
pub const METRICS_STEP_US: i64 = 5 * MINUTE_US;

/// `2025-01-06 10:00:00` (or with µs when not whole seconds).
pub fn fmt_us(t: i64) -> String {
    match DateTime::from_timestamp_micros(t) {
        Some(d) if t % 1_000_000 == 0 => d.format("%Y-%m-%d %H:%M:%S").to_string(),
        Some(d) => d.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => t.to_string(),
    }
}

/// What kind of rows a dataset has, for the checks that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The kline families. `trade`: real trade klines (volumes, zero-volume candles);
    /// `positive`: prices must be > 0 (not premium index, which is signed).
    Klines {
        trade: bool,
        positive: bool,
    },
    AggTrades,
    Trades,
    Funding,
    Metrics,
    /// Everything else: order, keys, rows per day.
    Other,
}

/// How stretches without rows are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapMode {
    /// Every step of this grid (µs) should hold a row.
    Grid(i64),
    /// Every day should hold rows.
    Days,
    /// No expectation (klines longer than a day).
    None,
}

/// The checks a dataset gets.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub kind: Kind,
    pub gaps: GapMode,
    /// Kline interval in µs, for `close_time` (`None` for `1mo`).
    pub interval_us: Option<i64>,
    pub format: &'static Format,
}

impl Profile {
    pub fn of(ds: &Dataset) -> Profile {
        let format = format_of(ds);
        let interval_us = ds.interval.and_then(|i| i.millis()).map(|ms| ms * 1000);
        let (kind, gaps) = match ds.data_type {
            t if t.is_kline_family() => {
                let gaps = match interval_us {
                    Some(step) if step <= DAY_US => GapMode::Grid(step),
                    _ => GapMode::None,
                };
                let kind = Kind::Klines {
                    trade: t == DataType::Klines,
                    positive: t != DataType::PremiumIndexKlines,
                };
                (kind, gaps)
            }
            DataType::AggTrades => (Kind::AggTrades, GapMode::Days),
            DataType::Trades => (Kind::Trades, GapMode::Days),
            DataType::FundingRate => (Kind::Funding, GapMode::Days),
            DataType::Metrics => (Kind::Metrics, GapMode::Grid(METRICS_STEP_US)),
            _ => (Kind::Other, GapMode::Days),
        };
        Profile {
            kind,
            gaps,
            interval_us,
            format,
        }
    }

    pub fn grid_us(&self) -> Option<i64> {
        match self.gaps {
            GapMode::Grid(s) => Some(s),
            _ => None,
        }
    }

    /// What the uniqueness and order checks compare.
    fn key_check(&self) -> KeyCheck {
        let f = self.format;
        match f.key {
            [k] if *k == f.time_field => KeyCheck::Time,
            [k] => KeyCheck::Column {
                name: k,
                is_time: f.output_kind(k) == Some(OutKind::TimeUs),
            },
            _ => KeyCheck::None,
        }
    }
}

/// The key `optimize` deduplicates on, as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyCheck {
    /// The time column is the key: strictly increasing.
    Time,
    /// Another single column (an id, metrics' `snapshot_time`): strictly increasing, and the time
    /// never goes back where it leads the sort.
    Column { name: &'static str, is_time: bool },
    /// A composite key or the whole row: only the time order is checked.
    None,
}

/// The previous row, carried across row groups and months.
#[derive(Debug, Clone, Copy, Default)]
struct Prev {
    time: i64,
    key: i64,
    /// aggTrades: last_trade_id; trades: id.
    trade_id: i64,
    price: f64,
    hours: i64,
    /// Funding: the settlement time rounded to the minute.
    settle: i64,
    slot: i64,
}

/// One symbol's checks in progress.
pub struct Checker {
    p: Profile,
    /// `p.key_check()`, looked up once: each row needs it.
    key_check: KeyCheck,
    range_start: i64,
    range_end: i64,
    threshold: f64,
    pub res: SymbolResult,
    prev: Option<Prev>,
    first_slot: Option<i64>,
    gaps: Vec<[i64; 2]>,
    /// The current day, cached: rows arrive in time order.
    day: (i64, i64, NaiveDate),
    /// Rows of the current day not yet added to its counts (a map lookup per row was a fifth of
    /// the checks' time).
    day_rows: u64,
}

impl Checker {
    pub fn new(ds: &Dataset, symbol: &str, range: DateRange, price_jump_threshold: f64) -> Self {
        let p = Profile::of(ds);
        let range_start = day_start_us(range.start);
        Checker {
            p,
            key_check: p.key_check(),
            range_start,
            range_end: day_start_us(range.end) + DAY_US,
            threshold: price_jump_threshold,
            res: SymbolResult::new(symbol, *ds, range, p.grid_us()),
            prev: None,
            first_slot: None,
            gaps: Vec::new(),
            day: (0, 0, NaiveDate::MIN),
            day_rows: 0,
        }
    }

    fn day(&mut self, t: i64) -> NaiveDate {
        if t < self.day.0 || t >= self.day.1 {
            self.flush_rows();
            let d = day_of_us(t);
            let s = day_start_us(d);
            self.day = (s, s + DAY_US, d);
        }
        self.day.2
    }

    /// Add the rows counted for the current day to its counts.
    fn flush_rows(&mut self) {
        if self.day_rows > 0 {
            let c = self.res.days.get_mut(&self.day.2).expect("range day");
            c.rows += std::mem::take(&mut self.day_rows);
        }
    }

    /// Every day of the range that `[a, b)` touches.
    fn days_between(&self, a: i64, b: i64) -> Vec<NaiveDate> {
        let a = a.max(self.range_start);
        let b = b.min(self.range_end);
        if a >= b {
            return Vec::new();
        }
        let (first, last) = (day_of_us(a), day_of_us(b - 1));
        first.iter_days().take_while(|d| *d <= last).collect()
    }

    /// A file whose schema is wrong: every day of the range it covers is an error.
    pub fn schema_error(&mut self, path: &str, span: (i64, i64), why: &str) {
        for d in self.days_between(span.0, span.1) {
            self.res
                .find(FindingKind::Schema, d, None, format!("{path}: {why}"));
        }
    }

    /// Duplicated rows `optimize` removed from this day's source partitions.
    pub fn source_duplicates(&mut self, day: NaiveDate, n: u64) {
        if let Some(c) = self.res.days.get_mut(&day) {
            c.source_duplicates += n;
            self.res.find(
                FindingKind::SourceDuplicates,
                day,
                None,
                format!("the archive had {n} duplicated row(s) on this day; optimize removed them"),
            );
        }
    }

    /// Check one row group. Columns are read by name from the normalized schema.
    pub fn push(&mut self, df: &DataFrame) -> Result<()> {
        let f = self.p.format;
        let time = i64s(df, f.time_field)?;
        let key = match self.key_check {
            KeyCheck::Column { name, .. } => Some(i64s(df, name)?),
            KeyCheck::Time | KeyCheck::None => None,
        };
        let cols = match self.p.kind {
            Kind::Klines { .. } => Cols::Klines {
                open: f64s(df, "open")?,
                high: f64s(df, "high")?,
                low: f64s(df, "low")?,
                close: f64s(df, "close")?,
                volume: f64s(df, "volume")?,
                taker: f64s(df, "taker_buy_volume")?,
                close_time: i64s(df, "close_time")?,
            },
            Kind::AggTrades => Cols::Agg {
                price: f64s(df, "price")?,
                qty: f64s(df, "quantity")?,
                first: i64s(df, "first_trade_id")?,
                last: i64s(df, "last_trade_id")?,
            },
            Kind::Trades => Cols::Trades {
                price: f64s(df, "price")?,
                qty: f64s(df, "qty")?,
            },
            Kind::Funding => Cols::Funding {
                hours: i64s(df, "funding_interval_hours")?,
            },
            Kind::Metrics | Kind::Other => Cols::None,
        };
        for i in 0..time.len() {
            let t = time[i];
            if t < self.range_start || t >= self.range_end {
                continue;
            }
            self.row(t, key.as_ref().map(|k| k[i]), &cols, i);
        }
        self.flush_rows();
        Ok(())
    }

    fn row(&mut self, t: i64, key: Option<i64>, cols: &Cols, i: usize) {
        let day = self.day(t);
        self.day_rows += 1;
        if self.res.first_data_us.is_none() {
            self.res.first_data_us = Some(t);
        }
        self.res.last_data_us = Some(t);
        let prev = self.prev;
        let mut cur = Prev {
            time: t,
            key: key.unwrap_or(t),
            ..prev.unwrap_or_default()
        };

        // Keys unique and increasing; time in order where it leads the sort.
        if let Some(p) = prev {
            let f = self.p.format;
            let (name, is_time) = match self.key_check {
                KeyCheck::Time => (Some(f.time_field), true),
                KeyCheck::Column { name, is_time } => (Some(name), is_time),
                KeyCheck::None => (None, true),
            };
            let show = |k: i64| if is_time { fmt_us(k) } else { k.to_string() };
            match name {
                Some(name) if cur.key == p.key => self.res.find(
                    FindingKind::Duplicate,
                    day,
                    Some(t),
                    format!("{name} {} appears twice", show(cur.key)),
                ),
                Some(name) if cur.key < p.key => self.res.find(
                    FindingKind::Order,
                    day,
                    Some(t),
                    format!("{name} {} after {}", show(cur.key), show(p.key)),
                ),
                _ if t < p.time && f.sort.first() == Some(&f.time_field) => self.res.find(
                    FindingKind::Order,
                    day,
                    Some(t),
                    format!("{} {} after {}", f.time_field, fmt_us(t), fmt_us(p.time)),
                ),
                _ => {}
            }
        }

        // The grid: stretches without rows between this row's slot and the previous one's.
        if let GapMode::Grid(step) = self.p.gaps {
            let slot = t - t.rem_euclid(step);
            if matches!(self.p.kind, Kind::Klines { .. }) && slot != t {
                self.res.find(
                    FindingKind::Grid,
                    day,
                    Some(t),
                    format!(
                        "open_time {} is not on the {}s grid",
                        fmt_us(t),
                        step / 1_000_000
                    ),
                );
            }
            match prev {
                None => {
                    self.first_slot = Some(slot);
                    if slot > self.range_start {
                        self.gaps.push([self.range_start, slot]);
                    }
                }
                Some(p) if slot > p.slot + step => self.gaps.push([p.slot + step, slot]),
                _ => {}
            }
            cur.slot = slot;
        }

        match (self.p.kind, cols) {
            (
                Kind::Klines { trade, positive },
                Cols::Klines {
                    open,
                    high,
                    low,
                    close,
                    volume,
                    taker,
                    close_time,
                },
            ) => {
                let (o, h, l, c) = (open[i], high[i], low[i], close[i]);
                if let Some(iv) = self.p.interval_us
                    && close_time[i] != t + iv - 1000
                {
                    self.res.find(
                        FindingKind::CloseTime,
                        day,
                        Some(t),
                        format!(
                            "close_time {} for open_time {} (expected open_time + interval - 1 ms)",
                            fmt_us(close_time[i]),
                            fmt_us(t)
                        ),
                    );
                }
                if !(l <= o && l <= c && o <= h && c <= h && l <= h) {
                    self.res.find(
                        FindingKind::Ohlc,
                        day,
                        Some(t),
                        format!(
                            "open {o} high {h} low {l} close {c}: not low <= open, close <= high"
                        ),
                    );
                }
                if positive && !(o > 0.0 && h > 0.0 && l > 0.0 && c > 0.0) {
                    self.res.find(
                        FindingKind::NonPositivePrice,
                        day,
                        Some(t),
                        format!("open {o} high {h} low {l} close {c}"),
                    );
                }
                if trade {
                    let (v, tb) = (volume[i], taker[i]);
                    if v.is_nan() || tb.is_nan() || v < 0.0 || tb < 0.0 {
                        self.res.find(
                            FindingKind::NegativeVolume,
                            day,
                            Some(t),
                            format!("volume {v} taker_buy_volume {tb}"),
                        );
                    } else if tb > v {
                        self.res.find(
                            FindingKind::TakerBuyVolume,
                            day,
                            Some(t),
                            format!("taker_buy_volume {tb} > volume {v}"),
                        );
                    }
                    if v == 0.0 && o == h && h == l && l == c {
                        self.res.days.get_mut(&day).expect("range day").zero_volume += 1;
                    }
                }
                if positive {
                    self.price_jump(prev.map(|p| p.price), c, day, t, "close");
                }
                cur.price = c;
            }
            (
                Kind::AggTrades,
                Cols::Agg {
                    price,
                    qty,
                    first,
                    last,
                },
            ) => {
                let (pr, q, f, l) = (price[i], qty[i], first[i], last[i]);
                self.trade_values(pr, q, day, t);
                if l < f {
                    self.res.find(
                        FindingKind::TradeIds,
                        day,
                        Some(t),
                        format!("last_trade_id {l} < first_trade_id {f}"),
                    );
                }
                if let Some(p) = prev
                    && f != p.trade_id + 1
                {
                    self.id_gap(p, t, day, f, "first_trade_id", "last_trade_id");
                }
                self.price_jump(prev.map(|p| p.price), pr, day, t, "price");
                cur.price = pr;
                cur.trade_id = l;
            }
            (Kind::Trades, Cols::Trades { price, qty }) => {
                let (pr, q) = (price[i], qty[i]);
                self.trade_values(pr, q, day, t);
                let id = cur.key;
                if let Some(p) = prev
                    && id > p.trade_id + 1
                {
                    self.id_gap(p, t, day, id, "id", "id");
                }
                self.price_jump(prev.map(|p| p.price), pr, day, t, "price");
                cur.price = pr;
                cur.trade_id = id;
            }
            (Kind::Funding, Cols::Funding { hours }) => {
                let h = hours[i];
                // calc_time has a few ms of jitter (binance-archive.md §3.7): compare minutes.
                let settle = (t + MINUTE_US / 2).div_euclid(MINUTE_US) * MINUTE_US;
                if let Some(p) = prev {
                    if h != p.hours {
                        self.res.find(
                            FindingKind::FundingIntervalChange,
                            day,
                            Some(t),
                            format!("funding interval {}h -> {h}h", p.hours),
                        );
                    }
                    let due = p.settle + p.hours.max(1) * HOUR_US;
                    if settle > due {
                        self.gaps.push([due, settle]);
                    }
                }
                cur.hours = h;
                cur.settle = settle;
            }
            _ => {}
        }
        self.prev = Some(cur);
    }

    fn trade_values(&mut self, price: f64, qty: f64, day: NaiveDate, t: i64) {
        if price.is_nan() || price <= 0.0 {
            self.res.find(
                FindingKind::NonPositivePrice,
                day,
                Some(t),
                format!("price {price}"),
            );
        }
        if qty.is_nan() || qty < 0.0 {
            self.res.find(
                FindingKind::NegativeVolume,
                day,
                Some(t),
                format!("quantity {qty}"),
            );
        }
    }

    /// Trade ids that do not follow on. Across whole days without rows the day gap explains it.
    fn id_gap(&mut self, p: Prev, t: i64, day: NaiveDate, id: i64, this: &str, last: &str) {
        if day_of_us(t) > day_of_us(p.time).succ_opt().unwrap_or(NaiveDate::MAX) {
            return;
        }
        let missing = id - p.trade_id - 1;
        self.res.find(
            FindingKind::IdGap,
            day,
            Some(t),
            format!(
                "{this} {id} after {last} {} at {} ({missing} trade ids missing)",
                p.trade_id,
                fmt_us(p.time)
            ),
        );
    }

    fn price_jump(&mut self, prev: Option<f64>, x: f64, day: NaiveDate, t: i64, what: &str) {
        if let Some(p) = prev
            && p > 0.0
            && x > 0.0
            && (x / p - 1.0).abs() > self.threshold
        {
            self.res.find(
                FindingKind::PriceJump,
                day,
                Some(t),
                format!(
                    "{what} {p} -> {x} ({:+.1}%, threshold {:.1}%)",
                    (x / p - 1.0) * 100.0,
                    self.threshold * 100.0
                ),
            );
        }
    }

    /// The data ends at `until_us` (µs) for now: `tail` has fetched up to there and the archive
    /// no further. Later times are not gaps, and the days after it are not reported.
    pub fn set_horizon(&mut self, until_us: i64) {
        if until_us >= self.range_end || until_us <= self.range_start {
            return;
        }
        self.range_end = until_us;
        self.res.data_until_us = Some(until_us);
        let last = day_of_us(until_us - 1);
        self.res.days.retain(|d, _| *d <= last);
    }

    /// Close the range: trailing stretches, days without rows, the symbol's life.
    pub fn finish(mut self) -> SymbolResult {
        let (rs, re) = (self.range_start, self.range_end);
        match self.p.gaps {
            GapMode::Grid(step) => match (self.first_slot, self.prev) {
                (Some(first), Some(p)) => {
                    if p.slot + step < re {
                        self.gaps.push([p.slot + step, re]);
                    }
                    self.res.life = Some([first, p.slot + step]);
                }
                _ => self.gaps.push([rs, re]),
            },
            GapMode::Days | GapMode::None => {
                if self.p.gaps == GapMode::Days {
                    for (d, c) in &self.res.days {
                        if c.rows == 0 {
                            let s = day_start_us(*d);
                            self.gaps.push([s, s + DAY_US]);
                        }
                    }
                }
                if let (Some(a), Some(b)) = (self.res.first_data_us, self.res.last_data_us) {
                    self.res.life = Some([
                        day_start_us(day_of_us(a)),
                        day_start_us(day_of_us(b)) + DAY_US,
                    ]);
                }
            }
        }
        self.res.gaps = merge(std::mem::take(&mut self.gaps), rs, re);
        self.res
    }
}

/// Sort, clip to `[lo, hi)` and merge overlapping or touching stretches.
pub fn merge(mut v: Vec<[i64; 2]>, lo: i64, hi: i64) -> Vec<[i64; 2]> {
    v.iter_mut().for_each(|g| *g = [g[0].max(lo), g[1].min(hi)]);
    v.retain(|g| g[0] < g[1]);
    v.sort_unstable();
    let mut out: Vec<[i64; 2]> = Vec::with_capacity(v.len());
    for g in v {
        match out.last_mut() {
            Some(l) if g[0] <= l[1] => l[1] = l[1].max(g[1]),
            _ => out.push(g),
        }
    }
    out
}

/// The columns one kind of dataset is checked on.
enum Cols {
    Klines {
        open: Vec<f64>,
        high: Vec<f64>,
        low: Vec<f64>,
        close: Vec<f64>,
        volume: Vec<f64>,
        taker: Vec<f64>,
        close_time: Vec<i64>,
    },
    Agg {
        price: Vec<f64>,
        qty: Vec<f64>,
        first: Vec<i64>,
        last: Vec<i64>,
    },
    Trades {
        price: Vec<f64>,
        qty: Vec<f64>,
    },
    Funding {
        hours: Vec<i64>,
    },
    None,
}
