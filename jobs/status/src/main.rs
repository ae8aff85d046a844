//! `status` binary: what the store holds and how fresh it is. A table on a terminal, JSON when
//! piped (or `--format json`), a Prometheus textfile with `--format prometheus`;
//! `--max-staleness 2h` exits 1 when any selected dataset is staler (a health check).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use shared::paths::Market;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Prometheus,
}

/// Show what the store holds and how fresh it is, from the manifests alone.
#[derive(Parser, Debug)]
#[command(name = "status", version)]
struct Cli {
    /// The store: a folder or an object_store URL (s3://bucket/prefix).
    #[arg(long, env = "PIPELINE_STORE", default_value = "./data")]
    store: String,
    /// Markets to show (um, cm, spot, option); all by default.
    #[arg(long, value_delimiter = ',')]
    market: Vec<String>,
    /// Datasets to show (`klines-1m`, `klines` for every interval, `fundingRate`…); all by
    /// default.
    #[arg(long = "data-type", value_delimiter = ',')]
    data_types: Vec<String>,
    /// Symbols to show; all by default.
    #[arg(long, value_delimiter = ',')]
    symbols: Vec<String>,
    /// Output: a table on a terminal, JSON otherwise, unless given.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write the output to this file (atomically: a textfile collector never reads half of it).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Exit 1 when any selected symbol's data ends longer ago than this (`90s`, `30m`, `2h`,
    /// `3d`), or has none.
    #[arg(long)]
    max_staleness: Option<String>,
    /// The time staleness is measured against (RFC 3339; default: the clock).
    #[arg(long, env = "PIPELINE_NOW")]
    now: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("status: {e:#}");
            let usage = e.downcast_ref::<shared::Error>().is_some_and(|e| {
                matches!(e, shared::Error::Usage(_) | shared::Error::StoreUrl { .. })
            }) || e.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let max_staleness = cli
        .max_staleness
        .as_deref()
        .map(|s| status::parse_duration(s).map_err(|e| UsageError(format!("--max-staleness {e}"))))
        .transpose()?;
    let now = match &cli.now {
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| UsageError(format!("--now `{s}`: {e}")))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let markets = cli
        .market
        .iter()
        .map(|m| {
            Market::ALL
                .into_iter()
                .find(|x| x.cli_name() == m || x.storage_name() == m)
                .ok_or_else(|| {
                    UsageError(format!("--market `{m}`: expected um, cm, spot or option"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let filter = status::Filter {
        markets,
        datasets: cli.data_types.clone(),
        symbols: cli.symbols.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let st = rt.block_on(async {
        let store = shared::Store::open(&cli.store)?;
        status::collect(&store, &cli.store, &filter, now).await
    })?;
    if st.symbols.is_empty() && (!filter.symbols.is_empty() || !filter.datasets.is_empty()) {
        eprintln!(
            "status: nothing in {} matches the selection (markets {:?}, datasets {:?}, symbols {:?})",
            cli.store, cli.market, cli.data_types, cli.symbols
        );
    }
    let format = cli
        .format
        .unwrap_or(if std::io::stdout().is_terminal() && cli.output.is_none() {
            Format::Table
        } else {
            Format::Json
        });
    let text = match format {
        Format::Table => st.table(),
        Format::Json => serde_json::to_string_pretty(&st)? + "\n",
        Format::Prometheus => st.prometheus(),
    };
    match &cli.output {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    if let Some(max) = max_staleness {
        let stale = st.stale(max);
        if !stale.is_empty() || st.symbols.is_empty() {
            for s in &stale {
                eprintln!(
                    "stale: {}/{} {}: data until {} ({} ago, more than {})",
                    s.market,
                    s.dataset,
                    s.symbol,
                    s.data_until.map_or("-".into(), |t| t.to_rfc3339()),
                    s.staleness_secs.map_or("-".into(), status::human),
                    status::human(max)
                );
            }
            if st.symbols.is_empty() {
                eprintln!("stale: the selection holds no data at all");
            }
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
