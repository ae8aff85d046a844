//! The common tail of every job binary: start the runtime and logging, run the job, write its
//! report into the store, print a summary on stderr (one JSON event with `--log-format json`) and
//! the JSON report on stdout when asked (`--json`) or when stdout is not a terminal (the runner,
//! a pipe), and map the outcome to the documented exit code.

use std::io::IsTerminal;

use std::future::Future;
use std::process::ExitCode;

use crate::Context;
use crate::cli::{LogFormat, OutputOptions};
use crate::error::{Error, exit};
use crate::report::{Outcome, RunReport};

/// Errors a job's setup may return: a [`crate::Error`] keeps its exit code (2 for usage), any
/// other error is exit 1.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Run a job binary. `job` resolves the configuration, runs the job and returns its context and
/// report.
pub fn main<F>(output: OutputOptions, name: &str, job: F) -> ExitCode
where
    F: Future<Output = Result<(Context, RunReport), BoxError>>,
{
    let log_format = output.log_format;
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
            Ok((ctx, report)) => {
                let code = finish(output, &ctx, &report).await;
                ctx.run_exit_hooks().await;
                code
            }
            Err(e) => {
                let code = e
                    .downcast_ref::<Error>()
                    .map(|e| e.exit_code())
                    .unwrap_or(exit::FAILED_UNITS);
                tracing::error!(error = %e, exit_code = code, "{name} stopped");
                // The JSON log line above is the whole message there; a person also gets it
                // plain, last on the screen.
                if log_format == LogFormat::Pretty {
                    eprintln!("error: {e}");
                }
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

async fn finish(output: OutputOptions, ctx: &Context, report: &RunReport) -> i32 {
    if report.outcome != Outcome::DryRun {
        let written = report.write(&ctx.store).await;
        // The report was the run's last write: its staging folder goes now.
        let _ = crate::hygiene::clear_staging(&ctx.store, &ctx.run_id).await;
        match written {
            Ok(path) => tracing::info!(report = %path, "report written"),
            Err(e) => {
                tracing::error!(error = %e, "writing the run report");
                return exit::FAILED_UNITS;
            }
        }
    }
    if output.json || !std::io::stdout().is_terminal() {
        match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => tracing::error!(error = %e, "serializing the report"),
        }
    }
    match output.log_format {
        LogFormat::Pretty => eprintln!("{}", report.human_summary()),
        LogFormat::Json => {
            let c = &report.counts;
            tracing::info!(
                job = %report.job, outcome = ?report.outcome, planned = c.planned, done = c.done,
                skipped = c.skipped, missing = c.missing, failed = c.failed, not_run = c.not_run,
                bytes = report.bytes,
                failures = report.failures.len(),
                warnings = report.warnings.len(),
                "run finished"
            );
            for f in &report.failures {
                tracing::error!(unit = %f.unit, reason = %f.reason, "failed unit");
            }
            for w in &report.warnings {
                tracing::warn!(warning = %w, "run warning");
            }
        }
    }
    match report.outcome {
        Outcome::Interrupted => ctx.interrupted_exit_code(),
        _ => report.exit_code(),
    }
}
