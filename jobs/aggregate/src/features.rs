//! Section 1 of `features.md`, the numeric core: 1-minute candles → bars of length Δ with
//! microstructure features, funding and metrics joined as of each bar's `close_time` (the T+1ms
//! rule). Pure functions over sorted columns; no I/O, no Polars.

/// One minute, in µs.
pub use shared::time::MINUTE_US;
/// One millisecond, in µs.
pub const MS_US: i64 = 1_000;
/// How old a funding record may be at a bar's close.
pub const FUNDING_MAX_AGE_US: i64 = 24 * 3_600_000_000;
/// How old a metrics record may be at a bar's close.
pub const METRICS_MAX_AGE_US: i64 = 3_600_000_000;

/// 1-minute candles of one symbol, sorted by `open_time` (µs), unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Minutes {
    pub open_time: Vec<i64>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
    pub quote_volume: Vec<f64>,
    pub trades: Vec<i64>,
    pub taker_buy_volume: Vec<f64>,
    pub taker_buy_quote_volume: Vec<f64>,
}

impl Minutes {
    pub fn len(&self) -> usize {
        self.open_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open_time.is_empty()
    }

    /// No rows (the capacity stays).
    pub fn clear(&mut self) {
        self.open_time.clear();
        self.trades.clear();
        for c in self.f64_columns() {
            c.clear();
        }
    }

    /// Append rows `rows` of `other`.
    pub fn extend_from(&mut self, other: &Minutes, rows: std::ops::Range<usize>) {
        self.open_time
            .extend_from_slice(&other.open_time[rows.clone()]);
        self.open.extend_from_slice(&other.open[rows.clone()]);
        self.high.extend_from_slice(&other.high[rows.clone()]);
        self.low.extend_from_slice(&other.low[rows.clone()]);
        self.close.extend_from_slice(&other.close[rows.clone()]);
        self.volume.extend_from_slice(&other.volume[rows.clone()]);
        self.quote_volume
            .extend_from_slice(&other.quote_volume[rows.clone()]);
        self.trades.extend_from_slice(&other.trades[rows.clone()]);
        self.taker_buy_volume
            .extend_from_slice(&other.taker_buy_volume[rows.clone()]);
        self.taker_buy_quote_volume
            .extend_from_slice(&other.taker_buy_quote_volume[rows]);
    }

    fn f64_columns(&mut self) -> [&mut Vec<f64>; 8] {
        [
            &mut self.open,
            &mut self.high,
            &mut self.low,
            &mut self.close,
            &mut self.volume,
            &mut self.quote_volume,
            &mut self.taker_buy_volume,
            &mut self.taker_buy_quote_volume,
        ]
    }

    /// Keep the rows for which `keep(open_time)` holds.
    pub fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        let mask: Vec<bool> = self.open_time.iter().map(|&t| keep(t)).collect();
        fn f<T: Copy>(v: &mut Vec<T>, mask: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                mask[i - 1]
            });
        }
        f(&mut self.open_time, &mask);
        f(&mut self.open, &mask);
        f(&mut self.high, &mask);
        f(&mut self.low, &mask);
        f(&mut self.close, &mask);
        f(&mut self.volume, &mask);
        f(&mut self.quote_volume, &mask);
        f(&mut self.trades, &mask);
        f(&mut self.taker_buy_volume, &mask);
        f(&mut self.taker_buy_quote_volume, &mask);
    }
}

/// Settled funding records, sorted by `calc_time` (µs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Funding {
    pub calc_time: Vec<i64>,
    pub rate: Vec<f64>,
    pub interval_hours: Vec<i64>,
}

impl Funding {
    pub fn len(&self) -> usize {
        self.calc_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calc_time.is_empty()
    }

    /// No records (the capacity stays).
    pub fn clear(&mut self) {
        self.calc_time.clear();
        self.rate.clear();
        self.interval_hours.clear();
    }

    /// Append records `rows` of `other`.
    pub fn extend_from(&mut self, other: &Funding, rows: std::ops::Range<usize>) {
        self.calc_time
            .extend_from_slice(&other.calc_time[rows.clone()]);
        self.rate.extend_from_slice(&other.rate[rows.clone()]);
        self.interval_hours
            .extend_from_slice(&other.interval_hours[rows]);
    }
}

/// Metrics records, sorted by `snapshot_time` (µs); a blank cell is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub snapshot_time: Vec<i64>,
    pub open_interest: Vec<Option<f64>>,
    pub open_interest_value: Vec<Option<f64>>,
    pub top_trader_account_ls_ratio: Vec<Option<f64>>,
    pub top_trader_position_ls_ratio: Vec<Option<f64>>,
    pub account_ls_ratio: Vec<Option<f64>>,
    pub taker_ls_volume_ratio: Vec<Option<f64>>,
}

