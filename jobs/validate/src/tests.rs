//! Unit tests of the checks and the classifier on small hand-made inputs: each defect is found
//! once, named by day and row, and nothing else is reported.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use frames::polars::prelude::*;
use shared::paths::{DataType as Dt, Dataset, Interval, Market};
use shared::plan::DateRange;
use shared::validation::{DayStatus, FindingKind, GapClass, ReportParams};

use crate::checks::{Checker, DAY_US, day_start_us};
use crate::classify::{Assembly, assemble, outages};
use crate::result::{FileState, SymbolResult};

const M: i64 = 60_000_000;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn range(a: &str, b: &str) -> DateRange {
    DateRange::new(d(a), d(b)).unwrap()
}

fn time_col(name: &str, v: Vec<i64>) -> Column {
    Int64Chunked::from_vec(name.into(), v)
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_column()
}

fn klines_ds() -> Dataset {
    Dataset::new(Market::Um, Dt::Klines, Some(Interval::M1)).unwrap()
}

/// A kline row: (open_time, open, high, low, close, volume, taker_buy_volume).
type K = (i64, f64, f64, f64, f64, f64, f64);

fn klines(rows: &[K]) -> DataFrame {
    let n = rows.len();
    let f = |i: usize| {
        rows.iter()
            .map(|r| [r.1, r.2, r.3, r.4, r.5, r.6][i])
            .collect::<Vec<f64>>()
    };
    DataFrame::new(
        n,
        vec![
            time_col("open_time", rows.iter().map(|r| r.0).collect()),
            Column::new("open".into(), f(0)),
            Column::new("high".into(), f(1)),
            Column::new("low".into(), f(2)),
            Column::new("close".into(), f(3)),
            Column::new("volume".into(), f(4)),
            time_col("close_time", rows.iter().map(|r| r.0 + M - 1000).collect()),
            Column::new("quote_volume".into(), f(4)),
            Column::new("trades".into(), vec![1i64; n]),
            Column::new("taker_buy_volume".into(), f(5)),
            Column::new("taker_buy_quote_volume".into(), f(5)),
        ],
    )
    .unwrap()
}

/// A clean day of 1m klines, price 100, one unit of volume per minute.
fn clean_day(day: &str) -> Vec<K> {
    let s = day_start_us(d(day));
    (0..1440)
        .map(|m| (s + m * M, 100.0, 101.0, 99.0, 100.5, 2.0, 1.0))
        .collect()
}

fn kinds(r: &SymbolResult) -> Vec<FindingKind> {
    r.errors
        .iter()
        .chain(&r.warnings)
        .chain(&r.notes)
        .map(|f| f.kind)
        .collect()
}

#[test]
fn a_clean_day_has_nothing_to_report() {
    let mut c = Checker::new(&klines_ds(), "X", range("2025-01-01", "2025-01-01"), 0.2);
    c.push(&klines(&clean_day("2025-01-01"))).unwrap();
    let r = c.finish();
    assert!(kinds(&r).is_empty(), "{:?}", r.errors);
    assert!(r.gaps.is_empty());
    assert_eq!(r.days[&d("2025-01-01")].rows, 1440);
    let s = day_start_us(d("2025-01-01"));
    assert_eq!(r.life, Some([s, s + DAY_US]));
}

#[test]
fn kline_defects_are_each_found_once_on_their_row() {
    let s = day_start_us(d("2025-01-01"));
    let mut rows = clean_day("2025-01-01");
    rows[60].2 = 98.0; // high below low: 01:00
    rows[120].6 = 3.0; // taker buy > volume: 02:00
    rows[130].5 = -1.0; // negative volume: 02:10
    rows[131].2 = 130.0;
    rows[131].4 = 130.0; // +29% close: a jump up at 02:11 …
    rows[132].4 = 100.5; // … and back at 02:12 (two warnings)
    rows[140] = (s + 140 * M, 100.0, 100.0, 100.0, 100.0, 0.0, 0.0); // zero-volume flat
    rows.drain(180..210); // 03:00–03:30 missing
    let dup = rows[500];
    rows.insert(501, dup); // a duplicate open_time
    // Split across two row groups: state carries over.
    let (a, b) = rows.split_at(700);
    let mut c = Checker::new(&klines_ds(), "X", range("2025-01-01", "2025-01-01"), 0.2);
    c.push(&klines(a)).unwrap();
    c.push(&klines(b)).unwrap();
    let r = c.finish();
    let got: Vec<(FindingKind, i64)> = r
        .errors
        .iter()
        .chain(&r.warnings)
        .map(|f| (f.kind, (f.time_us.unwrap() - s) / M))
        .collect();
    let dup_min = (dup.0 - s) / M;
    assert_eq!(
        got,
        vec![
            (FindingKind::Ohlc, 60),
            (FindingKind::TakerBuyVolume, 120),
            (FindingKind::NegativeVolume, 130),
            (FindingKind::Duplicate, dup_min),
            (FindingKind::PriceJump, 131),
            (FindingKind::PriceJump, 132),
        ]
    );
    assert_eq!((r.error_count, r.warning_count), (4, 2));
    let day = &r.days[&d("2025-01-01")];
    assert_eq!((day.errors, day.warnings, day.zero_volume), (4, 2, 1));
    assert_eq!(r.gaps, vec![[s + 180 * M, s + 210 * M]]);
}

