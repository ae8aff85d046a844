//! End-to-end tests of `load` against a real PostgreSQL (started in a temp folder): the demo's
//! optimized datasets, features, bars and panel in their tables equal to the Parquet (row
//! counts, per-column sums, min and max, timestamps to the microsecond), a rerun that loads
//! nothing, a rewritten month or panel that replaces only its rows, a mismatched table refused
//! by column, a wrong password refused without being printed, and TLS as `sslmode` says.

use crate::common;

use std::path::Path;

use archive_sim::{SimConfig, SimHandle, SimServer};
use common::{Postgres, job, report, stderr};
use frames::polars::prelude::*;

const RANGE: [&str; 4] = ["--start", "2024-12-30", "--end", "2025-01-02"];
const TYPES: &str = "klines,aggTrades,fundingRate,metrics";

/// The demo's two UM symbols.
const SYMBOLS: &str = "BTCUSDT,ETHUSDT";

/// download → extract → convert → optimize of the demo's two UM symbols over `RANGE`.
async fn optimized(store: &Path, source: &str, extra: &[&str]) {
    optimized_of(store, source, SYMBOLS, TYPES, extra).await
}

/// download → extract → convert → optimize of `symbols`' `types` over `RANGE`; `extra` goes to
/// download.
async fn optimized_of(store: &Path, source: &str, symbols: &str, types: &str, extra: &[&str]) {
    for name in ["download", "extract", "convert", "optimize"] {
        let mut args = vec!["--symbols", symbols, "--data-type", types];
        args.extend(RANGE);
        if name == "download" {
            args.extend(["--source", source, "--listing-url", source]);
            args.extend(extra);
        }
        common::run_ok(name, store, &args).await;
    }
}

