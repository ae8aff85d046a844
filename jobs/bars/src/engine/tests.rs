//! Hand-computed bars for every bar type and both sign modes: the trade that crosses the
//! threshold, the first bar of a history, the clamps; and the split-invariance that makes runs
//! incremental (any pieces, checkpoints through JSON in between, the same bits).

use super::*;
use crate::spec::{BarSpec, BarType, Rule, Sign, Source};

/// Owned columns for a test.
struct Cols {
    price: Vec<f64>,
    qty: Vec<f64>,
    time: Vec<i64>,
    bm: Vec<bool>,
}

impl Cols {
    /// `(price, qty, is_buyer_maker)`, times 1, 2, 3, … µs.
    fn new(rows: &[(f64, f64, bool)]) -> Cols {
        Cols {
            price: rows.iter().map(|r| r.0).collect(),
            qty: rows.iter().map(|r| r.1).collect(),
            time: (1..=rows.len() as i64).collect(),
            bm: rows.iter().map(|r| r.2).collect(),
        }
    }

    fn trades(&self) -> Trades<'_> {
        Trades {
            price: &self.price,
            qty: &self.qty,
            time: &self.time,
            buyer_maker: &self.bm,
        }
    }
}

fn standard(bar: BarType, th: f64, sign: Sign) -> BarSpec {
    BarSpec::standard(bar, th, sign, Source::AggTrades).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn imbalance(
    bar: BarType,
    init: f64,
    at: f64,
    ai: f64,
    min: Option<f64>,
    max: Option<f64>,
    sign: Sign,
) -> BarSpec {
    let rule = Rule::Imbalance {
        init_threshold: init,
        alpha_ticks: at,
        alpha_imbalance: ai,
        min_threshold: min,
        max_threshold: max,
    };
    BarSpec::new(bar, rule, sign, Source::AggTrades).unwrap()
}

fn run(spec: &BarSpec, cols: &Cols) -> (Vec<Bar>, State) {
    let mut e = Engine::new(spec, State::fresh(spec));
    let mut out = Vec::new();
    e.process(cols.trades(), &mut out);
    (out, e.state)
}

/// Buyer is the taker (b = +1) / seller is the taker (b = -1).
const BUY: bool = false;
const SELL: bool = true;

#[test]
fn tick_bars_take_the_crossing_trade_and_leave_the_rest_unfinished() {
    let cols = Cols::new(&[
        (10.0, 1.0, BUY),
        (12.0, 2.0, SELL),
        (11.0, 1.0, BUY),
        (9.0, 1.0, SELL),
        (10.0, 4.0, BUY),
        (13.0, 1.0, BUY),
        (14.0, 1.0, SELL),
    ]);
    let (bars, st) = run(&standard(BarType::Tick, 3.0, Sign::Aggressor), &cols);
    assert_eq!(bars.len(), 2);
    let b = bars[0];
    assert_eq!((b.bar, b.open_time, b.close_time, b.ticks), (0, 1, 3, 3));
    assert_eq!((b.open, b.high, b.low, b.close), (10.0, 12.0, 10.0, 11.0));
    assert_eq!((b.volume, b.dollar_volume, b.buy_volume), (4.0, 45.0, 2.0));
    assert_eq!(b.vwap(), Some(11.25));
    assert_eq!((b.imbalance, b.threshold), (0.0, 3.0));
    let b = bars[1];
    assert_eq!((b.bar, b.open_time, b.close_time, b.ticks), (1, 4, 6, 3));
    assert_eq!((b.open, b.high, b.low, b.close), (9.0, 13.0, 9.0, 13.0));
    assert_eq!((b.volume, b.dollar_volume, b.buy_volume), (6.0, 62.0, 5.0));
    // The seventh trade is the unfinished bar, carried in the state.
    assert_eq!(
        (st.ticks, st.open, st.volume, st.next_bar, st.trades),
        (1, 14.0, 1.0, 2, 7)
    );
    // A fractional threshold: a count reaches 2.5 at 3.
    let (bars, _) = run(&standard(BarType::Tick, 2.5, Sign::Aggressor), &cols);
    assert_eq!(bars.iter().map(|b| b.ticks).collect::<Vec<_>>(), [3, 3]);
}

#[test]
fn volume_and_dollar_bars_close_when_the_sum_reaches_the_threshold() {
    let cols = Cols::new(&[
        (10.0, 2.0, BUY),
        (10.0, 2.0, SELL),
        (20.0, 1.0, BUY), // volume 5: reaches 5 exactly, closes bar 0
        (10.0, 4.0, SELL),
        (8.0, 0.5, BUY),
        (10.0, 3.0, BUY), // volume 7.5 ≥ 5: closes bar 1
        (10.0, 1.0, BUY),
    ]);
    let (bars, st) = run(&standard(BarType::Volume, 5.0, Sign::Aggressor), &cols);
    assert_eq!(bars.len(), 2);
    assert_eq!(
        (bars[0].ticks, bars[0].volume, bars[0].dollar_volume),
        (3, 5.0, 60.0)
    );
    assert_eq!((bars[0].buy_volume, bars[0].vwap()), (3.0, Some(12.0)));
    assert_eq!(
        (bars[1].ticks, bars[1].volume, bars[1].dollar_volume),
        (3, 7.5, 74.0)
    );
    assert_eq!(
        (bars[1].high, bars[1].low, bars[1].buy_volume),
        (10.0, 8.0, 3.5)
    );
    assert_eq!((st.ticks, st.volume), (1, 1.0));

    // Dollar: p·v = 20, 20, 20 | 40 … → threshold 60 closes at the third trade, then 40+4 = 44,
    // +30 = 74 ≥ 60 closes at the sixth.
    let (bars, st) = run(&standard(BarType::Dollar, 60.0, Sign::Aggressor), &cols);
    assert_eq!(
        bars.iter()
            .map(|b| (b.ticks, b.dollar_volume))
            .collect::<Vec<_>>(),
        [(3, 60.0), (3, 74.0)]
    );
    assert_eq!((st.ticks, st.dollar_volume), (1, 10.0));
}

#[test]
fn tick_imbalance_adapts_its_threshold_and_counts_the_min_clamp() {
    // signs: + + | + - + + | - - - | + …
    let s = |b: bool| (100.0, 1.0, b);
    let cols = Cols::new(&[
        s(BUY),
        s(BUY),
        s(BUY),
        s(SELL),
        s(BUY),
        s(BUY),
        s(SELL),
        s(SELL),
        s(SELL),
        s(BUY),
    ]);
    let spec = imbalance(
        BarType::TickImbalance,
        2.0,
        0.5,
        0.5,
        Some(1.0),
        Some(10.0),
        Sign::Aggressor,
    );
    let (bars, st) = run(&spec, &cols);
    let got: Vec<(u64, f64, f64)> = bars
        .iter()
        .map(|b| (b.ticks, b.imbalance, b.threshold))
        .collect();
    // Bar 0 (the history's first): n = 2, theta = 2 ≥ init 2 → E_T = 2, E_I = 1, threshold 2.
    // Bar 1: theta 1, 0, 1, 2 → n = 4 → E_T = .5·4 + .5·2 = 3, E_I = .5·.5 + .5·1 = .75 → 2.25.
    // Bar 2: theta -1, -2, -3 → n = 3 → E_T = 3, E_I = .5·(-1) + .5·.75 = -.125 → .375 → min 1.
    // Bar 3: theta 1 ≥ 1 → n = 1 → E_T = 2, E_I = .5·1 + .5·(-.125) = .4375 → .875 → min 1.
    assert_eq!(
        got,
        [(2, 2.0, 2.0), (4, 2.0, 2.0), (3, -3.0, 2.25), (1, 1.0, 1.0)]
    );
    assert_eq!(
        (st.e_t, st.e_i, st.threshold),
        (Some(2.0), Some(0.4375), 1.0)
    );
    assert_eq!((st.clamped_min, st.clamped_max, st.ticks), (2, 0, 0));
    assert_eq!(bars[2].buy_volume, 0.0);
    assert_eq!(bars[1].buy_volume, 3.0);
}

#[test]
fn volume_and_dollar_imbalance_clamp_at_the_max_and_disabled_bounds_do_not_clamp() {
    // alpha 1: the threshold is the last bar's n · |theta / n| = |theta|.
    let cols = Cols::new(&[(2.0, 5.0, BUY), (2.0, 1.0, SELL), (2.0, 7.0, SELL)]);
    let spec = imbalance(
        BarType::VolumeImbalance,
        1.0,
        1.0,
        1.0,
        Some(0.5),
        Some(3.0),
        Sign::Aggressor,
    );
    let (bars, st) = run(&spec, &cols);
    // Bar 0: theta 5 ≥ 1 → raw 5 → max 3. Bar 1: theta -1, -8 → |-8| ≥ 3 → raw 8 → max 3.
    assert_eq!(
        bars.iter()
            .map(|b| (b.ticks, b.imbalance, b.threshold))
            .collect::<Vec<_>>(),
        [(1, 5.0, 1.0), (2, -8.0, 3.0)]
    );
    assert_eq!((st.clamped_min, st.clamped_max, st.threshold), (0, 2, 3.0));

    let spec = imbalance(
        BarType::DollarImbalance,
        1.0,
        1.0,
        1.0,
        None,
        None,
        Sign::Aggressor,
    );
    let (bars, st) = run(&spec, &cols);
    // x = b·p·v: 10 → bar (raw 10); then -2, -16 → |-16| ≥ 10 → bar (raw 16).
    assert_eq!(
        bars.iter()
            .map(|b| (b.ticks, b.imbalance, b.threshold))
            .collect::<Vec<_>>(),
        [(1, 10.0, 1.0), (2, -16.0, 10.0)]
    );
    assert_eq!((st.clamped_min, st.clamped_max, st.threshold), (0, 0, 16.0));
    assert_eq!((st.e_t, st.e_i), (Some(2.0), Some(-8.0)));
}

#[test]
fn the_tick_rule_signs_by_price_change_and_starts_at_plus_one() {
    // is_buyer_maker says the opposite of the tick rule everywhere: only the rule is used.
    let cols = Cols::new(&[
        (10.0, 1.0, SELL),  // first trade of the history: +1
        (11.0, 2.0, SELL),  // up: +1
        (11.0, 4.0, BUY),   // unchanged: previous, +1
        (10.0, 8.0, BUY),   // down: -1
        (10.0, 16.0, BUY),  // unchanged: -1
        (12.0, 32.0, SELL), // up: +1
    ]);
    let (bars, st) = run(&standard(BarType::Tick, 6.0, Sign::TickRule), &cols);
    assert_eq!(bars.len(), 1);
    assert_eq!(bars[0].buy_volume, 1.0 + 2.0 + 4.0 + 32.0);
    assert_eq!((st.last_price, st.last_sign), (Some(12.0), 1.0));
    // Tick imbalance under the tick rule: theta 1, 2 → bar at 2 (init 2).
    let spec = imbalance(
        BarType::TickImbalance,
        2.0,
        0.5,
        0.5,
        None,
        None,
        Sign::TickRule,
    );
    let (bars, _) = run(&spec, &cols);
    assert_eq!((bars[0].ticks, bars[0].imbalance), (2, 2.0));
    // The same trades under the aggressor sign: -1, -2 → a bar with imbalance -2.
    let spec = imbalance(
        BarType::TickImbalance,
        2.0,
        0.5,
        0.5,
        None,
        None,
        Sign::Aggressor,
    );
    let (bars, _) = run(&spec, &cols);
    assert_eq!((bars[0].ticks, bars[0].imbalance), (2, -2.0));
    assert_eq!(bars[0].buy_volume, 0.0);
}

#[test]
fn every_bar_type_under_the_tick_rule() {
    // Tick-rule signs: + (first) + (up) + (same) - (down) + (up) + (same); the aggressor side
    // says "sell" everywhere, so any use of it would show. p·v: 10, 22, 11, 20, 12, 36.
    let cols = Cols::new(&[
        (10.0, 1.0, SELL),
        (11.0, 2.0, SELL),
        (11.0, 1.0, SELL),
        (10.0, 2.0, SELL),
        (12.0, 1.0, SELL),
        (12.0, 3.0, SELL),
    ]);
    let shape = |bars: &[Bar]| -> Vec<(u64, f64, f64, f64)> {
        bars.iter()
            .map(|b| (b.ticks, b.buy_volume, b.imbalance, b.threshold))
            .collect()
    };
    // Volume 3: 1+2 | 1+2 | 1+3.
    let (bars, _) = run(&standard(BarType::Volume, 3.0, Sign::TickRule), &cols);
    assert_eq!(
        shape(&bars),
        [(2, 3.0, 0.0, 3.0), (2, 1.0, 0.0, 3.0), (2, 4.0, 0.0, 3.0)]
    );
    // Dollar 30: 10+22 | 11+20 | 12+36.
    let (bars, _) = run(&standard(BarType::Dollar, 30.0, Sign::TickRule), &cols);
    assert_eq!(
        bars.iter().map(|b| b.dollar_volume).collect::<Vec<_>>(),
        [32.0, 31.0, 48.0]
    );
    assert_eq!(bars[1].buy_volume, 1.0);
    // Volume imbalance, init 2.5, alphas 1: theta 1, 3 → bar (E_T 2, E_I 1.5 → 3); then
    // 1, -1, 0, 3 → bar (E_T 4, E_I 0.75 → 3).
    let spec = imbalance(
        BarType::VolumeImbalance,
        2.5,
        1.0,
        1.0,
        None,
        None,
        Sign::TickRule,
    );
    let (bars, st) = run(&spec, &cols);
    assert_eq!(shape(&bars), [(2, 3.0, 3.0, 2.5), (4, 5.0, 3.0, 3.0)]);
    assert_eq!((st.e_t, st.e_i, st.threshold), (Some(4.0), Some(0.75), 3.0));
    // Dollar imbalance, init 30, alphas 0.5: theta 10, 32 → bar (E_T 2, E_I 16 → 32); then
    // 11, -9, 3, 39 → bar (E_T 3, E_I .5·9.75 + .5·16 = 12.875 → 38.625).
    let spec = imbalance(
        BarType::DollarImbalance,
        30.0,
        0.5,
        0.5,
        None,
        None,
        Sign::TickRule,
    );
    let (bars, st) = run(&spec, &cols);
    assert_eq!(shape(&bars), [(2, 3.0, 32.0, 30.0), (4, 5.0, 39.0, 32.0)]);
    assert_eq!(
        (st.e_t, st.e_i, st.threshold),
        (Some(3.0), Some(12.875), 38.625)
    );
}

#[test]
fn the_tick_rule_carries_its_last_price_and_sign_across_pieces() {
    let cols = Cols::new(&[(10.0, 1.0, BUY), (9.0, 1.0, BUY), (9.0, 1.0, BUY)]);
    let spec = standard(BarType::Tick, 100.0, Sign::TickRule);
    let mut e = Engine::new(&spec, State::fresh(&spec));
    let mut out = Vec::new();
    e.process(cols.trades().slice(0, 2), &mut out);
    assert_eq!((e.state.last_price, e.state.last_sign), (Some(9.0), -1.0));
    e.process(cols.trades().slice(2, 3), &mut out);
    // The third trade is unchanged from the second (in the previous piece): still -1.
    assert_eq!((e.state.last_sign, e.state.buy_volume), (-1.0, 1.0));
}

/// A deterministic pseudo-random tape (xorshift), prices on a 0.1 grid, mixed sides.
fn tape(n: usize, seed: u64) -> Cols {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut p = 96_000.0f64;
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        let r = next();
        p = ((p * 10.0).round() + (r % 7) as f64 - 3.0) / 10.0;
        let q = ((r >> 8) % 10_000 + 1) as f64 / 1000.0;
        rows.push((p, q, (r >> 40) % 3 == 0));
    }
    let mut c = Cols::new(&rows);
    c.time = (0..n as i64)
        .map(|i| 1_700_000_000_000_000 + i * 137)
        .collect();
    c
}

