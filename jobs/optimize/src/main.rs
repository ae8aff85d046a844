//! `optimize` binary: parses the CLI into an [`optimize::Spec`] and runs the job through
//! [`shared::job`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;

/// Compact the daily Parquet partitions of each symbol into sorted, deduplicated monthly files.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::OPTIMIZE.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Rows per row group of the monthly files.
    #[arg(long, default_value_t = 1 << 20)]
    row_group_rows: usize,

    /// Write every float page zstd, for the smallest files. By default a PLAIN float page
    /// (distinct decimals: kline prices and volumes) is LZ4 where that costs at most 1.5× the
    /// bytes, since zstd inflates such pages at a third of LZ4's speed. Applies to the months
    /// written by this run (the values are the same either way; `--force` rewrites the rest).
    #[arg(long)]
    smallest_floats: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        if cli.row_group_rows == 0 {
            return Err(shared::Error::usage("--row-group-rows must be positive").into());
        }
        Ok(optimize::Spec {
            common,
            row_group_rows: cli.row_group_rows,
            smallest_floats: cli.smallest_floats,
        })
    })
}
