//! The shared crate's error type: variants a caller can act on, each naming the unit, path or URL
//! it concerns. Jobs map them to exit codes (`Error::exit_code`).

use std::time::Duration;

/// Exit codes every job uses (architecture.md, style.md §4).
pub mod exit {
    /// Every unit done, skipped as up to date, or missing upstream.
    pub const OK: i32 = 0;
    /// Some units failed; the report names them.
    pub const FAILED_UNITS: i32 = 1;
    /// Bad arguments or configuration; nothing was done.
    pub const USAGE: i32 = 2;
    /// Stopped by SIGINT.
    pub const INTERRUPTED: i32 = 130;
    /// Stopped by SIGTERM.
    pub const TERMINATED: i32 = 143;
    /// Another run holds the lease of this job's data (sysexits' EX_TEMPFAIL); nothing was done.
    pub const LOCKED: i32 = 75;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or configuration (exit 2).
    #[error("{0}")]
    Usage(String),

    /// A name, key or argument that does not parse (a symbol, a bar spec, an archive key, a
    /// partition path): exit 2 when it ends the run, since asking again cannot help.
    #[error("{0}")]
    BadName(String),

    /// An input object whose contents are not what its dataset promises (a column missing, a
    /// null where none may be, a file that does not decode): the unit fails; rebuilding the
    /// input upstream (`--force` on the job that wrote it) is the repair.
    #[error("{path}: {reason}")]
    BadData { path: String, reason: String },

    /// An input an upstream manifest names is not in the store (deleted, or a store that lost
    /// it): the unit fails; running the upstream job again restores it.
    #[error("{path} is missing from the store: run `{upstream}` again to restore it")]
    UpstreamMissing { path: String, upstream: String },

    /// A failure inside the job itself (a worker that stopped, a frame the job built wrongly):
    /// the unit fails; a rerun may pass, and a persistent one is a bug to report.
    #[error("{0}")]
    Internal(String),

    /// The store could not be opened from its URL.
    #[error("cannot open store `{url}`: {reason}")]
    StoreUrl { url: String, reason: String },

    /// A store operation failed.
    #[error("store error at `{path}`: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// The archive answered 404: the file does not exist upstream (yet, or at all).
    #[error("missing upstream: {url}")]
    MissingUpstream { url: String },

    /// An HTTP failure worth retrying (5xx, 403, 429, reset, truncated body, timeout).
    #[error("transient HTTP failure for {url}: {reason}")]
    Transient {
        url: String,
        reason: String,
        /// What the server asked for (`Retry-After`), if anything.
        retry_after: Option<Duration>,
    },

    /// An HTTP failure not worth retrying (other 4xx, bad body).
    #[error("HTTP failure for {url}: {reason}")]
    Http { url: String, reason: String },

    /// The downloaded bytes do not hash to the published CHECKSUM.
    #[error("checksum mismatch for {path}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    /// A `.CHECKSUM` file that does not have the `<64 hex>  <name>` form.
    #[error("bad CHECKSUM file {path}: {reason}")]
    BadChecksumFile { path: String, reason: String },

    /// Bytes that should be a zip but are not (an error page, a truncated file).
    #[error("not a zip archive: {path}")]
    NotZip { path: String },

    /// A manifest object that does not parse.
    #[error("corrupt manifest object `{path}`: {reason}")]
    Manifest { path: String, reason: String },

    /// An archive CSV row or header that does not fit its format (`formats`). `line` is 1-based
    /// and counts the header; `column` is the normalized column name.
    #[error("{path}:{line}: column {column}: {reason}")]
    Schema {
        path: String,
        line: u64,
        column: String,
        reason: String,
    },

    /// A symbol the archive's listing does not have for a dataset at all (a typo, another
    /// market's spelling): exit 2, with the listed names closest to it.
    #[error(
        "unknown symbol `{symbol}` for {dataset}: the archive lists no such symbol{}",
        closest_names(closest)
    )]
    UnknownSymbol {
        symbol: String,
        dataset: String,
        closest: Vec<String>,
    },

    /// The S3 listing could not be read.
    #[error("bad bucket listing from {url}: {reason}")]
    Listing { url: String, reason: String },

    /// Another writer holds the lease of the same (job, market, datasets, shard): exit 75,
    /// nothing done; wait for it (`--wait-lock`) or stop it.
    #[error(
        "{lease} is held by {holder}: another writer is at work on the same data{}",
        if *waited { "; gave up waiting (--wait-lock)" } else { "; wait for it with --wait-lock [DURATION], or stop that run" }
    )]
    Locked {
        lease: String,
        holder: String,
        waited: bool,
    },

    /// The run was interrupted by a signal.
    #[error("interrupted")]
    Interrupted,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

fn closest_names(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!(" (closest listed: {})", closest.join(", "))
    }
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn bad_name(msg: impl Into<String>) -> Self {
        Error::BadName(msg.into())
    }

    pub fn bad_data(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadData {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn upstream_missing(path: impl Into<String>, upstream: crate::job::JobName) -> Self {
        Error::UpstreamMissing {
            path: path.into(),
            upstream: upstream.to_string(),
        }
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    pub fn store(path: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            path: path.into(),
            source,
        }
    }

    /// Worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transient { .. } => true,
            // The store may be S3: its own client retries, but a timeout can still surface.
            Error::Store { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            _ => false,
        }
    }

    /// The exit code a job maps this error to when it ends the run.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::StoreUrl { .. }
            | Error::BadName(_)
            | Error::UnknownSymbol { .. } => exit::USAGE,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Locked { .. } => exit::LOCKED,
            _ => exit::FAILED_UNITS,
        }
    }
}