impl Metrics {
    pub fn len(&self) -> usize {
        self.snapshot_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot_time.is_empty()
    }

    fn values(&mut self) -> [&mut Vec<Option<f64>>; 6] {
        [
            &mut self.open_interest,
            &mut self.open_interest_value,
            &mut self.top_trader_account_ls_ratio,
            &mut self.top_trader_position_ls_ratio,
            &mut self.account_ls_ratio,
            &mut self.taker_ls_volume_ratio,
        ]
    }

    /// No records (the capacity stays).
    pub fn clear(&mut self) {
        self.snapshot_time.clear();
        for v in self.values() {
            v.clear();
        }
    }

    /// Append records `rows` of `other`.
    pub fn extend_from(&mut self, other: &Metrics, rows: std::ops::Range<usize>) {
        self.snapshot_time
            .extend_from_slice(&other.snapshot_time[rows.clone()]);
        let from = [
            &other.open_interest,
            &other.open_interest_value,
            &other.top_trader_account_ls_ratio,
            &other.top_trader_position_ls_ratio,
            &other.account_ls_ratio,
            &other.taker_ls_volume_ratio,
        ];
        for (to, from) in self.values().into_iter().zip(from) {
            to.extend_from_slice(&from[rows.clone()]);
        }
    }
}

/// Calls the macro `$m` with every column of [`Bars`], in order: the one list the row helpers
/// below share.
macro_rules! bar_columns {
    ($m:ident) => {
        $m!(
            open_time,
            open,
            high,
            low,
            close,
            volume,
            quote_volume,
            trades,
            taker_buy_volume,
            taker_buy_quote_volume,
            minutes,
            vwap,
            vwap_deviation,
            realized_vol,
            realized_variance,
            volume_cv,
            taker_buy_ratio,
            parkinson_vol,
            garman_klass_vol,
            funding_rate,
            funding_interval_hours,
            open_interest,
            open_interest_value,
            top_trader_account_ls_ratio,
            top_trader_position_ls_ratio,
            account_ls_ratio,
            taker_ls_volume_ratio
        )
    };
}

/// The output rows, column by column, in `features.md` order. A nullable float column holds
/// NaN for null ([`NULL`]): no value a bar computes is NaN ([`finite`] turns NaN and ±∞ into
/// null), and the column moves into Polars as it is, with a validity mask, not as a copy.
#[derive(Debug, Clone, Default)]
pub struct Bars {
    pub open_time: Vec<i64>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
    pub quote_volume: Vec<f64>,
    pub trades: Vec<i64>,
    pub taker_buy_volume: Vec<f64>,
    pub taker_buy_quote_volume: Vec<f64>,
    pub minutes: Vec<i64>,
    pub vwap: Vec<f64>,
    pub vwap_deviation: Vec<f64>,
    pub realized_vol: Vec<f64>,
    pub realized_variance: Vec<f64>,
    pub volume_cv: Vec<f64>,
    pub taker_buy_ratio: Vec<f64>,
    pub parkinson_vol: Vec<f64>,
    pub garman_klass_vol: Vec<f64>,
    pub funding_rate: Vec<f64>,
    pub funding_interval_hours: Vec<Option<i64>>,
    pub open_interest: Vec<f64>,
    pub open_interest_value: Vec<f64>,
    pub top_trader_account_ls_ratio: Vec<f64>,
    pub top_trader_position_ls_ratio: Vec<f64>,
    pub account_ls_ratio: Vec<f64>,
    pub taker_ls_volume_ratio: Vec<f64>,
}

/// Null in a nullable float column of [`Bars`].
pub const NULL: f64 = f64::NAN;

/// The same value, bit for bit (so NaN, a null, equals NaN).
trait Same {
    fn same(&self, other: &Self) -> bool;
}

impl Same for f64 {
    fn same(&self, other: &f64) -> bool {
        self.to_bits() == other.to_bits()
    }
}

impl Same for i64 {
    fn same(&self, other: &i64) -> bool {
        self == other
    }
}

impl Same for Option<i64> {
    fn same(&self, other: &Option<i64>) -> bool {
        self == other
    }
}

/// Bars are equal when every column holds the same values, bit for bit.
impl PartialEq for Bars {
    fn eq(&self, other: &Bars) -> bool {
        macro_rules! same {
            ($($f:ident),*) => {
                true $( && self.$f.len() == other.$f.len()
                    && self.$f.iter().zip(&other.$f).all(|(a, b)| a.same(b)) )*
            };
        }
        bar_columns!(same)
    }
}

impl Bars {
    pub fn len(&self) -> usize {
        self.open_time.len()
    }

    /// No rows, room for `n` in every column.
    pub fn with_capacity(n: usize) -> Bars {
        let mut b = Bars::default();
        macro_rules! reserve {
            ($($f:ident),*) => { $( b.$f.reserve_exact(n); )* };
        }
        bar_columns!(reserve);
        b
    }

