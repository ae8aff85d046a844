//! The bar engine of features.md §3: one bar spec's state (the unfinished bar, `theta`, `n`,
//! `E_T`, `E_I`, the threshold, the tick rule's last price and sign) and the loop that feeds it
//! trades from column slices and emits finished bars. It knows nothing of files or days: the
//! caller hands it slices in history order, in pieces of any size, and gets the same bars
//! whatever the pieces — the state after a piece is all there is to carry.
//!
//! The loop is monomorphized per (bar type, sign mode): per trade it does a handful of float
//! operations on registers, no allocation and one well-predicted branch (does the bar close?).
//! Sums run in trade order, which is what makes a split history bit-identical to a whole one.

use serde::{Deserialize, Serialize};

use crate::spec::{BarSpec, BarType, Rule, Sign};

/// A finished bar (features.md §3 "Bar columns"; `vwap` is derived).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// 0-based index in the symbol's history.
    pub bar: u64,
    /// First and last trade's time, µs.
    pub open_time: i64,
    pub close_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Σ v.
    pub volume: f64,
    /// Σ p·v.
    pub dollar_volume: f64,
    /// Σ v where b = +1.
    pub buy_volume: f64,
    /// Trades in the bar.
    pub ticks: u64,
    /// `theta` at the close; 0 for standard bars.
    pub imbalance: f64,
    /// The threshold the bar closed against.
    pub threshold: f64,
}

impl Bar {
    /// `dollar_volume / volume`; `None` when `volume` is 0.
    pub fn vwap(&self) -> Option<f64> {
        (self.volume != 0.0).then(|| self.dollar_volume / self.volume)
    }
}

/// Trades as column slices of equal length, in history order.
#[derive(Debug, Clone, Copy)]
pub struct Trades<'a> {
    pub price: &'a [f64],
    pub qty: &'a [f64],
    /// µs since the epoch.
    pub time: &'a [i64],
    pub buyer_maker: &'a [bool],
}

impl<'a> Trades<'a> {
    pub fn len(&self) -> usize {
        self.price.len()
    }

    pub fn is_empty(&self) -> bool {
        self.price.is_empty()
    }

    /// Rows `[a, b)`.
    pub fn slice(&self, a: usize, b: usize) -> Trades<'a> {
        Trades {
            price: &self.price[a..b],
            qty: &self.qty[a..b],
            time: &self.time[a..b],
            buyer_maker: &self.buyer_maker[a..b],
        }
    }
}

/// `f64`s in checkpoints as their shortest round-trip decimal in a JSON string: readable, and
/// parsed back by Rust's correctly rounded parser to the same bits (serde_json's own float
/// parsing is not exact without its `float_roundtrip` feature).
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }

    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| s.parse().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Everything a history carries from one trade to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Trades in the unfinished bar (`n`).
    pub ticks: u64,
    pub open_time: i64,
    pub close_time: i64,
    #[serde(with = "exact")]
    pub open: f64,
    #[serde(with = "exact")]
    pub high: f64,
    #[serde(with = "exact")]
    pub low: f64,
    #[serde(with = "exact")]
    pub close: f64,
    #[serde(with = "exact")]
    pub volume: f64,
    #[serde(with = "exact")]
    pub dollar_volume: f64,
    #[serde(with = "exact")]
    pub buy_volume: f64,
    #[serde(with = "exact")]
    pub theta: f64,
    /// `E_T`; `None` before the first bar.
    #[serde(with = "exact::opt")]
    pub e_t: Option<f64>,
    /// `E_I`; `None` before the first bar.
    #[serde(with = "exact::opt")]
    pub e_i: Option<f64>,
    #[serde(with = "exact")]
    pub threshold: f64,
    /// Index of the next bar.
    pub next_bar: u64,
    /// Tick rule: the previous trade's price (`None` before the first trade) and sign.
    #[serde(with = "exact::opt")]
    pub last_price: Option<f64>,
    #[serde(with = "exact")]
    pub last_sign: f64,
    /// Trades seen since the history began.
    pub trades: u64,
    /// Threshold updates clamped to `min_threshold` / `max_threshold` since the history began.
    pub clamped_min: u64,
    pub clamped_max: u64,
}

impl State {
    /// The state at the start of a history.
    pub fn fresh(spec: &BarSpec) -> State {
        let threshold = match spec.rule {
            Rule::Standard { threshold } => threshold,
            Rule::Imbalance { init_threshold, .. } => init_threshold,
        };
        State {
            ticks: 0,
            open_time: 0,
            close_time: 0,
            open: 0.0,
            high: 0.0,
            low: 0.0,
            close: 0.0,
            volume: 0.0,
            dollar_volume: 0.0,
            buy_volume: 0.0,
            theta: 0.0,
            e_t: None,
            e_i: None,
            threshold,
            next_bar: 0,
            last_price: None,
            last_sign: 1.0,
            trades: 0,
            clamped_min: 0,
            clamped_max: 0,
        }
    }
}

