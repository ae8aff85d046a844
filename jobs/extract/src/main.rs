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

    #[command(flatten)]
    limits: shared::unzip::LimitArgs,

    /// Delete staging CSVs that the convert job has recorded as converted from them.
    #[arg(long)]
    prune_converted: bool,

    /// Folder for temp files (inflated CSVs before upload; zips fetched from a remote store).
    #[arg(long, env = "PIPELINE_TMP_DIR")]
    tmp_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let limits = cli.limits.limits();
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
