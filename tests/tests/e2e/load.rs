//! End-to-end tests of `load` against a real PostgreSQL (started in a temp folder): the demo's
//! optimized datasets in their tables equal to the Parquet (row counts, per-column sums, min and
//! max, timestamps to the microsecond), a rerun that loads nothing, a rewritten month that
//! replaces only its rows, a mismatched table refused by column, and a wrong password refused
//! without being printed.

use crate::common;

use std::path::Path;

use archive_sim::{SimConfig, SimServer};
use common::{Postgres, job, report, stderr};
use frames::polars::prelude::*;

const RANGE: [&str; 4] = ["--start", "2024-12-30", "--end", "2025-01-02"];
const TYPES: &str = "klines,aggTrades,fundingRate,metrics";

/// download → extract → convert → optimize of the demo's two UM symbols over `RANGE`.
async fn optimized(store: &Path, source: &str, extra: &[&str]) {
    for name in ["download", "extract", "convert", "optimize"] {
        let mut args = vec!["--symbols", "BTCUSDT,ETHUSDT", "--data-type", TYPES];
        args.extend(RANGE);
        if name == "download" {
            args.extend(["--source", source, "--listing-url", source]);
            args.extend(extra);
        }
        common::run_ok(name, store, &args).await;
    }
}

fn load(store: &Path, url: &str, extra: &[&str]) -> std::process::Command {
    let mut c = job("load");
    c.args(["--store", store.to_str().unwrap()])
        .args(["--symbols", "BTCUSDT,ETHUSDT", "--data-type", TYPES])
        .args(RANGE)
        .args(["--database-url", url])
        .args(extra);
    c
}

fn run_load(store: &Path, url: &str, extra: &[&str]) -> serde_json::Value {
    let out = load(store, url, extra).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    report(&out)
}

/// Every optimized month of a dataset folder, stacked, with its symbol.
fn parquet_rows(store: &Path, dataset: &str) -> DataFrame {
    let mut all: Option<DataFrame> = None;
    for p in common::walk(&store.join("optimized/futures-um").join(dataset)) {
        let sym = p
            .components()
            .find_map(|c| c.as_os_str().to_str()?.strip_prefix("symbol="))
            .unwrap()
            .to_string();
        let mut df = common::read(&p);
        let n = df.height();
        df.with_column(Column::new("symbol".into(), vec![sym; n]))
            .unwrap();
        match &mut all {
            None => all = Some(df),
            Some(a) => {
                a.vstack_mut_owned(df).unwrap();
            }
        }
    }
    all.unwrap_or_else(|| panic!("no optimized {dataset}"))
}

