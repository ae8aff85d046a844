//! Tracing setup for job binaries: human-readable or JSON lines on stderr, filtered by `RUST_LOG`
//! (default `info`), and the progress mode that goes with them (`progress`). Called once from
//! `main`; libraries only emit events.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat) {
    crate::progress::configure(format == LogFormat::Pretty && std::io::stderr().is_terminal());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
    };
}
