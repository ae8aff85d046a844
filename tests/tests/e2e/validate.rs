//! End to end: the synthetic archive with injected defects (a late-listed symbol, a delisted one,
//! a maintenance window in every symbol, a missing file, a partial day, a duplicated row, a broken
//! OHLC row) goes through download → extract → convert → optimize, then `validate`: each defect
//! is found and classified, and nothing else is reported. Errors fail the run unless
//! `--warn-only`; a rerun is a no-op; shards assemble one report; the HTML is self-contained.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use archive_sim::{SimConfig, SimHandle, SimServer};
use chrono::{NaiveDate, NaiveDateTime};
use common::{job, report, stderr, stdout};
use shared::paths::{
    ArchiveFile, DataType as Dt, Dataset, FileDate, Interval, Market, ValidationPath,
};
use shared::plan::DateRange;
use shared::validation::{DatasetReport, DayStatus, FindingKind, GapClass, Verdicts};

const SYMBOLS: &str = "BTCUSDT,ETHUSDT,SOLUSDT,FTTUSDT";
/// The pipeline runs from a day earlier than validation: UM metrics are end-labelled, so a day's
/// 00:00 row sits in the previous day's file (binance-archive.md §3.8).
const ETL_START: &str = "2024-12-04";
const START: &str = "2024-12-05";
const END: &str = "2025-01-20";
const TYPES: &str = "klines,aggTrades,fundingRate,metrics";

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

fn us(s: &str) -> i64 {
    at(s).and_utc().timestamp_micros()
}

fn klines() -> Dataset {
    Dataset::new(Market::Um, Dt::Klines, Some(Interval::M1)).unwrap()
}

fn kline_key(sym: &str, day: &str) -> String {
    ArchiveFile::new(klines(), sym, FileDate::Day(d(day))).key()
}

/// The demo universe with every defect the issue names.
fn config() -> SimConfig {
    let mut c = SimConfig::demo();
    c.trades_per_minute = (2, 6);
    c.missing = vec![kline_key("ETHUSDT", "2024-12-20")];
    c.truncated = vec![(kline_key("BTCUSDT", "2025-01-03"), at("2025-01-03 18:00"))];
    c.maintenance = vec![(at("2025-01-08 03:00"), at("2025-01-08 03:30"))];
    c.duplicated_rows = vec![(kline_key("SOLUSDT", "2025-01-12"), 100)];
    c.broken_ohlc = vec![(kline_key("FTTUSDT", "2025-01-06"), at("2025-01-06 10:00"))];
    c
}

async fn etl(sim: &SimHandle, store: &Path) {
    for name in ["download", "extract", "convert", "optimize"] {
        let mut c = job(name);
        c.args(["--store", store.to_str().unwrap(), "--market", "um"])
            .args(["--data-type", TYPES, "--symbols", SYMBOLS])
            .args(["--start", ETL_START, "--end", END]);
        if name == "download" {
            c.args(["--source", &sim.base_url(), "--retry-base-ms", "20"]);
        }
        let out = tokio::process::Command::from(c).output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}:\n{}", stderr(&out));
    }
}

async fn validate(store: &Path, start: &str, extra: &[&str]) -> std::process::Output {
    let mut c = job("validate");
    c.args(["--store", store.to_str().unwrap(), "--market", "um"])
        .args(["--data-type", TYPES, "--symbols", SYMBOLS])
        .args(["--start", start, "--end", END])
        .args(extra);
    tokio::process::Command::from(c).output().await.unwrap()
}

fn load(store: &Path, ds: Dataset, range: DateRange) -> DatasetReport {
    let p = ValidationPath::Report { dataset: ds, range }.path();
    serde_json::from_slice(&std::fs::read(store.join(&p)).unwrap_or_else(|e| panic!("{p}: {e}")))
        .unwrap()
}

/// A gap as (start, end, class) with times as `YYYY-MM-DD HH:MM`.
type G = (String, String, GapClass);
/// A symbol-day's verdict: ((symbol, day), (status, gaps)).
type V = ((String, NaiveDate), (DayStatus, Vec<G>));