#[test]
fn close_time_grid_and_order_are_checked() {
    let s = day_start_us(d("2025-01-01"));
    let mut df = klines(&[
        (s, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0),
        (s + M + 5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0), // off the grid
        (s + 3 * M, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0),
        (s + 2 * M, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0), // goes back
    ]);
    // A wrong close_time on the first row.
    df.replace(
        "close_time",
        time_col(
            "close_time",
            vec![
                s + M,
                s + 2 * M + 5 - 1000,
                s + 4 * M - 1000,
                s + 3 * M - 1000,
            ],
        ),
    )
    .unwrap();
    let mut c = Checker::new(&klines_ds(), "X", range("2025-01-01", "2025-01-01"), 0.2);
    c.push(&df).unwrap();
    let r = c.finish();
    assert_eq!(
        kinds(&r),
        vec![
            FindingKind::CloseTime,
            FindingKind::Grid,
            FindingKind::Order
        ]
    );
}

#[test]
fn rows_outside_the_range_are_ignored_and_edges_are_gaps() {
    let mut rows = clean_day("2024-12-31");
    rows.extend(clean_day("2025-01-01").into_iter().skip(60)); // data from 01:00
    let mut c = Checker::new(&klines_ds(), "X", range("2025-01-01", "2025-01-02"), 0.2);
    c.push(&klines(&rows)).unwrap();
    let r = c.finish();
    let s = day_start_us(d("2025-01-01"));
    assert_eq!(r.gaps, vec![[s, s + 60 * M], [s + DAY_US, s + 2 * DAY_US]]);
    assert_eq!(r.first_data_us, Some(s + 60 * M));
    assert_eq!(r.life, Some([s + 60 * M, s + DAY_US]));
    assert_eq!(r.days[&d("2025-01-02")].rows, 0);
}

fn agg(rows: &[(i64, i64, i64, i64, f64)]) -> DataFrame {
    // (agg_trade_id, first, last, time, price)
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            Column::new(
                "agg_trade_id".into(),
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ),
            Column::new("price".into(), rows.iter().map(|r| r.4).collect::<Vec<_>>()),
            Column::new("quantity".into(), vec![1.0f64; n]),
            Column::new(
                "first_trade_id".into(),
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            ),
            Column::new(
                "last_trade_id".into(),
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            ),
            time_col("transact_time", rows.iter().map(|r| r.3).collect()),
            Column::new("is_buyer_maker".into(), vec![true; n]),
        ],
    )
    .unwrap()
}

#[test]
fn agg_trade_ids_follow_on_except_across_empty_days() {
    let ds = Dataset::new(Market::Um, Dt::AggTrades, None).unwrap();
    let s = day_start_us(d("2025-01-01"));
    let df = agg(&[
        (1, 10, 12, s + M, 50.0),
        (2, 13, 13, s + 2 * M, 50.0),
        (3, 17, 18, s + 3 * M, 50.0),                // 14..16 missing
        (4, 19, 17, s + 4 * M, 50.0),                // last < first
        (6, 100, 101, s + 2 * DAY_US + M, 50.0),     // after an empty day: explained by the gap
        (6, 102, 102, s + 2 * DAY_US + 2 * M, 50.0), // duplicate id
    ]);
    let mut c = Checker::new(&ds, "X", range("2025-01-01", "2025-01-03"), 0.2);
    c.push(&df).unwrap();
    let r = c.finish();
    assert_eq!(
        kinds(&r),
        vec![
            FindingKind::TradeIds,
            FindingKind::Duplicate,
            FindingKind::IdGap
        ]
    );
    assert!(
        r.warnings[0].detail.contains("3 trade ids missing"),
        "{}",
        r.warnings[0].detail
    );
    // Datasets without a grid: whole days without rows.
    assert_eq!(r.gaps, vec![[s + DAY_US, s + 2 * DAY_US]]);
    assert_eq!(r.life, Some([s, s + 3 * DAY_US]));
}

