//! `bench-aggregate`: stages a synthetic year of optimized 1m klines, fundingRate and metrics per
//! symbol (with their `optimize` manifest entries) in a temp local store, then times the release
//! `aggregate` binary (1m → 1h features) for one symbol and for all of them, next to the pandas
//! implementation in `tests/python/aggregate_pandas.py` on the same files, whose bars it also
//! compares with the job's. Run it through `tests/bench/aggregate.sh` (release build, venv).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use bench::timed;
use chrono::NaiveDate;
use clap::Parser as ClapParser;
use frames::polars::prelude::*;
use shared::paths::{DataType as Dt, Dataset, Interval, Market};

#[derive(ClapParser)]
struct Args {
    /// Symbols staged (the "many symbols" case uses all of them).
    #[arg(long, default_value_t = 20)]
    symbols: usize,
    /// The year staged (a non-leap year has 525,600 minutes).
    #[arg(long, default_value_t = 2023)]
    year: i32,
    /// Runs of each case; the fastest is reported (the machine is shared).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Python with pandas and pyarrow (the bench script makes a venv).
    #[arg(long, env = "PIPELINE_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// Where the temp store goes.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the staged store (to profile or check by hand); prints its path.
    #[arg(long)]
    keep: bool,
    /// Stage full-precision doubles (random 52-bit mantissas: the float encodings' hardest case)
    /// instead of the archive's decimals: prices on a 0.01 tick, quantities in 0.001 lots.
    #[arg(long)]
    full_precision: bool,
    /// Stage the months as `optimize --smallest-floats` writes them: every float page zstd, where
    /// by default PLAIN ones are LZ4 (what the smallest months cost to read).
    #[arg(long)]
    smallest_floats: bool,
}

const MIN: i64 = 60_000_000;
/// Price ticks and quantity lots per unit: a 0.01 tick and a 0.001 lot, as on many UM contracts.
const TICKS: f64 = 100.0;
const LOTS: f64 = 1000.0;

fn utc(v: Vec<i64>, name: &str) -> Column {
    Int64Chunked::from_vec(name.into(), v)
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_column()
}

/// A deterministic random walk for symbol `s`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn put(
    store: &shared::Store,
    ds: Dataset,
    sym: &str,
    y: i32,
    m: u32,
    mut df: DataFrame,
    floats: frames::FloatEncoding,
) -> anyhow::Result<()> {
    let path = ds.optimized_partition(sym, y, m);
    // Encoded as `optimize` writes its months (frames' page encoding, one row group; PLAIN float
    // pages LZ4 unless `--smallest-floats`).
    df.rechunk_mut();
    let opts = frames::ParquetOptions {
        floats,
        ..frames::ParquetOptions::default()
    };
    let mut buf = frames::ParquetBuffer::new(df.schema(), &opts)?;
    buf.write(&df)?;
    let (bytes, out) = buf.finish(&path)?;
    store.put(&path, bytes).await?;
    bench::record_done(
        store,
        shared::job::JobName::OPTIMIZE,
        &ds.scope(),
        sym,
        format!("{sym}/{y}-{m:02}"),
        out,
    )
    .await?;
    Ok(())
}

