//! `tail` binary: parses the CLI into a [`tail::Spec`] and runs the job through [`shared::job`]
//! (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;
use shared::paths::Market;

/// Fill each dataset from Binance's REST API, from where the archive (or an earlier run) stops
/// to the last closed minute.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::TAIL.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Fill up to this instant: `now` (the server's clock) or an RFC 3339 time. Only candles
    /// and periods closed by then are written.
    #[arg(long, default_value = "now")]
    until: String,

    /// The REST host (default by --market: https://fapi.binance.com, https://dapi.binance.com,
    /// https://api.binance.com).
    #[arg(long, env = "PIPELINE_REST_URL")]
    rest_url: Option<String>,

    /// REQUEST_WEIGHT per minute of the IP (default by market: futures 2400, shared by UM and
    /// CM; spot 6000).
    #[arg(long)]
    weight_limit: Option<u32>,

    /// fundingRate + fundingInfo requests per 5 minutes.
    #[arg(long, default_value_t = 500)]
    funding_limit: u32,

    /// `/futures/data/*` (metrics) requests per 5 minutes.
    #[arg(long, default_value_t = 1000)]
    futures_data_limit: u32,

    /// Share of every limit left unused (other clients on the IP, clock skew).
    #[arg(long, default_value_t = 0.05)]
    headroom: f64,

    /// Requests in flight at once, whatever --concurrency.
    #[arg(long, default_value_t = 4)]
    max_in_flight: usize,

    /// Hours of aggTrades history USD-M REST serves (48 since 2026-08).
    #[arg(long, default_value_t = 48)]
    um_agg_trades_hours: i64,

    /// Hours of aggTrades history COIN-M REST serves.
    #[arg(long, default_value_t = 24)]
    cm_agg_trades_hours: i64,

    /// Days of `/futures/data/*` history REST serves.
    #[arg(long, default_value_t = 30)]
    metrics_days: i64,

    /// Milliseconds added to a `/futures/data/*` timestamp to give the archive's
    /// `create_time` (the alignment is unconfirmed; 0 takes them as equal).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    metrics_time_offset_ms: i64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        if !(0.0..0.9).contains(&cli.headroom) {
            return Err(shared::Error::usage("--headroom must be in [0, 0.9)").into());
        }
        if cli.max_in_flight == 0 {
            return Err(shared::Error::usage("--max-in-flight must be positive").into());
        }
        let until: tail::Until = cli.until.parse()?;
        let rest_url = cli
            .rest_url
            .unwrap_or_else(|| tail::default_rest_url(common.market).to_string());
        let limits = tail::budget::Limits {
            weight_per_minute: cli.weight_limit.unwrap_or(match common.market {
                Market::Spot => 6000,
                _ => 2400,
            }),
            funding_per_5min: cli.funding_limit,
            futures_data_per_5min: cli.futures_data_limit,
            headroom: cli.headroom,
        };
        let hour = 3_600_000;
        let settings = tail::fetch::FetchSettings {
            um_agg_trades_window_ms: cli.um_agg_trades_hours * hour,
            cm_agg_trades_window_ms: cli.cm_agg_trades_hours * hour,
            metrics_window_ms: cli.metrics_days * 24 * hour,
            metrics_time_offset_ms: cli.metrics_time_offset_ms,
        };
        Ok(tail::Spec::new(
            common,
            rest_url,
            until,
            limits,
            cli.max_in_flight,
            settings,
        )?)
    })
}