#[test]
fn funding_interval_changes_are_notes_and_missed_settlements_gaps() {
    let ds = Dataset::new(Market::Um, Dt::FundingRate, None).unwrap();
    let s = day_start_us(d("2025-01-01"));
    let h = 3_600_000_000;
    let times = vec![
        s + 3_000,
        s + 8 * h + 2_000,
        s + 24 * h,
        s + 28 * h + 7_000,
        s + 36 * h,
    ];
    let hours = vec![8i64, 8, 4, 4, 4];
    let df = DataFrame::new(
        5,
        vec![
            time_col("calc_time", times),
            Column::new("funding_interval_hours".into(), hours),
            Column::new("last_funding_rate".into(), vec![0.0001f64; 5]),
        ],
    )
    .unwrap();
    let mut c = Checker::new(&ds, "X", range("2025-01-01", "2025-01-02"), 0.2);
    c.push(&df).unwrap();
    let r = c.finish();
    assert_eq!(kinds(&r), vec![FindingKind::FundingIntervalChange]);
    assert_eq!(r.notes[0].detail, "funding interval 8h -> 4h");
    // 16:00 missed; 8h later the 4h settlements run on time until 08:00 on day 2, 12:00 missed.
    assert_eq!(
        r.gaps,
        vec![[s + 16 * h, s + 24 * h], [s + 32 * h, s + 36 * h]]
    );
}

#[test]
fn metrics_tolerate_odd_seconds_on_their_five_minute_grid() {
    let ds = Dataset::new(Market::Um, Dt::Metrics, None).unwrap();
    let s = day_start_us(d("2025-01-01"));
    let mut t: Vec<i64> = (0..288).map(|i| s + i * 5 * M).collect();
    t[10] += 2_000_000; // 00:50:02
    t.remove(20); // 01:40 missing
    let n = t.len();
    let mut cols = vec![time_col("create_time", t.clone())];
    for c in [
        "sum_open_interest",
        "sum_open_interest_value",
        "count_toptrader_long_short_ratio",
        "sum_toptrader_long_short_ratio",
        "count_long_short_ratio",
        "sum_taker_long_short_vol_ratio",
    ] {
        cols.push(Column::new(c.into(), vec![1.0f64; n]));
    }
    cols.push(time_col("snapshot_time", t));
    let df = DataFrame::new(n, cols).unwrap();
    assert_eq!(
        crate::read::schema_mismatch(&df, shared::formats::format_of(&ds)),
        None
    );
    let mut c = Checker::new(&ds, "X", range("2025-01-01", "2025-01-01"), 0.2);
    c.push(&df).unwrap();
    let r = c.finish();
    assert!(kinds(&r).is_empty(), "{:?}", r.errors);
    assert_eq!(r.gaps, vec![[s + 100 * M, s + 105 * M]]);
}

// ---------------------------------------------------------------------------------------------
// The classifier

/// A hand-made 1m result over `range`: data in `life` except `gaps`, files as given.
fn result(
    sym: &str,
    r: DateRange,
    life: Option<(i64, i64)>,
    inner_gaps: &[(i64, i64)],
    files: &[(&str, FileState)],
) -> SymbolResult {
    let mut res = SymbolResult::new(sym, klines_ds(), r, Some(M));
    let (rs, re) = (day_start_us(r.start), day_start_us(r.end) + DAY_US);
    let mut gaps: Vec<[i64; 2]> = inner_gaps.iter().map(|&(a, b)| [a, b]).collect();
    match life {
        Some((a, b)) => {
            gaps.push([rs, a]);
            gaps.push([b, re]);
            res.life = Some([a, b]);
            res.first_data_us = Some(a);
            res.last_data_us = Some(b - M);
        }
        None => gaps.push([rs, re]),
    }
    res.gaps = crate::checks::merge(gaps, rs, re);
    for day in r.days() {
        let (s, e) = (day_start_us(day), day_start_us(day) + DAY_US);
        let covered: i64 = match life {
            Some((a, b)) => (e.min(b) - s.max(a)).max(0),
            None => 0,
        };
        let missing: i64 = res
            .gaps
            .iter()
            .map(|g| {
                (g[1].min(e).min(life.map_or(0, |l| l.1))
                    - g[0].max(s).max(life.map_or(0, |l| l.0)))
                .max(0)
            })
            .sum();
        let c = res.days.get_mut(&day).unwrap();
        c.rows = ((covered - missing).max(0) / M) as u64;
        c.file = FileState::Present;
    }
    for (day, f) in files {
        res.days.get_mut(&d(day)).unwrap().file = *f;
    }
    res
}

