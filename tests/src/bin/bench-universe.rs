//! `bench-universe`: a simulated USD-M market of N symbols over Y years (late listings,
//! delistings; one-row-a-day kline files), planned and mirrored with the release `download
//! --symbols all --plan-from listing`: the time to plan (a dry run), the requests made against
//! the minimum (listing pages + a CHECKSUM and a zip per file), 404s, files/s, and a rerun.
//! Run it through `tests/bench/universe.sh`, which builds everything in release first.

#![forbid(unsafe_code)]

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use archive_sim::{SimConfig, SimServer, SymbolSpec};
use chrono::{Datelike, Days, NaiveDate};
use clap::Parser;
use shared::paths::{DataType, Interval, Market};

#[derive(Parser)]
struct Args {
    /// Symbols of the market.
    #[arg(long, default_value_t = 400)]
    symbols: usize,
    /// Years of archive, ending at --end.
    #[arg(long, default_value_t = 6)]
    years: u32,
    /// The archive's last day: mid-month, so that its month comes as daily files.
    #[arg(long, default_value = "2026-11-15")]
    end: NaiveDate,
    /// `download --concurrency`.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Also mirror the market with `--plan-from dates` into a second store, for the requests
    /// date probing makes (404s for every file before a listing or after a delisting).
    #[arg(long)]
    dates_baseline: bool,
    /// Where the mirror goes (a temp folder by default).
    #[arg(long)]
    store: Option<std::path::PathBuf>,
}

/// The market: a third of the symbols listed before the archive starts, the rest listed across
/// it; one in seven delisted some time after its listing.
fn config(args: &Args) -> SimConfig {
    let end = args.end;
    let start = NaiveDate::from_ymd_opt(end.year() - args.years as i32, end.month(), 1)
        .expect("valid start");
    let span = (end - start).num_days() as u64;
    let mut rng = fastrand::Rng::with_seed(25);
    let symbols = (0..args.symbols)
        .map(|i| {
            let listed = if i % 3 == 0 {
                NaiveDate::from_ymd_opt(2019, 9, 8).expect("valid")
            } else {
                start + Days::new(rng.u64(0..span))
            };
            let mut s = SymbolSpec::new(Market::Um, &format!("S{i:04}USDT"), listed, 10.0);
            if i % 7 == 3 {
                let from = listed.max(start);
                let left = (end - from).num_days().max(1) as u64;
                s.delisted = Some(from + Days::new(rng.u64(0..left)));
            }
            s.data_types = Some(vec![DataType::Klines]);
            s
        })
        .collect();
    SimConfig {
        start,
        end,
        symbols,
        intervals: Some(vec![Interval::M1]),
        tiny_files: true,
        cache_bytes: 64 << 20,
        ..SimConfig::demo()
    }
}

struct Run {
    secs: f64,
    report: serde_json::Value,
}

/// The release `download` over the whole market, `--symbols all`, with the archive's range.
#[derive(Clone)]
struct Download {
    bin: std::path::PathBuf,
    base: String,
    start: String,
    end: String,
    concurrency: String,
}

impl Download {
    /// One run into `store` with `extra` flags, timed, off the async runtime (the simulator
    /// serves from it meanwhile).
    async fn run(&self, store: &str, extra: &[&str]) -> anyhow::Result<Run> {
        let (me, store) = (self.clone(), store.to_string());
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || me.run_blocking(&store, &extra)).await?
    }

    fn run_blocking(&self, store: &str, extra: &[String]) -> anyhow::Result<Run> {
        let t = Instant::now();
        let out = Command::new(&self.bin)
            .args([
                "--store",
                store,
                "--source",
                &self.base,
                "--listing-url",
                &self.base,
            ])
            .args([
                "--market",
                "um",
                "--symbols",
                "all",
                "--data-type",
                "klines",
            ])
            .args(["--start", &self.start, "--end", &self.end])
            .args(["--concurrency", &self.concurrency, "--json"])
            .args(extra)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("running download")?;
        let secs = t.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("download {extra:?} exited {:?}", out.status.code());
        }
        let line = stdout.lines().last().context("no report")?;
        Ok(Run {
            secs,
            report: serde_json::from_str(line)?,
        })
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("download");
    if !bin.exists() {
        bail!("{} missing: run tests/bench/universe.sh", bin.display());
    }
    let t = Instant::now();
    let cfg = config(&args);
    let sim = SimServer::start(cfg.clone(), 0).await?;
    let keys = sim.archive().keys().count();
    println!(
        "market: {} symbols, {} .. {} ({} years), {} archive keys (zips and CHECKSUMs); simulator up in {:.1} s",
        args.symbols,
        cfg.start,
        cfg.end,
        args.years,
        keys,
        t.elapsed().as_secs_f64()
    );
    let tmp = tempfile::tempdir()?;
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let store = store.to_str().context("store path")?.to_string();
    let download = Download {
        bin,
        base: sim.base_url(),
        start: cfg.start.to_string(),
        end: cfg.end.to_string(),
        concurrency: args.concurrency.to_string(),
    };

    // Planning alone: a dry run lists every target's range and prints the plan.
    let plan = download
        .run(&store, &["--plan-from", "listing", "--dry-run"])
        .await?;
    let planned = plan.report["counts"]["planned"].as_u64().unwrap_or(0);
    let plan_pages = sim.count(|r| r.path.is_empty());
    println!(
        "plan (--dry-run): {:.2} s, {planned} files, {plan_pages} listing pages",
        plan.secs
    );

    sim.clear_log();
    let mirror = download.run(&store, &["--plan-from", "listing"]).await?;
    let done = mirror.report["counts"]["done"].as_u64().unwrap_or(0);
    let failed = mirror.report["counts"]["failed"].as_u64().unwrap_or(0);
    let requests = sim.requests();
    let pages = requests.iter().filter(|r| r.path.is_empty()).count() as u64;
    let not_found = requests.iter().filter(|r| r.status == 404).count();
    let total = requests.len() as u64;
    let minimum = pages + 2 * done;
    println!(
        "mirror: {:.1} s, {done} files verified ({failed} failed), {:.0} files/s",
        mirror.secs,
        done as f64 / mirror.secs
    );
    println!(
        "requests: {total} = {pages} listing pages + {} objects; minimum {minimum} (pages + 2 x files): {:.4}x; 404s: {not_found}",
        total - pages,
        total as f64 / minimum.max(1) as f64
    );

    sim.clear_log();
    let rerun = download.run(&store, &["--plan-from", "listing"]).await?;
    let again = sim.requests();
    println!(
        "rerun: {:.2} s, {} done, {} requests ({} listing pages)",
        rerun.secs,
        rerun.report["counts"]["done"],
        again.len(),
        again.iter().filter(|r| r.path.is_empty()).count()
    );

    if args.dates_baseline {
        sim.clear_log();
        let other = tempfile::tempdir()?;
        let other = other.path().to_str().context("store path")?;
        let dates = download.run(other, &["--plan-from", "dates"]).await?;
        let reqs = sim.requests();
        println!(
            "baseline --plan-from dates: {:.1} s, {} files verified, {} requests, {} of them 404",
            dates.secs,
            dates.report["counts"]["done"],
            reqs.len(),
            reqs.iter().filter(|r| r.status == 404).count()
        );
    }
    sim.shutdown().await;
    Ok(())
}
