//! End to end: download → extract → convert → optimize → bars on the synthetic archive, over a
//! year boundary. A history extended in a second run is byte-identical to one run over the whole
//! range — both when upstream already had the later days and when they arrived in between (the
//! nightly case: the last consumed day's neighbour appears, so that day is recomputed); a rerun
//! is a no-op; a republished upstream file sends the history back exactly as far as it must;
//! the bars match an independent implementation of features.md §3, and standard dollar bars sum
//! to the dollar volume of the trades they hold.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use archive_sim::{SimConfig, SimHandle, SimServer};
use common::{job, report, stderr, stdout, walk};
use frames::polars::prelude::*;
use shared::paths::{ArchiveFile, DataType as Dt, Dataset, FileDate, Market};

const D1: &str = "2024-12-30";
const D2: &str = "2025-01-01";
const D3: &str = "2025-01-02";
const SYMBOL: &str = "BTCUSDT";

/// The two grids of the test: dollar bars on aggTrades, tick bars on trades with both signs.
const DOLLAR_GRID: &[&str] = &[
    "--bar",
    "dollar,dollar_imbalance",
    "--threshold",
    "5e4",
    "--init-threshold",
    "1e4",
    "--alpha-ticks",
    "0.1,0.3",
    "--min-threshold",
    "default,none",
];
const TICK_GRID: &[&str] = &[
    "--bar",
    "tick,tick_imbalance",
    "--threshold",
    "50",
    "--init-threshold",
    "20",
    "--sign",
    "aggressor,tick_rule",
    "--source",
    "trades",
];
/// 1 dollar + 4 dollar_imbalance (alpha_ticks × min), 2 tick + 2 tick_imbalance (× sign).
const UNITS: u64 = 5 + 4;

async fn ok(cmd: std::process::Command, what: &str) -> serde_json::Value {
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{what}:\n{}", stderr(&out));
    report(&out)
}

/// download → extract → convert → optimize of UM BTCUSDT aggTrades and trades over [start, end].
async fn etl(sim: &SimHandle, store: &Path, start: &str, end: &str) {
    for name in ["download", "extract", "convert", "optimize"] {
        let mut c = job(name);
        c.args(["--store", store.to_str().unwrap(), "--market", "um"])
            .args(["--data-type", "aggTrades,trades", "--symbols", SYMBOL])
            .args(["--start", start, "--end", end]);
        if name == "download" {
            c.args(["--source", &sim.base_url(), "--retry-base-ms", "20"]);
        }
        if name == "download" || name == "optimize" {
            c.args(["--concurrency", "2"]);
        }
        let r = ok(c, name).await;
        assert_eq!(r["counts"]["failed"], 0, "{name}: {r}");
    }
}

/// Both grids over [start, end]; the two reports.
async fn bars(store: &Path, start: &str, end: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for grid in [DOLLAR_GRID, TICK_GRID] {
        let mut c = job("bars");
        c.args(["--store", store.to_str().unwrap(), "--market", "um"])
            .args(["--symbols", SYMBOL, "--start", start, "--end", end])
            .args(grid)
            .args(extra);
        out.push(ok(c, "bars").await);
    }
    out
}

fn counts(reports: &[serde_json::Value], what: &str) -> u64 {
    reports
        .iter()
        .map(|r| r["counts"][what].as_u64().unwrap())
        .sum()
}