fn params() -> ReportParams {
    ReportParams {
        price_jump_threshold: 0.2,
        outage_share: 0.6,
    }
}

/// A symbol-day that is not plain ok: (symbol, day, status, gaps as (from, to minute, class)).
type NotOk = (String, NaiveDate, DayStatus, Vec<(i64, i64, GapClass)>);

#[test]
fn the_taxonomy_on_five_symbols() {
    let r = range("2025-01-01", "2025-01-05");
    let day = |s: &str| day_start_us(d(s));
    let (start, end) = (day("2025-01-01"), day("2025-01-06"));
    let maint = (day("2025-01-03") + 180 * M, day("2025-01-03") + 210 * M);
    let mut results = vec![
        // A: the maintenance window, and a 404 on the 2nd.
        result(
            "A",
            r,
            Some((start, end)),
            &[maint, (day("2025-01-02"), day("2025-01-03"))],
            &[("2025-01-02", FileState::Missing)],
        ),
        // B: the maintenance window, and the 4th stops at 18:00.
        result(
            "B",
            r,
            Some((start, end)),
            &[maint, (day("2025-01-04") + 1080 * M, day("2025-01-05"))],
            &[],
        ),
        // C: listed on the 2nd at 00:00, the maintenance window, a gap inside the 5th.
        result(
            "C",
            r,
            Some((day("2025-01-02"), end)),
            &[
                maint,
                (day("2025-01-05") + 600 * M, day("2025-01-05") + 605 * M),
            ],
            &[],
        ),
        // D: delisted after the 3rd, the maintenance window.
        result("D", r, Some((start, day("2025-01-04"))), &[maint], &[]),
        // E: misses its first hour of the 3rd too, no maintenance: starts late.
        result(
            "E",
            r,
            Some((start, end)),
            &[(day("2025-01-03"), day("2025-01-03") + 60 * M), maint],
            &[],
        ),
    ];
    // An error on E's 5th.
    results[4].find(
        FindingKind::Ohlc,
        d("2025-01-05"),
        Some(day("2025-01-05")),
        "x".into(),
    );

    assert_eq!(outages(&results, 0.6), vec![maint]);
    let rep = assemble(
        &results,
        Assembly {
            dataset: klines_ds(),
            range: r,
            params: params(),
            fingerprint: "f".into(),
            generated_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            run_id: "r",
        },
    );
    let mut not_ok: Vec<NotOk> = Vec::new();
    for (sym, s) in &rep.symbols {
        for (day, dr) in &s.days {
            if dr.status != DayStatus::Ok || !dr.gaps.is_empty() {
                let g = dr
                    .gaps
                    .iter()
                    .map(|g| {
                        (
                            (g.start_us - day_start_us(*day)) / M,
                            (g.end_us - day_start_us(*day)) / M,
                            g.class,
                        )
                    })
                    .collect();
                not_ok.push((sym.clone(), *day, dr.status, g));
            }
        }
    }
    use DayStatus as S;
    use GapClass as G;
    let want = vec![
        (
            "A",
            "2025-01-02",
            S::MissingFile,
            vec![(0, 1440, G::MissingFile)],
        ),
        ("A", "2025-01-03", S::Outage, vec![(180, 210, G::Outage)]),
        ("B", "2025-01-03", S::Outage, vec![(180, 210, G::Outage)]),
        (
            "B",
            "2025-01-04",
            S::Partial,
            vec![(1080, 1440, G::Partial)],
        ),
        (
            "C",
            "2025-01-01",
            S::BeforeListing,
            vec![(0, 1440, G::BeforeListing)],
        ),
        ("C", "2025-01-03", S::Outage, vec![(180, 210, G::Outage)]),
        ("C", "2025-01-05", S::Gap, vec![(600, 605, G::Gap)]),
        ("D", "2025-01-03", S::Outage, vec![(180, 210, G::Outage)]),
        (
            "D",
            "2025-01-04",
            S::AfterDelisting,
            vec![(0, 1440, G::AfterDelisting)],
        ),
        (
            "D",
            "2025-01-05",
            S::AfterDelisting,
            vec![(0, 1440, G::AfterDelisting)],
        ),
        (
            "E",
            "2025-01-03",
            S::Partial,
            vec![(0, 60, G::Partial), (180, 210, G::Outage)],
        ),
        ("E", "2025-01-05", S::Error, vec![]),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(s, day, st, g)| (s.to_string(), d(day), st, g))
        .collect();
    assert_eq!(not_ok, want);
    assert_eq!(rep.outages.len(), 1);
    assert_eq!(rep.outages[0].symbols, vec!["A", "B", "C", "D", "E"]);
    let a3 = &rep.symbols["A"].days[&d("2025-01-03")];
    assert_eq!((a3.expected, a3.missing, a3.rows), (Some(1440), 30, 1410));
    let c2 = &rep.symbols["C"].days[&d("2025-01-01")];
    assert_eq!((c2.expected, c2.missing), (Some(0), 0));
    assert_eq!(rep.totals.status[&S::Ok], 25 - 12);
    assert_eq!(rep.totals.errors, 1);

    // The page: self-contained, lists the gaps, escapes names.
    let html = crate::html::render(&rep);
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(
        html.contains("2025-01-04 18:00 → 2025-01-05 00:00"),
        "partial listed"
    );
    assert!(html.contains("2025-01-03 03:00 → 03:30"), "outage listed");
    // Symbol labels and the month/day header stay in view while the map scrolls; the month
    // is named over its days; every status has its own colour in the legend.
    assert!(
        html.contains("tbody th{position:sticky;left:0"),
        "sticky labels"
    );
    assert!(
        html.contains("<th class=\"m1\" colspan=\"5\">2025-01</th>"),
        "month row"
    );
    let colours: std::collections::BTreeSet<&str> =
        S::ALL.iter().map(|s| crate::html::colour(*s)).collect();
    assert_eq!(colours.len(), S::ALL.len(), "a colour per status");
    for s in S::ALL {
        let entry = format!("{}\"></i>{} (", crate::html::colour(s), s.as_str());
        assert!(html.contains(&entry), "legend lacks {entry}");
    }
    let text = crate::summary::text(&rep, "x.html");
    assert!(text.contains("missing_file    A 2025-01-02"), "{text}");
}