    /// Append row `i` of `other`.
    pub fn push_row(&mut self, other: &Bars, i: usize) {
        macro_rules! push {
            ($($f:ident),*) => { $( self.$f.push(other.$f[i]); )* };
        }
        bar_columns!(push);
    }

    /// Rows of `a` and `b` interleaved by `open_time` (both sorted, disjoint).
    pub fn merge(a: Bars, b: Bars) -> Bars {
        if a.is_empty() {
            return b;
        }
        if b.is_empty() {
            return a;
        }
        let mut out = Bars::default();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a.open_time[i] < b.open_time[j]) {
                out.push_row(&a, i);
                i += 1;
            } else {
                out.push_row(&b, j);
                j += 1;
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.open_time.is_empty()
    }

    /// `parts` (each sorted, their time ranges disjoint) as one, in `open_time` order.
    pub fn concat(mut parts: Vec<Bars>) -> Bars {
        parts.retain(|p| !p.is_empty());
        parts.sort_by_key(|p| p.open_time[0]);
        if parts.len() == 1 {
            return parts.pop().expect("one part");
        }
        let mut out = Bars::with_capacity(parts.iter().map(Bars::len).sum());
        for p in parts {
            macro_rules! extend {
                ($($f:ident),*) => { $( out.$f.extend_from_slice(&p.$f); )* };
            }
            bar_columns!(extend);
        }
        out
    }
}

/// A finite value, or null: nothing NaN or infinite reaches the output.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { NULL }
}

