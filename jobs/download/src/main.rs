//! `download` binary: parses the CLI into a [`download::Spec`], builds the context and runs the
//! job through [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shared::cli::CommonArgs;
use shared::http::RetryPolicy;

/// Download Binance archive files into the store, verified against their CHECKSUM files.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::DOWNLOAD.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Archive base URL (the synthetic archive in tests).
    #[arg(long, env = "PIPELINE_SOURCE", default_value = download::DEFAULT_SOURCE)]
    source: String,

    /// S3 ListObjects endpoint of the archive bucket: `--symbols all` lists it, and a symbol
    /// never downloaded before is checked against it. Default: the bucket's endpoint for the
    /// real archive, else `--source` itself (a mirror or the simulator answers both).
    #[arg(long, env = "PIPELINE_LISTING_URL")]
    listing_url: Option<String>,

    /// Where the plan learns which files exist: `listing` asks the bucket listing for the
    /// range's keys and fetches exactly those (no 404 probing; a month's daily files where its
    /// monthly file is absent); `dates` asks for every file the dates imply; `auto` lists, and
    /// plans by dates when the listing cannot be read.
    #[arg(long, value_enum, default_value = "auto")]
    plan_from: download::PlanFrom,

    /// Re-read the CHECKSUM of every verified file and re-download those the archive republished.
    #[arg(long)]
    refresh: bool,

    /// Refuse a zip whose CHECKSUM names other bytes even when the body's MD5 equals the
    /// bucket's ETag and its CRCs pass (by default such a file is accepted, flagged
    /// `verified_by=etag` and listed in the report's `checksum_errata`).
    #[arg(long)]
    strict_checksum: bool,

    /// Hash every stored zip of the range again (streamed from S3) against the sha256 recorded
    /// when it was verified, and download again the ones whose bytes changed.
    #[arg(long)]
    verify: bool,

    /// Ask again for files recorded as missing upstream, however old the record.
    #[arg(long)]
    retry_missing: bool,

    /// Attempts per request for transient failures (5xx, 403, 429, resets, truncated bodies).
    #[arg(long, default_value_t = 6)]
    retries: u32,

    /// First backoff delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, default_value_t = 500)]
    retry_base_ms: u64,

    /// Longest backoff delay in seconds (also caps a server's Retry-After).
    #[arg(long, default_value_t = 60)]
    retry_max_secs: u64,

    /// Downloads of one file before a checksum mismatch is final (then it is quarantined).
    #[arg(long, default_value_t = 3)]
    checksum_attempts: u32,

    /// Connect timeout in seconds.
    #[arg(long, default_value_t = 10)]
    connect_timeout_secs: u64,

    /// Give up on a response that sends nothing for this many seconds.
    #[arg(long, default_value_t = 60)]
    read_timeout_secs: u64,

    /// Files up to this many MiB are verified in memory; larger ones stream to a staging object.
    #[arg(long, default_value_t = 32)]
    memory_limit_mib: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        let listing_url = download::listing_url_for(&cli.source, cli.listing_url.as_deref())?;
        if cli.checksum_attempts == 0 || cli.retries == 0 {
            return Err(shared::Error::usage(
                "--retries and --checksum-attempts must be at least 1",
            )
            .into());
        }
        let http = shared::http::client(
            Duration::from_secs(cli.connect_timeout_secs),
            Duration::from_secs(cli.read_timeout_secs),
        )?;
        let spec = download::Spec {
            common,
            source: cli.source,
            listing_url,
            plan_from: cli.plan_from,
            refresh: cli.refresh,
            strict_checksum: cli.strict_checksum,
            verify: cli.verify,
            retry_missing: cli.retry_missing,
            retry: RetryPolicy {
                max_attempts: cli.retries,
                base_delay: Duration::from_millis(cli.retry_base_ms),
                max_delay: Duration::from_secs(cli.retry_max_secs),
            },
            checksum_attempts: cli.checksum_attempts,
            memory_limit: cli.memory_limit_mib << 20,
        };
        Ok(download::Download::new(spec, http))
    })
}
