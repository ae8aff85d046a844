//! `extract` binary: parses the CLI into an [`extract::Spec`], builds the context, runs the job,
//! prints the JSON report on stdout and a summary on stderr, and maps the outcome to an exit code.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;

/// Unpack downloaded archive zips into the CSV staging area (`csv/<archive path>.csv`).
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::EXTRACT.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Entries each zip must hold; exactly one of them must be the `.csv`.
    #[arg(long, default_value_t = 1)]
    expect_entries: usize,

    /// Refuse an entry larger than this many GiB uncompressed (declared or actually inflated).
    #[arg(long, default_value_t = 64.0)]
    max_uncompressed_gib: f64,

    /// Refuse an entry whose uncompressed/compressed ratio exceeds this (entries over 1 MiB).
    #[arg(long, default_value_t = 200.0)]
    max_ratio: f64,

    /// Delete staging CSVs that the convert job has recorded as converted from them.
    #[arg(long)]
    prune_converted: bool,

    /// Folder for temp files (inflated CSVs before upload; zips fetched from a remote store).
    #[arg(long, env = "PIPELINE_TMP_DIR")]
    tmp_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let limits = limits(&cli);
    shared::job::main(cli.common, |common| {
        let limits = limits?;
        if let Some(d) = &cli.tmp_dir
            && !d.is_dir()
        {
            return Err(
                shared::Error::usage(format!("--tmp-dir {} is not a folder", d.display())).into(),
            );
        }
        Ok(extract::Extract::new(extract::Spec {
            common,
            limits,
            prune_converted: cli.prune_converted,
            tmp_dir: cli.tmp_dir,
        }))
    })
}

fn limits(cli: &Cli) -> Result<extract::Limits, shared::Error> {
    if cli.expect_entries == 0 {
        return Err(shared::Error::usage("--expect-entries must be at least 1"));
    }
    if !(cli.max_uncompressed_gib.is_finite() && cli.max_uncompressed_gib > 0.0) {
        return Err(shared::Error::usage(
            "--max-uncompressed-gib must be a positive number",
        ));
    }
    if !(cli.max_ratio.is_finite() && cli.max_ratio >= 1.0) {
        return Err(shared::Error::usage("--max-ratio must be at least 1"));
    }
    Ok(extract::Limits {
        expect_entries: cli.expect_entries,
        max_uncompressed: (cli.max_uncompressed_gib * (1u64 << 30) as f64) as u64,
        max_ratio: cli.max_ratio,
    })
}
