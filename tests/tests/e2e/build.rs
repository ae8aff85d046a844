//! End to end for the `build` job (binary `build-panel`) on staged store data: hourly feature
//! files and fundingRate months with their upstream manifest entries (a late listing, a
//! delisting, a short and a long gap, nulls), then the real binary: the panel against an
//! independent pandas implementation of features.md §2 (`tests/python/build_pandas.py`), the
//! summary, an idempotent rerun, a rebuild when one input file changes, a `top-funding:N`
//! universe, usage errors, and Qlib's own `D.features` reading the export back
//! (`tests/python/qlib_roundtrip.py`, with the pyqlib virtualenv `.ci/run` makes).

use crate::common;

use std::path::{Path, PathBuf};

use common::{job, report, stderr, walk};
use frames::polars::prelude::*;
use shared::manifest::{Entry, ManifestKey, ManifestWriter, UnitStatus};
use shared::paths::{DataType as Dt, Dataset, Market, features_partition};

const H: i64 = 3_600_000_000;
/// 2024-12-01 00:00 UTC.
const T0: i64 = 1_733_011_200_000_000;
const SYMBOLS: &str = "AAAUSDT,BBBUSDT,CCCUSDT,DDDUSDT";

fn utc(v: Vec<i64>, name: &str) -> Column {
    Int64Chunked::from_vec(name.into(), v)
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_column()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn record(
    store: &shared::Store,
    job: shared::job::JobName,
    scope: &str,
    sym: &str,
    unit: String,
    out: shared::manifest::Output,
) {
    let (w, _) = ManifestWriter::open(store, &ManifestKey::new(job, scope, sym))
        .await
        .unwrap();
    w.record(Entry {
        unit,
        status: UnitStatus::Done,
        inputs: Default::default(),
        job_version: "1".into(),
        params_hash: String::new(),
        outputs: vec![out],
        recorded_at: chrono::Utc::now(),
        run_id: "staged".into(),
        detail: None,
        duplicate_days: Default::default(),
        rest: None,
    })
    .await
    .unwrap();
}

/// Hourly features of one symbol for hours `first..=last` (hours from T0) minus `gaps`, as
/// `aggregate` writes them, with its manifest entry; `bump` scales every close (to change a file).
async fn stage_features(
    store: &shared::Store,
    sym: &str,
    seed: u64,
    first: i64,
    last: i64,
    gaps: &[std::ops::Range<i64>],
    bump: f64,
) {
    let mut rng = Rng(seed);
    let mut price = 10.0 * seed as f64;
    let mut ot = Vec::new();
    let mut f: Vec<Vec<Option<f64>>> = vec![Vec::new(); 23];
    let (mut trades, mut minutes, mut fih) = (Vec::new(), Vec::new(), Vec::new());
    for h in first..=last {
        let (u, w) = (rng.next(), rng.next());
        price *= 1.0 + (u - 0.5) * 0.02;
        if gaps.iter().any(|g| g.contains(&h)) {
            continue;
        }
        let c = price * bump;
        ot.push(T0 + h * H);
        let vol = if w < 0.02 { 0.0 } else { u * 100.0 };
        let vals = [
            Some(c * (1.0 + (w - 0.5) * 0.004)),    // open
            Some(c * (1.0 + u * 0.01)),             // high
            Some(c * (1.0 - w * 0.01)),             // low
            Some(c),                                // close
            Some(vol),                              // volume
            Some(vol * c),                          // quote_volume
            Some(vol * 0.4),                        // taker_buy_volume
            Some(vol * 0.4 * c),                    // taker_buy_quote_volume
            (vol > 0.0).then_some(c),               // vwap
            (vol > 0.0).then_some(0.0),             // vwap_deviation
            (w > 0.08).then_some(0.002 + w * 0.01), // realized_vol
            Some(w * 1e-4),                         // realized_variance
            Some(0.5 + u),                          // volume_cv
            (vol > 0.0).then_some(0.4),             // taker_buy_ratio
            Some(u * 0.01),                         // parkinson_vol
            Some(w * 0.01),                         // garman_klass_vol
            (u > 0.1).then_some((w - 0.5) * 1e-3),  // funding_rate
            Some(1e6 * (1.0 + u)),                  // open_interest
            Some(1e6 * c),                          // open_interest_value
            Some(1.0 + u),                          // top_trader_account_ls_ratio
            Some(1.0 + w),                          // top_trader_position_ls_ratio
            (u > 0.2).then_some(0.9 + w),           // account_ls_ratio
            Some(1.0),                              // taker_ls_volume_ratio
        ];
        for (k, v) in vals.into_iter().enumerate() {
            f[k].push(v);
        }
        trades.push((vol * 7.0) as i64);
        minutes.push(if w < 0.05 { 59i64 } else { 60 });
        fih.push((u > 0.1).then_some(8i64));
    }
    let n = ot.len();
    let name = |s: &str| PlSmallStr::from(s);
    let col = |k: usize, s: &str| Column::new(name(s), f[k].clone());
    let df = DataFrame::new(
        n,
        vec![
            utc(ot, "open_time"),
            col(0, "open"),
            col(1, "high"),
            col(2, "low"),
            col(3, "close"),
            col(4, "volume"),
            col(5, "quote_volume"),
            Column::new(name("trades"), trades),
            col(6, "taker_buy_volume"),
            col(7, "taker_buy_quote_volume"),
            Column::new(name("minutes"), minutes),
            col(8, "vwap"),
            col(9, "vwap_deviation"),
            col(10, "realized_vol"),
            col(11, "realized_variance"),
            col(12, "volume_cv"),
            col(13, "taker_buy_ratio"),
            col(14, "parkinson_vol"),
            col(15, "garman_klass_vol"),
            col(16, "funding_rate"),
            Column::new(name("funding_interval_hours"), fih),
            col(17, "open_interest"),
            col(18, "open_interest_value"),
            col(19, "top_trader_account_ls_ratio"),
            col(20, "top_trader_position_ls_ratio"),
            col(21, "account_ls_ratio"),
            col(22, "taker_ls_volume_ratio"),
        ],
    )
    .unwrap();
    let mut df = df;
    let path = features_partition(Market::Um, "1h", sym, 2024);
    let out = frames::write_parquet(store, &path, &mut df, &frames::ParquetOptions::default())
        .await
        .unwrap();
    record(
        store,
        shared::job::JobName::AGGREGATE,
        "futures-um/1h",
        sym,
        format!("{sym}/2024"),
        out,
    )
    .await;
}

/// Settled funding every 8 h over the symbol's hours (a few ms after the hour).
async fn stage_funding(store: &shared::Store, sym: &str, seed: u64, first: i64, last: i64) {
    let mut rng = Rng(seed ^ 0xfeed);
    let ds = Dataset::new(Market::Um, Dt::FundingRate, None).unwrap();
    let hours: Vec<i64> = (first..=last).filter(|h| h % 8 == 0).collect();
    let calc: Vec<i64> = hours.iter().map(|h| T0 + h * H + 3_000).collect();
    let rate: Vec<f64> = hours.iter().map(|_| (rng.next() - 0.5) * 2e-3).collect();
    let k = calc.len();
    let mut df = DataFrame::new(
        k,
        vec![
            utc(calc, "calc_time"),
            Column::new("funding_interval_hours".into(), vec![8i64; k]),
            Column::new("last_funding_rate".into(), rate),
        ],
    )
    .unwrap();
    let path = ds.optimized_partition(sym, 2024, 12);
    let out = frames::write_parquet(store, &path, &mut df, &frames::ParquetOptions::default())
        .await
        .unwrap();
    record(
        store,
        shared::job::JobName::OPTIMIZE,
        &ds.scope(),
        sym,
        format!("{sym}/2024-12"),
        out,
    )
    .await;
}

/// The four symbols over December 2024 (hours from 12-01 00:00): AAA throughout; BBB listed on
/// 12-06 12:00; CCC delisted after 12-18 05:00; DDD with a 3 h gap and a 10 h gap.
async fn stage(store: &shared::Store, bump_aaa: f64) {
    let last = 31 * 24 - 1;
    stage_features(store, "AAAUSDT", 3, 0, last, &[], bump_aaa).await;
    stage_features(store, "BBBUSDT", 5, 5 * 24 + 12, last, &[], 1.0).await;
    stage_features(store, "CCCUSDT", 7, 0, 17 * 24 + 5, &[], 1.0).await;
    stage_features(store, "DDDUSDT", 9, 0, last, &[(300..303), (400..410)], 1.0).await;
    for (sym, seed, a, b) in [
        ("AAAUSDT", 3, 0, last),
        ("BBBUSDT", 5, 5 * 24 + 12, last),
        ("CCCUSDT", 7, 0, 17 * 24 + 5),
        ("DDDUSDT", 9, 0, last),
    ] {
        stage_funding(store, sym, seed, a, b).await;
    }
}

fn build(store: &Path, args: &[&str]) -> std::process::Output {
    let mut c = job("build-panel");
    c.args(["--store", store.to_str().unwrap(), "--market", "um"])
        .args(args);
    c.output().unwrap()
}

fn ok(store: &Path, args: &[&str]) -> serde_json::Value {
    let o = build(store, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "build-panel {args:?}:\n{}",
        stderr(&o)
    );
    report(&o)
}

fn read(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha(path: &Path) -> String {
    shared::checksum::sha256_hex(&std::fs::read(path).unwrap())
}

/// `python SCRIPT ARGS` must print a JSON line and exit 0.
fn python(python: &Path, script: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let o = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{} {args:?} failed:\n{out}\n{}",
        script.display(),
        stderr(&o)
    );
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The Python with pyqlib 0.9.7 (`PIPELINE_TEST_QLIB_PYTHON`, set by `.ci/run`); required under
/// CI, skipped with a message elsewhere.
fn qlib_python() -> Option<PathBuf> {
    match std::env::var_os("PIPELINE_TEST_QLIB_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("PIPELINE_TEST_QLIB_PYTHON is required under CI (see .ci/run)")
        }
        None => {
            eprintln!(
                "SKIPPED: PIPELINE_TEST_QLIB_PYTHON not set; point it at a python with pyqlib==0.9.7 to run the Qlib round trip"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_against_pandas_summary_rerun_rebuild_top_funding_and_qlib_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = shared::Store::open(root.to_str().unwrap()).unwrap();
    stage(&store, 1.0).await;
    let (start, end) = ("2024-12-08", "2024-12-31");
    let args = [
        "--name",
        "p",
        "--symbols",
        SYMBOLS,
        "--start",
        start,
        "--end",
        end,
    ];

    // 1. The panel.
    let r = ok(root, &args);
    assert_eq!(r["counts"]["done"], 1, "{r}");
    let panel_path = root.join("final/p/panel.parquet");
    let df = read(&panel_path);
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names.len(), 2 + 26 + 1 + 10, "{names:?}");
    assert_eq!(&names[..3], ["symbol", "open_time", "open"]);
    assert_eq!(names[28], "filled");
    assert_eq!(names.last().unwrap(), "relative_volume");
    let t: Vec<i64> = df
        .column("open_time")
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let sym: Vec<String> = df
        .column("symbol")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|x| x.unwrap().to_string())
        .collect();
    let keys: Vec<(i64, &str)> = t
        .iter()
        .copied()
        .zip(sym.iter().map(String::as_str))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "sorted by (open_time, symbol)"
    );
    assert!(*t.first().unwrap() >= T0 + 7 * 24 * H && *t.last().unwrap() < T0 + 31 * 24 * H);
    for c in df.columns() {
        if let Ok(f) = c.f64() {
            assert!(f.iter().flatten().all(|x| !x.is_nan()), "{}: NaN", c.name());
        }
    }
    // BBB (listed 12-06 12:00) has no ret_168h before 12-13 12:00; CCC none after 12-18 05:00.
    let first_of = |s: &str| t[sym.iter().position(|x| x == s).unwrap()];
    let last_of = |s: &str| t[sym.iter().rposition(|x| x == s).unwrap()];
    assert!(first_of("BBBUSDT") >= T0 + (5 * 24 + 12 + 168) * H);
    assert!(last_of("CCCUSDT") <= T0 + (17 * 24 + 5) * H);
    // A filled row's realized_vol is null, hence its price_efficiency and vol_regime: the
    // default null policy drops every filled row (keep_nulls keeps them, below).
    let filled = df.column("filled").unwrap().bool().unwrap();
    assert!(!filled.iter().flatten().any(|f| f));
    // The summary.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("final/p/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["rows"], df.height() as u64, "{summary}");
    assert_eq!(
        summary["symbols"],
        serde_json::json!(["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"])
    );
    assert_eq!(summary["panel"]["sha256"], sha(&panel_path));
    assert_eq!(summary["params"]["max_ffill_hours"], 6);
    assert!(
        summary["rows_dropped_for_nulls"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["hours_kept"].as_u64().unwrap() >= 24 * 23,
        "{summary}"
    );
    assert_eq!(
        summary["rows_in_range"].as_u64().unwrap(),
        summary["rows"].as_u64().unwrap()
            + summary["rows_outside_universe"].as_u64().unwrap()
            + summary["rows_dropped_by_coverage"].as_u64().unwrap()
            + summary["rows_dropped_for_nulls"].as_u64().unwrap(),
        "{summary}"
    );
    // The Qlib export's layout.
    let q = root.join("final/p/qlib");
    assert!(q.join("_SUCCESS").is_file());
    let cal = std::fs::read_to_string(q.join("calendars/60min.txt")).unwrap();
    assert_eq!(
        cal.lines().count() as i64,
        (t.last().unwrap() - t[0]) / H + 1
    );
    assert!(cal.starts_with("2024-12-08 00:00:00\n"), "{}", &cal[..40]);
    let inst = std::fs::read_to_string(q.join("instruments/all.txt")).unwrap();
    let label = |t: i64| {
        chrono::DateTime::from_timestamp_micros(t)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let line = format!(
        "BBBUSDT\t{}\t{}\n",
        label(first_of("BBBUSDT")),
        label(last_of("BBBUSDT"))
    );
    assert!(inst.contains(&line), "{line:?} in\n{inst}");
    let bin = std::fs::read(q.join("features/bbbusdt/close.60min.bin")).unwrap();
    let start_index = f32::from_le_bytes(bin[..4].try_into().unwrap());
    assert_eq!(
        start_index,
        ((first_of("BBBUSDT") - t[0]) / H) as f32,
        "BBB's first hour"
    );
    assert_eq!(
        bin.len() as i64,
        4 * (2 + (last_of("BBBUSDT") - first_of("BBBUSDT")) / H),
        "one value per hour of BBB's span"
    );
    assert_eq!(walk(&q.join("features/aaausdt")).len(), 26 + 1 + 10);

    // 2. keep_nulls, the listed base, a shorter fill, no export; then an independent
    // implementation of both.
    let k_args = [
        "--name",
        "k",
        "--symbols",
        SYMBOLS,
        "--start",
        start,
        "--end",
        end,
        "--keep-nulls",
        "--coverage-base",
        "listed",
        "--min-coverage",
        "0.7",
        "--max-ffill-hours",
        "2",
        "--qlib",
        "false",
    ];
    ok(root, &k_args);
    assert!(!root.join("final/k/qlib").exists());
    let k = read(&root.join("final/k/panel.parquet"));
    let kf = k.column("filled").unwrap().bool().unwrap();
    // DDD's 3 h gap: 2 filled hours; its 10 h gap: 2 filled hours, 8 missing.
    assert_eq!(kf.iter().flatten().filter(|f| *f).count(), 4);
    assert!(k.height() > df.height());
    if let Some(py) = common::python_with_readers() {
        let root_s = root.to_str().unwrap();
        let v = python(
            &py,
            "build_pandas.py",
            &[root_s, "p", "futures-um", SYMBOLS, start, end],
        );
        assert!(v["columns_compared"].as_u64().unwrap() >= 36, "{v}");
        eprintln!("pandas reference: {v}");
        python(
            &py,
            "build_pandas.py",
            &[
                root_s,
                "k",
                "futures-um",
                SYMBOLS,
                start,
                end,
                "2",
                "0.7",
                "listed",
                "1",
            ],
        );
    }

    // 3. Qlib reads the export back.
    if let Some(py) = qlib_python() {
        let v = python(
            &py,
            "qlib_roundtrip.py",
            &[q.to_str().unwrap(), panel_path.to_str().unwrap()],
        );
        assert!(v["nan_gap_hours"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["late_listed"], serde_json::json!(["BBBUSDT"]), "{v}");
        eprintln!("qlib round trip: {v}");
    }

    // 4. A rerun does nothing, fast, and leaves every byte.
    let before: Vec<(PathBuf, String)> = walk(&root.join("final/p"))
        .into_iter()
        .map(|p| (p.clone(), sha(&p)))
        .collect();
    let t1 = std::time::Instant::now();
    let r = ok(root, &args);
    let secs = t1.elapsed().as_secs_f64();
    assert_eq!(r["counts"]["skipped"], 1, "{r}");
    assert_eq!(r["counts"]["done"], 0, "{r}");
    assert!(secs < 5.0, "an up-to-date panel is skipped in {secs:.2}s");
    for (p, s) in &before {
        assert_eq!(&sha(p), s, "{}", p.display());
    }

    // A deleted export is noticed (its marker is an output of the unit) and rebuilt.
    std::fs::remove_dir_all(&q).unwrap();
    let r = ok(root, &args);
    assert_eq!(r["counts"]["done"], 1, "{r}");
    assert!(q.join("_SUCCESS").is_file());
    assert_eq!(sha(&panel_path), before[0].1, "the same panel again");

    // 5. One input file changes (AAA republished): the panel is rebuilt.
    stage_features(&store, "AAAUSDT", 3, 0, 31 * 24 - 1, &[], 1.5).await;
    let r = ok(root, &args);
    assert_eq!(r["counts"]["done"], 1, "{r}");
    assert_ne!(sha(&panel_path), before[0].1);
    let df2 = read(&panel_path);
    let close = |d: &DataFrame, s: &str| -> f64 {
        let m = d.column("symbol").unwrap().str().unwrap().equal(s);
        d.filter(&m)
            .unwrap()
            .column("close")
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
            .unwrap()
    };
    assert!((close(&df2, "AAAUSDT") / close(&df, "AAAUSDT") - 1.5).abs() < 1e-12);
    assert_eq!(close(&df2, "DDDUSDT"), close(&df, "DDDUSDT"));

    // `--universe all` (every symbol in the features store: these four) is the same panel, byte
    // for byte; `--dry-run` plans it and writes nothing.
    let r = ok(
        root,
        &[
            "--name",
            "every",
            "--symbols",
            "all",
            "--universe",
            "all",
            "--start",
            start,
            "--end",
            end,
        ],
    );
    assert_eq!(r["details"]["candidates"], 4, "{r}");
    assert_eq!(
        sha(&root.join("final/every/panel.parquet")),
        sha(&panel_path)
    );
    let r = ok(
        root,
        &[
            "--name",
            "dry",
            "--symbols",
            SYMBOLS,
            "--start",
            start,
            "--end",
            end,
            "--dry-run",
        ],
    );
    assert_eq!(r["outcome"], "dry_run", "{r}");
    assert!(!root.join("final/dry").exists());

    // 6. top-funding:2: at most two symbols an hour, ranked on the staged funding.
    let r = ok(
        root,
        &[
            "--name",
            "tf",
            "--symbols",
            SYMBOLS,
            "--start",
            start,
            "--end",
            end,
            "--universe",
            "top-funding:2",
            "--keep-nulls",
            "--qlib",
            "false",
        ],
    );
    assert_eq!(r["counts"]["done"], 1, "{r}");
    let tf = read(&root.join("final/tf/panel.parquet"));
    let per_hour = tf
        .clone()
        .lazy()
        .group_by([col("open_time")])
        .agg([col("symbol").count().alias("n")])
        .collect()
        .unwrap();
    let n: Vec<u32> = per_hour
        .column("n")
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert!(n.iter().all(|&k| k <= 2), "{n:?}");
    assert!(n.contains(&2));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("final/tf/summary.json")).unwrap())
            .unwrap();
    assert!(s["rows_outside_universe"].as_u64().unwrap() > 0, "{s}");

    // 7. Usage errors: exit 2, nothing written.
    for bad in [
        &["--name", "x", "--freq", "4h"][..],
        &["--name", "a/b"],
        &["--name", "x", "--universe", "top-funding:0"],
        &["--name", "x", "--coverage-base", "some"],
        &["--name", "x", "--shard", "0/2"],
    ] {
        let mut a = vec!["--symbols", SYMBOLS, "--start", start, "--end", end];
        a.extend_from_slice(bad);
        let o = build(root, &a);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    assert!(!root.join("final/x").exists());

    // 8. A panel its own rules leave empty says so: three days from the first staged hour have
    // no 168 h of history, every row lacks `ret_168h`. Exit 0, a warning naming the cause in
    // the report and the summary; and a symbol without features is named too.
    let a = [
        "--name",
        "empty",
        "--symbols",
        "AAAUSDT,ZZZUSDT",
        "--start",
        "2024-12-01",
        "--end",
        "2024-12-03",
    ];
    let o = build(root, &a);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["details"]["rows"], 0, "{r}");
    let warnings = common::warnings(&r);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("ZZZUSDT: `aggregate` has recorded nothing")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("panel `empty` has 0 rows") && w.contains("168 h")),
        "{warnings:?}"
    );
    assert!(
        stderr(&o).contains("warning: panel `empty` has 0 rows"),
        "{}",
        stderr(&o)
    );
}
