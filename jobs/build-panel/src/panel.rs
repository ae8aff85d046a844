//! Section 2 of `features.md`, the numeric core: per-symbol hourly feature rows → listing
//! intervals, bounded forward fill, time-series factors, then, over the universe, the coverage
//! filter, the cross-sectional factors and the null-row policy. Pure functions over plain
//! columns; no I/O, no Polars (`frame.rs` converts, `lib.rs` reads and writes).
//!
//! Rules this module fixes where the spec is silent (README "build" repeats them):
//! - The time-series part (steps 1–3) runs on each symbol's whole loaded history, independent of
//!   the universe: a symbol entering a `top-funding` universe brings its lags and rolling windows
//!   with it. The universe then removes the rows of hours at which the symbol is not a member,
//!   before the coverage filter (4), the cross-section (5) and the null policy (6).
//! - Coverage base `all` at hour `t` is the number of universe members at `t` (see
//!   [`Universe`]); base `listed` is the number of those members whose listing interval contains
//!   `t`. An hour whose base is 0 has no rows and is not counted.
//! - Hours counted in [`Stats`] are hours with at least one member row in the requested range.
//! - A division by zero anywhere (a zero close as a lag, a zero ATR, a zero mean) gives null.

use std::cmp::Ordering;

/// One hour, in µs.
pub use shared::time::HOUR_US;

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    F64,
    I64,
}

/// What a forward-filled row holds in a column (features.md §2 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// `open = high = low = close = previous close`.
    PrevClose,
    /// Volumes, counts and `minutes`: 0.
    Zero,
    /// Funding and the six metrics columns: copied from the previous real row, nulls included.
    Copy,
    /// Every other column: null.
    Null,
}

/// The columns of features.md §1 after `open_time`, in order, with their storage and fill rule.
pub const COLUMNS: [(&str, Kind, Fill); 26] = [
    ("open", Kind::F64, Fill::PrevClose),
    ("high", Kind::F64, Fill::PrevClose),
    ("low", Kind::F64, Fill::PrevClose),
    ("close", Kind::F64, Fill::PrevClose),
    ("volume", Kind::F64, Fill::Zero),
    ("quote_volume", Kind::F64, Fill::Zero),
    ("trades", Kind::I64, Fill::Zero),
    ("taker_buy_volume", Kind::F64, Fill::Zero),
    ("taker_buy_quote_volume", Kind::F64, Fill::Zero),
    ("minutes", Kind::I64, Fill::Zero),
    ("vwap", Kind::F64, Fill::Null),
    ("vwap_deviation", Kind::F64, Fill::Null),
    ("realized_vol", Kind::F64, Fill::Null),
    ("realized_variance", Kind::F64, Fill::Null),
    ("volume_cv", Kind::F64, Fill::Null),
    ("taker_buy_ratio", Kind::F64, Fill::Null),
    ("parkinson_vol", Kind::F64, Fill::Null),
    ("garman_klass_vol", Kind::F64, Fill::Null),
    ("funding_rate", Kind::F64, Fill::Copy),
    ("funding_interval_hours", Kind::I64, Fill::Copy),
    ("open_interest", Kind::F64, Fill::Copy),
    ("open_interest_value", Kind::F64, Fill::Copy),
    ("top_trader_account_ls_ratio", Kind::F64, Fill::Copy),
    ("top_trader_position_ls_ratio", Kind::F64, Fill::Copy),
    ("account_ls_ratio", Kind::F64, Fill::Copy),
    ("taker_ls_volume_ratio", Kind::F64, Fill::Copy),
];

/// Indices into [`COLUMNS`] of the columns the factors read.
pub const HIGH: usize = 1;
pub const LOW: usize = 2;
pub const CLOSE: usize = 3;
pub const QUOTE_VOLUME: usize = 5;
pub const REALIZED_VOL: usize = 12;
pub const FUNDING_RATE: usize = 18;

/// The time-series factors, in output order.
pub const TS_FACTORS: [&str; 8] = [
    "ret_1h",
    "ret_24h",
    "ret_168h",
    "true_range",
    "atr_14",
    "price_efficiency",
    "turnover_ratio",
    "vol_regime",
];
/// The cross-sectional factors, in output order (after the time-series ones).
pub const CS_FACTORS: [&str; 2] = ["funding_pressure", "relative_volume"];
/// Indices into [`TS_FACTORS`] of the time-series factors whose null drops a row (step 6);
/// `relative_volume` is the eighth.
const NULL_DROPS: [usize; 7] = [0, 1, 2, 4, 5, 6, 7];

