//! Unit tests of the panel core and the universe: hand-computed small panels for each step of
//! features.md §2 (forward fill, listing interval, lags across gaps, rolling minimum counts,
//! coverage on both bases, the cross-sectional factors, the null policy), the `top-funding`
//! ranking, and the future-perturbation test (inputs changed after T leave every row whose
//! `close_time` is before T unchanged, universe included).

use crate::panel::*;
use crate::universe::{FundingRecords, top_funding};

const H: i64 = HOUR_US;

/// A real bar at `hour` with close `c`: open = c, high = c + 1, low = c - 1, volume 10, quote
/// volume 10·c, realized_vol 0.01, funding 1e-4 (8h), open interest 100, `account_ls_ratio`
/// null; `f` adjusts it.
fn bar(s: &mut Series, hour: i64, c: f64, f: impl FnOnce(&mut [Option<f64>; 26])) {
    let mut v: [Option<f64>; 26] = [None; 26];
    v[0] = Some(c);
    v[1] = Some(c + 1.0);
    v[2] = Some(c - 1.0);
    v[3] = Some(c);
    v[4] = Some(10.0);
    v[5] = Some(10.0 * c);
    v[6] = Some(7.0);
    v[7] = Some(4.0);
    v[8] = Some(4.0 * c);
    v[9] = Some(60.0);
    v[10] = Some(c);
    v[11] = Some(0.0);
    v[12] = Some(0.01);
    v[13] = Some(1e-4);
    v[14] = Some(0.5);
    v[15] = Some(0.4);
    v[16] = Some(0.02);
    v[17] = Some(0.03);
    v[18] = Some(1e-4);
    v[19] = Some(8.0);
    v[20] = Some(100.0);
    v[21] = Some(100.0 * c);
    v[22] = Some(1.1);
    v[23] = Some(1.2);
    v[24] = None;
    v[25] = Some(0.9);
    f(&mut v);
    s.open_time.push(hour * H);
    s.filled.push(false);
    for (k, col) in s.cols.iter_mut().enumerate() {
        match col {
            Col::F(x) => x.push(v[k]),
            Col::I(x) => x.push(v[k].map(|y| y as i64)),
        }
    }
}

fn series(sym: &str, bars: &[(i64, f64)]) -> Series {
    let mut s = Series::new(sym);
    for &(h, c) in bars {
        bar(&mut s, h, c, |_| {});
    }
    s.check().unwrap();
    s
}

fn hours(s: &Series) -> Vec<i64> {
    s.open_time.iter().map(|t| t / H).collect()
}

fn close(s: &Series) -> Vec<f64> {
    s.f(CLOSE).iter().map(|x| x.unwrap()).collect()
}

fn approx(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

#[track_caller]
fn assert_col(got: &[Option<f64>], want: &[Option<f64>]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(approx(*g, *w), "row {i}: got {g:?}, want {w:?}\n{got:?}");
    }
}