/// Trades per block of precomputed aggressor signs (16 KiB on the stack).
const BLOCK: usize = 1024;

const TICK: u8 = 0;
const VOLUME: u8 = 1;
const DOLLAR: u8 = 2;
const TICK_IMB: u8 = 3;
const VOLUME_IMB: u8 = 4;
const DOLLAR_IMB: u8 = 5;

/// One spec's engine: its parameters, resolved for the loop, and its state.
#[derive(Debug, Clone)]
pub struct Engine {
    mode: u8,
    tick_rule: bool,
    alpha_ticks: f64,
    alpha_imbalance: f64,
    /// `-inf` / `+inf` when disabled.
    min: f64,
    max: f64,
    pub state: State,
}

impl Engine {
    pub fn new(spec: &BarSpec, state: State) -> Engine {
        let mode = match spec.bar {
            BarType::Tick => TICK,
            BarType::Volume => VOLUME,
            BarType::Dollar => DOLLAR,
            BarType::TickImbalance => TICK_IMB,
            BarType::VolumeImbalance => VOLUME_IMB,
            BarType::DollarImbalance => DOLLAR_IMB,
        };
        let (alpha_ticks, alpha_imbalance, min, max) = match spec.rule {
            Rule::Standard { .. } => (1.0, 1.0, f64::NEG_INFINITY, f64::INFINITY),
            Rule::Imbalance {
                alpha_ticks,
                alpha_imbalance,
                min_threshold,
                max_threshold,
                ..
            } => (
                alpha_ticks,
                alpha_imbalance,
                min_threshold.unwrap_or(f64::NEG_INFINITY),
                max_threshold.unwrap_or(f64::INFINITY),
            ),
        };
        Engine {
            mode,
            tick_rule: spec.sign == Sign::TickRule,
            alpha_ticks,
            alpha_imbalance,
            min,
            max,
            state,
        }
    }

    /// Feed trades (the next ones of the history); finished bars are appended to `out`.
    pub fn process(&mut self, t: Trades<'_>, out: &mut Vec<Bar>) {
        match (self.mode, self.tick_rule) {
            (TICK, false) => self.run::<TICK, false>(t, out),
            (TICK, true) => self.run::<TICK, true>(t, out),
            (VOLUME, false) => self.run::<VOLUME, false>(t, out),
            (VOLUME, true) => self.run::<VOLUME, true>(t, out),
            (DOLLAR, false) => self.run::<DOLLAR, false>(t, out),
            (DOLLAR, true) => self.run::<DOLLAR, true>(t, out),
            (TICK_IMB, false) => self.run::<TICK_IMB, false>(t, out),
            (TICK_IMB, true) => self.run::<TICK_IMB, true>(t, out),
            (VOLUME_IMB, false) => self.run::<VOLUME_IMB, false>(t, out),
            (VOLUME_IMB, true) => self.run::<VOLUME_IMB, true>(t, out),
            (DOLLAR_IMB, false) => self.run::<DOLLAR_IMB, false>(t, out),
            (_, tr) => {
                if tr {
                    self.run::<DOLLAR_IMB, true>(t, out)
                } else {
                    self.run::<DOLLAR_IMB, false>(t, out)
                }
            }
        }
    }