fn all_specs() -> Vec<BarSpec> {
    let mut v = Vec::new();
    for sign in [Sign::Aggressor, Sign::TickRule] {
        v.push(standard(BarType::Tick, 50.0, sign));
        v.push(standard(BarType::Volume, 20.0, sign));
        v.push(standard(BarType::Dollar, 2e6, sign));
        v.push(imbalance(
            BarType::TickImbalance,
            10.0,
            0.1,
            0.1,
            Some(1.0),
            Some(100.0),
            sign,
        ));
        v.push(imbalance(
            BarType::VolumeImbalance,
            5.0,
            0.2,
            0.05,
            Some(0.5),
            Some(50.0),
            sign,
        ));
        v.push(imbalance(
            BarType::DollarImbalance,
            5e5,
            0.1,
            0.1,
            None,
            Some(5e6),
            sign,
        ));
    }
    v
}

fn bits(b: &Bar) -> [u64; 13] {
    [
        b.bar,
        b.open_time as u64,
        b.close_time as u64,
        b.open.to_bits(),
        b.high.to_bits(),
        b.low.to_bits(),
        b.close.to_bits(),
        b.volume.to_bits(),
        b.dollar_volume.to_bits(),
        b.buy_volume.to_bits(),
        b.ticks,
        b.imbalance.to_bits(),
        b.threshold.to_bits(),
    ]
}