#[test]
fn forward_fill_is_bounded_stays_inside_the_listing_interval_and_fills_each_column_by_its_rule() {
    // Bars at 10, 11, then a gap of 8 hours (12..19) to 20, then 21.
    let mut s = Series::new("A");
    bar(&mut s, 10, 100.0, |_| {});
    bar(&mut s, 11, 101.0, |v| {
        v[18] = None; // funding null in the last real row: copied as null
        v[20] = Some(77.0);
    });
    bar(&mut s, 20, 90.0, |_| {});
    bar(&mut s, 21, 91.0, |_| {});
    let f = forward_fill(&s, 6);
    f.check().unwrap();
    // 12..17 filled (within 6 h of 11), 18 and 19 stay a gap; nothing before 10 or after 21.
    assert_eq!(hours(&f), vec![10, 11, 12, 13, 14, 15, 16, 17, 20, 21]);
    assert_eq!(
        f.filled,
        vec![
            false, false, true, true, true, true, true, true, false, false
        ]
    );
    assert_eq!(f.listing(), Some((10 * H, 21 * H)));
    let k = 2; // hour 12
    for (c, (name, _, fill)) in COLUMNS.iter().enumerate() {
        let got = f.cols[c].get_f64(k);
        let want = match fill {
            Fill::PrevClose => Some(101.0),
            Fill::Zero => Some(0.0),
            Fill::Copy => s.cols[c].get_f64(1),
            Fill::Null => None,
        };
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(f.f(FUNDING_RATE)[k], None, "a null is copied as null");
    assert_eq!(f.cols[20].get_f64(k), Some(77.0), "open_interest copied");
    assert_eq!(
        f.cols[24].get_f64(k),
        None,
        "account_ls_ratio copied (null)"
    );
    assert_eq!(
        f.cols[19].get_f64(k),
        Some(8.0),
        "funding_interval_hours copied"
    );
    // max_ffill_hours 0: no filled rows; a gap of exactly max_ffill_hours is filled whole.
    assert_eq!(forward_fill(&s, 0), {
        let mut x = s.clone();
        x.symbol = "A".into();
        x
    });
    let g = forward_fill(&series("B", &[(0, 1.0), (4, 2.0)]), 3);
    assert_eq!(hours(&g), vec![0, 1, 2, 3, 4]);
    assert_eq!(close(&g), vec![1.0, 1.0, 1.0, 1.0, 2.0]);
}

#[test]
fn returns_use_the_row_exactly_k_hours_earlier() {
    // Hours 0..30 except 20..23 (a 4 h gap, not filled with max 0): ret_1h at 24 has no row at
    // 23; ret_24h at 24 uses hour 0; at 25 uses hour 1.
    let bars: Vec<(i64, f64)> = (0..=30)
        .filter(|h| !(20..=23).contains(h))
        .map(|h| (h, 100.0 + h as f64))
        .collect();
    let s = forward_fill(&series("A", &bars), 0);
    let f = ts_factors(&s);
    let at = |h: i64| s.open_time.iter().position(|&t| t == h * H).unwrap();
    assert_eq!(f[0][at(0)], None);
    assert!(approx(f[0][at(1)], Some(101.0 / 100.0 - 1.0)));
    assert_eq!(f[0][at(24)], None, "hour 23 is missing");
    assert!(approx(f[0][at(25)], Some(125.0 / 124.0 - 1.0)));
    assert_eq!(f[1][at(23 - 4)], None, "hour 19: no row 24 h earlier");
    assert!(approx(f[1][at(24)], Some(124.0 / 100.0 - 1.0)));
    assert!(approx(f[1][at(30)], Some(130.0 / 106.0 - 1.0)));
    assert!(f[2].iter().all(Option::is_none), "no row 168 h earlier");
    // With the default fill, hour 21 is a filled row: ret_1h 0 there, ret_24h from hour -3
    // (none), and hour 24's ret_1h uses the filled 23 (close 119).
    let s = forward_fill(&series("A", &bars), 6);
    let f = ts_factors(&s);
    let at = |h: i64| s.open_time.iter().position(|&t| t == h * H).unwrap();
    assert!(approx(f[0][at(21)], Some(0.0)));
    assert!(approx(f[0][at(24)], Some(124.0 / 119.0 - 1.0)));
    // ret_168h: 200 hours of bars.
    let bars: Vec<(i64, f64)> = (0..200).map(|h| (h, 50.0 + h as f64)).collect();
    let s = forward_fill(&series("A", &bars), 6);
    let f = ts_factors(&s);
    assert_eq!(f[2][167], None);
    assert!(approx(f[2][168], Some(218.0 / 50.0 - 1.0)));
    assert!(approx(f[2][199], Some(249.0 / 81.0 - 1.0)));
}

#[test]
fn true_range_and_atr_with_the_rolling_minimum_count() {
    // Closes 10, 12, 11, 15 at hours 0..3, high = c + 1, low = c - 1; then hours 5..10.
    let s = forward_fill(
        &series(
            "A",
            &[
                (0, 10.0),
                (1, 12.0),
                (2, 11.0),
                (3, 15.0),
                (5, 15.0),
                (6, 16.0),
                (7, 16.0),
                (8, 16.0),
                (9, 16.0),
                (10, 16.0),
            ],
        ),
        0,
    );
    let f = ts_factors(&s);
    // TR: h0 no lag: 2; h1: max(2, |13-10|, |11-10|) = 3; h2: max(2, |12-12|, |10-12|) = 2;
    // h3: max(2, |16-11|, |14-11|) = 5; h5 (no row at 4): 2; h6: max(2, |17-15|, |15-15|) = 2;
    // h7..h10: max(2, 1, 1) = 2.
    let tr = [2.0, 3.0, 2.0, 5.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0];
    assert_col(&f[3], &tr.map(Some));
    // atr_14 needs 7 values in (t - 14h, t]: rows 0..6 are 6 values at h6... row index 6 is
    // hour 7 (7 values: 2,3,2,5,2,2,2 → 18/7).
    let mut want = vec![None; 10];
    want[6] = Some(18.0 / 7.0);
    want[7] = Some(20.0 / 8.0);
    want[8] = Some(22.0 / 9.0);
    want[9] = Some(24.0 / 10.0);
    assert_col(&f[4], &want);
    // price_efficiency = realized_vol / (atr / close) = 0.01 / ((18/7) / 16) at hour 7.
    assert!(approx(f[5][6], Some(0.01 / ((18.0 / 7.0) / 16.0))));
    assert_eq!(f[5][5], None);
    // A window of 14 hours: at hour 20 only hours 7..20 count.
    let bars: Vec<(i64, f64)> = (0..=20).map(|h| (h, 10.0 + (h % 3) as f64)).collect();
    let s = forward_fill(&series("B", &bars), 0);
    let f = ts_factors(&s);
    let mean: f64 = f[3][7..=20].iter().map(|x| x.unwrap()).sum::<f64>() / 14.0;
    assert!(approx(f[4][20], Some(mean)));
    // atr 0 → price_efficiency null: a flat series with high = low.
    let mut c = Series::new("C");
    for h in 0..10 {
        bar(&mut c, h, 5.0, |v| {
            v[1] = Some(5.0);
            v[2] = Some(5.0);
        });
    }
    let f = ts_factors(&forward_fill(&c, 0));
    assert_eq!(f[4][9], Some(0.0));
    assert_eq!(f[5][9], None, "atr_14 == 0");
}

#[test]
fn turnover_and_vol_regime_minimum_counts_and_zero_means() {
    // Quote volume 10·close = 10·(h+1): turnover at hour 11 (12 values) = 120 / mean(10..120).
    let bars: Vec<(i64, f64)> = (0..30).map(|h| (h, 1.0 + h as f64)).collect();
    let s = forward_fill(&series("A", &bars), 0);
    let f = ts_factors(&s);
    assert_eq!(f[6][10], None, "11 values < 24 / 2");
    let mean = (1..=12).map(|x| 10.0 * x as f64).sum::<f64>() / 12.0;
    assert!(approx(f[6][11], Some(120.0 / mean)));
    // at hour 29: hours 6..29.
    let mean = (7..=30).map(|x| 10.0 * x as f64).sum::<f64>() / 24.0;
    assert!(approx(f[6][29], Some(300.0 / mean)));
    // Zero quote volume throughout: turnover null (mean 0).
    let mut z = Series::new("Z");
    for h in 0..30 {
        bar(&mut z, h, 3.0, |v| v[5] = Some(0.0));
    }
    assert!(ts_factors(&z)[6].iter().all(Option::is_none));
    // vol_regime: realized_vol null on every other hour; 84 non-null values are needed in
    // (t - 168h, t]: rows 0..167 hold 84 non-null (even hours) at hour 166 (the 84th even hour).
    let mut r = Series::new("R");
    for h in 0..200 {
        bar(&mut r, h, 10.0, |v| {
            v[12] = (h % 2 == 0).then_some(0.01 * (1.0 + (h % 7) as f64));
        });
    }
    let f = ts_factors(&r);
    assert_eq!(f[7][164], None, "83 values");
    assert_eq!(f[7][165], None, "realized_vol null at an odd hour");
    let vals: Vec<f64> = (0..=166)
        .filter(|h| h % 2 == 0)
        .map(|h| 0.01 * (1.0 + (h % 7) as f64))
        .collect();
    assert_eq!(vals.len(), 84);
    let mean = vals.iter().sum::<f64>() / 84.0;
    assert!(approx(
        f[7][166],
        Some(0.01 * (1.0 + (166 % 7) as f64) / mean)
    ));
    // At hour 198 the window is hours 31..198.
    let vals: Vec<f64> = (31..=198)
        .filter(|h| h % 2 == 0)
        .map(|h| 0.01 * (1.0 + (h % 7) as f64))
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    assert!(approx(
        f[7][198],
        Some(0.01 * (1.0 + (198 % 7) as f64) / mean)
    ));
}

fn keep_all() -> Params {
    Params {
        max_ffill_hours: 6,
        min_coverage: 0.0,
        coverage_base: CoverageBase::All,
        keep_nulls: true,
    }
}

fn run(
    series: Vec<Series>,
    universe: &Universe,
    from: i64,
    to: i64,
    p: &Params,
) -> (Vec<Series>, Vec<Factors>, Panel) {
    let s: Vec<Series> = series
        .iter()
        .map(|s| forward_fill(s, p.max_ffill_hours))
        .collect();
    let f: Vec<_> = s.iter().map(ts_factors).collect();
    let panel = build(&s, &f, universe, from * H, to * H, p);
    (s, f, panel)
}

/// (hour, symbol) of each panel row.
fn keys(s: &[Series], p: &Panel) -> Vec<(i64, String)> {
    p.rows
        .iter()
        .map(|&(a, r)| {
            (
                s[a as usize].open_time[r as usize] / H,
                s[a as usize].symbol.clone(),
            )
        })
        .collect()
}

#[test]
fn coverage_on_both_bases() {
    // A: hours 0..9. B: listed at 5, hours 5..9. C: hours 0..3 then delisted.
    // D: hours 0..9 but a gap 4..5 (filled: not real).
    let a = series("A", &(0..10).map(|h| (h, 10.0)).collect::<Vec<_>>());
    let b = series("B", &(5..10).map(|h| (h, 20.0)).collect::<Vec<_>>());
    let c = series("C", &(0..4).map(|h| (h, 30.0)).collect::<Vec<_>>());
    let d = series(
        "D",
        &(0..10)
            .filter(|h| !(4..=5).contains(h))
            .map(|h| (h, 40.0))
            .collect::<Vec<_>>(),
    );
    let all = vec![a, b, c, d];
    // Base `all` (members from their first bar on: A, C, D at 0..4, + B from 5):
    //   hour 3: real A, C, D / 3 = 1;  hour 4: real A / 3 (C gone, D filled) = 1/3;
    //   hour 5: real A, B / 4 = 0.5;   hour 6: A, B, D / 4 = 0.75.
    // Base `listed` (listing interval contains t: C only to 3):
    //   hour 4: A / (A, D) = 0.5;  hour 5: A, B / (A, B, D) = 2/3;  hour 6: 3/3.
    let p = Params {
        min_coverage: 0.6,
        ..keep_all()
    };
    let (s, _, panel) = run(all.clone(), &Universe::Static, 0, 10, &p);
    let kept: std::collections::BTreeSet<i64> = keys(&s, &panel).iter().map(|k| k.0).collect();
    assert_eq!(kept, [0, 1, 2, 3, 6, 7, 8, 9].into());
    assert_eq!(panel.stats.hours_kept, 8);
    assert_eq!(panel.stats.hours_dropped, 2);
    assert_eq!(
        panel.stats.rows_dropped_coverage,
        2 + 3,
        "hour 4: A, D; hour 5: A, B, D"
    );
    let p = Params {
        min_coverage: 0.6,
        coverage_base: CoverageBase::Listed,
        ..keep_all()
    };
    let (s, _, panel) = run(all.clone(), &Universe::Static, 0, 10, &p);
    let kept: std::collections::BTreeSet<i64> = keys(&s, &panel).iter().map(|k| k.0).collect();
    assert_eq!(kept, [0, 1, 2, 3, 5, 6, 7, 8, 9].into());
    // At 0.5 exactly, `all` keeps hour 5 (2/4) but not hour 4 (1/3); `listed` keeps both.
    let p = Params {
        min_coverage: 0.5,
        ..keep_all()
    };
    let (s, _, panel) = run(all.clone(), &Universe::Static, 0, 10, &p);
    assert!(!keys(&s, &panel).iter().any(|k| k.0 == 4));
    assert!(keys(&s, &panel).iter().any(|k| k.0 == 5));
    let p = Params {
        coverage_base: CoverageBase::Listed,
        ..p
    };
    let (s, _, panel) = run(all, &Universe::Static, 0, 10, &p);
    assert!(keys(&s, &panel).iter().any(|k| k.0 == 4));
    // Rows are sorted by (open_time, symbol), filled rows included with their flag.
    let k = keys(&s, &panel);
    let mut sorted = k.clone();
    sorted.sort();
    assert_eq!(k, sorted);
    assert_eq!(
        k.iter().filter(|x| x.0 == 4).collect::<Vec<_>>(),
        vec![&(4, "A".to_string()), &(4, "D".to_string())]
    );
    assert_eq!(panel.stats.filled_rows, 2, "D at 4 and 5");
}

#[test]
fn funding_pressure_is_against_the_median_of_the_non_null_rates() {
    let mk = |sym: &str, rate: Option<f64>, qv: f64| {
        let mut s = Series::new(sym);
        bar(&mut s, 0, 10.0, |v| {
            v[18] = rate;
            v[5] = Some(qv);
        });
        s
    };
    // Rates 0.1, null, 0.3, 0.2: median of three = 0.2. Quote volumes 1, 2, 3, 6: mean 3.
    let all = vec![
        mk("A", Some(0.1), 1.0),
        mk("B", None, 2.0),
        mk("C", Some(0.3), 3.0),
        mk("D", Some(0.2), 6.0),
    ];
    let (_, _, p) = run(all.clone(), &Universe::Static, 0, 1, &keep_all());
    assert_col(
        &p.funding_pressure,
        &[Some(-0.1), None, Some(0.1), Some(0.0)],
    );
    assert_col(
        &p.relative_volume,
        &[Some(1.0 / 3.0), Some(2.0 / 3.0), Some(1.0), Some(2.0)],
    );
    // An even count: rates 0.1, 0.4, 0.3, 0.2 → median 0.25.
    let mut even = all.clone();
    even[1] = mk("B", Some(0.4), 2.0);
    let (_, _, p) = run(even, &Universe::Static, 0, 1, &keep_all());
    assert_col(
        &p.funding_pressure,
        &[Some(-0.15), Some(0.15), Some(0.05), Some(-0.05)],
    );
    // All null: null everywhere.
    let nulls: Vec<Series> = ["A", "B"].iter().map(|s| mk(s, None, 1.0)).collect();
    let (_, _, p) = run(nulls, &Universe::Static, 0, 1, &keep_all());
    assert_col(&p.funding_pressure, &[None, None]);
    // Mean quote volume 0: relative_volume null, and the row is dropped without keep_nulls.
    let zero: Vec<Series> = ["A", "B"].iter().map(|s| mk(s, Some(0.1), 0.0)).collect();
    let (_, _, p) = run(zero.clone(), &Universe::Static, 0, 1, &keep_all());
    assert_col(&p.relative_volume, &[None, None]);
    let (_, _, p) = run(zero, &Universe::Static, 0, 1, &Params::default());
    assert!(p.rows.is_empty());
    assert_eq!(p.stats.rows_dropped_nulls, 2);
}

#[test]
fn null_rows_are_dropped_unless_kept() {
    // 400 hours of one symbol: ret_168h and vol_regime are null before hour 168 (and 166):
    // the first 168 rows go; keep_nulls keeps them.
    let bars: Vec<(i64, f64)> = (0..400).map(|h| (h, 100.0 + (h % 5) as f64)).collect();
    let s = vec![series("A", &bars)];
    let (ser, f, p) = run(s.clone(), &Universe::Static, 0, 400, &Params::default());
    assert_eq!(p.rows.len(), 400 - 168);
    assert_eq!(p.stats.rows_dropped_nulls, 168);
    assert_eq!(keys(&ser, &p)[0].0, 168);
    for &(a, r) in &p.rows {
        for k in [0, 1, 2, 4, 5, 6, 7] {
            assert!(f[a as usize][k][r as usize].is_some());
        }
    }
    let (_, _, p) = run(s.clone(), &Universe::Static, 0, 400, &keep_all());
    assert_eq!(p.rows.len(), 400);
    assert_eq!(p.stats.rows_dropped_nulls, 0);
    // A null funding_pressure (funding_rate null) does not drop a row; nor does true_range.
    let mut n = Series::new("N");
    for h in 0..400 {
        bar(&mut n, h, 100.0 + (h % 5) as f64, |v| v[18] = None);
    }
    let (_, _, p) = run(vec![n], &Universe::Static, 0, 400, &Params::default());
    assert_eq!(p.rows.len(), 400 - 168);
    assert!(p.funding_pressure.iter().all(Option::is_none));
    // The range cuts after the factors: rows from hour 200 on keep their 168 h history.
    let (ser, _, p) = run(s, &Universe::Static, 200, 210, &Params::default());
    assert_eq!(
        keys(&ser, &p).iter().map(|k| k.0).collect::<Vec<_>>(),
        (200..210).collect::<Vec<_>>()
    );
    assert_eq!(p.stats.rows_in_range, 10);
}

fn rec(pairs: &[(i64, f64)]) -> FundingRecords {
    FundingRecords {
        calc_time: pairs.iter().map(|p| p.0).collect(),
        rate: pairs.iter().map(|p| p.1).collect(),
    }
}

#[test]
fn top_funding_ranks_point_in_time_holds_until_the_next_ranking_and_breaks_ties_by_symbol() {
    let names: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
    let ms = 1_000;
    let f = vec![
        // A: 8h settlements a few ms after the hour.
        rec(&[
            (5 * ms, 0.001),
            (8 * H + 5 * ms, -0.004),
            (16 * H + 5 * ms, 0.001),
        ]),
        // B: 4h settlements.
        rec(&[
            (3 * ms, 0.002),
            (4 * H, 0.002),
            (8 * H + 2 * ms, 0.002),
            (12 * H, 0.0),
            (16 * H, 0.0),
        ]),
        // C: ties with B at hour 0 (|rate| 0.002) and loses on the name; stale after 40 h.
        rec(&[(7 * ms, -0.002), (8 * H, 0.0005)]),
        // D: no record at all: never ranked.
        rec(&[]),
    ];
    let r = top_funding(&names, &f, 2);
    let hours: Vec<i64> = r.iter().map(|x| x.0 / H).collect();
    assert_eq!(hours, vec![0, 4, 8, 12, 16]);
    // Hour 0: A 0.001, B 0.002, C 0.002 → B, C (A third).
    assert_eq!(r[0].1, vec![1, 2]);
    // Hour 4: B's new record (0.002), A 0.001, C 0.002 (within 24 h) → B, C.
    assert_eq!(r[1].1, vec![1, 2]);
    // Hour 8: A -0.004, B 0.002, C 0.0005 → A, B.
    assert_eq!(r[2].1, vec![0, 1]);
    // Hour 12: A -0.004 (from 8h), B 0.0, C 0.0005 → A, C.
    assert_eq!(r[3].1, vec![0, 2]);
    // Hour 16: A 0.001, B 0.0, C 0.0005 → A, C.
    assert_eq!(r[4].1, vec![0, 2]);
    // A record older than 24 h is not ranked: a lone ranking at hour 40 from a new symbol.
    let f2 = vec![rec(&[(0, 0.01)]), rec(&[(40 * H, 0.0001)])];
    let n2: Vec<String> = vec!["X".into(), "Y".into()];
    let r2 = top_funding(&n2, &f2, 2);
    assert_eq!(r2[1], (40 * H, vec![1]), "X's record is 40 h old");
    // A record inside the hour (calc_time 8:30) counts for the row labelled 8:00 (its close is
    // 8:59:59.999) but not for 7:00.
    let f3 = vec![
        rec(&[(0, 0.001), (8 * H + 30 * 60 * 1_000_000, 0.009)]),
        rec(&[(0, 0.002), (7 * H + 5 * ms, 0.002)]),
    ];
    let r3 = top_funding(&n2, &f3, 1);
    assert_eq!(r3, vec![(0, vec![1]), (7 * H, vec![1]), (8 * H, vec![0])]);

    // In the panel: members only while ranked, held between rankings; coverage base `all` is
    // the number of members.
    let s: Vec<Series> = ["A", "B", "C", "D"]
        .iter()
        .map(|n| series(n, &(0..20).map(|h| (h, 10.0)).collect::<Vec<_>>()))
        .collect();
    let (ser, _, p) = run(s, &Universe::Ranked(r), 0, 20, &keep_all());
    let k = keys(&ser, &p);
    let at =
        |h: i64| -> Vec<String> { k.iter().filter(|x| x.0 == h).map(|x| x.1.clone()).collect() };
    assert_eq!(at(0), vec!["B", "C"]);
    assert_eq!(at(7), vec!["B", "C"], "held from the ranking at 4");
    assert_eq!(at(8), vec!["A", "B"]);
    assert_eq!(at(11), vec!["A", "B"]);
    assert_eq!(at(12), vec!["A", "C"]);
    assert_eq!(at(19), vec!["A", "C"]);
    assert_eq!(p.stats.rows_outside_universe, 4 * 20 - 2 * 20);
}

#[test]
fn top_funding_universe_rows_before_the_first_ranking_are_absent() {
    let names: Vec<String> = vec!["A".into(), "B".into()];
    let r = top_funding(&names, &[rec(&[(5 * H, 0.1)]), rec(&[])], 5);
    assert_eq!(r, vec![(5 * H, vec![0])]);
    let s = vec![
        series("A", &(0..10).map(|h| (h, 1.0)).collect::<Vec<_>>()),
        series("B", &(0..10).map(|h| (h, 1.0)).collect::<Vec<_>>()),
    ];
    let (ser, _, p) = run(s, &Universe::Ranked(r), 0, 10, &keep_all());
    let k = keys(&ser, &p);
    assert_eq!(k.first(), Some(&(5, "A".to_string())));
    assert_eq!(k.len(), 5);
    // Coverage base = members (1 at hours 5..9): A real → 1.0; nothing counted before 5.
    assert_eq!(p.stats.hours_kept, 5);
    assert_eq!(p.stats.hours_dropped, 0);
}

/// A deterministic pseudo-random stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Six symbols over 600 hours with gaps, a late listing, a delisting, nulls; funding records
/// every 8 h (one symbol every 4 h) with jitter.
fn world(seed: u64) -> (Vec<Series>, Vec<FundingRecords>) {
    let mut rng = Rng(seed);
    let mut series = Vec::new();
    let mut funding = Vec::new();
    for (i, sym) in ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
        .iter()
        .enumerate()
    {
        let (first, last) = match i {
            3 => (150, 599), // listed late
            4 => (0, 420),   // delisted
            _ => (0, 599),
        };
        let mut s = Series::new(*sym);
        let mut price = 100.0 * (i + 1) as f64;
        for h in first..=last {
            // gaps: a long one (> 6 h) and short ones.
            if (i == 1 && (200..212).contains(&h)) || (i == 2 && h % 37 == 5) {
                continue;
            }
            price *= 1.0 + (rng.next() - 0.5) * 0.02;
            let (u, w) = (rng.next(), rng.next());
            bar(&mut s, h, price, |v| {
                v[1] = Some(price * (1.0 + u * 0.01));
                v[2] = Some(price * (1.0 - w * 0.01));
                v[4] = Some(u * 100.0);
                v[5] = Some(u * 100.0 * price);
                v[12] = (w > 0.1).then_some(w * 0.02);
                v[18] = (u > 0.05).then_some((w - 0.5) * 1e-3);
            });
        }
        series.push(s);
        let step = if i == 2 { 4 } else { 8 };
        let mut f = FundingRecords::default();
        let mut h = first - first % step;
        while h <= last {
            f.calc_time.push(h * H + (rng.next() * 5000.0) as i64);
            f.rate.push((rng.next() - 0.5) * 2e-3);
            h += step;
        }
        if i == 1 {
            // A ranking in the hour before T = 300 (see the perturbation test).
            let k = f.calc_time.partition_point(|&t| t < 299 * H);
            f.calc_time.insert(k, 299 * H + 10_000);
            f.rate.insert(k, 1e-4);
        }
        funding.push(f);
    }
    (series, funding)
}

/// Every row of a panel as comparable values: (hour, symbol, every column as bits).
fn rows_of(s: &[Series], f: &[Factors], p: &Panel) -> Vec<(i64, String, Vec<Option<u64>>)> {
    p.rows
        .iter()
        .enumerate()
        .map(|(k, &(a, r))| {
            let (a, r) = (a as usize, r as usize);
            let mut v: Vec<Option<u64>> = (0..COLUMNS.len())
                .map(|c| s[a].cols[c].get_f64(r).map(f64::to_bits))
                .collect();
            v.push(Some(s[a].filled[r] as u64));
            v.extend(f[a].iter().map(|x| x[r].map(f64::to_bits)));
            v.push(p.funding_pressure[k].map(f64::to_bits));
            v.push(p.relative_volume[k].map(f64::to_bits));
            (s[a].open_time[r] / H, s[a].symbol.clone(), v)
        })
        .collect()
}

#[test]
fn future_perturbation_leaves_every_row_before_t_unchanged() {
    // T on an hour: rows labelled t < T close at t + 1h - 1ms < T. What may change after T:
    // every value of every bar at or after T, bars added or removed at or after T (a symbol
    // that trades after T in the original still does: the listing interval's end is the one
    // piece of section 2 that looks ahead, by the spec's own definition), a new symbol listed
    // after T, and funding records at or after T — changed, added (one that would top the
    // ranking), or removed.
    let t_hour = 300;
    let cut = t_hour * H;
    for (universe, base) in [
        (None, CoverageBase::All),
        (None, CoverageBase::Listed),
        (Some(2), CoverageBase::All),
        (Some(3), CoverageBase::Listed),
    ] {
        let (series, funding) = world(7);
        let mut rng = Rng(99);
        let mut s2: Vec<Series> = series.clone();
        for s in &mut s2 {
            let k = s.open_time.partition_point(|&t| t < cut);
            for c in 0..COLUMNS.len() {
                match &mut s.cols[c] {
                    Col::F(v) => {
                        for x in &mut v[k..] {
                            *x = x.map(|y| y * (0.5 + rng.next()));
                        }
                    }
                    Col::I(v) => {
                        for x in &mut v[k..] {
                            *x = x.map(|y| y + 3);
                        }
                    }
                }
            }
            // Remove every other bar after T (never the last one).
            let n = s.len();
            let keep: Vec<bool> = (0..n).map(|i| i < k || i + 1 == n || i % 2 == 0).collect();
            s.open_time = s
                .open_time
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(t, _)| *t)
                .collect();
            s.filled = vec![false; s.open_time.len()];
            for c in &mut s.cols {
                c.retain(&keep);
            }
            s.check().unwrap();
        }
        // A new symbol after T.
        let mut late = Series::new("GGG");
        for h in 320..600 {
            bar(&mut late, h, 5.0 + h as f64, |_| {});
        }
        s2.push(late);
        let mut f2 = funding.clone();
        for (i, f) in f2.iter_mut().enumerate() {
            let k = f.calc_time.partition_point(|&t| t < cut);
            for r in &mut f.rate[k..] {
                *r = -*r * 3.0;
            }
            if i == 0 {
                // A record at T itself and a huge one later: would top every ranking after T.
                f.calc_time.insert(k, cut);
                f.rate.insert(k, 0.5);
            }
            if i == 2 {
                // Within the hour after T: invisible to the row labelled T - 1h.
                f.calc_time.insert(k, cut + 10 * 60 * 1_000_000);
                f.rate.insert(k, -0.7);
            }
            if i == 1 {
                f.calc_time.truncate(k + 2);
                f.rate.truncate(k + 2);
            }
        }
        f2.push(rec(&[(330 * H, 0.9)]));
        let p = Params {
            coverage_base: base,
            ..Params::default()
        };
        let go = |series: &[Series], funding: &[FundingRecords]| {
            let names: Vec<String> = series.iter().map(|s| s.symbol.clone()).collect();
            let u = match universe {
                None => Universe::Static,
                Some(n) => Universe::Ranked(top_funding(&names, funding, n)),
            };
            let (s, f, panel) = run(series.to_vec(), &u, 0, 600, &p);
            rows_of(&s, &f, &panel)
        };
        let before = go(&series, &funding);
        let after = go(&s2, &f2);
        let early = |v: &[(i64, String, Vec<Option<u64>>)]| -> Vec<_> {
            v.iter().filter(|r| r.0 < t_hour).cloned().collect()
        };
        let (b, a) = (early(&before), early(&after));
        eprintln!(
            "{universe:?} {:?}\n{:?}",
            b.iter()
                .filter(|r| r.0 >= 298)
                .map(|r| (r.0, r.1.clone()))
                .collect::<Vec<_>>(),
            a.iter()
                .filter(|r| r.0 >= 298)
                .map(|r| (r.0, r.1.clone()))
                .collect::<Vec<_>>()
        );
        assert!(b.len() > 100, "{universe:?}: {} rows before T", b.len());
        assert_eq!(b, a, "{universe:?} {base:?}: a row before T changed");
        // …and the perturbation did change rows after T (the test can fail).
        assert_ne!(before, after, "{universe:?}: nothing after T changed");
    }
}

#[test]
fn listing_interval_look_ahead_is_the_spec_s_and_bounded_by_max_ffill() {
    // The one legitimate way the future moves the past: a symbol that stops trading. With bars
    // 0..9 and 15.., hours 10..15 are filled; without the bars after 9 they are not.
    let with = series(
        "A",
        &(0..30)
            .filter(|h| !(10..15).contains(h))
            .map(|h| (h, 1.0))
            .collect::<Vec<_>>(),
    );
    let without = series("A", &(0..10).map(|h| (h, 1.0)).collect::<Vec<_>>());
    assert_eq!(
        forward_fill(&with, 6).filled.iter().filter(|f| **f).count(),
        5
    );
    assert_eq!(
        forward_fill(&without, 6)
            .filled
            .iter()
            .filter(|f| **f)
            .count(),
        0
    );
}
