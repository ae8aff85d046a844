//! `bench-tail`: serves the simulator's REST API on loopback and measures the release `tail`
//! binary: (a) N USD-M symbols, one day of 1m klines + fundingRate + metrics at Binance's real
//! limits — requests against the minimum the limits allow, weight, wall time; (b) the same
//! symbols' klines under a low weight limit, so the run is weight-bound — the share of each full
//! minute's budget the run used, and its wall time against the weight-limited minimum. Run it
//! through `tests/bench/tail.sh`, which builds everything in release first.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use archive_sim::{SimConfig, SimHandle, SimServer, SymbolSpec};
use chrono::{NaiveDate, NaiveDateTime};
use clap::Parser;
use shared::paths::Market;

#[derive(Parser)]
struct Args {
    /// USD-M symbols.
    #[arg(long, default_value_t = 100)]
    symbols: usize,
    /// The weight limit of the weight-bound part (simulator and client alike).
    #[arg(long, default_value_t = 300)]
    bound_weight_limit: u32,
    /// Skip the weight-bound part (it takes a few minutes by design).
    #[arg(long)]
    skip_bound: bool,
}

fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("the bench binary's folder")?
        .join(name);
    if !p.exists() {
        bail!("{} not built: run tests/bench/tail.sh", p.display());
    }
    Ok(p)
}

fn d(s: &str) -> NaiveDate {
    s.parse().expect("valid date")
}

/// `n` USD-M symbols listed long before the day filled; the clock 30 s into the next day.
fn config(n: usize, weight_limit: Option<u32>) -> SimConfig {
    let mut c = SimConfig::demo().with_range(d("2025-01-19"), d("2025-01-21"));
    c.symbols = (0..n)
        .map(|i| {
            SymbolSpec::new(
                Market::Um,
                &format!("B{i:03}USDT"),
                d("2024-01-01"),
                10.0 + i as f64,
            )
        })
        .collect();
    c.now = Some(
        NaiveDateTime::parse_from_str("2025-01-21T00:00:30", "%Y-%m-%dT%H:%M:%S").expect("instant"),
    );
    if let Some(w) = weight_limit {
        c.rest.futures_weight_per_minute = w;
    }
    c
}

struct Run {
    secs: f64,
    report: serde_json::Value,
}

fn tail(sim: &SimHandle, n: usize, types: &str, extra: &[&str]) -> anyhow::Result<Run> {
    let store = tempfile::tempdir()?;
    let symbols: Vec<String> = (0..n).map(|i| format!("B{i:03}USDT")).collect();
    let t0 = Instant::now();
    let out = Command::new(release_bin("tail")?)
        .args([
            "--store",
            store.path().to_str().context("utf-8 path")?,
            "--market",
            "um",
            "--data-type",
            types,
            "--symbols",
            &symbols.join(","),
            "--start",
            "2025-01-20",
            "--end",
            "2025-01-20",
            "--rest-url",
            &sim.base_url(),
            "--json",
        ])
        .args(extra)
        .env("PIPELINE_NOW", "2025-01-21T00:00:30Z")
        .env("RUST_LOG", "warn")
        .output()?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("tail failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.lines().last().context("no report")?)?;
    Ok(Run { secs, report })
}

/// Weight per wall-clock minute of the simulator's log.
fn weight_by_minute(sim: &SimHandle) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for r in sim.requests() {
        *m.entry(r.unix_ms / 60_000).or_default() += u64::from(r.weight);
    }
    m
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let n = args.symbols;
    println!("bench-tail: {n} USD-M symbols, one day (2025-01-20) from the simulator's REST API");

    // (a) One day of klines, fundingRate and metrics at the real limits.
    let sim = rt.block_on(SimServer::start(config(n, None), 0))?;
    let r = tail(&sim, n, "klines,fundingRate,metrics", &[])?;
    let sent = sim.rest_requests().len() as u64;
    let weight = sim.rest_weight_used();
    let throttled = sim.count(|q| q.status == 429 || q.status == 418);
    // The least the limits allow: a day of 1m klines is one request of 1,440 rows, a day of
    // funding one request, a day of 5-minute metrics one request per endpoint; plus `time` and
    // `fundingInfo` once per run.
    let minimum = n as u64 * (1 + 1 + 5) + 2;
    println!("\n(a) real limits (2,400 weight/min; 500 and 1,000 requests/5 min)");
    println!(
        "  requests            {sent} (minimum {minimum}: {:.3}x)",
        sent as f64 / minimum as f64
    );
    println!(
        "  weight              {weight} (budget 2,280/min after 5% headroom: not weight-bound)"
    );
    println!("  429/418             {throttled}");
    println!("  wall                {:.2} s", r.secs);
    println!(
        "  rows                {} ({:.0} rows/s)",
        r.report["details"]["rows"],
        r.report["details"]["rows"].as_f64().unwrap_or(0.0) / r.secs
    );
    rt.block_on(sim.shutdown());

    if args.skip_bound {
        return Ok(());
    }
    // (b) Weight-bound: klines only, under a low limit on both sides.
    let limit = args.bound_weight_limit;
    let sim = rt.block_on(SimServer::start(config(n, Some(limit)), 0))?;
    let r = tail(&sim, n, "klines", &["--weight-limit", &limit.to_string()])?;
    let weight = sim.rest_weight_used();
    let by_minute = weight_by_minute(&sim);
    let throttled = sim.count(|q| q.status == 429 || q.status == 418);
    // Full minutes only: the first and last are partial by construction.
    let full: Vec<u64> = by_minute
        .values()
        .copied()
        .skip(1)
        .take(by_minute.len().saturating_sub(2))
        .collect();
    let share = if full.is_empty() {
        f64::NAN
    } else {
        full.iter().sum::<u64>() as f64 / (full.len() as f64 * f64::from(limit))
    };
    // What the limit allows: the whole weight at `limit` per minute, the first minute's budget
    // spent at once.
    let min_secs = (weight.saturating_sub(u64::from(limit)) as f64 / f64::from(limit)) * 60.0;
    println!("\n(b) weight-bound: klines under {limit} weight/min");
    println!(
        "  weight              {weight}, per minute {:?}",
        by_minute.values().collect::<Vec<_>>()
    );
    println!(
        "  budget used         {:.1}% of the limit in each full minute (mean of {})",
        share * 100.0,
        full.len()
    );
    println!("  429/418             {throttled}");
    println!(
        "  wall                {:.1} s; weight-limited minimum {:.1} s ({:.2}x)",
        r.secs,
        min_secs,
        r.secs / min_secs.max(1e-9)
    );
    println!(
        "  waited for budget   {} ms",
        r.report["details"]["waited_for_budget_ms"]
    );
    rt.block_on(sim.shutdown());
    Ok(())
}
