//! `instruments` binary: parses the CLI into an [`instruments::Spec`] and runs the job through
//! [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shared::cli::CommonArgs;
use shared::http::RetryPolicy;

/// Write reference/<market>/instruments.parquet: every symbol of the archive's bucket listing
/// (delisted included) with its base, quote and margin asset, contract type, delivery date, and
/// first and last day per --data-type. `--start`/`--end` do not restrict it: a registry covers
/// the archive's whole life.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::INSTRUMENTS.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Archive base URL; its listing is read unless --listing-url is given.
    #[arg(long, env = "PIPELINE_SOURCE", default_value = shared::listing::DEFAULT_SOURCE)]
    source: String,

    /// S3 ListObjects endpoint of the archive bucket (default: the real bucket's endpoint for
    /// the real archive, else --source).
    #[arg(long, env = "PIPELINE_LISTING_URL")]
    listing_url: Option<String>,

    /// REST base URL whose exchangeInfo adds onboard dates and trading status (e.g.
    /// https://fapi.binance.com for um); without it the registry comes from the archive alone.
    #[arg(long)]
    rest_url: Option<String>,

    /// List every symbol's folders again instead of only what follows the registry's last days.
    #[arg(long)]
    full: bool,

    /// Attempts per request for transient failures.
    #[arg(long, default_value_t = 6)]
    retries: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        let listing_url =
            shared::listing::listing_url_for(&cli.source, cli.listing_url.as_deref())?;
        if let Some(u) = &cli.rest_url {
            shared::cli::check_http_url("--rest-url", u)?;
        }
        if cli.retries == 0 {
            return Err(shared::Error::usage("--retries must be at least 1").into());
        }
        let http = shared::http::client(Duration::from_secs(10), Duration::from_secs(60))?;
        let spec = instruments::Spec {
            common,
            listing_url,
            rest_url: cli.rest_url,
            full: cli.full,
            retry: RetryPolicy {
                max_attempts: cli.retries,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(60),
            },
        };
        Ok(instruments::Instruments::new(spec, http))
    })
}
