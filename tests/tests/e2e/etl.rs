//! End to end on the synthetic archive: download → extract → convert → optimize for spot and UM
//! klines, aggTrades, fundingRate and metrics — row counts, schemas, sort order, uniqueness and
//! values against the generator; reruns are no-ops; a republished upstream file recomputes
//! exactly the partitions it affects.

use crate::common;

use std::path::Path;

use archive_sim::{SimConfig, SimHandle, SimServer};
use chrono::NaiveDate;
use common::{job, report, stderr};
use frames::polars::prelude::*;
use shared::formats::format_of;
use shared::paths::{ArchiveFile, DataType as Dt, Dataset, FileDate, Interval, Market};

const START: &str = "2024-12-30";
const END: &str = "2025-01-31";

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Run one job over (market, data types, symbols) and the test range; returns the JSON report.
async fn step(
    name: &str,
    sim: &SimHandle,
    store: &Path,
    market: &str,
    types: &str,
    symbols: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut c = job(name);
    c.args(["--store", store.to_str().unwrap(), "--market", market])
        .args([
            "--data-type",
            types,
            "--symbols",
            symbols,
            "--start",
            START,
            "--end",
            END,
        ])
        .args(extra);
    if name == "download" {
        c.args(["--source", &sim.base_url(), "--retry-base-ms", "20"]);
    }
    let out = tokio::process::Command::from(c).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{name} {market} {types}:\n{}",
        stderr(&out)
    );
    report(&out)
}

async fn pipeline(
    sim: &SimHandle,
    store: &Path,
    extra_download: &[&str],
) -> Vec<serde_json::Value> {
    let mut reports = Vec::new();
    for (market, types, symbols) in [
        (
            "um",
            "klines,aggTrades,fundingRate,metrics",
            "BTCUSDT,ETHUSDT",
        ),
        ("spot", "klines,aggTrades", "BTCUSDT"),
    ] {
        for name in ["download", "extract", "convert", "optimize"] {
            let extra: &[&str] = if name == "download" {
                extra_download
            } else {
                &[]
            };
            reports.push(step(name, sim, store, market, types, symbols, extra).await);
        }
    }
    reports
}