/// The time-series factors of one series: one column per [`TS_FACTORS`] entry.
pub type Factors = Vec<Vec<Option<f64>>>;

/// One column of values; null is `None`.
#[derive(Debug, Clone, PartialEq)]
pub enum Col {
    F(Vec<Option<f64>>),
    I(Vec<Option<i64>>),
}

impl Col {
    pub fn empty(kind: Kind) -> Col {
        match kind {
            Kind::F64 => Col::F(Vec::new()),
            Kind::I64 => Col::I(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Col::F(v) => v.len(),
            Col::I(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `i` as `f64` (counts converted), for the Qlib export.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        match self {
            Col::F(v) => v[i],
            Col::I(v) => v[i].map(|x| x as f64),
        }
    }

    fn push_from(&mut self, other: &Col, i: usize) {
        match (self, other) {
            (Col::F(a), Col::F(b)) => a.push(b[i]),
            (Col::I(a), Col::I(b)) => a.push(b[i]),
            _ => panic!("column kinds differ"),
        }
    }

    fn push_zero(&mut self) {
        match self {
            Col::F(a) => a.push(Some(0.0)),
            Col::I(a) => a.push(Some(0)),
        }
    }

    fn push_null(&mut self) {
        match self {
            Col::F(a) => a.push(None),
            Col::I(a) => a.push(None),
        }
    }

    /// Keep the rows for which `keep[i]`.
    pub fn retain(&mut self, keep: &[bool]) {
        fn f<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        match self {
            Col::F(v) => f(v, keep),
            Col::I(v) => f(v, keep),
        }
    }
}

/// One symbol's hourly rows, sorted by `open_time` (µs, hour-aligned, unique). As read from the
/// features store every row is real (`filled` all false); [`forward_fill`] adds filled rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub symbol: String,
    pub open_time: Vec<i64>,
    /// One per entry of [`COLUMNS`].
    pub cols: Vec<Col>,
    pub filled: Vec<bool>,
}

impl Series {
    pub fn new(symbol: impl Into<String>) -> Series {
        Series {
            symbol: symbol.into(),
            open_time: Vec::new(),
            cols: COLUMNS.iter().map(|(_, k, _)| Col::empty(*k)).collect(),
            filled: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.open_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open_time.is_empty()
    }

    /// A float column of [`COLUMNS`] by index.
    pub fn f(&self, c: usize) -> &[Option<f64>] {
        match &self.cols[c] {
            Col::F(v) => v,
            Col::I(_) => panic!("column {} is not a float column", COLUMNS[c].0),
        }
    }

    /// The listing interval: first and last real bar (features.md §2 step 1).
    pub fn listing(&self) -> Option<(i64, i64)> {
        let first = self.filled.iter().position(|f| !f)?;
        let last = self.filled.iter().rposition(|f| !f)?;
        Some((self.open_time[first], self.open_time[last]))
    }

    /// Keep the rows for which `keep(open_time)` holds.
    pub fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        let mask: Vec<bool> = self.open_time.iter().map(|&t| keep(t)).collect();
        if mask.iter().all(|k| *k) {
            return;
        }
        let mut i = 0;
        self.open_time.retain(|_| {
            i += 1;
            mask[i - 1]
        });
        let mut i = 0;
        self.filled.retain(|_| {
            i += 1;
            mask[i - 1]
        });
        for c in &mut self.cols {
            c.retain(&mask);
        }
    }

    /// Whether the rows are well formed: hour-aligned, strictly increasing, columns of equal
    /// length with the right kinds, and `open`..`close` present. `Err` says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let n = self.len();
        if self.filled.len() != n || self.cols.len() != COLUMNS.len() {
            return Err("ragged columns".into());
        }
        for (c, (name, kind, _)) in self.cols.iter().zip(COLUMNS) {
            if c.len() != n {
                return Err(format!("column `{name}` has {} rows, not {n}", c.len()));
            }
            if matches!((c, kind), (Col::F(_), Kind::I64) | (Col::I(_), Kind::F64)) {
                return Err(format!("column `{name}` has the wrong type"));
            }
        }
        if let Some(t) = self.open_time.iter().find(|t| t.rem_euclid(HOUR_US) != 0) {
            return Err(format!("open_time {t} is not on an hour"));
        }
        if let Some(i) = self.open_time.windows(2).position(|w| w[0] >= w[1]) {
            return Err(format!(
                "open_time not strictly increasing at row {}",
                i + 1
            ));
        }
        for (c, (name, _, _)) in COLUMNS.iter().enumerate().take(CLOSE + 1) {
            if let Some(i) = self.f(c).iter().position(Option::is_none) {
                return Err(format!("null `{name}` at row {i}"));
            }
        }
        Ok(())
    }
}

/// Step 2: inside the listing interval, each hour without a bar that lies within
/// `max_ffill_hours` of the previous real bar gets a filled row. `real` holds real bars only.
pub fn forward_fill(real: &Series, max_ffill_hours: i64) -> Series {
    let n = real.len();
    // The exact row count first: the columns are allocated once, at their final size.
    let fills: i64 = real
        .open_time
        .windows(2)
        .map(|w| ((w[1] - w[0]) / HOUR_US - 1).clamp(0, max_ffill_hours))
        .sum();
    let rows = n + fills as usize;
    let mut out = Series::new(real.symbol.clone());
    out.open_time.reserve_exact(rows);
    out.filled.reserve_exact(rows);
    for c in &mut out.cols {
        match c {
            Col::F(v) => v.reserve_exact(rows),
            Col::I(v) => v.reserve_exact(rows),
        }
    }
    let push_real = |out: &mut Series, i: usize| {
        out.open_time.push(real.open_time[i]);
        out.filled.push(false);
        for (c, src) in out.cols.iter_mut().zip(&real.cols) {
            c.push_from(src, i);
        }
    };
    for i in 0..n {
        push_real(&mut out, i);
        let Some(&next) = real.open_time.get(i + 1) else {
            break; // the listing interval ends at the last bar
        };
        let t0 = real.open_time[i];
        let last_fill = (t0 + max_ffill_hours * HOUR_US).min(next - HOUR_US);
        let mut t = t0 + HOUR_US;
        while t <= last_fill {
            out.open_time.push(t);
            out.filled.push(true);
            let close = real.f(CLOSE)[i];
            for (k, (c, (_, _, fill))) in out.cols.iter_mut().zip(COLUMNS).enumerate() {
                match fill {
                    Fill::PrevClose => match c {
                        Col::F(v) => v.push(close),
                        Col::I(_) => unreachable!("prices are floats"),
                    },
                    Fill::Zero => c.push_zero(),
                    Fill::Copy => c.push_from(&real.cols[k], i),
                    Fill::Null => c.push_null(),
                }
            }
            t += HOUR_US;
        }
    }
    out
}

/// `a / b`, null when `b` is 0.
fn div(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// Step 3's "rolling N" over `v` at row `i`: the mean of the non-null values of the rows whose
/// time is in `(t - N h, t]`, null when fewer than `N / 2` values. Summed oldest first.
fn rolling_mean(open_time: &[i64], v: &[Option<f64>], i: usize, n: i64) -> Option<f64> {
    let lo = open_time[i] - n * HOUR_US;
    let mut j = i;
    while j > 0 && open_time[j - 1] > lo {
        j -= 1;
    }
    let (mut sum, mut count) = (0.0, 0i64);
    for x in v[j..=i].iter().flatten() {
        sum += x;
        count += 1;
    }
    if count < n / 2 || count == 0 {
        return None;
    }
    Some(sum / count as f64)
}

/// The time-series factors of one (forward-filled) series, one column per [`TS_FACTORS`] entry.
pub fn ts_factors(s: &Series) -> Factors {
    let n = s.len();
    let t = &s.open_time;
    let (high, low, close) = (s.f(HIGH), s.f(LOW), s.f(CLOSE));
    let (qv, rv) = (s.f(QUOTE_VOLUME), s.f(REALIZED_VOL));
    // Row index of each hour from the first (lag k is the row exactly k hours earlier).
    let base = t.first().copied().unwrap_or(0);
    let span = t
        .last()
        .map(|l| ((l - base) / HOUR_US) as usize + 1)
        .unwrap_or(0);
    let mut at = vec![u32::MAX; span];
    for (i, &ti) in t.iter().enumerate() {
        at[((ti - base) / HOUR_US) as usize] = i as u32;
    }
    let lag = |i: usize, k: i64| -> Option<usize> {
        let h = (t[i] - base) / HOUR_US - k;
        (h >= 0)
            .then(|| at[h as usize])
            .filter(|&j| j != u32::MAX)
            .map(|j| j as usize)
    };
    let ret = |i: usize, k: i64| -> Option<f64> {
        let j = lag(i, k)?;
        div(close[i]?, close[j]?).map(|x| x - 1.0)
    };
    let mut out: Factors = vec![Vec::with_capacity(n); TS_FACTORS.len()];
    let mut true_range = Vec::with_capacity(n);
    for i in 0..n {
        let (h, l) = (high[i].expect("checked"), low[i].expect("checked"));
        true_range.push(Some(match lag(i, 1).and_then(|j| close[j]) {
            Some(c1) => (h - l).max((h - c1).abs()).max((l - c1).abs()),
            None => h - l,
        }));
    }
    for i in 0..n {
        out[0].push(ret(i, 1));
        out[1].push(ret(i, 24));
        out[2].push(ret(i, 168));
        let atr = rolling_mean(t, &true_range, i, 14);
        out[4].push(atr);
        out[5].push(match (rv[i], atr, close[i]) {
            (Some(r), Some(a), Some(c)) => div(a, c).and_then(|x| div(r, x)),
            _ => None,
        });
        out[6].push(rolling_mean(t, qv, i, 24).and_then(|m| qv[i].and_then(|q| div(q, m))));
        out[7].push(rolling_mean(t, rv, i, 168).and_then(|m| rv[i].and_then(|r| div(r, m))));
    }
    out[3] = true_range;
    out
}

/// Which base `coverage(t)` divides by (features.md §2 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoverageBase {
    All,
    Listed,
}

/// Who is in the universe at each hour.
#[derive(Debug, Clone, PartialEq)]
pub enum Universe {
    /// An explicit list or `all`: a symbol is a member from its first bar on and stays one
    /// (after its last bar too: survivorship-free, a delisted symbol still counts in the base
    /// `all`). Being a member before its first bar would need knowing it will list.
    Static,
    /// Rankings `(hour, members as indices into the series, sorted)`, sorted by hour; each holds
    /// from its hour until the next ranking's hour; before the first nobody is a member.
    Ranked(Vec<(i64, Vec<usize>)>),
}

impl Universe {
    /// The ranking in effect at `t`, for `Ranked`.
    fn ranking_at(rankings: &[(i64, Vec<usize>)], t: i64) -> Option<&[usize]> {
        let k = rankings.partition_point(|(h, _)| *h <= t);
        k.checked_sub(1).map(|k| rankings[k].1.as_slice())
    }
}

/// The parameters of steps 2, 4 and 6.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Params {
    pub max_ffill_hours: i64,
    pub min_coverage: f64,
    pub coverage_base: CoverageBase,
    pub keep_nulls: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_ffill_hours: 6,
            min_coverage: 0.5,
            coverage_base: CoverageBase::All,
            keep_nulls: false,
        }
    }
}

