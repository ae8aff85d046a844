//! The `archive-sim` binary: serves a synthetic archive and Binance's REST market-data API until
//! SIGINT or SIGTERM. Prints `listening on http://127.0.0.1:PORT` on stdout first thing (and,
//! with `--print-url`, the bare URL on the next line; `--host 0.0.0.0` serves other pods). All
//! logic is in the library.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use archive_sim::{SimConfig, SimServer};
use chrono::{NaiveDate, NaiveDateTime};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "Serve a synthetic data.binance.vision archive and Binance's REST market-data API",
    long_about = "Serve a synthetic data.binance.vision archive (GET /data/..., the S3 listing at /) \
and, from the same generator, Binance's public REST market-data API (/fapi/v1/..., /dapi/v1/..., \
/api/v3/..., /futures/data/...), with weights, 429s and 418 bans. GET /_sim/log returns the \
request log, GET /_sim/republish?key=K republishes a file, GET /_sim/clock[?now=RFC3339] reads or \
moves the simulated clock: with a clock, archive files appear only once published (next day \
07:40 UTC + jitter; monthly files 3 days after the month) and REST serves rows up to now."
)]
struct Args {
    /// Port (0 = ephemeral).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on: loopback by default; `0.0.0.0` to serve other pods.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Seed of the generated data (overrides the config's).
    #[arg(long)]
    seed: Option<u64>,
    /// A JSON SimConfig (fields not given take the demo defaults). The variable lets a test
    /// give the demo DAG's simulator its defects.
    #[arg(long, env = "ARCHIVE_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// First day of coverage (YYYY-MM-DD).
    #[arg(long)]
    start: Option<NaiveDate>,
    /// Last day of coverage (YYYY-MM-DD).
    #[arg(long)]
    end: Option<NaiveDate>,
    /// The simulated now, RFC 3339 (e.g. 2025-01-20T10:17:30Z): archive files appear once
    /// published, REST rows end here. Default: the config's, else every file published.
    #[arg(long, value_parser = parse_now)]
    now: Option<NaiveDateTime>,
    /// Also print the bare URL on the second line.
    #[arg(long)]
    print_url: bool,
}

fn parse_now(s: &str) -> Result<NaiveDateTime, String> {
    archive_sim::config::parse_instant(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            serde_json::from_str::<SimConfig>(&text)
                .with_context(|| format!("parsing config {}", p.display()))?
        }
        None => SimConfig::demo(),
    };
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(s) = args.start {
        config.start = s;
    }
    if let Some(e) = args.end {
        config.end = e;
    }
    if let Some(n) = args.now {
        config.now = Some(n);
    }
    anyhow::ensure!(config.start <= config.end, "--start is after --end");
    let handle = SimServer::start_at(config, std::net::SocketAddr::new(args.host, args.port))
        .await
        .context("starting the server")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", handle.base_url())?;
    if args.print_url {
        writeln!(out, "{}", handle.base_url())?;
    }
    out.flush()?;
    drop(out);
    // Until SIGINT or SIGTERM (how the runner and Kubernetes stop it).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
    }
    handle.shutdown().await;
    // Not returning through the runtime: its drop would wait for any file still being generated
    // on a blocking thread, holding the port for seconds after the signal.
    std::process::exit(0)
}
