//! `load` binary: parses the CLI into a [`load::Spec`] and runs the job through
//! [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use shared::cli::CommonArgs;

/// Copy the store's datasets into PostgreSQL: a table per dataset — the optimized archive
/// datasets (`<schema>.<market>_<dataset>`, e.g. `binance.um_klines_1m`), features
/// (`um_features_1h`), bars (`um_bars`, one table for every spec) and panels (`panel_<name>`) —
/// one transaction per upstream file that replaces exactly its rows, resumable by its manifest.
/// The archive datasets of --data-type are loaded unless only --features, --bars or --panel
/// are given.
#[derive(Parser, Debug)]
#[command(name = shared::job::JobName::LOAD.as_str(), version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// postgresql://user:password@host:port/dbname (env DATABASE_URL); without it the standard
    /// PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE variables. The password never appears
    /// in a log line or a report.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// The PostgreSQL schema of the tables (created if absent).
    #[arg(long, default_value = "binance")]
    schema: String,

    /// Aggregate's features at these bar lengths (`1h`): `<market>_features_<freq>`, one
    /// symbol-year file per unit.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,

    /// Bar specs to load (their names under bars/<market>/), or `all`: one `<market>_bars`
    /// table with the spec as a column, one symbol-year file per unit.
    #[arg(long, value_delimiter = ',')]
    bars: Vec<String>,

    /// Build-panel's panels to load by name (final/<name>/panel.parquet): `panel_<name>`,
    /// replaced whole when the panel changes.
    #[arg(long, value_delimiter = ',')]
    panel: Vec<String>,

    /// Without a database configured (no --database-url, DATABASE_URL or PGHOST), load nothing
    /// and say so instead of failing: the DAGs' load step, for stores that have no database.
    #[arg(long)]
    optional: bool,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let data_type_given = matches.value_source("data_types") == Some(ValueSource::CommandLine);
    let derived = !cli.features.is_empty() || !cli.bars.is_empty() || !cli.panel.is_empty();
    shared::job::main(cli.common, |common| {
        if cli.schema.trim().is_empty() {
            return Err(shared::Error::usage("--schema is empty").into());
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let configured = cli.database_url.is_some() || env("PGHOST").is_some();
        let target = if configured || !cli.optional {
            Some(load::pg::Target::resolve(cli.database_url.as_deref(), env)?)
        } else {
            None
        };
        let bars = match cli.bars.as_slice() {
            [one] if one.eq_ignore_ascii_case("all") => load::Bars::All,
            specs => {
                if specs.iter().any(|s| s.eq_ignore_ascii_case("all")) {
                    return Err(shared::Error::usage("--bars all takes no other spec").into());
                }
                load::Bars::Specs(specs.to_vec())
            }
        };
        for f in &cli.features {
            if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(shared::Error::usage(format!(
                    "--features `{f}` is not a bar length such as 1h"
                ))
                .into());
            }
        }
        let spec = load::Spec {
            common,
            archive: data_type_given || !derived,
            features: cli.features,
            bars,
            panels: cli.panel,
            schema: cli.schema,
            target,
        };
        Ok(load::Load::new(spec))
    })
}
