//! `bars` binary: parses the CLI (the common arguments and the bar parameter grid) into a
//! [`bars::Spec`] and runs the job through [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;

use bars::spec::{Bound, Grid, parse_list, parse_numbers};

/// Build trade bars (tick, volume, dollar and their imbalance versions) from optimized trades.
/// Every list flag takes comma-separated values; the bar datasets are their cartesian product,
/// one `bars/<market>/<bar spec>/` dataset each.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::BARS.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Bar types: tick, volume, dollar, tick_imbalance, volume_imbalance, dollar_imbalance.
    #[arg(long = "bar", required = true, value_delimiter = ',')]
    bars: Vec<String>,

    /// Standard bars: the count, base volume or quote volume that closes a bar.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    threshold: Vec<String>,

    /// Imbalance bars: the threshold of the first bar.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    init_threshold: Vec<String>,

    /// Imbalance bars: EWMA weight of the newest bar's length in E_T, in (0, 1].
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1",
        allow_hyphen_values = true
    )]
    alpha_ticks: Vec<String>,

    /// Imbalance bars: EWMA weight of the newest bar's mean imbalance in E_I, in (0, 1].
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1",
        allow_hyphen_values = true
    )]
    alpha_imbalance: Vec<String>,

    /// Imbalance bars: lower clamp of the threshold, or `none`; default init_threshold / 10.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default",
        allow_hyphen_values = true
    )]
    min_threshold: Vec<String>,

    /// Imbalance bars: upper clamp of the threshold, or `none`; default init_threshold * 10.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default",
        allow_hyphen_values = true
    )]
    max_threshold: Vec<String>,

    /// The trade sign: aggressor (from is_buyer_maker) or tick_rule.
    #[arg(long, value_delimiter = ',', default_value = "aggressor")]
    sign: Vec<String>,

    /// The trades: aggTrades or trades.
    #[arg(long, value_delimiter = ',', default_value = "aggTrades")]
    source: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let grid = grid(&cli);
    shared::job::main(cli.common, |common| Ok(bars::Spec::new(common, grid?)?))
}

fn grid(cli: &Cli) -> Result<Grid, shared::Error> {
    Ok(Grid {
        bars: parse_list(&cli.bars)?,
        thresholds: parse_numbers(&cli.threshold, "--threshold")?,
        init_thresholds: parse_numbers(&cli.init_threshold, "--init-threshold")?,
        alpha_ticks: parse_numbers(&cli.alpha_ticks, "--alpha-ticks")?,
        alpha_imbalance: parse_numbers(&cli.alpha_imbalance, "--alpha-imbalance")?,
        min_thresholds: parse_list::<Bound>(&cli.min_threshold)?,
        max_thresholds: parse_list::<Bound>(&cli.max_threshold)?,
        signs: parse_list(&cli.sign)?,
        sources: parse_list(&cli.source)?,
    })
}
