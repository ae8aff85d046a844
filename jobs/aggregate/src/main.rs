//! `aggregate` binary: parses the CLI into an [`aggregate::Spec`] and runs the job through
//! [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;
use shared::{Clock, Context, Store, jobmain};

/// Aggregate optimized 1-minute klines (with fundingRate and metrics) into bars of `--freq` with
/// microstructure features, one file per symbol-year under `features/`.
#[derive(Parser, Debug)]
#[command(name = "aggregate", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Bar length: minutes or hours that divide a day, or 1d (15m, 1h, 4h, 1d).
    #[arg(long, default_value = "1h")]
    freq: String,
}

fn main() -> ExitCode {
    frames::tune_allocator();
    let cli = Cli::parse();
    jobmain::main(cli.common.output(), "aggregate", async move {
        let clock = Clock::System;
        let common = cli.common.into_spec(clock.now().date_naive())?;
        let freq: aggregate::Freq = cli.freq.parse()?;
        let ctx = Context::new(Store::open(&common.store)?, common.run_id.clone(), clock);
        ctx.install_signal_handlers();
        let report = aggregate::run(aggregate::Spec { common, freq }, &ctx).await?;
        Ok((ctx, report))
    })
}