/// Every symbol-day that is not plain `ok` or has gaps: (symbol, day) → (status, gaps).
fn verdicts(r: &DatasetReport) -> BTreeMap<(String, NaiveDate), (DayStatus, Vec<G>)> {
    let fmt = |t: i64| {
        chrono::DateTime::from_timestamp_micros(t)
            .unwrap()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let mut out = BTreeMap::new();
    for (sym, s) in &r.symbols {
        for (day, dr) in &s.days {
            if dr.status != DayStatus::Ok || !dr.gaps.is_empty() {
                let gaps = dr
                    .gaps
                    .iter()
                    .map(|g| (fmt(g.start_us), fmt(g.end_us), g.class))
                    .collect();
                out.insert((sym.clone(), *day), (dr.status, gaps));
            }
        }
    }
    out
}

/// Whole days of one class, with the matching day-long gap each.
fn whole_days(sym: &str, first: &str, last: &str, status: DayStatus, class: GapClass) -> Vec<V> {
    d(first)
        .iter_days()
        .take_while(|x| *x <= d(last))
        .map(|day| {
            let s = format!("{day} 00:00");
            let e = format!("{} 00:00", day.succ_opt().unwrap());
            ((sym.to_string(), day), (status, vec![(s, e, class)]))
        })
        .collect()
}

fn one(sym: &str, day: &str, status: DayStatus, gaps: &[(&str, &str, GapClass)]) -> V {
    let gaps = gaps
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
        .collect();
    ((sym.to_string(), d(day)), (status, gaps))
}

/// (kind, symbol, day) of every error, warning and note.
fn findings(r: &DatasetReport) -> Vec<(FindingKind, String, NaiveDate)> {
    let mut v: Vec<_> = r
        .symbols
        .iter()
        .flat_map(|(sym, s)| {
            s.errors
                .iter()
                .chain(&s.warnings)
                .chain(&s.notes)
                .map(move |f| (f.kind, sym.clone(), f.day))
        })
        .collect();
    v.sort();
    v
}

/// Listing and delisting, the same in every dataset.
fn listing() -> Vec<V> {
    let mut v = whole_days(
        "SOLUSDT",
        "2024-12-05",
        "2024-12-09",
        DayStatus::BeforeListing,
        GapClass::BeforeListing,
    );
    v.extend(whole_days(
        "FTTUSDT",
        "2025-01-16",
        "2025-01-20",
        DayStatus::AfterDelisting,
        GapClass::AfterDelisting,
    ));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_defect_is_found_and_classified_and_nothing_else() {
    let sim = SimServer::start(config(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    etl(&sim, store).await;
    let range = DateRange::new(d(START), d(END)).unwrap();

    // The broken OHLC row is an error: exit 1, the symbol named.
    let out = validate(store, START, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["counts"]["done"], 16, "{r}");
    assert_eq!(r["counts"]["failed"], 0, "{r}");
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{r}");
    assert_eq!(failures[0]["unit"], "futures-um/klines-1m/FTTUSDT");
    assert!(
        failures[0]["reason"].as_str().unwrap().contains("ohlc"),
        "{r}"
    );
    // The human summary is on stdout, before the JSON report.
    let text = stdout(&out);
    assert!(text.contains("validate futures-um/klines-1m 2024-12-05..2025-01-20: 4 symbols"));
    assert!(
        text.contains("ERROR   FTTUSDT 2025-01-06 10:00:00 ohlc"),
        "{text}"
    );
    assert!(
        text.contains("missing_file    ETHUSDT 2024-12-20"),
        "{text}"
    );

    // klines: every defect, classified; nothing else.
    let k = load(store, klines(), range);
    let outage = ("2025-01-08 03:00", "2025-01-08 03:30", GapClass::Outage);
    let mut want: BTreeMap<_, _> = listing().into_iter().collect();
    for sym in ["BTCUSDT", "ETHUSDT", "SOLUSDT", "FTTUSDT"] {
        want.extend([one(sym, "2025-01-08", DayStatus::Outage, &[outage])]);
    }
    want.extend([
        one(
            "ETHUSDT",
            "2024-12-20",
            DayStatus::MissingFile,
            &[(
                "2024-12-20 00:00",
                "2024-12-21 00:00",
                GapClass::MissingFile,
            )],
        ),
        one(
            "BTCUSDT",
            "2025-01-03",
            DayStatus::Partial,
            &[("2025-01-03 18:00", "2025-01-04 00:00", GapClass::Partial)],
        ),
        one("FTTUSDT", "2025-01-06", DayStatus::Error, &[]),
    ]);
    assert_eq!(verdicts(&k), want);
    assert_eq!(
        findings(&k),
        vec![
            (FindingKind::Ohlc, "FTTUSDT".into(), d("2025-01-06")),
            (
                FindingKind::SourceDuplicates,
                "SOLUSDT".into(),
                d("2025-01-12")
            ),
        ]
    );
    let ohlc = &k.symbols["FTTUSDT"].errors[0];
    assert_eq!(ohlc.time_us, Some(us("2025-01-06 10:00")));
    let sol = &k.symbols["SOLUSDT"].days[&d("2025-01-12")];
    assert_eq!(
        (sol.status, sol.source_duplicates, sol.rows),
        (DayStatus::Ok, 1, 1440)
    );
    assert_eq!(k.outages.len(), 1);
    assert_eq!(
        (k.outages[0].start_us, k.outages[0].end_us),
        (us("2025-01-08 03:00"), us("2025-01-08 03:30"))
    );
    assert_eq!(k.outages[0].symbols.len(), 4);
    let btc = &k.symbols["BTCUSDT"].days[&d("2025-01-03")];
    assert_eq!(
        (btc.rows, btc.expected, btc.missing),
        (1080, Some(1440), 360)
    );
    assert_eq!(
        k.symbols["SOLUSDT"].first_data_us,
        Some(us("2024-12-10 00:00"))
    );
    assert_eq!(
        k.symbols["FTTUSDT"].last_data_us,
        Some(us("2025-01-15 23:59"))
    );

    // aggTrades: the maintenance window has no trades but ids carry on: nothing to report.
    let a = load(
        store,
        Dataset::new(Market::Um, Dt::AggTrades, None).unwrap(),
        range,
    );
    assert_eq!(verdicts(&a), listing().into_iter().collect());
    assert_eq!(findings(&a), vec![]);

    // fundingRate: ETHUSDT's interval changes are notes.
    let f = load(
        store,
        Dataset::new(Market::Um, Dt::FundingRate, None).unwrap(),
        range,
    );
    assert_eq!(verdicts(&f), listing().into_iter().collect());
    assert_eq!(
        findings(&f),
        vec![
            (
                FindingKind::FundingIntervalChange,
                "ETHUSDT".into(),
                d("2024-12-21")
            ),
            (
                FindingKind::FundingIntervalChange,
                "ETHUSDT".into(),
                d("2025-01-10")
            ),
        ]
    );

    // metrics: end-labelled, so SOLUSDT starts at 00:05 on its listing day and FTTUSDT's last
    // row is 00:00 the day after its delisting.
    let m = load(
        store,
        Dataset::new(Market::Um, Dt::Metrics, None).unwrap(),
        range,
    );
    let mut want: BTreeMap<_, _> = listing().into_iter().collect();
    want.extend([
        one(
            "SOLUSDT",
            "2024-12-10",
            DayStatus::Ok,
            &[(
                "2024-12-10 00:00",
                "2024-12-10 00:05",
                GapClass::BeforeListing,
            )],
        ),
        one(
            "FTTUSDT",
            "2025-01-16",
            DayStatus::AfterDelisting,
            &[(
                "2025-01-16 00:05",
                "2025-01-17 00:00",
                GapClass::AfterDelisting,
            )],
        ),
    ]);
    assert_eq!(verdicts(&m), want);
    assert_eq!(findings(&m), vec![]);

    // The page: present, self-contained, listing the gaps.
    let html_path = store.join(
        ValidationPath::Html {
            dataset: klines(),
            range,
        }
        .path(),
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    for s in [
        "2025-01-03 18:00 → 2025-01-04 00:00",
        "2025-01-08 03:00 → 03:30",
        "2024-12-20 00:00 → 2024-12-21 00:00",
        "missing_file",
        "FTTUSDT",
    ] {
        assert!(html.contains(s), "the page lacks {s}");
    }

    // A rerun is a no-op: nothing validated, nothing rewritten, the same verdict.
    let before = std::fs::read(store.join(k.path())).unwrap();
    let out = validate(store, START, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(
        (
            r["counts"]["done"].as_u64(),
            r["counts"]["skipped"].as_u64()
        ),
        (Some(0), Some(16)),
        "{r}"
    );
    assert!(
        r["details"]["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["written"] == false),
        "{r}"
    );
    assert_eq!(std::fs::read(store.join(k.path())).unwrap(), before);
    // --warn-only: the same errors, exit 0.
    let out = validate(store, START, &["--warn-only"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report(&out)["failures"].as_array().unwrap().len(), 0);

    // Shards: each writes its symbols; the last one's report covers all four, outage included.
    let later = DateRange::new(d("2025-01-01"), d(END)).unwrap();
    for shard in ["0/2", "1/2"] {
        let out = validate(
            store,
            "2025-01-01",
            &["--shard", shard, "--data-type", "klines", "--warn-only"],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let s = load(store, klines(), later);
    assert_eq!(s.symbols.len(), 4);
    assert_eq!(s.outages.len(), 1);
    assert_eq!(s.status("FTTUSDT", d("2025-01-06")), Some(DayStatus::Error));
    assert_eq!(
        s.status("BTCUSDT", d("2025-01-03")),
        Some(DayStatus::Partial)
    );

    // What a downstream job reads: the latest verdict per symbol-day across both reports.
    let v = Verdicts::load(
        &shared::Store::open(store.to_str().unwrap()).unwrap(),
        &klines(),
    )
    .await
    .unwrap();
    assert!(v.is_error("FTTUSDT", d("2025-01-06")));
    assert!(!v.is_error("FTTUSDT", d("2025-01-07")));
    assert_eq!(
        v.status("ETHUSDT", d("2024-12-20")),
        Some(DayStatus::MissingFile)
    );
    assert_eq!(
        v.status("SOLUSDT", d("2024-12-05")),
        Some(DayStatus::BeforeListing)
    );
    sim.shutdown().await;
}
