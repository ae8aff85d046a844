//! End to end on the synthetic archive: download → extract → convert → optimize for UM 1m
//! klines, fundingRate and metrics, then `aggregate`: bars per hour that holds a minute, values
//! against the optimized inputs, funding and open interest joined as of each close, a rerun that
//! does nothing, an extended range that computes only the new days and gives the same file as
//! one run, and 15m, 4h and 1d bars.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use archive_sim::{SimConfig, SimServer};
use common::{f64s, i64s, read_all, walk};

const START: &str = "2024-12-28";
const END: &str = "2025-01-05";
const SYMBOLS: &str = "BTCUSDT,ETHUSDT";
const H: i64 = 3_600_000_000;

async fn run(name: &str, store: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--market", "um"];
    a.extend_from_slice(args);
    common::run_ok(name, store, &a).await
}

async fn aggregate(store: &Path, freq: &str, start: &str, end: &str) -> serde_json::Value {
    run(
        "aggregate",
        store,
        &[
            "--symbols",
            SYMBOLS,
            "--start",
            start,
            "--end",
            end,
            "--freq",
            freq,
        ],
    )
    .await
}

fn sha(path: &Path) -> String {
    shared::checksum::sha256_hex(&std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_features_from_the_synthetic_archive_incremental_and_other_lengths() {
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    for name in ["download", "extract", "convert", "optimize"] {
        let mut args = vec![
            "--data-type",
            "klines,fundingRate,metrics",
            "--symbols",
            SYMBOLS,
            "--start",
            START,
            "--end",
            END,
        ];
        let url = sim.base_url();
        if name == "download" {
            args.extend(["--source", url.as_str(), "--retry-base-ms", "20"]);
        }
        run(name, store, &args).await;
    }
    // A second store with the same optimized inputs, for the incremental run.
    let dir_b = tempfile::tempdir().unwrap();
    let store_b = dir_b.path();
    for sub in ["optimized", "_manifest/optimize"] {
        let from = store.join(sub);
        for f in walk(&from) {
            let to = store_b.join(sub).join(f.strip_prefix(&from).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
        }
    }

    let r = aggregate(store, "1h", START, END).await;
    // Two symbols × two years (2024-12-28..31, 2025-01-01..05).
    assert_eq!(r["counts"]["done"], 4, "{r}");
    assert_eq!(r["details"]["days_computed"], 18);

    for sym in ["BTCUSDT", "ETHUSDT"] {
        let klines = read_all(&store.join(format!("optimized/futures-um/klines-1m/symbol={sym}")));
        let t = i64s(&klines, "open_time");
        let close: Vec<f64> = f64s(&klines, "close")
            .into_iter()
            .map(|x| x.unwrap())
            .collect();
        let vol: Vec<f64> = f64s(&klines, "volume")
            .into_iter()
            .map(|x| x.unwrap())
            .collect();
        let (lo, hi) = (1_735_344_000_000_000i64, 1_736_121_600_000_000i64); // 12-28, 01-06
        // Expected hourly sums, opens and closes straight from the minutes.
        let mut by_hour: BTreeMap<i64, (f64, f64, i64)> = BTreeMap::new();
        for i in 0..t.len() {
            if t[i] < lo || t[i] >= hi {
                continue;
            }
            let e = by_hour.entry(t[i] / H * H).or_insert((0.0, 0.0, 0));
            e.0 += vol[i];
            e.1 = close[i];
            e.2 += 1;
        }
        let feat = read_all(&store.join(format!("features/futures-um/1h/symbol={sym}")));
        let ot = i64s(&feat, "open_time");
        assert_eq!(
            ot,
            by_hour.keys().copied().collect::<Vec<_>>(),
            "{sym}: one bar per hour with a minute"
        );
        let fv = f64s(&feat, "volume");
        let fc = f64s(&feat, "close");
        let fm = i64s(&feat, "minutes");
        for (k, (h, (v, c, n))) in by_hour.iter().enumerate() {
            assert!(
                (fv[k].unwrap() - v).abs() <= 1e-9 * v.abs().max(1.0),
                "{sym} {h}"
            );
            assert_eq!(fc[k], Some(*c));
            assert_eq!(fm[k], *n);
        }
        // Funding: the latest settled record at or before each close, within 24 h.
        let funding =
            read_all(&store.join(format!("optimized/futures-um/fundingRate/symbol={sym}")));
        let ct = i64s(&funding, "calc_time");
        let rate = f64s(&funding, "last_funding_rate");
        let fr = f64s(&feat, "funding_rate");
        for (k, open) in ot.iter().enumerate() {
            let close_time = open + H - 1_000;
            let j = ct.partition_point(|&c| c <= close_time);
            let want = j
                .checked_sub(1)
                .filter(|&j| close_time - ct[j] <= 24 * H)
                .and_then(|j| rate[j]);
            assert_eq!(fr[k], want, "{sym} bar {open}");
        }
        assert!(fr.iter().filter(|x| x.is_some()).count() > ot.len() / 2);
        // Open interest from metrics: present for most bars (5-minute snapshots).
        let oi = f64s(&feat, "open_interest");
        assert!(oi.iter().filter(|x| x.is_some()).count() > ot.len() * 9 / 10);
        if sym == "ETHUSDT" {
            // ETHUSDT's funding interval is 4h here, 1h from 2025-01-10 (outside the range).
            let hours: BTreeSet<i64> = feat
                .column("funding_interval_hours")
                .unwrap()
                .i64()
                .unwrap()
                .iter()
                .flatten()
                .collect();
            assert!(hours.contains(&4), "{hours:?}");
        }
    }

    // A rerun finds everything up to date.
    let files: Vec<_> = walk(&store.join("features"))
        .into_iter()
        .map(|p| (p.clone(), sha(&p)))
        .collect();
    let r = aggregate(store, "1h", START, END).await;
    assert_eq!(r["counts"]["skipped"], 4, "{r}");
    assert_eq!(r["counts"]["done"], 0);
    for (p, s) in &files {
        assert_eq!(&sha(p), s);
    }

    // Incremental: [12-28, 01-02] then [12-28, 01-05] in store B equals one run in store A,
    // byte for byte, and the extension computes only 01-03..01-05.
    aggregate(store, "4h", START, END).await;
    let first = aggregate(store_b, "4h", START, "2025-01-02").await;
    assert_eq!(first["details"]["days_computed"], 2 * 6);
    let ext = aggregate(store_b, "4h", START, END).await;
    assert_eq!(ext["details"]["days_computed"], 2 * 3, "{ext}");
    assert_eq!(
        ext["counts"]["skipped"], 2,
        "the 2024 units are untouched: {ext}"
    );
    for sym in ["BTCUSDT", "ETHUSDT"] {
        for year in [2024, 2025] {
            let rel = format!("features/futures-um/4h/symbol={sym}/year={year}/part-0.parquet");
            assert_eq!(sha(&store.join(&rel)), sha(&store_b.join(&rel)), "{rel}");
        }
    }

    // Other bar lengths: aligned, complete for full days.
    for (freq, per_day) in [("15m", 96), ("1d", 1)] {
        aggregate(store, freq, START, END).await;
        let df = read_all(&store.join(format!("features/futures-um/{freq}/symbol=BTCUSDT")));
        let ot = i64s(&df, "open_time");
        let delta = if freq == "1d" { 24 * H } else { H / 4 };
        assert!(ot.iter().all(|t| t % delta == 0));
        assert!(
            ot.len() <= 9 * per_day && ot.len() >= 8 * per_day,
            "{freq}: {}",
            ot.len()
        );
        assert!(ot.windows(2).all(|w| w[0] < w[1]));
    }

    // A validation verdict of `error` for BTCUSDT on 2025-01-02: that day's bars go, and the
    // next day is recomputed (its first minute's return needed the excluded day's last minute).
    let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 2).unwrap();
    let klines = shared::paths::Dataset::new(
        shared::paths::Market::Um,
        shared::paths::DataType::Klines,
        Some(shared::paths::Interval::M1),
    )
    .unwrap();
    let day_report = |status| shared::validation::DayReport {
        status,
        rows: 1440,
        expected: Some(1440),
        missing: 0,
        zero_volume: 0,
        errors: 0,
        warnings: 0,
        source_duplicates: 0,
        gaps: vec![],
        provisional: false,
    };
    let report = shared::validation::DatasetReport {
        schema: shared::validation::SCHEMA.into(),
        dataset: klines,
        scope: klines.scope(),
        range: shared::plan::DateRange::new(day, day).unwrap(),
        generated_at: chrono::Utc::now(),
        run_id: "t".into(),
        grid_us: Some(60_000_000),
        params: shared::validation::ReportParams {
            price_jump_threshold: 0.2,
            outage_share: 0.6,
        },
        fingerprint: String::new(),
        totals: Default::default(),
        outages: vec![],
        symbols: [(
            "BTCUSDT".to_string(),
            shared::validation::SymbolReport {
                first_data_us: None,
                last_data_us: None,
                data_until_us: None,
                days: [(day, day_report(shared::validation::DayStatus::Error))].into(),
                errors: vec![],
                warnings: vec![],
                notes: vec![],
                error_count: 1,
                warning_count: 0,
            },
        )]
        .into(),
    };
    let path = store.join(report.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
    let r = aggregate(store, "1h", START, END).await;
    assert_eq!(r["details"]["symbol_days_excluded"], 1, "{r}");
    assert_eq!(r["details"]["days_computed"], 2, "{r}");
    assert_eq!(r["counts"]["skipped"], 3, "{r}");
    let feat = read_all(&store.join("features/futures-um/1h/symbol=BTCUSDT"));
    let ot = i64s(&feat, "open_time");
    let (d0, d1) = (1_735_776_000_000_000i64, 1_735_862_400_000_000i64); // 01-02, 01-03
    assert!(
        !ot.iter().any(|t| (d0..d1).contains(t)),
        "no bar of the excluded day"
    );
    assert_eq!(
        ot.iter().filter(|t| (d1..d1 + 24 * H).contains(*t)).count(),
        24
    );
    let rv = f64s(&feat, "realized_variance");
    let k = ot.iter().position(|&t| t == d1).unwrap();
    assert!(rv[k].is_some(), "01-03 00:00 still has 59 returns");
}
