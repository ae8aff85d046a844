//! `convert` binary: parses the CLI into a [`convert::Spec`], runs the job, prints the JSON
//! report on stdout and a summary on stderr, and maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;
use shared::{Clock, Context, Store, jobmain};

/// Convert staged archive CSVs (from `extract`) into normalized Parquet partitions.
#[derive(Parser, Debug)]
#[command(name = "convert", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 1 << 20)]
    row_group_rows: usize,

    /// Bytes read from a CSV at a time (MiB).
    #[arg(long, default_value_t = 8)]
    read_chunk_mib: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    jobmain::main(cli.common.log_format, "convert", async move {
        let clock = Clock::System;
        let common = cli.common.into_spec(clock.now().date_naive())?;
        let ctx = Context::new(Store::open(&common.store)?, common.run_id.clone(), clock);
        ctx.install_signal_handlers();
        if cli.row_group_rows == 0 || cli.read_chunk_mib == 0 {
            return Err(shared::Error::usage(
                "--row-group-rows and --read-chunk-mib must be positive",
            )
            .into());
        }
        let spec = convert::Spec {
            common,
            row_group_rows: cli.row_group_rows,
            read_chunk: cli.read_chunk_mib << 20,
        };
        let report = convert::run(spec, &ctx).await?;
        Ok((ctx, report))
    })
}
