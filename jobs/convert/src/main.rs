//! `convert` binary: parses the CLI into a [`convert::Spec`], runs the job, prints the JSON
//! report on stdout and a summary on stderr, and maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;

/// Convert archive CSVs into normalized Parquet partitions: the staged CSVs `extract` wrote, or
/// (`--from raw`) the downloaded zips directly.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::CONVERT.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 1 << 20)]
    row_group_rows: usize,

    /// Bytes parsed from a CSV at a time (MiB).
    #[arg(long, default_value_t = 8)]
    read_chunk_mib: usize,

    /// zstd level of the Parquet pages other than floats' (1-22; float pages are fast LZ4). 1
    /// compresses these columns within a few percent of 3 at about twice the speed; `optimize`
    /// recompresses the compacted months anyway.
    #[arg(long, default_value_t = 1)]
    zstd_level: i32,

    /// Parser threads per file, and partition-writer threads per monthly file (default: the
    /// number of cores). Files are also converted `--concurrency` at a time.
    #[arg(long)]
    threads: Option<usize>,

    /// Read the staged CSVs `extract` wrote (`csv`), or the downloaded zips without staging
    /// (`raw`: each zip is checked against the download manifest and its CSV inflated into
    /// memory, or a temp file when large).
    #[arg(long, value_enum, default_value_t = convert::Source::Csv)]
    from: convert::Source,

    /// The zip limits of `--from raw`.
    #[command(flatten)]
    limits: shared::unzip::LimitArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        let limits = cli.limits.limits()?;
        if cli.row_group_rows == 0 || cli.read_chunk_mib == 0 || cli.threads == Some(0) {
            return Err(shared::Error::usage(
                "--row-group-rows, --read-chunk-mib and --threads must be positive",
            )
            .into());
        }
        if !(1..=22).contains(&cli.zstd_level) {
            return Err(shared::Error::usage("--zstd-level must be in 1..=22").into());
        }
        Ok(convert::Spec {
            common,
            row_group_rows: cli.row_group_rows,
            read_chunk: cli.read_chunk_mib << 20,
            zstd_level: cli.zstd_level,
            threads: cli
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            from: cli.from,
            limits,
        })
    })
}