/// What the filters did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Rows (real and filled) of the requested range before any filter.
    pub rows_in_range: u64,
    /// Of those, rows at hours at which their symbol was not a universe member.
    pub rows_outside_universe: u64,
    /// Hours (with at least one member row) kept by the coverage filter.
    pub hours_kept: u64,
    /// Hours (with at least one member row) dropped by the coverage filter.
    pub hours_dropped: u64,
    pub rows_dropped_coverage: u64,
    /// Rows dropped by step 6 (0 with `keep_nulls`).
    pub rows_dropped_nulls: u64,
    /// Rows written.
    pub rows: u64,
    /// Of those, filled rows.
    pub filled_rows: u64,
}

/// The panel: rows as (series, row of that series), sorted by `(open_time, symbol)`, with the
/// cross-sectional factors of each row; the time-series factors are looked up per series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panel {
    pub rows: Vec<(u32, u32)>,
    pub funding_pressure: Vec<Option<f64>>,
    pub relative_volume: Vec<Option<f64>>,
    pub stats: Stats,
}

/// The median of `v` (not empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Steps 4–6 over forward-filled `series` (sorted by symbol) and their `factors` (from
/// [`ts_factors`]), for the hours in `[from, to)`.
pub fn build(
    series: &[Series],
    factors: &[Factors],
    universe: &Universe,
    from: i64,
    to: i64,
    p: &Params,
) -> Panel {
    let mut stats = Stats::default();
    let listing: Vec<Option<(i64, i64)>> = series.iter().map(Series::listing).collect();
    let member = |s: usize, t: i64| -> bool {
        match universe {
            Universe::Static => listing[s].is_some_and(|(first, _)| first <= t),
            Universe::Ranked(r) => {
                Universe::ranking_at(r, t).is_some_and(|m| m.binary_search(&s).is_ok())
            }
        }
    };
    let listed = |s: usize, t: i64| listing[s].is_some_and(|(a, b)| a <= t && t <= b);
    // Member rows of the range, by (open_time, symbol): series are sorted by symbol.
    let mut cand: Vec<(i64, u32, u32)> = Vec::new();
    for (s, ser) in series.iter().enumerate() {
        let a = ser.open_time.partition_point(|&t| t < from);
        let b = ser.open_time.partition_point(|&t| t < to);
        stats.rows_in_range += (b - a) as u64;
        for r in a..b {
            if member(s, ser.open_time[r]) {
                cand.push((ser.open_time[r], s as u32, r as u32));
            } else {
                stats.rows_outside_universe += 1;
            }
        }
    }
    cand.sort_unstable();
    // For the static universe's base counts: first bars and listing intervals, sorted.
    let mut firsts: Vec<i64> = listing.iter().flatten().map(|(a, _)| *a).collect();
    firsts.sort_unstable();
    let mut out = Panel::default();
    let mut k = 0;
    let mut fr: Vec<f64> = Vec::new();
    while k < cand.len() {
        let t = cand[k].0;
        let end = k + cand[k..].partition_point(|c| c.0 == t);
        let group = &cand[k..end];
        k = end;
        let base = match (universe, p.coverage_base) {
            (Universe::Static, CoverageBase::All) => firsts.partition_point(|&f| f <= t),
            (Universe::Static, CoverageBase::Listed) => {
                (0..series.len()).filter(|&s| listed(s, t)).count()
            }
            (Universe::Ranked(r), base) => Universe::ranking_at(r, t).map_or(0, |m| {
                m.iter()
                    .filter(|&&s| base == CoverageBase::All || listed(s, t))
                    .count()
            }),
        };
        let real = group
            .iter()
            .filter(|(_, s, r)| !series[*s as usize].filled[*r as usize])
            .count();
        if base == 0 || (real as f64 / base as f64) < p.min_coverage {
            stats.hours_dropped += 1;
            stats.rows_dropped_coverage += group.len() as u64;
            continue;
        }
        stats.hours_kept += 1;
        fr.clear();
        fr.extend(
            group
                .iter()
                .filter_map(|(_, s, r)| series[*s as usize].f(FUNDING_RATE)[*r as usize]),
        );
        let med = (!fr.is_empty()).then(|| median(&mut fr));
        let qv_sum: f64 = group
            .iter()
            .map(|(_, s, r)| series[*s as usize].f(QUOTE_VOLUME)[*r as usize].unwrap_or(0.0))
            .sum();
        let qv_mean = qv_sum / group.len() as f64;
        for &(_, s, r) in group {
            let ser = &series[s as usize];
            let fp = match (ser.f(FUNDING_RATE)[r as usize], med) {
                (Some(f), Some(m)) => Some(f - m),
                _ => None,
            };
            let rel = ser.f(QUOTE_VOLUME)[r as usize].and_then(|q| div(q, qv_mean));
            let null = rel.is_none()
                || NULL_DROPS
                    .iter()
                    .any(|&f| factors[s as usize][f][r as usize].is_none());
            if null && !p.keep_nulls {
                stats.rows_dropped_nulls += 1;
                continue;
            }
            out.rows.push((s, r));
            out.funding_pressure.push(fp);
            out.relative_volume.push(rel);
            stats.filled_rows += ser.filled[r as usize] as u64;
        }
    }
    stats.rows = out.rows.len() as u64;
    out.stats = stats;
    out
}
