//! `bench-build`: stages a synthetic year of hourly features for N symbols (some listed late,
//! some delisted early, short and long gaps, nulls) and their settled funding, with the
//! `aggregate` and `optimize` manifest entries, in a temp local store; then times the release
//! `build-panel` binary building the panel and its Qlib export (static universe and
//! `top-funding`): rows/s and peak RSS (`bench::timed`). Run it through
//! `tests/bench/build.sh`.

#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use bench::timed;
use chrono::NaiveDate;
use clap::Parser as ClapParser;
use frames::polars::prelude::*;
use shared::paths::{DataType as Dt, Dataset, Market, features_partition};

#[derive(ClapParser)]
struct Args {
    /// Symbols staged.
    #[arg(long, default_value_t = 100)]
    symbols: usize,
    /// The year staged.
    #[arg(long, default_value_t = 2023)]
    year: i32,
    /// Runs of each case; the fastest is reported (the machine is shared).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Where the temp store goes.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Keep the staged store; prints its path.
    #[arg(long)]
    keep: bool,
}

const H: i64 = 3_600_000_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn utc(v: Vec<i64>, name: &str) -> Column {
    Int64Chunked::from_vec(name.into(), v)
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_column()
}

/// One symbol-year of hourly features; returns the rows written.
async fn stage(store: &shared::Store, sym: &str, i: usize, year: i32) -> anyhow::Result<u64> {
    let t0 = NaiveDate::from_ymd_opt(year, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    let hours = (NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap()
        - NaiveDate::from_ymd_opt(year, 1, 1).unwrap())
    .num_days()
        * 24;
    let mut rng = Rng(1000 + i as u64);
    // Every 7th symbol listed late, every 11th delisted early.
    let first = if i % 7 == 3 {
        (i as i64 * 37) % (hours / 2)
    } else {
        0
    };
    let last = if i % 11 == 5 {
        hours / 2 + (i as i64 * 53) % (hours / 2) - 1
    } else {
        hours - 1
    };
    let mut price = 10.0 + i as f64;
    let mut ot = Vec::new();
    let mut f: Vec<Vec<Option<f64>>> = vec![Vec::new(); 23];
    let (mut trades, mut minutes, mut fih) = (Vec::new(), Vec::new(), Vec::new());
    for h in first..=last {
        let (u, w) = (rng.next(), rng.next());
        price *= 1.0 + (u - 0.5) * 0.02;
        // Gaps: short ones now and then, a long one per symbol.
        if w < 0.003 || ((h - first) % 2000 < 10 && h > first + 100 && i.is_multiple_of(3)) {
            continue;
        }
        let c = price;
        ot.push(t0 + h * H);
        let vol = u * 1000.0;
        let vals = [
            Some(c * (1.0 + (w - 0.5) * 0.004)),
            Some(c * (1.0 + u * 0.01)),
            Some(c * (1.0 - w * 0.01)),
            Some(c),
            Some(vol),
            Some(vol * c),
            Some(vol * 0.4),
            Some(vol * 0.4 * c),
            Some(c),
            Some(0.0),
            (w > 0.01).then_some(0.002 + w * 0.01),
            Some(w * 1e-4),
            Some(0.5 + u),
            Some(0.4),
            Some(u * 0.01),
            Some(w * 0.01),
            Some((w - 0.5) * 1e-3),
            Some(1e6 * (1.0 + u)),
            Some(1e6 * c),
            Some(1.0 + u),
            Some(1.0 + w),
            (u > 0.05).then_some(0.9 + w),
            Some(1.0),
        ];
        for (k, v) in vals.into_iter().enumerate() {
            f[k].push(v);
        }
        trades.push((vol * 7.0) as i64);
        minutes.push(60i64);
        fih.push(Some(8i64));
    }
    let n = ot.len();
    let names = [
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        "vwap",
        "vwap_deviation",
        "realized_vol",
        "realized_variance",
        "volume_cv",
        "taker_buy_ratio",
        "parkinson_vol",
        "garman_klass_vol",
        "funding_rate",
        "open_interest",
        "open_interest_value",
        "top_trader_account_ls_ratio",
        "top_trader_position_ls_ratio",
        "account_ls_ratio",
        "taker_ls_volume_ratio",
    ];
    let mut f = f.into_iter();
    let mut cols = vec![utc(ot, "open_time")];
    for name in names {
        let v = f.next().expect("a column per name");
        cols.push(Column::new(name.into(), v));
        match name {
            "quote_volume" => cols.push(Column::new("trades".into(), std::mem::take(&mut trades))),
            "taker_buy_quote_volume" => {
                cols.push(Column::new("minutes".into(), std::mem::take(&mut minutes)))
            }
            "funding_rate" => cols.push(Column::new(
                "funding_interval_hours".into(),
                std::mem::take(&mut fih),
            )),
            _ => {}
        }
    }
    let mut df = DataFrame::new(n, cols)?;
    let path = features_partition(Market::Um, "1h", sym, year);
    let out =
        frames::write_parquet(store, &path, &mut df, &frames::ParquetOptions::default()).await?;
    bench::record_done(
        store,
        shared::job::JobName::AGGREGATE,
        "futures-um/1h",
        sym,
        format!("{sym}/{year}"),
        out,
    )
    .await?;
    // Funding every 8 h over the listing, one file per month.
    let ds = Dataset::new(Market::Um, Dt::FundingRate, None)?;
    for m in 1..=12u32 {
        let a = NaiveDate::from_ymd_opt(year, m, 1).unwrap();
        let b = if m == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap()
        } else {
            NaiveDate::from_ymd_opt(year, m + 1, 1).unwrap()
        };
        let (ha, hb) = (
            (a.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros() - t0) / H,
            (b.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros() - t0) / H,
        );
        let hs: Vec<i64> = (ha.max(first)..hb.min(last + 1))
            .filter(|h| h % 8 == 0)
            .collect();
        if hs.is_empty() {
            continue;
        }
        let k = hs.len();
        let calc: Vec<i64> = hs
            .iter()
            .map(|h| t0 + h * H + (rng.next() * 5000.0) as i64)
            .collect();
        let rate: Vec<f64> = hs.iter().map(|_| (rng.next() - 0.5) * 2e-3).collect();
        let mut df = DataFrame::new(
            k,
            vec![
                utc(calc, "calc_time"),
                Column::new("funding_interval_hours".into(), vec![8i64; k]),
                Column::new("last_funding_rate".into(), rate),
            ],
        )?;
        let path = ds.optimized_partition(sym, year, m);
        let out = frames::write_parquet(store, &path, &mut df, &frames::ParquetOptions::default())
            .await?;
        bench::record_done(
            store,
            shared::job::JobName::OPTIMIZE,
            &ds.scope(),
            sym,
            format!("{sym}/{year}-{m:02}"),
            out,
        )
        .await?;
    }
    Ok(n as u64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = match &args.work_dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let root = work.path().join("store");
    std::fs::create_dir_all(&root)?;
    let store = shared::Store::open(root.to_str().context("utf-8")?)?;
    let symbols: Vec<String> = (0..args.symbols).map(|i| format!("S{i:03}USDT")).collect();
    let t0 = Instant::now();
    let mut staged = 0;
    for (i, s) in symbols.iter().enumerate() {
        staged += stage(&store, s, i, args.year).await?;
    }
    eprintln!(
        "staged {} symbols, {} hourly rows (+ funding) in {:.1} s",
        symbols.len(),
        staged,
        t0.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("build-panel");
    let (start, end) = (
        format!("{}-01-01", args.year),
        format!("{}-12-31", args.year),
    );
    println!(
        "build-panel benchmark: {} symbols × 1 year of hourly features ({staged} rows), best of {}",
        symbols.len(),
        args.repeat
    );
    println!();
    println!(
        "{:<26} {:>10} {:>10} {:>9} {:>14} {:>10}",
        "case", "rows in", "rows out", "secs", "input rows/s", "peak RSS"
    );
    let syms = symbols.join(",");
    // The rerun repeats the case before it without --force: the manifest finds it up to date.
    for (case, extra) in [
        ("all, no export", &["--qlib", "false"][..]),
        (
            "top-funding:20, no export",
            &["--qlib", "false", "--universe", "top-funding:20"][..],
        ),
        ("all, qlib export", &["--qlib", "true"][..]),
        ("rerun (up to date)", &["--qlib", "true"][..]),
    ] {
        let force = case != "rerun (up to date)";
        let t = timed(
            || {
                let mut c = Command::new(&bin);
                c.args(["--store", root.to_str().unwrap(), "--market", "um"])
                    .args(["--symbols", &syms, "--start", &start, "--end", &end])
                    .args(["--name", "bench"])
                    .args(extra)
                    .env("RUST_LOG", "warn");
                if force {
                    c.arg("--force");
                }
                c
            },
            args.repeat,
        )?;
        let report: serde_json::Value = serde_json::from_str(
            t.stdout
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .context("report")?,
        )?;
        let d = &report["details"];
        let rows_in = d["input_rows"].as_u64().unwrap_or(0);
        let rows_out = d["rows"].as_u64().unwrap_or(0);
        println!(
            "{:<26} {:>10} {:>10} {:>9.3} {:>14.0} {:>10}",
            case,
            rows_in,
            rows_out,
            t.secs,
            if rows_in > 0 {
                rows_in as f64 / t.secs
            } else {
                0.0
            },
            t.rss_kib
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or("-".into()),
        );
    }
    if args.keep {
        println!("kept the store: {}", root.display());
        let _ = work.keep();
    }
    println!();
    println!(
        "secs = process wall time (reading the feature files, computing, writing the panel and, with the export, {} Qlib files); input rows/s = hourly feature rows read (warm-up excluded: the year starts the range) / secs.",
        symbols.len() * 37 + 2
    );
    Ok(())
}
