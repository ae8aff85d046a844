//! `validate` binary: parses the CLI into a [`validate::Spec`] and runs the job through
//! [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;

/// Check the optimized datasets symbol by symbol and classify every gap; write a JSON report and
/// an HTML coverage heatmap per dataset under reports/validate/.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::VALIDATE.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// A price move of more than this fraction between consecutive rows is a warning.
    #[arg(long, default_value_t = 0.2)]
    price_jump_threshold: f64,

    /// Share of the symbols with data at the time that must miss the same stretch for it to be an
    /// exchange-wide outage (at least two symbols).
    #[arg(long, default_value_t = 0.6)]
    outage_share: f64,

    /// Report errors but exit 0 (gaps and warnings never fail the run).
    #[arg(long)]
    warn_only: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        let spec = validate::Spec {
            common,
            price_jump_threshold: cli.price_jump_threshold,
            outage_share: cli.outage_share,
            warn_only: cli.warn_only,
        };
        spec.check()?;
        Ok(spec)
    })
}