    #[inline(never)]
    fn run<const M: u8, const TR: bool>(&mut self, t: Trades<'_>, out: &mut Vec<Bar>) {
        let n = t.price.len();
        if n == 0 {
            return;
        }
        // Equal lengths up front, so the loop indexes without bounds checks.
        let (price, qty, time, bm) = (
            &t.price[..n],
            &t.qty[..n],
            &t.time[..n],
            &t.buyer_maker[..n],
        );
        let (at, ai, lo, hi) = (self.alpha_ticks, self.alpha_imbalance, self.min, self.max);
        let s = &mut self.state;
        // The accumulators live in locals (registers) for the loop and go back at the end.
        let mut ticks = s.ticks;
        let (mut open_time, mut close_time) = (s.open_time, s.close_time);
        let (mut open, mut high, mut low, mut close) = (s.open, s.high, s.low, s.close);
        let (mut volume, mut dollar, mut buy, mut theta) =
            (s.volume, s.dollar_volume, s.buy_volume, s.theta);
        let mut threshold = s.threshold;
        // Standard tick bars: `ticks >= threshold` for an integer count is `ticks >= ceil`.
        let tick_target = if threshold >= u64::MAX as f64 {
            u64::MAX
        } else {
            threshold.ceil() as u64
        };
        let mut last_p = s.last_price.unwrap_or(price[0]);
        let mut last_b = s.last_sign;
        // Aggressor signs go through small buffers, a block at a time: loaded from memory,
        // they are data to the compiler, which would otherwise see a 0/1 flag and turn the
        // updates into branches on it (a misprediction on every other flip of the order flow
        // costs more than the whole update).
        let mut signs = [0f64; BLOCK];
        let mut buys = [0f64; BLOCK];
        let mut base = 0;
        while base < n {
            let end = (base + BLOCK).min(n);
            if !TR {
                for ((b, w), m) in signs.iter_mut().zip(buys.iter_mut()).zip(&bm[base..end]) {
                    let m = *m as u8 as f64;
                    *b = 1.0 - 2.0 * m;
                    *w = 1.0 - m;
                }
            }
            // The block as slices of one length: the loops index them without bounds checks.
            let len = end - base;
            let (price, qty, time) = (&price[base..end], &qty[base..end], &time[base..end]);
            let (signs, buys) = (&signs[..len], &buys[..len]);
            let mut i = 0;
            // The inner loop runs until a bar closes and holds no call, so the accumulators
            // stay in registers (a call would clobber every float register and push them to
            // memory, putting a store-to-load round trip into each loop-carried sum).
            while i < len {
                if ticks == 0 {
                    open = price[i];
                    high = open;
                    low = open;
                    open_time = time[i];
                }
                let mut closed = false;
                while i < len {
                    let p = price[i];
                    let v = qty[i];
                    // b = ±1 and w = 1 when b = +1, else 0: b·x and w·v are exact.
                    let (b, w) = if TR {
                        // sign(p - p_prev), or the previous sign when unchanged, as arithmetic on
                        // 0/1 flags (price moves are a coin flip to a branch predictor).
                        let d = p - last_p;
                        last_p = p;
                        let up = (d > 0.0) as u8 as f64;
                        let down = (d < 0.0) as u8 as f64;
                        last_b = up - down + (1.0 - (up + down)) * last_b;
                        (last_b, 0.5 + 0.5 * last_b)
                    } else {
                        (signs[i], buys[i])
                    };
                    if p > high {
                        high = p;
                    }
                    if p < low {
                        low = p;
                    }
                    close = p;
                    close_time = time[i];
                    let pv = p * v;
                    volume += v;
                    dollar += pv;
                    buy += v * w;
                    ticks += 1;
                    i += 1;
                    closed = match M {
                        TICK => ticks >= tick_target,
                        VOLUME => volume >= threshold,
                        DOLLAR => dollar >= threshold,
                        TICK_IMB => {
                            theta += b;
                            theta.abs() >= threshold
                        }
                        VOLUME_IMB => {
                            theta += b * v;
                            theta.abs() >= threshold
                        }
                        _ => {
                            theta += b * pv;
                            theta.abs() >= threshold
                        }
                    };
                    if closed {
                        break;
                    }
                }
                if !closed {
                    break;
                }
                out.push(Bar {
                    bar: s.next_bar,
                    open_time,
                    close_time,
                    open,
                    high,
                    low,
                    close,
                    volume,
                    dollar_volume: dollar,
                    buy_volume: buy,
                    ticks,
                    imbalance: if M >= TICK_IMB { theta } else { 0.0 },
                    threshold,
                });
                s.next_bar += 1;
                if M >= TICK_IMB {
                    let nf = ticks as f64;
                    let (e_t, e_i) = match (s.e_t, s.e_i) {
                        (Some(e_t), Some(e_i)) => (
                            at * nf + (1.0 - at) * e_t,
                            ai * (theta / nf) + (1.0 - ai) * e_i,
                        ),
                        _ => (nf, theta / nf),
                    };
                    s.e_t = Some(e_t);
                    s.e_i = Some(e_i);
                    let raw = e_t * e_i.abs();
                    threshold = if raw < lo {
                        s.clamped_min += 1;
                        lo
                    } else if raw > hi {
                        s.clamped_max += 1;
                        hi
                    } else {
                        raw
                    };
                }
                ticks = 0;
                volume = 0.0;
                dollar = 0.0;
                buy = 0.0;
                theta = 0.0;
            }
            base = end;
        }
        s.ticks = ticks;
        s.open_time = open_time;
        s.close_time = close_time;
        (s.open, s.high, s.low, s.close) = (open, high, low, close);
        (s.volume, s.dollar_volume, s.buy_volume, s.theta) = (volume, dollar, buy, theta);
        s.threshold = threshold;
        if TR {
            s.last_price = Some(last_p);
            s.last_sign = last_b;
        }
        s.trades += n as u64;
    }
}

#[cfg(test)]
mod tests;