/// Bars of length `delta_us` (which divides a day) whose open time lies in `[from_us, to_us)`,
/// from `m`, which may hold minutes before `from_us` (the minute just before it gives the first
/// minute's return) and after `to_us` (ignored). Joins `funding` and `metrics` when given.
pub fn compute(
    m: &Minutes,
    funding: Option<&Funding>,
    metrics: Option<&Metrics>,
    delta_us: i64,
    from_us: i64,
    to_us: i64,
) -> Bars {
    let n = m.len();
    // Room for every bar of the range that can hold a minute.
    let span = (to_us.saturating_sub(from_us)).max(0) / delta_us + 1;
    let mut out = Bars::with_capacity((span as usize).min(n));
    let minutes_per_bar = (delta_us / MINUTE_US) as f64;
    let ln2 = std::f64::consts::LN_2;
    let gk_c = 2.0 * ln2 - 1.0;
    let mut i = m.open_time.partition_point(|&t| t < from_us);
    // The as-of cursors start past every record before `from_us` (each is at or before every
    // close time here): a month's call does not scan the year's records before it.
    let mut fi = funding.map_or(0, |f| f.calc_time.partition_point(|&t| t < from_us));
    let mut mi = metrics.map_or(0, |mt| mt.snapshot_time.partition_point(|&t| t < from_us));
    let per_bar = delta_us.div_euclid(MINUTE_US) as usize;
    let mut returns: Vec<f64> = Vec::with_capacity(per_bar);
    // ln(high/low) and ln(close/open) of the bar's minutes: the logarithms are taken in a loop
    // of their own, so the accumulating loop below makes no calls (a call spills every
    // accumulator to the stack and back).
    let (mut lhl, mut lco): (Vec<f64>, Vec<f64>) =
        (Vec::with_capacity(per_bar), Vec::with_capacity(per_bar));
    while i < n && m.open_time[i] < to_us {
        let t = m.open_time[i].div_euclid(delta_us) * delta_us;
        let end = t + delta_us;
        let a = i;
        while i < n && m.open_time[i] < end {
            i += 1;
        }
        let b = i;
        returns.clear();
        lhl.clear();
        lco.clear();
        for k in a..b {
            // Three logarithms per minute are most of the arithmetic; two are often known. A
            // minute that opens at the previous close (the usual case) has ln(close/open) equal,
            // bit for bit, to its return; a flat minute has ln(high/low) = ln(1) = 0 exactly.
            let consecutive = k > 0 && m.open_time[k - 1] == m.open_time[k] - MINUTE_US;
            let chained = k > 0 && m.open[k].to_bits() == m.close[k - 1].to_bits();
            let r = if consecutive || chained {
                (m.close[k] / m.close[k - 1]).ln()
            } else {
                f64::NAN
            };
            let hl_ratio = m.high[k] / m.low[k];
            lhl.push(if hl_ratio == 1.0 { 0.0 } else { hl_ratio.ln() });
            lco.push(if chained {
                r
            } else {
                (m.close[k] / m.open[k]).ln()
            });
            if consecutive {
                returns.push(r);
            }
        }
        // Every sum of the bar in one loop, each accumulated in minute order as its definition
        // reads (the same bits as one loop per sum): a sum is a chain of dependent additions,
        // and a loop of one chain waits on each addition's latency where one of many does not.
        let (mut high, mut low) = (f64::NEG_INFINITY, f64::INFINITY);
        let (mut volume, mut quote_volume, mut tbv, mut tbqv) = (0.0, 0.0, 0.0, 0.0);
        let mut trades = 0i64;
        let (mut park, mut gk) = (0.0, 0.0);
        for ((k, hl), co) in (a..b).zip(&lhl).zip(&lco) {
            high = high.max(m.high[k]);
            low = low.min(m.low[k]);
            volume += m.volume[k];
            quote_volume += m.quote_volume[k];
            trades += m.trades[k];
            tbv += m.taker_buy_volume[k];
            tbqv += m.taker_buy_quote_volume[k];
            park += hl * hl;
            gk += 0.5 * hl * hl - gk_c * co * co;
        }
        // The returns' sum and sum of squares in one loop too; both start where `Iterator::sum`
        // does (-0.0, which leaves any first term unchanged).
        let (mut sum_r, mut sum_rr) = (-0.0f64, -0.0f64);
        for r in &returns {
            sum_r += r;
            sum_rr += r * r;
        }
        let close = m.close[b - 1];
        let vwap = if volume != 0.0 {
            finite(quote_volume / volume)
        } else {
            NULL
        };
        out.open_time.push(t);
        out.open.push(m.open[a]);
        out.high.push(high);
        out.low.push(low);
        out.close.push(close);
        out.volume.push(volume);
        out.quote_volume.push(quote_volume);
        out.trades.push(trades);
        out.taker_buy_volume.push(tbv);
        out.taker_buy_quote_volume.push(tbqv);
        out.minutes.push((b - a) as i64);
        out.vwap.push(vwap);
        out.vwap_deviation.push(if vwap.is_nan() || vwap == 0.0 {
            NULL
        } else {
            finite((close - vwap) / vwap)
        });
        // The sample standard deviations (ddof = 1) of the returns and of the minutes' volumes:
        // the squared deviations from each mean, summed in order, both in one loop (there are
        // never more returns than minutes). `volume` started at 0.0, not -0.0: the two differ
        // only when every volume is -0.0, and then so is every deviation from the mean.
        let (n_r, n_v) = (returns.len(), b - a);
        let (mean_r, mean_vol) = (sum_r / n_r as f64, volume / n_v as f64);
        let (mut ss_r, mut ss_v) = (-0.0f64, -0.0f64);
        for (i, v) in m.volume[a..b].iter().enumerate() {
            ss_v += (v - mean_vol) * (v - mean_vol);
            if let Some(r) = returns.get(i) {
                ss_r += (r - mean_r) * (r - mean_r);
            }
        }
        out.realized_vol.push(if n_r < 2 {
            NULL
        } else {
            finite((ss_r / (n_r - 1) as f64).sqrt() * minutes_per_bar.sqrt())
        });
        out.realized_variance.push(if returns.is_empty() {
            NULL
        } else {
            finite(sum_rr)
        });
        out.volume_cv.push(if n_v < 2 || mean_vol == 0.0 {
            NULL
        } else {
            finite((ss_v / (n_v - 1) as f64).sqrt() / mean_vol)
        });
        out.taker_buy_ratio.push(if volume != 0.0 {
            finite(tbv / volume)
        } else {
            NULL
        });
        out.parkinson_vol.push(finite((park / (4.0 * ln2)).sqrt()));
        out.garman_klass_vol.push(finite(gk.max(0.0).sqrt()));

        // As-of joins on close_time: the latest record at or before it, if fresh enough.
        let close_time = t + delta_us - MS_US;
        let (rate, hours) = match funding {
            Some(f) => {
                while fi < f.calc_time.len() && f.calc_time[fi] <= close_time {
                    fi += 1;
                }
                match fi.checked_sub(1) {
                    Some(j) if close_time - f.calc_time[j] <= FUNDING_MAX_AGE_US => {
                        (finite(f.rate[j]), Some(f.interval_hours[j]))
                    }
                    _ => (NULL, None),
                }
            }
            None => (NULL, None),
        };
        out.funding_rate.push(rate);
        out.funding_interval_hours.push(hours);
        let rec = match metrics {
            Some(mt) => {
                while mi < mt.snapshot_time.len() && mt.snapshot_time[mi] <= close_time {
                    mi += 1;
                }
                match mi.checked_sub(1) {
                    Some(j) if close_time - mt.snapshot_time[j] <= METRICS_MAX_AGE_US => Some(j),
                    _ => None,
                }
            }
            None => None,
        };
        let pick = |col: fn(&Metrics) -> &Vec<Option<f64>>| {
            rec.and_then(|j| metrics.and_then(|mt| col(mt)[j]))
                .map_or(NULL, finite)
        };
        out.open_interest.push(pick(|mt| &mt.open_interest));
        out.open_interest_value
            .push(pick(|mt| &mt.open_interest_value));
        out.top_trader_account_ls_ratio
            .push(pick(|mt| &mt.top_trader_account_ls_ratio));
        out.top_trader_position_ls_ratio
            .push(pick(|mt| &mt.top_trader_position_ls_ratio));
        out.account_ls_ratio.push(pick(|mt| &mt.account_ls_ratio));
        out.taker_ls_volume_ratio
            .push(pick(|mt| &mt.taker_ls_volume_ratio));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01 00:00 UTC, in µs.
    const T0: i64 = 1_704_067_200_000_000;
    const H: i64 = 3_600_000_000;

    /// (minute offset from T0, open, high, low, close, volume, quote volume, trades, taker
    /// buy volume, taker buy quote volume)
    type Row = (i64, f64, f64, f64, f64, f64, f64, i64, f64, f64);

    fn minutes(rows: &[Row]) -> Minutes {
        let mut m = Minutes::default();
        for r in rows {
            m.open_time.push(T0 + r.0 * MINUTE_US);
            m.open.push(r.1);
            m.high.push(r.2);
            m.low.push(r.3);
            m.close.push(r.4);
            m.volume.push(r.5);
            m.quote_volume.push(r.6);
            m.trades.push(r.7);
            m.taker_buy_volume.push(r.8);
            m.taker_buy_quote_volume.push(r.9);
        }
        m
    }

    /// A nullable column's value as an option (NaN is null).
    fn opt(x: f64) -> Option<f64> {
        (!x.is_nan()).then_some(x)
    }

    fn opts(v: &[f64]) -> Vec<Option<f64>> {
        v.iter().copied().map(opt).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    fn sample() -> Minutes {
        minutes(&[
            (-1, 100.0, 101.0, 99.0, 100.0, 1.0, 100.0, 1, 0.5, 50.0),
            (0, 100.0, 102.0, 99.0, 101.0, 2.0, 202.0, 3, 1.0, 101.0),
            (1, 101.0, 103.0, 100.0, 102.0, 4.0, 408.0, 5, 3.0, 306.0),
            // 00:02 is missing: 00:03 has no return.
            (3, 102.0, 104.0, 101.0, 103.0, 6.0, 618.0, 2, 0.0, 0.0),
        ])
    }

    #[test]
    fn every_column_of_a_bar_by_hand() {
        let b = compute(&sample(), None, None, H, T0, T0 + H);
        assert_eq!(b.len(), 1);
        assert_eq!(b.open_time, vec![T0]);
        assert_eq!(
            (b.open[0], b.high[0], b.low[0], b.close[0]),
            (100.0, 104.0, 99.0, 103.0)
        );
        assert_eq!(
            (b.volume[0], b.quote_volume[0], b.trades[0]),
            (12.0, 1228.0, 10)
        );
        assert_eq!(
            (b.taker_buy_volume[0], b.taker_buy_quote_volume[0]),
            (4.0, 407.0)
        );
        assert_eq!(b.minutes[0], 3);
        let vwap = 1228.0 / 12.0;
        assert!(close(b.vwap[0], vwap));
        assert!(close(b.vwap_deviation[0], (103.0 - vwap) / vwap));
        // Returns: 00:00 over 23:59 (the previous bar's minute), 00:01 over 00:00.
        let (r1, r2) = ((101.0f64 / 100.0).ln(), (102.0f64 / 101.0).ln());
        let mean = (r1 + r2) / 2.0;
        let sd = (((r1 - mean).powi(2) + (r2 - mean).powi(2)) / 1.0).sqrt();
        assert!(close(b.realized_vol[0], sd * 60f64.sqrt()));
        assert!(close(b.realized_variance[0], r1 * r1 + r2 * r2));
        // Volumes 2, 4, 6: mean 4, sample std 2.
        assert!(close(b.volume_cv[0], 0.5));
        assert!(close(b.taker_buy_ratio[0], 4.0 / 12.0));
        let hl = [
            (102.0f64 / 99.0).ln(),
            (103.0f64 / 100.0).ln(),
            (104.0f64 / 101.0).ln(),
        ];
        let co = [
            (101.0f64 / 100.0).ln(),
            (102.0f64 / 101.0).ln(),
            (103.0f64 / 102.0).ln(),
        ];
        let park = (hl.iter().map(|x| x * x).sum::<f64>() / (4.0 * 2f64.ln())).sqrt();
        assert!(close(b.parkinson_vol[0], park));
        let gk: f64 = (0..3)
            .map(|i| 0.5 * hl[i] * hl[i] - (2.0 * 2f64.ln() - 1.0) * co[i] * co[i])
            .sum();
        assert!(close(b.garman_klass_vol[0], gk.max(0.0).sqrt()));
        // No funding or metrics given: null.
        assert_eq!(opt(b.funding_rate[0]), None);
        assert_eq!(b.funding_interval_hours[0], None);
        assert_eq!(opt(b.open_interest[0]), None);
    }

    #[test]
    fn null_rules_zero_volume_single_minute_and_first_minute_of_history() {
        // Bar 0: the first minute of the history alone, zero volume, flat.
        // Bar 1: one minute whose previous minute (the last of bar 0) exists.
        let m = minutes(&[
            (59, 100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0, 0.0, 0.0),
            (60, 100.0, 101.0, 99.0, 101.0, 3.0, 300.0, 2, 1.0, 100.0),
        ]);
        let b = compute(&m, None, None, H, T0, T0 + 2 * H);
        assert_eq!(b.len(), 2);
        assert_eq!(b.minutes, vec![1, 1]);
        // Zero volume: vwap, its deviation and the taker ratio are null, not 0 or NaN.
        assert_eq!(
            (
                opt(b.vwap[0]),
                opt(b.vwap_deviation[0]),
                opt(b.taker_buy_ratio[0])
            ),
            (None, None, None)
        );
        // The first minute of the history has no return: no variance, no vol.
        assert_eq!(
            (opt(b.realized_variance[0]), opt(b.realized_vol[0])),
            (None, None)
        );
        // One minute: no volume_cv; a flat candle has zero range.
        assert_eq!(opt(b.volume_cv[0]), None);
        assert_eq!(opt(b.parkinson_vol[0]), Some(0.0));
        assert_eq!(opt(b.garman_klass_vol[0]), Some(0.0));
        // Bar 1: one return (over bar 0's minute): a variance, but no std of one value.
        let r = (101.0f64 / 100.0).ln();
        assert!(close(b.realized_variance[1], r * r));
        assert_eq!(opt(b.realized_vol[1]), None);
        assert_eq!(opt(b.volume_cv[1]), None);
        assert!(close(b.vwap[1], 100.0));
        // A bar with no minute is not emitted: nothing between them, nothing after.
        assert_eq!(b.open_time, vec![T0, T0 + H]);
    }

    #[test]
    fn funding_joins_as_of_close_time_within_24h_whatever_the_interval() {
        let m = minutes(
            &(0..6 * 60)
                .map(|i| (i, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 0.0, 0.0))
                .collect::<Vec<_>>(),
        );
        let f = Funding {
            // 8h-interval record 30h before T0 (too old for every bar), a 4h record at T0 - 1h,
            // a 1h record 3 ms after 01:59:59.999 (01:00 bar's close): it settles after that
            // close, so the 01:00 bar still sees the previous one.
            calc_time: vec![T0 - 30 * H, T0 - H, T0 + 2 * H + 2_000, T0 + 4 * H - 1_000],
            rate: vec![0.3, 0.0001, -0.0002, 0.0005],
            interval_hours: vec![8, 4, 1, 1],
        };
        let b = compute(&m, Some(&f), None, H, T0, T0 + 6 * H);
        assert_eq!(b.len(), 6);
        assert_eq!(
            opts(&b.funding_rate),
            vec![
                Some(0.0001),
                Some(0.0001),
                Some(-0.0002),
                Some(0.0005),
                Some(0.0005),
                Some(0.0005)
            ]
        );
        assert_eq!(b.funding_interval_hours[0], Some(4));
        assert_eq!(b.funding_interval_hours[3], Some(1));
        // Only the 30h-old record: null from the first bar.
        let old = Funding {
            calc_time: vec![T0 - 30 * H],
            rate: vec![0.3],
            interval_hours: vec![8],
        };
        let b = compute(&m, Some(&old), None, H, T0, T0 + 6 * H);
        assert!(b.funding_rate.iter().all(|x| x.is_nan()));
        // Exactly 24h old at the close is still fresh.
        let edge = Funding {
            calc_time: vec![T0 + H - 1_000 - FUNDING_MAX_AGE_US],
            rate: vec![0.1],
            interval_hours: vec![8],
        };
        let b = compute(&m, Some(&edge), None, H, T0, T0 + 6 * H);
        assert_eq!(opt(b.funding_rate[0]), Some(0.1));
        assert_eq!(opt(b.funding_rate[1]), None);
    }

    #[test]
    fn metrics_join_within_an_hour_and_a_blank_cell_stays_null() {
        let m = minutes(
            &(0..3 * 60)
                .map(|i| (i, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 0.0, 0.0))
                .collect::<Vec<_>>(),
        );
        let five = 300_000_000;
        let mt = Metrics {
            // 00:55 (fresh for the 00:00 bar), 01:00 exactly (the 01:00 bar's start: after the
            // 00:00 bar's close) with a blank long/short ratio and a NaN taker ratio, nothing
            // after 01:00.
            snapshot_time: vec![T0 + 11 * five, T0 + H],
            open_interest: vec![Some(10.0), Some(11.0)],
            open_interest_value: vec![Some(100.0), Some(110.0)],
            top_trader_account_ls_ratio: vec![Some(1.5), Some(1.6)],
            top_trader_position_ls_ratio: vec![Some(1.1), Some(1.2)],
            account_ls_ratio: vec![Some(0.9), None],
            taker_ls_volume_ratio: vec![Some(1.0), Some(f64::NAN)],
        };
        let b = compute(&m, None, Some(&mt), H, T0, T0 + 3 * H);
        assert_eq!(opts(&b.open_interest), vec![Some(10.0), Some(11.0), None]);
        assert_eq!(
            opts(&b.open_interest_value),
            vec![Some(100.0), Some(110.0), None]
        );
        assert_eq!(opt(b.top_trader_account_ls_ratio[1]), Some(1.6));
        assert_eq!(opt(b.top_trader_position_ls_ratio[0]), Some(1.1));
        // Blank in the record used: null, not the older 0.9.
        assert_eq!(opts(&b.account_ls_ratio), vec![Some(0.9), None, None]);
        // NaN in the record used: null too (never NaN, never the older value).
        assert_eq!(opts(&b.taker_ls_volume_ratio), vec![Some(1.0), None, None]);
    }

    /// A deterministic, irregular series over `days` days from T0 (gaps included).
    fn series(days: i64) -> (Minutes, Funding, Metrics) {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut m = Minutes::default();
        let mut price = 100.0;
        for i in 0..days * 1440 {
            if next() < 0.02 {
                continue; // a missing minute
            }
            let o = price;
            price *= 1.0 + (next() - 0.5) * 0.002;
            let v = if next() < 0.05 { 0.0 } else { next() * 10.0 };
            m.open_time.push(T0 + i * MINUTE_US);
            m.open.push(o);
            m.high.push(o.max(price) * (1.0 + next() * 0.001));
            m.low.push(o.min(price) * (1.0 - next() * 0.001));
            m.close.push(price);
            m.volume.push(v);
            m.quote_volume.push(v * price);
            m.trades.push((v * 3.0) as i64);
            m.taker_buy_volume.push(v * next());
            m.taker_buy_quote_volume.push(v * price * 0.5);
        }
        let mut f = Funding::default();
        for k in 0..days * 3 {
            f.calc_time.push(T0 + k * 8 * H + (next() * 5_000.0) as i64);
            f.rate.push((next() - 0.5) * 0.001);
            f.interval_hours.push(8);
        }
        let mut mt = Metrics::default();
        for k in 0..days * 288 {
            mt.snapshot_time.push(T0 + k * 300_000_000);
            let blank = next() < 0.1;
            mt.open_interest.push(Some(1e4 + next()));
            mt.open_interest_value.push(Some(1e6 * next()));
            mt.top_trader_account_ls_ratio.push(Some(next() * 2.0));
            mt.top_trader_position_ls_ratio.push(Some(next() * 2.0));
            mt.account_ls_ratio.push((!blank).then(|| next() * 2.0));
            mt.taker_ls_volume_ratio.push(Some(next() * 2.0));
        }
        (m, f, mt)
    }

    #[test]
    fn changing_inputs_after_t_leaves_every_row_closed_before_t_unchanged() {
        let (m, f, mt) = series(3);
        let full = compute(&m, Some(&f), Some(&mt), H, T0, T0 + 3 * 24 * H);
        // T: 1 day, 13 h, 17 min and 20 s in (mid-bar, mid-minute).
        let t = T0 + 37 * H + 17 * MINUTE_US + 20_000_000;
        let (mut m2, mut f2, mut mt2) = (m.clone(), f.clone(), mt.clone());
        for i in 0..m2.len() {
            if m2.open_time[i] > t {
                m2.close[i] *= 1.5;
                m2.high[i] *= 2.0;
                m2.volume[i] += 7.0;
                m2.quote_volume[i] += 700.0;
            }
        }
        // Drop some later minutes entirely, too.
        m2.retain(|ot| !(ot > t && (ot / MINUTE_US) % 7 == 0));
        for i in 0..f2.calc_time.len() {
            if f2.calc_time[i] > t {
                f2.rate[i] = 9.0;
            }
        }
        for i in 0..mt2.snapshot_time.len() {
            if mt2.snapshot_time[i] > t {
                mt2.open_interest[i] = None;
                mt2.account_ls_ratio[i] = Some(-1.0);
            }
        }
        let changed = compute(&m2, Some(&f2), Some(&mt2), H, T0, T0 + 3 * 24 * H);
        let mut compared = 0;
        for i in 0..full.len() {
            let close_time = full.open_time[i] + H - MS_US;
            if close_time >= t {
                continue;
            }
            let mut a = Bars::default();
            let mut b = Bars::default();
            a.push_row(&full, i);
            b.push_row(&changed, i);
            assert_eq!(a, b, "row {i} closes before T but changed");
            compared += 1;
        }
        assert_eq!(compared, 37);
        // And the perturbation does reach the rows after T.
        assert_ne!(full.close[40], changed.close[40]);
    }

    /// The dispersion features as features.md words them, one pass per sum and `Iterator::sum`
    /// throughout: what `compute`'s fused loops must match bit for bit.
    fn dispersion_by_definition(m: &Minutes, a: usize, b: usize) -> [f64; 5] {
        let std = |xs: &[f64]| {
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        let returns: Vec<f64> = (a..b)
            .filter(|&k| k > 0 && m.open_time[k - 1] == m.open_time[k] - MINUTE_US)
            .map(|k| (m.close[k] / m.close[k - 1]).ln())
            .collect();
        let hl: Vec<f64> = (a..b).map(|k| (m.high[k] / m.low[k]).ln()).collect();
        let co: Vec<f64> = (a..b).map(|k| (m.close[k] / m.open[k]).ln()).collect();
        let gk_c = 2.0 * std::f64::consts::LN_2 - 1.0;
        let volume: f64 = m.volume[a..b].iter().sum();
        [
            if returns.len() < 2 {
                NULL
            } else {
                std(&returns) * 60f64.sqrt()
            },
            if returns.is_empty() {
                NULL
            } else {
                returns.iter().map(|r| r * r).sum()
            },
            if b - a < 2 || volume == 0.0 {
                NULL
            } else {
                std(&m.volume[a..b]) / (volume / (b - a) as f64)
            },
            (hl.iter().map(|x| x * x).sum::<f64>() / (4.0 * std::f64::consts::LN_2)).sqrt(),
            hl.iter()
                .zip(&co)
                .map(|(h, c)| 0.5 * h * h - gk_c * c * c)
                .sum::<f64>()
                .max(0.0)
                .sqrt(),
        ]
    }

    #[test]
    fn fused_sums_give_the_bits_of_one_pass_per_sum() {
        // Three days with missing minutes, zero volumes and minutes that do not open at the
        // previous close (the series' opens are the previous close; every 7th is moved).
        let (mut m, _, _) = series(3);
        for k in (0..m.len()).step_by(7) {
            m.open[k] *= 1.0 + 1e-4;
            m.high[k] = m.high[k].max(m.open[k]);
        }
        let b = compute(&m, None, None, H, T0, T0 + 72 * H);
        assert_eq!(b.len(), 72);
        let bits = |x: f64| if x.is_nan() { u64::MAX } else { x.to_bits() };
        for i in 0..b.len() {
            let a = m.open_time.partition_point(|&t| t < b.open_time[i]);
            let e = m.open_time.partition_point(|&t| t < b.open_time[i] + H);
            let want = dispersion_by_definition(&m, a, e);
            let got = [
                b.realized_vol[i],
                b.realized_variance[i],
                b.volume_cv[i],
                b.parkinson_vol[i],
                b.garman_klass_vol[i],
            ];
            assert_eq!(
                got.map(bits),
                want.map(bits),
                "bar {i}: {got:?} against {want:?}"
            );
        }
    }

    #[test]
    fn day_by_day_equals_one_pass_and_other_lengths_align() {
        let (m, f, mt) = series(3);
        let day = 24 * H;
        let whole = compute(&m, Some(&f), Some(&mt), H, T0, T0 + 3 * day);
        let mut parts = Bars::default();
        for d in [2, 0, 1] {
            let p = compute(&m, Some(&f), Some(&mt), H, T0 + d * day, T0 + (d + 1) * day);
            parts = Bars::merge(parts, p);
        }
        assert_eq!(parts, whole);
        assert_eq!(whole.len(), 72);
        for (delta, n) in [(15 * MINUTE_US, 3 * 96), (4 * H, 18), (day, 3)] {
            let b = compute(&m, Some(&f), Some(&mt), delta, T0, T0 + 3 * day);
            assert_eq!(b.len(), n);
            assert!(b.open_time.iter().all(|t| t % delta == 0));
            assert_eq!(
                b.volume.iter().sum::<f64>().round(),
                whole.volume.iter().sum::<f64>().round()
            );
            assert_eq!(
                b.minutes.iter().sum::<i64>(),
                whole.minutes.iter().sum::<i64>()
            );
            assert!(b.minutes.iter().all(|&k| k >= 1 && k <= delta / MINUTE_US));
        }
        // A 4h bar's figures from its own minutes.
        let b4 = compute(&m, None, None, 4 * H, T0, T0 + 4 * H);
        let n = m.open_time.partition_point(|&t| t < T0 + 4 * H);
        assert_eq!(b4.minutes[0], n as i64);
        assert_eq!(
            b4.high[0],
            m.high[..n].iter().cloned().fold(f64::MIN, f64::max)
        );
        assert_eq!(b4.close[0], m.close[n - 1]);
    }
}