fn read(store: &Path, rel: &str) -> DataFrame {
    let f = std::fs::File::open(store.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    ParquetReader::new(f).finish().unwrap()
}

fn i64s(df: &DataFrame, c: &str) -> Vec<i64> {
    df.column(c)
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn f64s(df: &DataFrame, c: &str) -> Vec<f64> {
    df.column(c)
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The generator's files for a dataset over the test range, as the planner chose them.
fn files(ds: Dataset, sym: &str) -> Vec<ArchiveFile> {
    shared::plan::plan_symbol(
        &ds,
        sym,
        shared::plan::DateRange::new(d(START), d(END)).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_to_optimized_parquet_matches_the_generator() {
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let reports = pipeline(&sim, store, &[]).await;
    for r in &reports {
        assert_eq!(r["counts"]["failed"], 0, "{r}");
    }
    let generator = sim.archive().generator();

    for (market, sym) in [
        (Market::Um, "BTCUSDT"),
        (Market::Um, "ETHUSDT"),
        (Market::Spot, "BTCUSDT"),
    ] {
        // klines: every minute of the range, sorted, unique, values as generated.
        let ds = Dataset::new(market, Dt::Klines, Some(Interval::M1)).unwrap();
        let want: Vec<_> = files(ds, sym)
            .iter()
            .flat_map(|f| generator.klines(f))
            .collect();
        assert_eq!(want.len(), 33 * 1440);
        let by_time: std::collections::HashMap<i64, _> =
            want.iter().map(|k| (k.open_time, k)).collect();
        let mut got_rows = 0;
        for (y, m) in [(2024, 12), (2025, 1)] {
            let df = read(store, &ds.optimized_partition(sym, y, m));
            // Schema: normalized names and types.
            let schema = df.schema();
            assert_eq!(
                schema.get("open_time"),
                Some(&DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(TimeZone::UTC)
                ))
            );
            assert_eq!(schema.get("trades"), Some(&DataType::Int64));
            assert_eq!(schema.get("open"), Some(&DataType::Float64));
            assert!(schema.get("ignore").is_none());
            let t = i64s(&df, "open_time");
            assert!(
                t.windows(2).all(|w| w[0] < w[1]),
                "{market:?} {sym} {y}-{m}: not sorted/unique"
            );
            let open = f64s(&df, "open");
            let vol = f64s(&df, "volume");
            let ct = i64s(&df, "close_time");
            for (i, ts) in t.iter().enumerate() {
                let k = by_time.get(ts).expect("generated minute");
                assert!(
                    close(open[i], k.open) && close(vol[i], k.volume),
                    "{sym} {ts}"
                );
                // Spot switches to µs in 2025: normalized to µs either way.
                assert_eq!(ct[i], k.close_time, "{sym} {ts}");
            }
            got_rows += df.height();
        }
        assert_eq!(got_rows, want.len());

        // aggTrades: ids unique and sorted by (time, id); count as generated.
        let ds = Dataset::new(market, Dt::AggTrades, None).unwrap();
        let want: usize = files(ds, sym)
            .iter()
            .map(|f| generator.agg_trades(f).len())
            .sum();
        let mut got = 0;
        for (y, m) in [(2024, 12), (2025, 1)] {
            let df = read(store, &ds.optimized_partition(sym, y, m));
            let ids = i64s(&df, "agg_trade_id");
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "aggTrades ids not strictly increasing"
            );
            let t = i64s(&df, "transact_time");
            assert!(t.windows(2).all(|w| w[0] <= w[1]));
            got += df.height();
        }
        assert_eq!(got, want, "{market:?} {sym} aggTrades");
    }

    // fundingRate (monthly archives only) and metrics (daily only, with snapshot_time).
    let funding = Dataset::new(Market::Um, Dt::FundingRate, None).unwrap();
    let want: Vec<_> = files(funding, "ETHUSDT")
        .iter()
        .flat_map(|f| generator.funding(f))
        .filter(|r| r.calc_time >= 1_735_516_800_000_000) // from 2024-12-30
        .collect();
    let df = read(store, &funding.optimized_partition("ETHUSDT", 2025, 1));
    let hours: Vec<i64> = i64s(&df, "funding_interval_hours");
    // ETHUSDT's interval goes 8h → 4h → 1h in the demo universe: all three in January.
    for h in [4, 1] {
        assert!(hours.contains(&h), "{hours:?}");
    }
    assert_eq!(
        df.height(),
        want.iter()
            .filter(|r| r.calc_time >= 1_735_689_600_000_000)
            .count()
    );
    let metrics = Dataset::new(Market::Um, Dt::Metrics, None).unwrap();
    let df = read(store, &metrics.optimized_partition("BTCUSDT", 2025, 1));
    let snap = i64s(&df, "snapshot_time");
    assert!(
        snap.windows(2).all(|w| w[0] < w[1]),
        "metrics not unique on snapshot_time"
    );
    assert_eq!(df.height(), 31 * 288, "one row per 5 minutes of January");
    let key = format_of(&metrics).key.to_vec();
    assert_eq!(key, vec!["snapshot_time"]);

    // DuckDB, Polars and PyArrow read the compacted tree as one Hive-partitioned dataset, and
    // the daily partitions `convert` writes (its own page encoding: delta-packed integers), and
    // agree on every float value.
    if let Some(python) = common::python_with_readers() {
        let klines = Dataset::new(Market::Um, Dt::Klines, Some(Interval::M1)).unwrap();
        let agg = Dataset::new(Market::Um, Dt::AggTrades, None).unwrap();
        let agg_root = store.join(format!("parquet/{}", agg.scope()));
        let agg_rows: usize = common::walk(&agg_root)
            .iter()
            .map(|p| read(store, p.strip_prefix(store).unwrap().to_str().unwrap()).height())
            .sum();
        assert!(agg_rows > 0);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_optimized.py");
        for (root, time, rows, parts) in [
            (
                store.join(format!("optimized/{}", klines.scope())),
                "open_time",
                2 * 33 * 1440,
                "symbol,year,month",
            ),
            (agg_root, "transact_time", agg_rows, "symbol,date"),
        ] {
            let out = std::process::Command::new(&python)
                .args([
                    script,
                    root.to_str().unwrap(),
                    time,
                    &rows.to_string(),
                    parts,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}\n{}",
                root.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // The months hold LZ4_RAW float pages (distinct decimals: `optimize`'s default), so
            // the three readers were checked on them, value for value.
            if parts.starts_with("symbol,year") {
                let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let lz4: Vec<&String> = seen["codecs"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(_, c)| c.as_array().unwrap().iter().any(|c| c == "LZ4"))
                    .map(|(col, _)| col)
                    .collect();
                assert!(!lz4.is_empty(), "no LZ4 pages: {seen}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_do_nothing_and_a_republished_file_recomputes_only_what_it_affects() {
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let run = |market: &'static str, types: &'static str, extra: &'static [&'static str]| {
        let sim = &sim;
        async move {
            let mut out = Vec::new();
            for name in ["download", "extract", "convert", "optimize"] {
                let e: &[&str] = if name == "download" { extra } else { &[] };
                out.push(step(name, sim, store, market, types, "BTCUSDT", e).await);
            }
            out
        }
    };
    run("um", "klines", &[]).await;
    // A second pass does no work anywhere.
    for r in run("um", "klines", &[]).await {
        assert_eq!(r["counts"]["done"], 0, "{r}");
    }
    // Binance republishes 2024-12-31: only that file, its partition and December change.
    let ds = Dataset::new(Market::Um, Dt::Klines, Some(Interval::M1)).unwrap();
    let changed = ArchiveFile::new(ds, "BTCUSDT", FileDate::Day(d("2024-12-31")));
    let jan_before = std::fs::read(store.join(ds.optimized_partition("BTCUSDT", 2025, 1))).unwrap();
    sim.republish(&changed.key());
    let r = run("um", "klines", &["--refresh"]).await;
    let done: Vec<u64> = r
        .iter()
        .map(|r| r["counts"]["done"].as_u64().unwrap())
        .collect();
    assert_eq!(
        done,
        vec![1, 1, 1, 1],
        "download, extract, convert, optimize: {r:?}"
    );
    let jan_after = std::fs::read(store.join(ds.optimized_partition("BTCUSDT", 2025, 1))).unwrap();
    assert_eq!(jan_before, jan_after, "January was rewritten");
    // The new December holds the republished values.
    let df = read(store, &ds.optimized_partition("BTCUSDT", 2024, 12));
    let want = sim.archive().generator().klines_v(&changed, 1);
    let t = i64s(&df, "open_time");
    let close_col = f64s(&df, "close");
    let at: std::collections::HashMap<i64, usize> =
        t.iter().enumerate().map(|(i, x)| (*x, i)).collect();
    for k in &want {
        assert!(close(close_col[at[&k.open_time]], k.close));
    }
}

/// Every file below `store/parquet`, by its path there, with its bytes.
fn partitions(store: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let root = store.join("parquet");
    common::walk(&root)
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_from_the_zips_writes_the_staged_route_s_partitions_and_follows_its_zips() {
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let (staged, direct) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let types = "klines,aggTrades,fundingRate,metrics";
    for name in ["download", "extract", "convert"] {
        step(name, &sim, staged.path(), "um", types, "BTCUSDT", &[]).await;
    }
    step("download", &sim, direct.path(), "um", types, "BTCUSDT", &[]).await;
    let raw = ["--from", "raw"];
    let r = step("convert", &sim, direct.path(), "um", types, "BTCUSDT", &raw).await;
    assert_eq!(r["counts"]["failed"], 0, "{r}");
    // The same partitions, byte for byte, and nothing staged.
    let (a, b) = (partitions(staged.path()), partitions(direct.path()));
    assert!(a.len() > 100, "{} partitions", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, bytes) in &a {
        assert!(b[path] == *bytes, "{path} differs between the two routes");
    }
    assert!(
        !direct.path().join("csv").exists(),
        "--from raw staged CSVs"
    );
    // A rerun has nothing to do.
    let r = step("convert", &sim, direct.path(), "um", types, "BTCUSDT", &raw).await;
    assert_eq!(r["counts"]["done"], 0, "{r}");

    // A republished zip is converted again, alone.
    let ds = Dataset::new(Market::Um, Dt::Klines, Some(Interval::M1)).unwrap();
    let changed = ArchiveFile::new(ds, "BTCUSDT", FileDate::Day(d("2024-12-31")));
    sim.republish(&changed.key());
    step(
        "download",
        &sim,
        direct.path(),
        "um",
        "klines",
        "BTCUSDT",
        &["--refresh"],
    )
    .await;
    let r = step("convert", &sim, direct.path(), "um", types, "BTCUSDT", &raw).await;
    assert_eq!(r["counts"]["done"], 1, "{r}");

    // One convert of BTCUSDT klines from the zips that must fail: its stderr.
    let failing = |start: &'static str, end: &'static str, extra: &'static [&'static str]| {
        let mut c = job("convert");
        c.args(["--store", direct.path().to_str().unwrap(), "--market", "um"])
            .args(["--data-type", "klines", "--symbols", "BTCUSDT", "--force"])
            .args(["--start", start, "--end", end])
            .args(raw)
            .args(extra);
        async move {
            let out = tokio::process::Command::from(c).output().await.unwrap();
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            stderr(&out)
        }
    };

    // A zip that is not the one download verified fails its unit, named, with both hashes.
    let zip = direct.path().join(changed.raw_path());
    std::fs::write(&zip, b"PK not the archive's zip").unwrap();
    let err = failing("2024-12-31", "2024-12-31", &[]).await;
    assert!(
        err.contains(&changed.raw_path()) && err.contains("download --verify"),
        "{err}"
    );

    // The zip limits apply as in extract: a bomb is refused, naming the zip.
    let month = ArchiveFile::new(
        ds,
        "BTCUSDT",
        FileDate::Month {
            year: 2025,
            month: 1,
        },
    );
    let err = failing(
        "2025-01-01",
        "2025-01-31",
        &["--max-uncompressed-gib", "0.0001"],
    )
    .await;
    assert!(
        err.contains(&month.raw_path()) && err.contains("zip bomb refused"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_in_both_archives_keeps_the_more_complete_and_is_reported() {
    // The January monthly file lacks the 2025-01-10 rows (a real archive quirk); the daily file
    // of that day is complete.
    let ds = Dataset::new(Market::Um, Dt::Klines, Some(Interval::M1)).unwrap();
    let monthly = ArchiveFile::new(
        ds,
        "BTCUSDT",
        FileDate::Month {
            year: 2025,
            month: 1,
        },
    );
    let mut config = SimConfig::demo();
    config.monthly_missing_day = vec![(monthly.key(), d("2025-01-10"))];
    let sim = SimServer::start(config, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let s = store.to_str().unwrap();
    for (start, end) in [("2025-01-01", "2025-01-31"), ("2025-01-10", "2025-01-10")] {
        let mut c = job("download");
        c.args([
            "--store",
            s,
            "--source",
            &sim.base_url(),
            "--symbols",
            "BTCUSDT",
        ])
        .args(["--start", start, "--end", end]);
        let out = tokio::process::Command::from(c).output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let mut last = serde_json::Value::Null;
    for name in ["extract", "convert", "optimize"] {
        let mut c = job(name);
        c.args([
            "--store",
            s,
            "--symbols",
            "BTCUSDT",
            "--start",
            "2025-01-01",
            "--end",
            "2025-01-31",
        ]);
        let out = tokio::process::Command::from(c).output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        last = report(&out);
    }
    let both = last["details"]["days_in_both_sources"].as_array().unwrap();
    assert_eq!(both.len(), 1, "{last}");
    let choice = &both[0]["choice"];
    assert_eq!(choice["date"], "2025-01-10");
    assert_eq!(choice["daily_rows"], 1440);
    assert_eq!(choice["monthly_rows"], 0);
    assert_eq!(choice["kept"], "daily");
    // Compared value by value: the daily file's rows are the ones the monthly file lacks.
    assert_eq!(choice["rows_only_daily"], 1440, "{last}");
    assert_eq!(choice["rows_only_monthly"], 0, "{last}");
    assert_eq!(both[0]["identical"], false, "{last}");
    // The month is complete.
    let df = read(store, &ds.optimized_partition("BTCUSDT", 2025, 1));
    assert_eq!(df.height(), 31 * 1440);
}

/// The whole pipeline on S3 (moto) and on a local folder, from the same simulated archive:
/// every job, download to build-panel, exits 0 on both, and every dataset, feature, bar and
/// panel file it writes has the same bytes in both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_runs_on_s3_as_on_a_folder() {
    let Some(moto) = common::Moto::start() else {
        return;
    };
    moto.create_bucket("etl");
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().to_str().unwrap().to_string();
    let s3 = "s3://etl/data".to_string();
    let symbols = "BTCUSDT,ETHUSDT";
    // Ten days for the hourly features (the panel's 168 h warm-up leaves rows on the last
    // two), two days of aggTrades for the bars, across a month and a year boundary.
    let (start, end) = ("2024-12-24", "2025-01-02");
    let all = "klines,fundingRate,metrics,aggTrades";
    let trades_from = "2025-01-01";
    // (job, --start, its own flags)
    let steps: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "download",
            start,
            vec!["--data-type", "klines,fundingRate,metrics"],
        ),
        ("download", trades_from, vec!["--data-type", "aggTrades"]),
        ("extract", start, vec!["--data-type", all]),
        ("convert", start, vec!["--data-type", all]),
        ("optimize", start, vec!["--data-type", all]),
        ("validate", start, vec!["--data-type", "klines"]),
        ("aggregate", start, vec![]),
        (
            "bars",
            trades_from,
            vec!["--bar", "tick,dollar", "--threshold", "200,5e5"],
        ),
        ("build-panel", "2024-12-31", vec!["--name", "p"]),
    ];
    // On S3 the zips are converted directly (fetched, checked and inflated off the store); on
    // the folder through staged CSVs: the outputs compared below are the same.
    for (store, env, from_zips) in [(&s3, moto.env(), true), (&local, Vec::new(), false)] {
        for (name, from, extra) in &steps {
            if from_zips && *name == "extract" {
                continue;
            }
            let mut c = job(name);
            c.envs(env.clone())
                .args(["--store", store, "--symbols", symbols])
                .args(["--start", from, "--end", end])
                .args(extra);
            if from_zips && *name == "convert" {
                c.args(["--from", "raw"]);
            }
            if *name == "download" {
                c.args(["--source", &sim.base_url()]);
            }
            let out = tokio::process::Command::from(c).output().await.unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} on {store}: {}",
                stderr(&out)
            );
            let r = report(&out);
            assert!(
                r["counts"]["done"].as_u64().unwrap() > 0,
                "{name} on {store} did nothing: {r}"
            );
        }
    }
    let s3 = moto.store(&s3);
    let files: Vec<String> = common::walk(dir.path())
        .iter()
        .map(|p| {
            p.strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    for prefix in ["optimized/", "features/", "bars/", "final/p/"] {
        assert!(
            files.iter().any(|f| f.starts_with(prefix)),
            "no {prefix} file written: {files:?}"
        );
    }
    for f in &files {
        let want = std::fs::read(dir.path().join(f)).unwrap();
        let got = s3.get_opt(f).await.unwrap();
        assert_eq!(got.as_deref(), Some(&want[..]), "{f} differs on S3");
    }
    // The panel has rows after the warm-up.
    let panel = frames::read_parquet(&s3, "final/p/panel.parquet")
        .await
        .unwrap()
        .expect("the panel on S3");
    assert!(panel.height() > 0);
}

/// Rows of every Parquet file under `dir` (Polars' own reader).
fn rows_under(dir: &Path) -> usize {
    common::walk(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            ParquetReader::new(std::fs::File::open(p).unwrap())
                .finish()
                .unwrap()
                .height()
        })
        .sum()
}

/// The front door: every dataset the pipeline writes — every archive type of every market,
/// daily partitions and months, features, bars and the panel — opens in DuckDB, PyArrow, Polars
/// and pandas as the README says, with the same rows, types and values in all four, partition
/// keys typed (`year`, `month` integers, `date` a date) and no in-file column repeating one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dataset_opens_in_every_reader() {
    let Some(python) = common::python_with_readers() else {
        return;
    };
    let mut cfg = SimConfig::demo();
    // Fewer trades than the demo's: the readers compare every value.
    cfg.trades_per_minute = (1, 4);
    cfg.symbols.push(archive_sim::SymbolSpec::new(
        Market::Option,
        "BTCBVOLUSDT",
        d("2023-06-20"),
        40.0,
    ));
    cfg.symbols.push(archive_sim::SymbolSpec::new(
        Market::Option,
        "BTCUSDT",
        d("2023-05-18"),
        96000.0,
    ));
    let sim = SimServer::start(cfg, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let src = sim.base_url();
    // Three days across a month and a year boundary; UM klines, funding and metrics from 12-18
    // so that the panel's 168 h warm-up leaves rows.
    let (start, end) = ("2024-12-30", "2025-01-01");
    let um_all =
        "markPriceKlines,indexPriceKlines,premiumIndexKlines,aggTrades,trades,bookTicker,bookDepth";
    let runs: [(&str, &str, &str, &str); 6] = [
        (
            "um",
            "klines,fundingRate,metrics",
            "BTCUSDT,ETHUSDT",
            "2024-12-18",
        ),
        ("um", um_all, "BTCUSDT,ETHUSDT", start),
        (
            "cm",
            "klines,markPriceKlines,premiumIndexKlines,aggTrades,trades,fundingRate,metrics,bookTicker,bookDepth,liquidationSnapshot",
            "BTCUSD_PERP",
            start,
        ),
        ("cm", "indexPriceKlines", "BTCUSD", start),
        ("spot", "klines,aggTrades,trades", "BTCUSDT", start),
        (
            "option",
            "BVOLIndex,EOHSummary",
            "BTCBVOLUSDT,BTCUSDT",
            start,
        ),
    ];
    for (market, types, symbols, from) in runs {
        for name in ["download", "extract", "convert", "optimize"] {
            let mut args = vec![
                "--market",
                market,
                "--data-type",
                types,
                "--symbols",
                symbols,
                "--start",
                from,
                "--end",
                end,
            ];
            if name == "download" {
                args.extend([
                    "--source",
                    &src,
                    "--listing-url",
                    &src,
                    "--retry-base-ms",
                    "20",
                ]);
            }
            let r = common::run_ok(name, store, &args).await;
            assert_eq!(r["counts"]["failed"], 0, "{name} {market} {types}: {r}");
            // Option symbols are one type each: the other type's folder is not listed.
            if market != "option" {
                assert!(
                    common::warnings(&r).is_empty(),
                    "{name} {market} {types}: {r}"
                );
            }
        }
    }
    // A store written before months went unpadded holds `month=01`: a month written anew
    // removes it, so no reader counts January twice.
    let jan = store.join("optimized/futures-um/klines-1m/symbol=BTCUSDT/year=2025");
    std::fs::create_dir_all(jan.join("month=01")).unwrap();
    std::fs::copy(
        jan.join("month=1/part-0.parquet"),
        jan.join("month=01/part-0.parquet"),
    )
    .unwrap();
    let mut a = vec![
        "--market",
        "um",
        "--data-type",
        "klines",
        "--symbols",
        "BTCUSDT",
    ];
    a.extend(["--start", start, "--end", end, "--force"]);
    common::run_ok("optimize", store, &a).await;
    assert!(!jan.join("month=01/part-0.parquet").exists());
    assert!(jan.join("month=1/part-0.parquet").exists());
    let um = ["--market", "um", "--symbols", "BTCUSDT,ETHUSDT"];
    let mut a = um.to_vec();
    a.extend(["--start", "2024-12-18", "--end", end, "--freq", "1h"]);
    common::run_ok("aggregate", store, &a).await;
    let mut a = um.to_vec();
    a.extend([
        "--start",
        start,
        "--end",
        end,
        "--bar",
        "dollar,tick",
        "--threshold",
        "5e5",
    ]);
    common::run_ok("bars", store, &a).await;
    let mut a = um.to_vec();
    a.extend(["--start", "2024-12-27", "--end", end, "--name", "readers"]);
    let panel = common::run_ok("build-panel", store, &a).await;
    assert!(panel["details"]["rows"].as_u64().unwrap() > 0, "{panel}");

    // Every dataset folder: `parquet/<market>/<dataset>/` and `optimized/…`, the features and
    // bars of each spec, and the panel file.
    let mut spec = Vec::new();
    let mut push = |name: String, path: std::path::PathBuf, parts: serde_json::Value| {
        let rows = if path.is_file() {
            ParquetReader::new(std::fs::File::open(&path).unwrap())
                .finish()
                .unwrap()
                .height()
        } else {
            rows_under(&path)
        };
        assert!(rows > 0, "{name}: no rows");
        spec.push(serde_json::json!({
            "name": name, "path": path, "rows": rows, "partitions": parts, "time": [],
        }));
    };
    let subdirs = |p: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        v
    };
    let day = serde_json::json!({"symbol": "string", "date": "date"});
    let month = serde_json::json!({"symbol": "string", "year": "int", "month": "int"});
    let year = serde_json::json!({"symbol": "string", "year": "int"});
    let mut seen_types = std::collections::BTreeSet::new();
    for (top, parts) in [("parquet", &day), ("optimized", &month)] {
        for m in subdirs(&store.join(top)) {
            for ds in subdirs(&m) {
                let name = ds.strip_prefix(store).unwrap().display().to_string();
                seen_types.insert(ds.file_name().unwrap().to_string_lossy().into_owned());
                push(name, ds, parts.clone());
            }
        }
    }
    for dt in Dt::ALL {
        let n = dt.to_string();
        assert!(
            seen_types
                .iter()
                .any(|s| s == &n || s.starts_with(&format!("{n}-"))),
            "no {n} dataset among {seen_types:?}"
        );
    }
    push(
        "features".into(),
        store.join("features/futures-um/1h"),
        year.clone(),
    );
    for b in subdirs(&store.join("bars/futures-um")) {
        let name = b.strip_prefix(store).unwrap().display().to_string();
        push(name, b, year.clone());
    }
    push(
        "panel".into(),
        store.join("final/readers/panel.parquet"),
        serde_json::json!({}),
    );
    // The instruments registry: dates, text, no timestamp.
    let args = [
        "--market",
        "um",
        "--symbols",
        "all",
        "--data-type",
        "klines,fundingRate",
        "--start",
        start,
        "--end",
        end,
        "--source",
        &src,
    ];
    common::run_ok("instruments", store, &args).await;
    push(
        "reference".into(),
        store.join("reference/futures-um/instruments.parquet"),
        serde_json::json!({}),
    );
    // The time columns of each, from the files themselves: every Datetime column.
    for s in &mut spec {
        let path = std::path::PathBuf::from(s["path"].as_str().unwrap());
        let first = if path.is_file() {
            path
        } else {
            common::walk(&path)
                .into_iter()
                .find(|p| p.extension().is_some_and(|e| e == "parquet"))
                .unwrap()
        };
        let df = ParquetReader::new(std::fs::File::open(first).unwrap())
            .finish()
            .unwrap();
        let times: Vec<String> = df
            .columns()
            .iter()
            .filter(|c| matches!(c.dtype(), DataType::Datetime(_, Some(_))))
            .map(|c| c.name().to_string())
            .collect();
        assert!(
            !times.is_empty() || s["name"] == "reference",
            "{s}: no timestamp column"
        );
        s["time"] = serde_json::json!(times);
    }
    let spec_path = dir.path().join("readers.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_datasets.py");
    let out = std::process::Command::new(&python)
        .args([script, spec_path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), spec.len(), "{text}");
}