#[test]
fn any_split_with_json_checkpoints_gives_the_same_bits() {
    let cols = tape(50_000, 7);
    for spec in all_specs() {
        let (whole, whole_state) = run(&spec, &cols);
        assert!(whole.len() >= 10, "{spec}: {} bars", whole.len());
        let mut cuts = vec![0usize, 1, 2, 777, 778, 10_000, 31_415, 49_999, 50_000];
        cuts.dedup();
        let mut state = State::fresh(&spec);
        let mut pieces = Vec::new();
        for w in cuts.windows(2) {
            let mut e = Engine::new(&spec, state);
            e.process(cols.trades().slice(w[0], w[1]), &mut pieces);
            // Through the checkpoint format and back, as between two runs.
            let json = serde_json::to_string(&e.state).unwrap();
            state = serde_json::from_str(&json).unwrap();
            assert_eq!(state, e.state, "{spec}");
        }
        assert_eq!(state, whole_state, "{spec}");
        assert_eq!(pieces.len(), whole.len(), "{spec}");
        for (a, b) in pieces.iter().zip(&whole) {
            assert_eq!(bits(a), bits(b), "{spec}");
        }
        for (i, b) in whole.iter().enumerate() {
            assert_eq!(b.bar, i as u64);
        }
    }
}

#[test]
fn dollar_bars_sum_to_the_dollar_volume_of_their_trades() {
    let cols = tape(20_000, 99);
    let spec = standard(BarType::Dollar, 3e6, Sign::Aggressor);
    let (bars, st) = run(&spec, &cols);
    let complete: usize = bars.iter().map(|b| b.ticks as usize).sum();
    assert_eq!(complete as u64 + st.ticks, 20_000);
    let want: f64 = (0..complete).map(|i| cols.price[i] * cols.qty[i]).sum();
    let got: f64 = bars.iter().map(|b| b.dollar_volume).sum();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    for b in &bars {
        assert!(b.dollar_volume >= 3e6);
        assert!(b.low <= b.open.min(b.close) && b.high >= b.open.max(b.close));
    }
}

#[test]
fn checkpoints_round_trip_awkward_floats_exactly() {
    let spec = standard(BarType::Dollar, 1.0, Sign::TickRule);
    let mut st = State::fresh(&spec);
    for (i, x) in [
        0.1 + 0.2,
        -0.0,
        f64::MIN_POSITIVE / 3.0,
        1e308,
        -123456.789e-300,
        1.0 / 3.0,
    ]
    .into_iter()
    .enumerate()
    {
        st.theta = x;
        st.e_t = Some(x * 2.0);
        st.last_price = if i % 2 == 0 { Some(x) } else { None };
        let back: State = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back.theta.to_bits(), x.to_bits());
        assert_eq!(back.e_t.map(f64::to_bits), Some((x * 2.0).to_bits()));
        assert_eq!(
            back.last_price.map(f64::to_bits),
            st.last_price.map(f64::to_bits)
        );
    }
}
