//! End to end on the simulator's clock: the archive published to D-2, `tail` fills REST to the
//! last closed minute, features reach the last closed hour with funding through now; the
//! archive's later files replace REST with nothing differing and recompute only the affected
//! days; the daily DAG leaves no hole; 50 symbols at the real limits; 429 and 418; SIGKILL during
//! `tail`; and `status` as a health check.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use archive_sim::{FaultKind, FaultRule, FaultTarget, SimConfig, SimHandle, SimServer, SymbolSpec};
use chrono::{NaiveDate, NaiveDateTime};
use common::{f64s, i64s, read, read_all, walk};
use shared::paths::Market;

const SYMBOLS: &str = "BTCUSDT,ETHUSDT";

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
}

fn us(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros()
}

/// The demo universe over 2024-11-01 .. 2025-01-22 (November's and December's monthly funding
/// files exist) with the clock at `now`.
fn config(now: &str) -> SimConfig {
    let mut c = SimConfig::demo().with_range(d("2024-11-01"), d("2025-01-22"));
    c.now = Some(at(now));
    c
}

/// The simulator's clock as every job's (`PIPELINE_NOW`): what download takes for a recent
/// file and the manifests' times follow it.
fn clock(sim: &SimHandle) -> String {
    sim.now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `name --store STORE --market um ARGS` on the simulator's clock; asserts exit 0.
async fn job(sim: &SimHandle, name: &str, store: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--market", "um"];
    a.extend_from_slice(args);
    common::run_ok_env(name, store, &a, &[("PIPELINE_NOW", clock(sim))]).await
}

/// download → extract → convert of the archive's files over `[start, end]`.
async fn archive(sim: &SimHandle, store: &Path, types: &str, start: &str, end: &str) {
    let url = sim.base_url();
    for name in ["download", "extract", "convert"] {
        let mut args = vec![
            "--data-type",
            types,
            "--symbols",
            SYMBOLS,
            "--start",
            start,
            "--end",
            end,
        ];
        if name == "download" {
            args.extend(["--source", url.as_str(), "--retry-base-ms", "20"]);
        }
        job(sim, name, store, &args).await;
    }
}

async fn tail(
    sim: &SimHandle,
    store: &Path,
    types: &str,
    start: &str,
    end: &str,
) -> serde_json::Value {
    let url = sim.base_url();
    job(
        sim,
        "tail",
        store,
        &[
            "--data-type",
            types,
            "--symbols",
            SYMBOLS,
            "--start",
            start,
            "--end",
            end,
            "--rest-url",
            &url,
        ],
    )
    .await
}

/// The whole flow: optimize, validate and aggregate after the archive and the tail.
async fn downstream(
    sim: &SimHandle,
    store: &Path,
    start: &str,
    end: &str,
) -> (serde_json::Value, serde_json::Value) {
    let types = "klines,fundingRate,metrics";
    let base = ["--symbols", SYMBOLS, "--start", start, "--end", end];
    let mut a = vec!["--data-type", types];
    a.extend(base);
    let optimized = job(sim, "optimize", store, &a).await;
    let mut v = vec!["--data-type", "klines"];
    v.extend(base);
    job(sim, "validate", store, &v).await;
    let mut g = vec!["--freq", "1h"];
    g.extend(base);
    let aggregated = job(sim, "aggregate", store, &g).await;
    (optimized, aggregated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_fills_past_the_archive_to_the_last_closed_hour_and_the_archive_then_replaces_it() {
    // 06:17 on 01-20: 01-19's files are not published yet (07:40 onwards); the archive ends 01-18.
    let sim = SimServer::start(config("2025-01-20T06:17:30"), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    archive(&sim, store, "klines,metrics", "2025-01-12", "2025-01-20").await;
    // No fundingRate file at all (January's monthly file comes in February): REST from --start.
    let t = tail(
        &sim,
        store,
        "klines,metrics,fundingRate",
        "2025-01-12",
        "2025-01-20",
    )
    .await;
    assert_eq!(t["counts"]["failed"], 0, "{t}");
    assert_eq!(t["details"]["http_429"], 0);
    // Klines: 01-19 and 01-20 to 06:17 (06:17 is not closed); one request per symbol-day.
    let kl = store.join("parquet/futures-um/klines-1m/symbol=BTCUSDT");
    let days: BTreeSet<String> = walk(&kl)
        .iter()
        .filter(|p| p.ends_with("part-rest.parquet"))
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        days,
        BTreeSet::from(["date=2025-01-19".to_string(), "date=2025-01-20".to_string()])
    );
    let today = read(&kl.join("date=2025-01-20/part-rest.parquet"));
    let ot = i64s(&today, "open_time");
    assert_eq!(ot.len(), 6 * 60 + 17, "00:00 .. 06:16, every closed minute");
    assert_eq!(*ot.last().unwrap(), us(at("2025-01-20T06:16:00")));
    // REST rows are the archive's rows: the simulator's daily file of 01-19, as convert reads it.
    let yesterday = read(&kl.join("date=2025-01-19/part-rest.parquet"));
    assert_eq!(yesterday.height(), 1440);

    let (opt, agg) = downstream(&sim, store, "2025-01-12", "2025-01-20").await;
    assert!(
        opt["details"]["days_from_rest"].as_u64().unwrap() >= 2,
        "{opt}"
    );
    assert!(agg["counts"]["failed"] == 0, "{agg}");
    for sym in ["BTCUSDT", "ETHUSDT"] {
        let feat = read_all(&store.join(format!("features/futures-um/1h/symbol={sym}")));
        let ot = i64s(&feat, "open_time");
        // The last closed hour before 06:17 is 05:00-06:00.
        assert_eq!(*ot.last().unwrap(), us(at("2025-01-20T05:00:00")), "{sym}");
        let minutes = i64s(&feat, "minutes");
        assert_eq!(*minutes.last().unwrap(), 60, "{sym}: no partial hour");
        // Funding from REST only, non-null through now (after the first settlement).
        let fr = f64s(&feat, "funding_rate");
        let first_settled = ot
            .iter()
            .position(|t| *t >= us(at("2025-01-12T00:00:00")))
            .unwrap();
        assert!(
            fr[first_settled..].iter().all(Option::is_some),
            "{sym}: funding_rate null after the first REST settlement"
        );
        let oi = f64s(&feat, "open_interest");
        assert!(
            oi[oi.len() - 24..].iter().all(Option::is_some),
            "{sym}: open interest to now"
        );
    }
    // validate: the REST days are provisional, nothing after 06:17 is a gap.
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            store.join("reports/validate/futures-um/klines-1m/2025-01-12_2025-01-20/report.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let btc = &report["symbols"]["BTCUSDT"];
    assert_eq!(btc["days"]["2025-01-19"]["provisional"], true, "{btc}");
    assert_eq!(btc["days"]["2025-01-20"]["provisional"], true);
    assert_eq!(
        btc["days"]["2025-01-20"]["status"], "ok",
        "{}",
        btc["days"]["2025-01-20"]
    );
    assert!(btc["days"]["2025-01-18"].get("provisional").is_none());
    assert!(report["totals"]["provisional_days"].as_u64().unwrap() >= 4);
    let html = std::fs::read_to_string(
        store.join("reports/validate/futures-um/klines-1m/2025-01-12_2025-01-20/report.html"),
    )
    .unwrap();
    assert!(
        html.contains("provisional"),
        "the heatmap marks provisional days"
    );

    // A rerun at the same clock fetches nothing new.
    sim.clear_log();
    let again = tail(
        &sim,
        store,
        "klines,metrics,fundingRate",
        "2025-01-12",
        "2025-01-20",
    )
    .await;
    assert_eq!(again["details"]["rows"], 0, "{again}");
    assert_eq!(
        sim.count(|r| r.path.contains("fapi/v1/klines")),
        0,
        "days filled are never fetched again"
    );

    // An hour later: the current day is extended (only what is new is asked for).
    sim.set_now(at("2025-01-20T07:17:30"));
    sim.clear_log();
    let ext = tail(&sim, store, "klines", "2025-01-12", "2025-01-20").await;
    let asked: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("fapi/v1/klines"))
        .map(|r| r.query)
        .collect();
    assert_eq!(asked.len(), 2, "one request per symbol: {asked:?}");
    assert!(
        asked.iter().all(|q| q.contains(&format!(
            "startTime={}",
            us(at("2025-01-20T06:17:00")) / 1000
        ))),
        "{asked:?}"
    );
    assert_eq!(ext["details"]["rows"], 2 * 60, "{ext}");
    let today = read(&kl.join("date=2025-01-20/part-rest.parquet"));
    let ot = i64s(&today, "open_time");
    assert_eq!(ot.len(), 7 * 60 + 17);
    assert!(
        ot.windows(2).all(|w| w[1] - w[0] == 60_000_000),
        "no duplicate, no hole"
    );

    // The next day after publication: the archive has 01-19 and 01-20; it replaces REST, the
    // rows are the same, and downstream only the affected days are computed again.
    sim.set_now(at("2025-01-21T10:17:30"));
    archive(&sim, store, "klines,metrics", "2025-01-18", "2025-01-20").await;
    tail(
        &sim,
        store,
        "klines,metrics,fundingRate",
        "2025-01-12",
        "2025-01-21",
    )
    .await;
    let (opt, agg) = downstream(&sim, store, "2025-01-12", "2025-01-21").await;
    let diffs = opt["details"]["rest_vs_archive"].as_array().unwrap();
    assert!(
        diffs.len() >= 4,
        "01-19 and 01-20 compared for both symbols: {opt}"
    );
    assert!(
        diffs.iter().all(|d| d["identical"] == true),
        "REST and archive rows of the same minutes are identical: {diffs:?}"
    );
    let computed = agg["details"]["days_computed"].as_u64().unwrap();
    assert!(
        computed <= 2 * 3,
        "01-19, 01-20 and 01-21 per symbol at most: {agg}"
    );

    // The same features as a store that had the archive from the start.
    let dir_b = tempfile::tempdir().unwrap();
    let store_b = dir_b.path();
    archive(&sim, store_b, "klines,metrics", "2025-01-12", "2025-01-21").await;
    tail(
        &sim,
        store_b,
        "klines,metrics,fundingRate",
        "2025-01-12",
        "2025-01-21",
    )
    .await;
    downstream(&sim, store_b, "2025-01-12", "2025-01-21").await;
    for sym in ["BTCUSDT", "ETHUSDT"] {
        let p = format!("features/futures-um/1h/symbol={sym}/year=2025/part-0.parquet");
        assert!(
            std::fs::read(store.join(&p)).unwrap() == std::fs::read(store_b.join(&p)).unwrap(),
            "{sym}: features of the incremental store differ from the one-go store"
        );
    }

    // status: fresh against the simulator's clock, stale a day later; JSON lists every dataset.
    let status = |now: &str, max: &str| {
        Command::new(common::bin("status"))
            .args([
                "--store",
                store.to_str().unwrap(),
                "--format",
                "json",
                "--now",
                now,
                "--max-staleness",
                max,
            ])
            .output()
            .unwrap()
    };
    let fresh = status("2025-01-21T10:30:00Z", "2h");
    assert_eq!(fresh.status.code(), Some(0), "{}", common::stderr(&fresh));
    let json: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    let names: BTreeSet<&str> = json["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dataset"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["fundingRate", "klines-1m", "metrics"]),
        "{json}"
    );
    let btc = json["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dataset"] == "klines-1m" && s["symbol"] == "BTCUSDT")
        .unwrap();
    assert_eq!(btc["last_archived_day"], "2025-01-20");
    assert_eq!(btc["last_rest_minute"], "2025-01-21T10:17:00Z");
    let stale = status("2025-01-22T10:30:00Z", "2h");
    assert_eq!(stale.status.code(), Some(1));
    assert!(common::stderr(&stale).contains("stale: futures-um/klines-1m BTCUSDT"));
    let prom = Command::new(common::bin("status"))
        .args([
            "--store",
            store.to_str().unwrap(),
            "--format",
            "prometheus",
            "--now",
            "2025-01-21T10:30:00Z",
        ])
        .output()
        .unwrap();
    let text = common::stdout(&prom);
    assert!(
        text.contains("pipeline_staleness_seconds{market=\"futures-um\",dataset=\"klines-1m\",symbol=\"BTCUSDT\"} 780"),
        "{text}"
    );
    sim.shutdown().await;
}

/// `n` UM symbols listed long before the range, for the rate-limit tests.
fn many(n: usize, now: &str) -> SimConfig {
    let mut c = SimConfig::demo().with_range(d("2025-01-19"), d("2025-01-20"));
    c.symbols = (0..n)
        .map(|i| {
            SymbolSpec::new(
                Market::Um,
                &format!("S{i:02}USDT"),
                d("2024-01-01"),
                10.0 + i as f64,
            )
        })
        .collect();
    c.now = Some(at(now));
    c
}

fn names(n: usize) -> String {
    (0..n)
        .map(|i| format!("S{i:02}USDT"))
        .collect::<Vec<_>>()
        .join(",")
}

fn tail_cmd(sim: &SimHandle, store: &Path, symbols: &str, start: &str) -> Command {
    let mut c = common::job("tail");
    c.args([
        "--store",
        store.to_str().unwrap(),
        "--market",
        "um",
        "--data-type",
        "klines,fundingRate,metrics",
        "--symbols",
        symbols,
        "--start",
        start,
        "--end",
        "2025-01-20",
        "--rest-url",
        &sim.base_url(),
    ])
    .env("PIPELINE_NOW", clock(sim));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_symbols_at_the_real_limits_and_injected_429_and_418() {
    let sim = SimServer::start(many(50, "2025-01-20T12:00:30"), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A dry run prints each window with its requests and weight, and writes nothing.
    let mut dry = tail_cmd(&sim, dir.path(), &names(50), "2025-01-19");
    dry.arg("--dry-run");
    let out = common::run(&mut dry);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(
        text.contains("tail futures-um/klines-1m S00USDT: 2025-01-19T00:00:00Z .. 2025-01-20T12:00:00Z — 2 request(s), weight 15"),
        "{text}"
    );
    assert!(!dir.path().join("parquet").exists());
    // An unknown symbol fails by name; the others are filled.
    let bad_dir = tempfile::tempdir().unwrap();
    let out = common::run(&mut tail_cmd(
        &sim,
        bad_dir.path(),
        "S00USDT,NOPEUSDT",
        "2025-01-20",
    ));
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let failures = common::report(&out)["failures"].to_string();
    assert!(failures.contains("NOPEUSDT: invalid symbol"), "{failures}");
    assert!(!failures.contains("S00USDT"), "{failures}");
    sim.clear_log();
    let out = common::run(&mut tail_cmd(&sim, dir.path(), &names(50), "2025-01-19"));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let r = common::report(&out);
    assert_eq!(sim.count(|q| q.status == 429 || q.status == 418), 0, "{r}");
    assert_eq!(r["details"]["http_429"], 0);
    // 50 × (2 klines days + 1 funding + 5 metrics pages) + fundingInfo + time.
    let requests = r["details"]["requests"].as_u64().unwrap();
    assert!(requests <= 50 * 8 + 2, "{requests} requests: {r}");
    assert_eq!(r["counts"]["done"], 150);
    // The client's count of the weight is the server's.
    assert_eq!(
        r["details"]["weight"].as_u64().unwrap(),
        sim.rest_weight_used()
    );

    // A 429 on one symbol's klines: every request pauses for Retry-After, then all complete.
    sim.set_now(at("2025-01-20T13:00:30"));
    sim.clear_log();
    sim.set_faults(vec![
        FaultRule::new(
            "fapi/v1/klines",
            FaultTarget::Zip,
            FaultKind::TooManyRequests {
                first_n: 1,
                retry_after_secs: 2,
            },
        ),
        // 5xx are retried with backoff.
        FaultRule::new(
            "futures/data/openInterestHist",
            FaultTarget::Zip,
            FaultKind::ServerError { first_n: 1 },
        ),
    ]);
    let out = common::run(&mut tail_cmd(&sim, dir.path(), &names(50), "2025-01-19"));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let r = common::report(&out);
    assert_eq!(r["details"]["http_429"], 1, "{r}");
    assert!(r["details"]["retries"].as_u64().unwrap() >= 1, "{r}");
    // Requests already in flight when the 429 came back may land just after it; none is sent
    // during the pause.
    let log = sim.requests();
    let t429 = log
        .iter()
        .find(|q| q.status == 429)
        .expect("the 429 was sent")
        .at;
    let early: Vec<Duration> = log
        .iter()
        .filter(|q| q.at > t429 + Duration::from_millis(150))
        .map(|q| q.at - t429)
        .filter(|d| *d < Duration::from_millis(1_900))
        .collect();
    assert!(
        early.is_empty(),
        "requests during the Retry-After pause: {early:?}"
    );

    // A 418: the run stops with the ban's end, and sends nothing more.
    sim.set_now(at("2025-01-20T14:00:30"));
    sim.clear_log();
    sim.set_faults(vec![FaultRule::new(
        "fapi/v1/klines",
        FaultTarget::Zip,
        FaultKind::Banned {
            first_n: 1,
            retry_after_secs: 600,
        },
    )]);
    let out = common::run(&mut tail_cmd(&sim, dir.path(), &names(50), "2025-01-19"));
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let r = common::report(&out);
    assert!(r["details"]["banned"]["until"].is_string(), "{r}");
    assert!(r.to_string().contains("banned until"), "{r}");
    let log = sim.requests();
    let t418 = log
        .iter()
        .find(|q| q.status == 418)
        .expect("the 418 was sent")
        .at;
    let after = log
        .iter()
        .filter(|q| q.at > t418 + Duration::from_millis(150))
        .count();
    assert_eq!(after, 0, "requests sent after the 418");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_tail_then_rerun_leaves_no_duplicate_or_partial_row() {
    let sim = SimServer::start(many(4, "2025-01-20T23:59:30"), 0)
        .await
        .unwrap();
    // Slow klines bodies: the kill lands while days are being fetched and written.
    sim.set_faults(vec![FaultRule::new(
        "fapi/v1/klines",
        FaultTarget::Zip,
        FaultKind::SlowBody {
            bytes_per_sec: 150_000,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let mut cmd = tail_cmd(&sim, store, &names(4), "2025-01-19");
    cmd.args(["--concurrency", "2", "--max-in-flight", "2"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    sim.set_faults(Vec::new());
    let out = common::run(&mut tail_cmd(&sim, store, &names(4), "2025-01-19"));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    for i in 0..4 {
        let sym = format!("S{i:02}USDT");
        for day in ["2025-01-19", "2025-01-20"] {
            let p = store.join(format!(
                "parquet/futures-um/klines-1m/symbol={sym}/date={day}/part-rest.parquet"
            ));
            let ot = i64s(&read(&p), "open_time");
            // The 23:59 candle of 01-20 has not closed at 23:59:30.
            let want = if day == "2025-01-19" { 1440 } else { 1439 };
            assert_eq!(ot.len(), want, "{sym} {day}");
            assert!(
                ot.windows(2).all(|w| w[1] - w[0] == 60_000_000),
                "{sym} {day}"
            );
        }
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_published_after_a_daily_run_is_fetched_by_the_next_one() {
    // The daily DAG at 07:00 on 01-20: 01-19's files are not out yet (REST fills the day).
    let sim = SimServer::start(config("2025-01-20T07:00:00"), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap().to_string();
    let url = sim.base_url();
    let daily = |today: &str| {
        let mut c = Command::new(common::bin("runner"));
        c.args([
            "dags/daily.yaml",
            "--store",
            &store,
            "--source",
            &url,
            "--rest-url",
            &url,
            "--today",
            today,
            "--symbols",
            "BTCUSDT",
            "--steps",
            "tail,optimize,optimize-funding,validate",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
        .env("PIPELINE_BIN_DIR", common::bin("runner").parent().unwrap())
        .env_remove("PIPELINE_STORE")
        .env("PIPELINE_NOW", clock(&sim))
        .env("RUST_LOG", "warn");
        for name in [
            "download", "extract", "convert", "tail", "optimize", "validate",
        ] {
            common::bin(name);
        }
        c.output().unwrap()
    };
    let first = daily("2025-01-20");
    assert!(first.status.success(), "{}", common::stderr(&first));
    let zip =
        Path::new(&store).join("raw/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-19.zip");
    assert!(!zip.exists(), "not published at 07:00");
    assert!(
        Path::new(&store)
            .join("parquet/futures-um/klines-1m/symbol=BTCUSDT/date=2025-01-19/part-rest.parquet")
            .exists(),
        "REST filled the day meanwhile"
    );
    // The next night: the window reaches back to 01-19 and takes its file.
    sim.set_now(at("2025-01-21T09:30:00"));
    let second = daily("2025-01-21");
    assert!(second.status.success(), "{}", common::stderr(&second));
    assert!(
        zip.exists(),
        "a file published after a run is fetched by the next one"
    );
    let month = read(
        &Path::new(&store)
            .join("optimized/futures-um/klines-1m/symbol=BTCUSDT/year=2025/month=1/part-0.parquet"),
    );
    let ot = i64s(&month, "open_time");
    let (a, b) = (us(at("2025-01-19T00:00:00")), us(at("2025-01-21T09:30:00")));
    let n = ot.iter().filter(|t| **t >= a && **t < b).count();
    assert_eq!(
        n,
        2 * 1440 + 9 * 60 + 30,
        "01-19, 01-20 whole and 01-21 to 09:29"
    );
    sim.shutdown().await;
}
