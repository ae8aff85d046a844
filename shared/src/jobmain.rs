//! The common tail of every job binary: start the runtime and logging, run the job, write its
//! report into the store, print the JSON report on stdout and a summary on stderr (or one JSON
//! event with `--log-format json`), and map the outcome to the documented exit code.

use std::future::Future;
use std::process::ExitCode;

use crate::Context;
use crate::cli::LogFormat;
use crate::error::{Error, exit};
use crate::report::{Outcome, RunReport};

/// Errors a job's setup may return: a [`crate::Error`] keeps its exit code (2 for usage), any
/// other error is exit 1.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Run a job binary. `job` resolves the configuration, runs the job and returns its context and
/// report.
pub fn main<F>(log_format: LogFormat, name: &str, job: F) -> ExitCode
where
    F: Future<Output = Result<(Context, RunReport), BoxError>>,
{
    crate::logging::init(log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    let code = rt.block_on(async {
        match job.await {
            Ok((ctx, report)) => finish(log_format, &ctx, &report).await,
            Err(e) => {
                let code = e
                    .downcast_ref::<Error>()
                    .map(|e| e.exit_code())
                    .unwrap_or(exit::FAILED_UNITS);
                tracing::error!(error = %e, "{name} stopped");
                eprintln!("error: {e}");
                code
            }
        }
    });
    // Everything the job writes is written. Idle blocking-pool threads (dozens after a burst of
    // store reads) are left to the process exit instead of being woken and joined one by one,
    // which took ~50 ms at the end of a 20-symbol `aggregate` run.
    rt.shutdown_background();
    ExitCode::from(code as u8)
}

async fn finish(log_format: LogFormat, ctx: &Context, report: &RunReport) -> i32 {
    if report.outcome != Outcome::DryRun {
        match report.write(&ctx.store).await {
            Ok(path) => tracing::info!(report = %path, "report written"),
            Err(e) => {
                eprintln!("error: writing the run report: {e}");
                return exit::FAILED_UNITS;
            }
        }
    }
    match serde_json::to_string(report) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: serializing the report: {e}"),
    }
    match log_format {
        LogFormat::Pretty => eprintln!("{}", report.human_summary()),
        LogFormat::Json => {
            let c = &report.counts;
            tracing::info!(
                job = %report.job, outcome = ?report.outcome, planned = c.planned, done = c.done,
                skipped = c.skipped, missing = c.missing, failed = c.failed, not_run = c.not_run,
                bytes = report.bytes,
                failures = ?report.failures.iter().map(|f| &f.unit).collect::<Vec<_>>(),
                "run finished"
            );
        }
    }
    match report.outcome {
        Outcome::Interrupted => ctx.interrupted_exit_code(),
        _ => report.exit_code(),
    }
}