fn modes(reports: &[serde_json::Value]) -> Vec<String> {
    reports
        .iter()
        .flat_map(|r| r["details"]["units"].as_array().unwrap().clone())
        .map(|u| u["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Every file under `bars/` and `_state/bars/`, by relative path.
fn outputs(store: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for sub in ["bars", "_state/bars"] {
        for p in walk(&store.join(sub)) {
            let rel = p.strip_prefix(store).unwrap().to_path_buf();
            m.insert(rel, std::fs::read(&p).unwrap());
        }
    }
    m
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    let (x, y) = (outputs(a), outputs(b));
    assert!(!x.is_empty());
    assert_eq!(
        x.keys().collect::<Vec<_>>(),
        y.keys().collect::<Vec<_>>(),
        "{what}: file sets differ"
    );
    for (k, v) in &x {
        assert!(v == &y[k], "{what}: {} differs", k.display());
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for p in walk(from) {
        let dst = to.join(p.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&p, &dst).unwrap();
    }
}

fn read(path: &Path) -> DataFrame {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(f).finish().unwrap()
}

fn i64s(df: &DataFrame, c: &str) -> Vec<i64> {
    let s = df.column(c).unwrap().cast(&DataType::Int64).unwrap();
    s.i64().unwrap().into_no_null_iter().collect()
}

fn f64s(df: &DataFrame, c: &str) -> Vec<f64> {
    df.column(c)
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect()
}

/// A spec's bars over every year file, in order.
fn spec_bars(store: &Path, spec: &str) -> DataFrame {
    let dir = store.join(format!("bars/futures-um/{spec}/symbol={SYMBOL}"));
    let mut all: Option<DataFrame> = None;
    for p in walk(&dir) {
        let df = read(&p);
        // Each year file holds the bars that closed in that year.
        let year: i32 = p
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_prefix("year=")
            .unwrap()
            .parse()
            .unwrap();
        for t in i64s(&df, "close_time") {
            let y = chrono::DateTime::from_timestamp_micros(t).unwrap();
            assert_eq!(chrono::Datelike::year(&y), year, "{}", p.display());
        }
        all = Some(match all {
            None => df,
            Some(mut a) => {
                a.vstack_mut(&df).unwrap();
                a
            }
        });
    }
    all.unwrap_or_else(|| panic!("no bars for {spec}"))
}

/// The optimized aggTrades of [D1, D3]: (price, quantity, time, is_buyer_maker).
fn agg_trades(store: &Path) -> (Vec<f64>, Vec<f64>, Vec<i64>, Vec<bool>) {
    let ds = Dataset::new(Market::Um, Dt::AggTrades, None).unwrap();
    let (lo, hi) = (1_735_516_800_000_000i64, 1_735_862_400_000_000i64); // D1 .. D3 + 1 day
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (y, m) in [(2024, 12), (2025, 1)] {
        let df = read(&store.join(ds.optimized_partition(SYMBOL, y, m)));
        let t = i64s(&df, "transact_time");
        let p = f64s(&df, "price");
        let q = f64s(&df, "quantity");
        let b: Vec<bool> = df
            .column("is_buyer_maker")
            .unwrap()
            .bool()
            .unwrap()
            .iter()
            .map(|b| b.unwrap())
            .collect();
        for i in 0..t.len() {
            if t[i] >= lo && t[i] < hi {
                out.0.push(p[i]);
                out.1.push(q[i]);
                out.2.push(t[i]);
                out.3.push(b[i]);
            }
        }
    }
    out
}

/// features.md §3's imbalance pseudocode, written out plainly: (ticks, imbalance, threshold,
/// volume, dollar_volume, open_time, close_time) per bar.
#[allow(clippy::type_complexity)]
fn reference_dollar_imbalance(
    t: &(Vec<f64>, Vec<f64>, Vec<i64>, Vec<bool>),
    init: f64,
    at: f64,
    ai: f64,
    min: Option<f64>,
    max: Option<f64>,
) -> Vec<(i64, f64, f64, f64, f64, i64, i64)> {
    let mut out = Vec::new();
    let mut threshold = init;
    let (mut e_t, mut e_i): (Option<f64>, Option<f64>) = (None, None);
    let (mut theta, mut n, mut vol, mut dol, mut open_t) = (0.0, 0i64, 0.0, 0.0, 0i64);
    for i in 0..t.0.len() {
        let (p, v) = (t.0[i], t.1[i]);
        let b = if t.3[i] { -1.0 } else { 1.0 };
        if n == 0 {
            open_t = t.2[i];
        }
        theta += b * p * v;
        n += 1;
        vol += v;
        dol += p * v;
        if theta.abs() >= threshold {
            out.push((n, theta, threshold, vol, dol, open_t, t.2[i]));
            let nf = n as f64;
            e_t = Some(match e_t {
                None => nf,
                Some(e) => at * nf + (1.0 - at) * e,
            });
            e_i = Some(match e_i {
                None => theta / nf,
                Some(e) => ai * (theta / nf) + (1.0 - ai) * e,
            });
            let mut th = e_t.unwrap() * e_i.unwrap().abs();
            if let Some(lo) = min {
                th = th.max(lo);
            }
            if let Some(hi) = max {
                th = th.min(hi);
            }
            threshold = th;
            (theta, n, vol, dol) = (0.0, 0, 0.0, 0.0);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_extend_exactly_rerun_as_no_ops_and_follow_upstream_changes() {
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (one, split, nightly) = (
        tmp.path().join("one"),
        tmp.path().join("split"),
        tmp.path().join("nightly"),
    );

    // One run over the whole range.
    etl(&sim, &one, D1, D3).await;
    copy_dir(&one, &split);
    let r = bars(&one, D1, D3, &[]).await;
    assert_eq!(counts(&r, "done"), UNITS, "{r:?}");
    assert!(modes(&r).iter().all(|m| m == "fresh"));

    // The same upstream, bars in two runs: the second continues from the checkpoints.
    let r = bars(&split, D1, D2, &[]).await;
    assert_eq!(counts(&r, "done"), UNITS);
    let r = bars(&split, D1, D3, &[]).await;
    assert_eq!(counts(&r, "done"), UNITS);
    assert!(modes(&r).iter().all(|m| m == "continue"), "{:?}", modes(&r));
    assert_same(&one, &split, "[d1, d2] then [d1, d3]");

    // The nightly case: upstream itself grows between the runs. Jan 1's fingerprint changes
    // when Jan 2's partition (its neighbour) appears, so the second run goes back to Dec 31.
    etl(&sim, &nightly, D1, D2).await;
    bars(&nightly, D1, D2, &[]).await;
    etl(&sim, &nightly, D1, D3).await;
    let r = bars(&nightly, D1, D3, &[]).await;
    assert_eq!(counts(&r, "done"), UNITS);
    for u in r
        .iter()
        .flat_map(|r| r["details"]["units"].as_array().unwrap())
    {
        assert_eq!(u["kind"], "rollback", "{u}");
        assert_eq!(u["changed"], D2, "{u}");
        assert_eq!(u["from"], D2, "{u}");
    }
    assert_same(&one, &nightly, "nightly growth");

    // A rerun is a no-op: nothing done, nothing rewritten.
    let before = outputs(&one);
    let r = bars(&one, D1, D3, &[]).await;
    assert_eq!(
        (counts(&r, "done"), counts(&r, "skipped")),
        (0, UNITS),
        "{r:?}"
    );
    assert_eq!(before, outputs(&one));

    // Diagnostics: per unit and day, bars, thresholds and E_T at both ends, clamp counts.
    let r = bars(&split, D1, D3, &["--force"]).await;
    assert!(modes(&r).iter().all(|m| m == "fresh"));
    assert_same(&one, &split, "--force recomputes the same history");
    for u in r
        .iter()
        .flat_map(|r| r["details"]["units"].as_array().unwrap())
    {
        let days = u["days"].as_array().unwrap();
        assert_eq!(days.len(), 4, "{u}");
        assert_eq!(days[0]["date"], D1);
        let mut bars_sum = 0;
        for d in days {
            for k in ["trades", "bars", "clamped_min", "clamped_max"] {
                assert!(d[k].is_u64(), "{k}: {d}");
            }
            assert!(
                d["threshold_start"].is_f64() && d["threshold_end"].is_f64(),
                "{d}"
            );
            assert!(d["trades"].as_u64().unwrap() > 1000, "{d}");
            bars_sum += d["bars"].as_u64().unwrap();
        }
        assert_eq!(u["bars"].as_u64().unwrap(), bars_sum);
        let spec = u["spec"].as_str().unwrap();
        if spec.contains("imbalance") {
            assert!(
                days[0]["e_t_start"].is_null(),
                "no bar before the history: {u}"
            );
            assert!(days[3]["e_t_end"].is_f64(), "{u}");
        }
        if spec.starts_with("dollar_imbalance") && spec.contains("min_none") {
            let c: u64 = days
                .iter()
                .map(|d| d["clamped_min"].as_u64().unwrap())
                .sum();
            assert_eq!(c, 0, "no min clamp when disabled: {u}");
        }
    }

    // The values: an independent implementation of the spec, bar for bar, to the bit.
    let trades = agg_trades(&one);
    for (spec, at, min) in [
        (
            "dollar_imbalance-init_1e4-at_0.1-ai_0.1-min_1e3-max_1e5-sign_aggressor-src_aggTrades",
            0.1,
            Some(1e3),
        ),
        (
            "dollar_imbalance-init_1e4-at_0.3-ai_0.1-min_none-max_1e5-sign_aggressor-src_aggTrades",
            0.3,
            None,
        ),
    ] {
        let want = reference_dollar_imbalance(&trades, 1e4, at, 0.1, min, Some(1e5));
        let df = spec_bars(&one, spec);
        assert!(want.len() >= 30, "{spec}: {} bars", want.len());
        assert_eq!(df.height(), want.len(), "{spec}");
        let (ticks, imb, th) = (
            i64s(&df, "ticks"),
            f64s(&df, "imbalance"),
            f64s(&df, "threshold"),
        );
        let (vol, dol) = (f64s(&df, "volume"), f64s(&df, "dollar_volume"));
        let (ot, ct, idx) = (
            i64s(&df, "open_time"),
            i64s(&df, "close_time"),
            i64s(&df, "bar"),
        );
        for (i, w) in want.iter().enumerate() {
            assert_eq!(idx[i], i as i64);
            assert_eq!(ticks[i], w.0, "{spec} bar {i}");
            assert_eq!(imb[i].to_bits(), w.1.to_bits(), "{spec} bar {i}");
            assert_eq!(th[i].to_bits(), w.2.to_bits(), "{spec} bar {i}");
            assert_eq!(vol[i].to_bits(), w.3.to_bits(), "{spec} bar {i}");
            assert_eq!(dol[i].to_bits(), w.4.to_bits(), "{spec} bar {i}");
            assert_eq!((ot[i], ct[i]), (w.5, w.6), "{spec} bar {i}");
        }
    }

    // Standard dollar bars: each reaches the threshold, and together they hold exactly the
    // dollar volume of the trades of complete bars.
    let df = spec_bars(&one, "dollar-th_5e4-sign_aggressor-src_aggTrades");
    let ticks = i64s(&df, "ticks");
    let dol = f64s(&df, "dollar_volume");
    let complete: usize = ticks.iter().sum::<i64>() as usize;
    assert!(complete < trades.0.len() && complete > trades.0.len() - 2000);
    let want: f64 = (0..complete).map(|i| trades.0[i] * trades.1[i]).sum();
    let got: f64 = dol.iter().sum();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    assert!(dol.iter().all(|d| *d >= 5e4));
    assert!(f64s(&df, "imbalance").iter().all(|x| *x == 0.0));
    let vwap = f64s(&df, "vwap");
    let (lo, hi) = (f64s(&df, "low"), f64s(&df, "high"));
    for i in 0..df.height() {
        assert!(lo[i] <= vwap[i] && vwap[i] <= hi[i]);
    }

    // Upstream republishes Jan 1: the dollar histories go back to the end of Dec 31 and end up
    // as a fresh computation over the new data would; the trades ones have nothing to do.
    let agg = Dataset::new(Market::Um, Dt::AggTrades, None).unwrap();
    let jan1 = ArchiveFile::new(
        agg,
        SYMBOL,
        FileDate::Day(chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()),
    );
    sim.republish(&jan1.key());
    for name in ["download", "extract", "convert", "optimize"] {
        let mut c = job(name);
        c.args(["--store", one.to_str().unwrap(), "--market", "um"])
            .args([
                "--data-type",
                "aggTrades",
                "--symbols",
                SYMBOL,
                "--start",
                D1,
                "--end",
                D3,
            ]);
        if name == "download" {
            c.args(["--source", &sim.base_url(), "--refresh"]);
        }
        ok(c, name).await;
    }
    let fresh = tmp.path().join("fresh");
    copy_dir(&one, &fresh);
    let r = bars(&one, D1, D3, &[]).await;
    let dollar: Vec<&serde_json::Value> = r[0]["details"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(dollar.len(), 5);
    for u in dollar {
        assert_eq!(
            (u["kind"].as_str(), u["changed"].as_str()),
            (Some("rollback"), Some(D2)),
            "{u}"
        );
    }
    assert_eq!(
        counts(&r[1..], "skipped"),
        4,
        "trades did not change: {:?}",
        r[1]
    );
    bars(&fresh, D1, D3, &["--force"]).await;
    assert_same(&one, &fresh, "after a republish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().to_str().unwrap();
    let base = [
        "--store",
        store,
        "--symbols",
        SYMBOL,
        "--start",
        D1,
        "--end",
        D3,
    ];
    for bad in [
        &["--bar", "dollar"][..],
        &[
            "--bar",
            "dollar",
            "--threshold",
            "1e6",
            "--init-threshold",
            "5",
        ],
        &["--bar", "renko", "--threshold", "1"],
        &[
            "--bar",
            "tick_imbalance",
            "--init-threshold",
            "5",
            "--alpha-ticks",
            "0",
        ],
        &[
            "--bar",
            "tick_imbalance",
            "--init-threshold",
            "5",
            "--min-threshold",
            "9",
            "--max-threshold",
            "8",
        ],
        &["--bar", "tick", "--threshold", "5", "--sign", "lee_ready"],
        &["--bar", "tick", "--threshold", "-5"],
    ] {
        let mut c = job("bars");
        c.args(base).args(bad);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    // Nothing upstream: each unit is missing, and the dry run says so without writing.
    let mut c = job("bars");
    c.args(base)
        .args(["--bar", "tick", "--threshold", "5,10", "--dry-run"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["counts"]["missing"], 2, "{}", stdout(&out));
    assert!(walk(Path::new(store)).is_empty());
}