/// The simulator serving `config`, and a temp store holding `symbols`' `types` optimized.
async fn staged(config: SimConfig, symbols: &str, types: &str) -> (SimHandle, tempfile::TempDir) {
    let sim = SimServer::start(config, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    optimized_of(dir.path(), &sim.base_url(), symbols, types, &[]).await;
    (sim, dir)
}

fn load(store: &Path, url: &str, extra: &[&str]) -> std::process::Command {
    let mut c = job("load");
    c.args(["--store", store.to_str().unwrap()])
        .args(["--symbols", SYMBOLS, "--data-type", TYPES])
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
    stacked(&store.join("optimized/futures-um").join(dataset), dataset)
}

/// Every Parquet file under `dir`, stacked, with its symbol from its `symbol=` folder.
fn stacked(dir: &Path, dataset: &str) -> DataFrame {
    let mut all: Option<DataFrame> = None;
    for p in common::walk(dir) {
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
    let (sim, dir) = staged(SimConfig::demo(), SYMBOLS, TYPES).await;
    let store = dir.path();

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

    // `status` says the database holds every optimized month as it is.
    let pending = |store: &Path| -> std::collections::BTreeMap<String, u64> {
        let out = job("status")
            .args(["--store", store.to_str().unwrap(), "--format", "json"])
            .args(["--data-type", "klines-1m"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let n = s["db_pending_months"].as_u64().expect("load ran: a count");
                (s["symbol"].as_str().unwrap().to_string(), n)
            })
            .collect()
    };
    let zero = [("BTCUSDT".to_string(), 0), ("ETHUSDT".to_string(), 0)].into();
    assert_eq!(pending(store), zero);

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
    // Until `load` runs, `status` counts January of BTCUSDT as not in the database as it is.
    let behind = [("BTCUSDT".to_string(), 1), ("ETHUSDT".to_string(), 0)].into();
    assert_eq!(pending(store), behind);
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
    assert_eq!(pending(store), zero);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_table_and_a_wrong_password_are_refused_by_name() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let (_sim, dir) = staged(SimConfig::demo(), SYMBOLS, TYPES).await;
    let store = dir.path();
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
    let (_sim, dir) = staged(config, "BTCUSDT", "aggTrades").await;
    let store = dir.path();
    let mut args = vec!["--symbols", "BTCUSDT", "--data-type", "aggTrades"];
    args.extend(RANGE);
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

/// Aggregate's features, the bars of two specs and a panel, loaded alone (no archive table
/// appears): each table equals its files; a rerun loads nothing; a rebuilt panel replaces the
/// panel's table and nothing else; a table that no longer matches its files is refused by
/// column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_bars_and_a_panel_load_exactly_and_follow_their_files() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let (_sim, dir) = staged(SimConfig::demo(), SYMBOLS, TYPES).await;
    let store = dir.path();
    let mut um = vec!["--symbols", "BTCUSDT,ETHUSDT"];
    um.extend(RANGE);
    let with = |extra: &[&'static str]| {
        let mut a = um.clone();
        a.extend(extra);
        a
    };
    common::run_ok("aggregate", store, &with(&["--freq", "1h"])).await;
    for (bar, threshold) in [("dollar", "5e5"), ("tick", "200")] {
        common::run_ok(
            "bars",
            store,
            &with(&["--bar", bar, "--threshold", threshold]),
        )
        .await;
    }
    // Four days of features are too few for the 168 h factors: the panel keeps their nulls.
    let panel = common::run_ok(
        "build-panel",
        store,
        &with(&["--name", "p", "--keep-nulls"]),
    )
    .await;
    assert!(panel["details"]["rows"].as_u64().unwrap() > 0, "{panel}");

    let derived = ["--features", "1h", "--bars", "all", "--panel", "p"];
    let load_derived = |extra: &[&str]| {
        job("load")
            .args(["--store", store.to_str().unwrap()])
            .args(&um)
            .args(["--database-url", &pg.url()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = load_derived(&derived);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    // 2 symbols × 2 years of features, of each bar spec, and the panel.
    assert_eq!(r["counts"]["done"], 4 + 8 + 1, "{r}");
    let client = pg.client().await;
    let archive: Option<String> = client
        .query_one("SELECT to_regclass('binance.um_klines_1m')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(archive, None, "only derived datasets were asked for");

    compare(
        &client,
        "um_features_1h",
        &stacked(&store.join("features/futures-um/1h"), "features"),
    )
    .await;
    // Bars: one table, the spec a column; each spec's rows are its files'.
    let mut specs = Vec::new();
    for d in std::fs::read_dir(store.join("bars/futures-um")).unwrap() {
        let d = d.unwrap();
        let spec = d.file_name().to_string_lossy().to_string();
        let df = stacked(&d.path(), "bars");
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM binance.um_bars WHERE spec = $1",
                &[&spec],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n as usize, df.height(), "{spec}");
        specs.push(df);
    }
    assert_eq!(specs.len(), 2);
    let mut all = specs.remove(0);
    all.vstack_mut_owned(specs.remove(0)).unwrap();
    compare(&client, "um_bars", &all).await;
    let panel_path = store.join("final/p/panel.parquet");
    compare(&client, "panel_p", &common::read(&panel_path)).await;
    // Partitioned by year: the features of 2024 and of 2025.
    let parts: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'binance.um_features_1h'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, 2);

    let r2 = report(&load_derived(&derived));
    assert_eq!(r2["counts"]["done"], 0, "{r2}");
    assert_eq!(r2["counts"]["skipped"], r["counts"]["done"], "{r2}");

    // The panel rebuilt over a shorter range: its table is replaced whole, nothing else loads.
    let bars_before: i64 = client
        .query_one("SELECT count(*) FROM binance.um_bars", &[])
        .await
        .unwrap()
        .get(0);
    let mut short = vec![
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--name",
        "p",
        "--keep-nulls",
    ];
    short.extend(["--start", "2024-12-31", "--end", "2025-01-02"]);
    common::run_ok("build-panel", store, &short).await;
    let r3 = report(&load_derived(&derived));
    assert_eq!(r3["counts"]["done"], 1, "{r3}");
    compare(&client, "panel_p", &common::read(&panel_path)).await;
    let bars_after: i64 = client
        .query_one("SELECT count(*) FROM binance.um_bars", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bars_before, bars_after);

    // A table that no longer matches its files (a column dropped by hand) is refused by name.
    client
        .batch_execute("ALTER TABLE binance.um_features_1h DROP COLUMN vwap_deviation")
        .await
        .unwrap();
    let out = load_derived(&["--features", "1h", "--force"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("vwap_deviation"), "{err}");
}

/// TLS as libpq's `sslmode` says: `verify-full` against the test CA loads over TLS (the server
/// logs it; one connection serves the whole run, and a month's partition is made once); the same by IP address, for which the certificate is not valid, is refused, while
/// `verify-ca` (the chain only) and `require` (no check) load; a CA that did not sign the
/// server's certificate is refused; `require` against a server without TLS is refused. Each
/// refusal is exit 2 and prints no password. Another database loads everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_follows_sslmode_and_a_certificate_that_does_not_verify_is_refused() {
    let (Some(pg), Some(plain)) = (Postgres::start_tls(), Postgres::start()) else {
        return;
    };
    let (_sim, dir) = staged(SimConfig::demo(), SYMBOLS, "fundingRate").await;
    let store = dir.path();
    let ca = pg.ca();
    let ca = ca.to_str().unwrap();
    let url = |server: &Postgres, host: &str, query: &str| {
        format!(
            "postgresql://postgres:{}@{host}:{}/postgres?{query}",
            common::PG_PASSWORD,
            server.port
        )
    };
    let run = |url: String, schema: &str| {
        let mut c = job("load");
        c.args(["--store", store.to_str().unwrap()])
            .args(["--symbols", "BTCUSDT,ETHUSDT", "--data-type", "fundingRate"])
            .args(RANGE)
            .args(["--database-url", &url, "--schema", schema])
            .args(["--concurrency", "1"]);
        c.output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let r = report(&out);
        assert!(r["counts"]["done"].as_u64().unwrap() > 0, "{r}");
    };
    let refused = |out: std::process::Output, why: &str| {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(why), "{why}: {err}");
        assert!(!err.contains(common::PG_PASSWORD), "{err}");
    };

    ok(run(
        url(
            &pg,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "full",
    ));
    assert!(pg.log().contains("SSL enabled"), "{}", pg.log());
    // One connection served the plan, the four month files and the views: a unit reuses the
    // connection the one before it gave back.
    let connections = pg.log().matches("connection authorized").count();
    assert_eq!(connections, 1, "{}", pg.log());
    // Each month's partition is made once, not once per symbol.
    let partitions = pg.log().matches("PARTITION OF").count();
    assert_eq!(partitions, 2, "{}", pg.log());
    refused(
        run(
            url(
                &pg,
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "by_ip",
        ),
        "certificate",
    );
    ok(run(
        url(
            &pg,
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        "chain",
    ));
    ok(run(url(&pg, "127.0.0.1", "sslmode=require"), "unchecked"));
    // Another server's CA (the plain server has none: make one) did not sign this certificate.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-keyout", "k", "-out", "other.crt", "-subj", "/CN=other CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .current_dir(other.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = other.path().join("other.crt");
    refused(
        run(
            url(
                &pg,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", wrong.display()),
            ),
            "wrong_ca",
        ),
        "certificate",
    );
    refused(
        run(url(&plain, "127.0.0.1", "sslmode=require"), "plain"),
        "TLS",
    );
    // Another database, the same schema as the last load: the store's files all load again
    // there (a manifest says what one database holds).
    ok(run(
        url(&plain, "127.0.0.1", "sslmode=disable"),
        "unchecked",
    ));
}
