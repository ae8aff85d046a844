//! `build-panel` binary (the `build` job; cargo forbids a binary named `build`): parses the CLI into a [`build_panel::Spec`] and runs the job through
//! [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::Error;
use shared::cli::CommonArgs;

/// Build the point-in-time cross-sectional panel (features.md section 2) of a universe from the
/// hourly features, into final/<name>/panel.parquet, summary.json and a Qlib export.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::BUILD_PANEL.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// The panel's name: outputs go to final/<name>/.
    #[arg(long)]
    name: String,

    /// Bar length of the input features: only 1h.
    #[arg(long, default_value = "1h")]
    freq: String,

    /// The universe: `symbols` (the --symbols selection, default), `all` (every symbol with
    /// hourly features, delisted included), a comma list, or `top-funding:N` (at each funding
    /// time the N candidates of --symbols with the largest absolute settled funding rate).
    #[arg(long, default_value = "symbols")]
    universe: String,

    /// Forward-fill at most this many hours after a symbol's previous real bar.
    #[arg(long, default_value_t = 6)]
    max_ffill_hours: i64,

    /// Keep the hours whose coverage is at least this share.
    #[arg(long, default_value_t = 0.5)]
    min_coverage: f64,

    /// Coverage base: `all` (universe members at the hour) or `listed` (members listed then).
    #[arg(long, default_value = "all")]
    coverage_base: String,

    /// Keep rows whose factors are null instead of dropping them.
    #[arg(long)]
    keep_nulls: bool,

    /// Write the Qlib export under final/<name>/qlib/ (true or false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    qlib: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::job::main(cli.common, |common| {
        if cli.freq != build_panel::FREQ {
            return Err(Error::usage(format!(
                "--freq `{}`: build takes hourly features only (1h)",
                cli.freq
            ))
            .into());
        }
        let coverage_base = match cli.coverage_base.as_str() {
            "all" => build_panel::panel::CoverageBase::All,
            "listed" => build_panel::panel::CoverageBase::Listed,
            other => {
                return Err(Error::usage(format!(
                    "--coverage-base `{other}`: expected all or listed"
                ))
                .into());
            }
        };
        let spec = build_panel::Spec {
            common,
            name: cli.name,
            universe: cli.universe.parse()?,
            params: build_panel::panel::Params {
                max_ffill_hours: cli.max_ffill_hours,
                min_coverage: cli.min_coverage,
                coverage_base,
                keep_nulls: cli.keep_nulls,
            },
            qlib: cli.qlib,
        };
        spec.validate()?;
        Ok(build_panel::BuildPanel::new(spec))
    })
}