/// For each numeric or time column: the Parquet's (count, sum, min, max) and the table's, as
/// text that compares exactly (floats by their shortest round-trip form, times in µs).
async fn compare(client: &tokio_postgres::Client, table: &str, df: &DataFrame) {
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM binance.{table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, df.height(), "{table}: rows");
    for c in df.columns() {
        let name = c.name().as_str();
        // Integers and times compare exactly, times as µs since the epoch on both sides.
        let pg_value = match c.dtype() {
            DataType::Datetime(..) => {
                format!("((extract(epoch from \"{name}\") * 1000000)::bigint)")
            }
            _ => format!("\"{name}\""),
        };
        match c.dtype() {
            DataType::Datetime(..) | DataType::Int64 => {}
            DataType::Float64 => {
                // Summed in the same order on both sides would still differ in the last bit:
                // compare min and max exactly and the sum to 1e-9 relative.
                let ca = c.f64().unwrap().clone();
                let (lo, hi) = (ca.min(), ca.max());
                let sum: f64 = (0..ca.len()).filter_map(|i| ca.get(i)).sum();
                let row = client
                    .query_one(
                        &format!(
                            "SELECT coalesce(sum(\"{name}\"), 0), min(\"{name}\"), max(\"{name}\") \
                             FROM binance.{table}"
                        ),
                        &[],
                    )
                    .await
                    .unwrap();
                let (s, mi, ma): (f64, Option<f64>, Option<f64>) =
                    (row.get(0), row.get(1), row.get(2));
                assert!(
                    (s - sum).abs() <= 1e-9 * sum.abs().max(1.0),
                    "{table}.{name}: sum {s} vs {sum}"
                );
                assert_eq!((mi, ma), (lo, hi), "{table}.{name}: min/max");
                continue;
            }
            _ => continue,
        }
        let v = c.cast(&DataType::Int64).unwrap();
        let ca = v.i64().unwrap();
        let sum: i128 = (0..ca.len())
            .filter_map(|i| ca.get(i))
            .map(i128::from)
            .sum();
        let (sum, min, max) = (
            sum.to_string(),
            ca.min().unwrap().to_string(),
            ca.max().unwrap().to_string(),
        );
        let row = client
            .query_one(
                &format!(
                    "SELECT sum({pg_value})::numeric(40, 0)::text, min({pg_value})::text, \
                     max({pg_value})::text FROM binance.{table}"
                ),
                &[],
            )
            .await
            .unwrap();
        let got: (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(got, (sum, min, max), "{table}.{name}: sum, min, max");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_datasets_load_exactly_and_a_rerun_loads_nothing() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    optimized(store, &sim.base_url(), &[]).await;

    let r = run_load(store, &pg.url(), &[]);
    assert_eq!(r["counts"]["failed"], 0, "{r}");
    assert!(r["counts"]["done"].as_u64().unwrap() >= 8, "{r}");
    // The password is in no report.
    assert!(!r.to_string().contains(common::PG_PASSWORD), "{r}");
    assert_eq!(
        r["params"]["database"],
        format!("postgres@127.0.0.1:{}/postgres", pg.port)
    );

    let client = pg.client().await;
    // Natively partitioned by month: December and January.
    let parts: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'binance.um_klines_1m'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, 2);
    for (table, dataset) in [
        ("um_klines_1m", "klines-1m"),
        ("um_agg_trades", "aggTrades"),
        ("um_funding_rate", "fundingRate"),
        ("um_metrics", "metrics"),
    ] {
        compare(&client, table, &parquet_rows(store, dataset)).await;
    }
    // The timestamps are the Parquet's to the microsecond: one row read back whole.
    let df = parquet_rows(store, "klines-1m");
    let first = df
        .column("open_time")
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .min()
        .unwrap();
    let got: i64 = client
        .query_one(
            "SELECT (extract(epoch from min(open_time)) * 1000000)::bigint FROM binance.um_klines_1m",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(got, first);
    // Seed-style query: the latest candles of a symbol.
    let rows = client
        .query(
            "SELECT open_time, close FROM binance.um_klines_1m WHERE symbol = 'BTCUSDT' \
             ORDER BY open_time DESC LIMIT 5",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);

    // The seed's hourly open interest against price: every hour of klines, with the hour's last
    // open-interest snapshot where metrics have one.
    let hours: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT DISTINCT symbol, date_trunc('hour', open_time) \
             FROM binance.um_klines_1m) h",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let row = client
        .query_one(
            "SELECT count(*), count(open_interest) FROM binance.oi_price_1h",
            &[],
        )
        .await
        .unwrap();
    let (n, with_oi): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(n, hours);
    assert!(with_oi > 0 && with_oi <= n, "{with_oi} of {n}");
    // The gap query with LAG: consecutive candles one minute apart, except across a gap.
    let gaps: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT open_time - lag(open_time) OVER \
             (PARTITION BY symbol ORDER BY open_time) AS step FROM binance.um_klines_1m) s \
             WHERE step > interval '1 minute'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gaps, 0, "the demo's four days have no missing minute");

    // A rerun: nothing to load, no connection made.
    let again = run_load(store, &pg.url(), &[]);
    assert_eq!(again["counts"]["skipped"], r["counts"]["done"], "{again}");
    assert_eq!(again["counts"]["done"], 0, "{again}");
    assert_eq!(again["details"]["rows"], 0, "{again}");

    // A month rewritten upstream (the archive republished a day): only its rows are replaced.
    let before: i64 = client
        .query_one(
            "SELECT count(*) FROM binance.um_klines_1m WHERE symbol = 'ETHUSDT'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    sim.republish("data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-01.zip");
    optimized(store, &sim.base_url(), &["--refresh"]).await;
    let third = run_load(store, &pg.url(), &[]);
    assert_eq!(third["counts"]["done"], 1, "{third}");
    compare(&client, "um_klines_1m", &parquet_rows(store, "klines-1m")).await;
    let after: i64 = client
        .query_one(
            "SELECT count(*) FROM binance.um_klines_1m WHERE symbol = 'ETHUSDT'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_table_and_a_wrong_password_are_refused_by_name() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    optimized(store, &sim.base_url(), &[]).await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE SCHEMA binance; CREATE TABLE binance.um_funding_rate \
             (symbol text, calc_time timestamptz, funding_interval_hours integer, \
              last_funding_rate double precision)",
        )
        .await
        .unwrap();
    let out = load(store, &pg.url(), &[]).output().unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("funding_interval_hours") && err.contains("integer"),
        "{err}"
    );

    let wrong = pg.url().replace(common::PG_PASSWORD, "not-the-password");
    let out = load(store, &wrong, &["--schema", "other"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("password"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not-the-password"));
}

/// SIGKILL in the middle of a COPY: every (symbol, month) holds either none or all of its
/// file's rows — the killed unit's transaction left nothing — and the rerun completes the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_killed_mid_copy_leaves_whole_months_and_the_rerun_completes() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let mut config = SimConfig::demo();
    // Trade-level months big enough for a COPY to be caught in flight.
    config.trades_per_minute = (60, 100);
    let sim = SimServer::start(config, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let mut args = vec!["--symbols", "BTCUSDT", "--data-type", "aggTrades"];
    args.extend(RANGE);
    let source = sim.base_url();
    for name in ["download", "extract", "convert", "optimize"] {
        let mut a = args.clone();
        if name == "download" {
            a.extend(["--source", source.as_str()]);
        }
        common::run_ok(name, store, &a).await;
    }
    let client = pg.client().await;
    let mut c = job("load");
    c.args(["--store", store.to_str().unwrap()])
        .args(&args)
        .args(["--database-url", &pg.url(), "--concurrency", "1"]);
    let mut child = c.spawn().unwrap();
    // Wait until a COPY has rows in flight, then kill.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no COPY seen in flight"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "load ended before a COPY was seen"
        );
        let row = client
            .query_opt(
                "SELECT tuples_processed FROM pg_stat_progress_copy WHERE tuples_processed > 0",
                &[],
            )
            .await
            .unwrap();
        if row.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Whole months only: each (symbol, month) has 0 rows or its file's count.
    let df = parquet_rows(store, "aggTrades");
    let months = df
        .clone()
        .lazy()
        .group_by([col("transact_time").dt().month().alias("m")])
        .agg([len().alias("n")])
        .collect()
        .unwrap();
    let want: std::collections::BTreeMap<i64, i64> = {
        let m = months.column("m").unwrap().cast(&DataType::Int64).unwrap();
        let n = months.column("n").unwrap().cast(&DataType::Int64).unwrap();
        let (m, n) = (m.i64().unwrap().clone(), n.i64().unwrap().clone());
        (0..m.len())
            .map(|i| (m.get(i).unwrap(), n.get(i).unwrap()))
            .collect()
    };
    let rows = client
        .query(
            "SELECT extract(month from transact_time)::bigint, count(*) FROM binance.um_agg_trades GROUP BY 1",
            &[],
        )
        .await
        .unwrap_or_default();
    for r in rows {
        let (m, n): (i64, i64) = (r.get(0), r.get(1));
        assert_eq!(
            Some(&n),
            want.get(&m),
            "month {m}: a partial COPY is visible"
        );
    }

    // The rerun completes it.
    let r = run_load(store, &pg.url(), &[]);
    assert_eq!(r["counts"]["failed"], 0, "{r}");
    compare(&client, "um_agg_trades", &df).await;
}
