//! `aggregate` binary: parses the CLI into an [`aggregate::Spec`] and runs the job through
//! [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;

/// Aggregate optimized 1-minute klines (with fundingRate and metrics) into bars of `--freq` with
/// microstructure features, one file per symbol-year under `features/`.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::AGGREGATE.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Bar length: minutes or hours that divide a day, or 1d (15m, 1h, 4h, 1d).
    #[arg(long, default_value = "1h")]
    freq: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        let freq: aggregate::Freq = cli.freq.parse()?;
        Ok(aggregate::Aggregate::new(aggregate::Spec { common, freq }))
    })
}