/// A year of `sym`'s inputs, as `optimize` writes them; `full_precision` for unrounded values
/// (see [`Args::full_precision`]).
async fn stage(
    store: &shared::Store,
    sym: &str,
    year: i32,
    seed: u64,
    full_precision: bool,
    floats: frames::FloatEncoding,
) -> anyhow::Result<u64> {
    let kl = Dataset::new(Market::Um, Dt::Klines, Some(Interval::M1))?;
    let fr = Dataset::new(Market::Um, Dt::FundingRate, None)?;
    let mt = Dataset::new(Market::Um, Dt::Metrics, None)?;
    let mut rng = Rng(seed | 1);
    let mut price = 100.0 + seed as f64;
    // `x` on a grid of `1 / per`: the double nearest the decimal, as parsing the CSV gives (an
    // integer divided by `per` is rounded once, to that double); unrounded at full precision.
    let on = |x: f64, per: f64| {
        if full_precision {
            x
        } else {
            (x * per).round() / per
        }
    };
    let mut rows = 0u64;
    for m in 1..=12u32 {
        let first = NaiveDate::from_ymd_opt(year, m, 1).unwrap();
        let next = if m == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap()
        } else {
            NaiveDate::from_ymd_opt(year, m + 1, 1).unwrap()
        };
        let t0 = first
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        let t1 = next
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        let n = ((t1 - t0) / MIN) as usize;
        let mut c: [Vec<f64>; 8] = Default::default();
        let (mut ot, mut ct, mut tr) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for i in 0..n as i64 {
            let o = price;
            // As the archive has them: prices on the tick, quantities in lots, quote volumes
            // in tick × lot, traded across the minute's range. Full precision: unrounded, the
            // quote volumes at the close (the same draws either way).
            price = on(price * (1.0 + (rng.next() - 0.5) * 0.002), TICKS);
            let v = if rng.next() < 0.01 {
                0.0
            } else {
                on(rng.next() * 50.0, LOTS)
            };
            let (hi, lo) = (
                on(o.max(price) * (1.0 + rng.next() * 1e-3), TICKS),
                on(o.min(price) * (1.0 - rng.next() * 1e-3), TICKS),
            );
            let vwap = if full_precision {
                price
            } else {
                lo + (hi - lo) * rng.next()
            };
            let tbv = on(v * rng.next(), LOTS);
            let q = TICKS * LOTS;
            let row = [o, hi, lo, price, v, on(v * vwap, q), tbv, on(tbv * vwap, q)];
            ot.push(t0 + i * MIN);
            ct.push(t0 + (i + 1) * MIN - 1000);
            for (col, x) in c.iter_mut().zip(row) {
                col.push(x);
            }
            tr.push((row[4] * 7.0) as i64);
        }
        rows += n as u64;
        let [o, h, l, cl, v, qv, tbv, tbqv] = c;
        let df = DataFrame::new(
            n,
            vec![
                utc(ot, "open_time"),
                Column::new("open".into(), o),
                Column::new("high".into(), h),
                Column::new("low".into(), l),
                Column::new("close".into(), cl),
                Column::new("volume".into(), v),
                utc(ct, "close_time"),
                Column::new("quote_volume".into(), qv),
                Column::new("trades".into(), tr),
                Column::new("taker_buy_volume".into(), tbv),
                Column::new("taker_buy_quote_volume".into(), tbqv),
            ],
        )?;
        put(store, kl, sym, year, m, df, floats).await?;
        // Funding every 8 h (a few ms of jitter), metrics every 5 min (a blank ratio now and then).
        let k = ((t1 - t0) / (8 * 60 * MIN)) as usize;
        let calc: Vec<i64> = (0..k as i64)
            .map(|i| t0 + i * 480 * MIN + (rng.next() * 5000.0) as i64)
            .collect();
        let df = DataFrame::new(
            k,
            vec![
                utc(calc, "calc_time"),
                Column::new("funding_interval_hours".into(), vec![8i64; k]),
                Column::new(
                    "last_funding_rate".into(),
                    (0..k)
                        .map(|_| (rng.next() - 0.5) * 1e-3)
                        .collect::<Vec<f64>>(),
                ),
            ],
        )?;
        put(store, fr, sym, year, m, df, floats).await?;
        let k = ((t1 - t0) / (5 * MIN)) as usize;
        let snap: Vec<i64> = (0..k as i64).map(|i| t0 + i * 5 * MIN).collect();
        let mut r = |blank: f64| -> Vec<Option<f64>> {
            (0..k)
                .map(|_| (rng.next() >= blank).then(|| rng.next() * 2.0))
                .collect()
        };
        let cols = vec![
            utc(snap.clone(), "create_time"),
            Column::new("sum_open_interest".into(), r(0.0)),
            Column::new("sum_open_interest_value".into(), r(0.0)),
            Column::new("count_toptrader_long_short_ratio".into(), r(0.0)),
            Column::new("sum_toptrader_long_short_ratio".into(), r(0.0)),
            Column::new("count_long_short_ratio".into(), r(0.05)),
            Column::new("sum_taker_long_short_vol_ratio".into(), r(0.0)),
            utc(snap, "snapshot_time"),
        ];
        put(store, mt, sym, year, m, DataFrame::new(k, cols)?, floats).await?;
    }
    Ok(rows)
}

