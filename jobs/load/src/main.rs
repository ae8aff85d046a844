//! `load` binary: parses the CLI into a [`load::Spec`] and runs the job through
//! [`shared::jobmain`] (report, summary, exit code).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shared::cli::CommonArgs;

/// Copy the optimized datasets into PostgreSQL: a table per dataset (`<schema>.<market>_<dataset>`),
/// one transaction per month file that replaces exactly its rows, resumable by its manifest.
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

    /// Without a database configured (no --database-url, DATABASE_URL or PGHOST), load nothing
    /// and say so instead of failing: the DAGs' load step, for stores that have no database.
    #[arg(long)]
    optional: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        let spec = load::Spec {
            common,
            schema: cli.schema,
            target_shown: target.as_ref().map(|t| t.shown.clone()),
            target,
        };
        Ok(load::Load::new(spec))
    })
}