#[test]
fn outages_need_the_share_and_two_symbols() {
    let r = range("2025-01-01", "2025-01-01");
    let s = day_start_us(d("2025-01-01"));
    let w = (s + 60 * M, s + 90 * M);
    let full = Some((s, s + DAY_US));
    let one = [w];
    // 2 of 4 alive miss it: 50% < 60%.
    let few: Vec<SymbolResult> = (0..4)
        .map(|i| {
            result(
                &format!("S{i}"),
                r,
                full,
                if i < 2 { &one[..] } else { &[] },
                &[],
            )
        })
        .collect();
    assert!(outages(&few, 0.6).is_empty());
    // 3 of 4: an outage, exactly over the shared minutes.
    let mut more = few.clone();
    more[2] = result("S2", r, full, &[(s + 70 * M, s + 100 * M)], &[]);
    assert_eq!(outages(&more, 0.6), vec![(s + 70 * M, s + 90 * M)]);
    // A lone symbol is never an outage, whatever the share.
    assert!(outages(&few[..1], 0.01).is_empty());
    // Symbols not yet listed do not count as alive.
    let late = vec![
        result("A", r, full, &[w], &[]),
        result("B", r, full, &[w], &[]),
        result("C", r, Some((s + 120 * M, s + DAY_US)), &[], &[]),
    ];
    assert_eq!(outages(&late, 1.0), vec![w]);
}

#[test]
fn a_symbol_without_data_is_missing_or_gap_per_day() {
    let r = range("2025-01-01", "2025-01-02");
    let res = result(
        "Z",
        r,
        None,
        &[],
        &[
            ("2025-01-01", FileState::Missing),
            ("2025-01-02", FileState::Unknown),
        ],
    );
    let rep = assemble(
        &[res],
        Assembly {
            dataset: klines_ds(),
            range: r,
            params: params(),
            fingerprint: String::new(),
            generated_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            run_id: "r",
        },
    );
    let days: BTreeMap<NaiveDate, DayStatus> = rep.symbols["Z"]
        .days
        .iter()
        .map(|(d, r)| (*d, r.status))
        .collect();
    assert_eq!(days[&d("2025-01-01")], DayStatus::MissingFile);
    assert_eq!(days[&d("2025-01-02")], DayStatus::Gap);
}