/// The last JSON object line of a run's stdout (the job's report, the pandas script's figures).
fn last_json(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let root = work.path().join("store");
    std::fs::create_dir_all(&root)?;
    let store = shared::Store::open(root.to_str().context("utf-8")?)?;
    let symbols: Vec<String> = (0..args.symbols)
        .map(|i| format!("SYM{i:02}USDT"))
        .collect();
    let t0 = Instant::now();
    let mut minutes_per_symbol = 0;
    let floats = frames::FloatEncoding::optimized_months(args.smallest_floats);
    for (i, s) in symbols.iter().enumerate() {
        let seed = 1000 + i as u64;
        minutes_per_symbol = stage(&store, s, args.year, seed, args.full_precision, floats).await?;
    }
    // The staged files written back to disk now, not by the kernel's flusher threads during
    // the first timed runs (on 2 cores they took a core from them).
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    eprintln!(
        "staged {} symbols × {} minutes (+ funding, metrics; {}; {}) in {:.1} s{}",
        symbols.len(),
        minutes_per_symbol,
        if args.full_precision {
            "full-precision doubles"
        } else {
            "prices on a 0.01 tick, quantities in 0.001 lots"
        },
        if args.smallest_floats {
            "float pages zstd"
        } else {
            "PLAIN float pages LZ4 where within 1.5× of zstd"
        },
        t0.elapsed().as_secs_f64(),
        if synced { ", synced to disk" } else { "" }
    );
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("aggregate");
    let (start, end) = (
        format!("{}-01-01", args.year),
        format!("{}-12-31", args.year),
    );
    let python = args.python.clone();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/aggregate_pandas.py"
    );

    println!(
        "aggregate benchmark: 1m → 1h features, {} minutes per symbol-year, best of {}",
        minutes_per_symbol, args.repeat
    );
    println!(
        "{}",
        bench::environment(python.as_deref(), &["pandas", "pyarrow", "numpy"])
    );
    println!();
    println!(
        "{:<12} {:<8} {:>8} {:>12} {:>8} {:>9} {:>14} {:>10} {:>8}",
        "case", "impl", "symbols", "minutes", "bars", "secs", "minutes/s", "peak RSS", "ratio"
    );
    for n in [1usize, symbols.len()] {
        let syms = symbols[..n].join(",");
        let ours = timed(
            || {
                let mut c = Command::new(&bin);
                c.args([
                    "--store",
                    root.to_str().unwrap(),
                    "--market",
                    "um",
                    "--symbols",
                    &syms,
                ])
                .args(["--start", &start, "--end", &end, "--freq", "1h", "--force"])
                .env("RUST_LOG", "warn");
                c
            },
            args.repeat,
        )?;
        let report = last_json(&ours.stdout).context("the job's report")?;
        let minutes = report["details"]["minutes_read"].as_u64().unwrap_or(0);
        let bars = report["details"]["bars_written"].as_u64().unwrap_or(0);
        let case = if n == 1 { "one symbol" } else { "many" };
        let rate = minutes as f64 / ours.secs;
        println!(
            "{:<12} {:<8} {:>8} {:>12} {:>8} {:>9.3} {:>14.0} {:>10} {:>8}",
            case,
            "rust",
            n,
            minutes,
            bars,
            ours.secs,
            rate,
            ours.rss_kib
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or("-".into()),
            "1.0×"
        );
        let Some(py) = &python else { continue };
        let pd = timed(
            || {
                let mut c = Command::new(py);
                c.args([
                    script,
                    root.to_str().unwrap(),
                    "futures-um",
                    &syms,
                    "60",
                    if n == 1 { "1" } else { "0" },
                ]);
                c
            },
            args.repeat,
        )?;
        let v = last_json(&pd.stdout).context("the pandas script's figures")?;
        let pd_secs = v["seconds"].as_f64().unwrap_or(pd.secs);
        let pd_rate = v["rows"].as_f64().unwrap_or(0.0) / pd_secs;
        println!(
            "{:<12} {:<8} {:>8} {:>12} {:>8} {:>9.3} {:>14.0} {:>10} {:>7.1}×",
            case,
            "pandas",
            n,
            v["rows"].to_string(),
            v["bars"].to_string(),
            pd_secs,
            pd_rate,
            pd.rss_kib
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or("-".into()),
            rate / pd_rate
        );
        // Both by their own clocks (no process start or exit on either side): the job's report
        // times its run from after start-up to the last unit (planning and writing included).
        if let Some(own) = report["details"]["seconds"].as_f64() {
            println!(
                "{:<12} by each one's own clock: rust {own:.3} s, pandas {pd_secs:.3} s: {:.1}×",
                "",
                (minutes as f64 / own) / pd_rate
            );
        }
        // The medians of the runs, the same two ways: a run the machine slowed throughout shows
        // here, where the best of each hides it.
        let ours_med = bench::median(ours.runs.iter().map(|(s, _)| *s).collect());
        let ours_own_med = bench::median(
            ours.runs
                .iter()
                .filter_map(|(_, o)| last_json(o)?["details"]["seconds"].as_f64())
                .collect(),
        );
        let pd_med = bench::median(
            pd.runs
                .iter()
                .filter_map(|(_, o)| last_json(o)?["seconds"].as_f64())
                .collect(),
        );
        if let (Some(wall), Some(own), Some(p)) = (ours_med, ours_own_med, pd_med) {
            println!(
                "{:<12} medians of {} runs: rust {wall:.3} s ({own:.3} s by its clock), pandas {p:.3} s: {:.1}× ({:.1}×)",
                "",
                ours.runs.len(),
                p / wall,
                p / own
            );
        }
        if let Some(d) = v["max_rel_diff"].as_f64() {
            let abs = v["max_abs_diff"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:<12} pandas and aggregate agree on every bar and column within features.md's \
                 tolerance: max relative difference {d:.2e} (beyond 1e-12 absolute), max absolute {abs:.2e}",
                ""
            );
        }
    }
    if args.keep {
        println!("kept the store: {}", root.display());
        let _ = work.keep();
    }
    println!();
    println!(
        "secs: rust = process wall time (start to exit, reading Parquet and writing the year files); pandas = the script's own clock after imports (reading Parquet, computing and writing its bars; its check against the job's output is outside it); own clock = the job's report (its run from after start-up, planning and writing included) against the same pandas figure; medians = the middle run of each side, both ways. minutes/s = input minutes / secs. ratio = rust minutes/s ÷ pandas minutes/s, same run."
    );
    Ok(())
}
