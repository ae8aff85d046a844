//! The runner's error type: invalid DAG files (each problem with its `file:line`), missing
//! binaries, services that do not start, store failures. `main` maps them to exit codes: 2 for
//! everything that is a usage or configuration problem, 1 otherwise.

use std::fmt;
use std::path::PathBuf;

/// One problem in a DAG file, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, when the parser knows it.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one DAG file, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DAG file is not valid (exit 2).
    #[error("{0}")]
    Invalid(Problems),

    /// Bad command-line arguments (exit 2).
    #[error("{0}")]
    Usage(String),

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A job or service binary that is nowhere to be found (exit 2).
    #[error(
        "cannot find the `{name}` binary (looked in {looked}); build the workspace binaries with `cargo build --bins` or set PIPELINE_BIN_DIR"
    )]
    BinaryNotFound { name: String, looked: String },

    /// `cargo build` of the job binaries failed.
    #[error("building the job binaries failed: {0}")]
    Build(String),

    /// A service did not start or did not print its URL.
    #[error("service `{name}`: {reason}")]
    Service { name: String, reason: String },

    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// The store (run state, summaries).
    #[error(transparent)]
    Store(#[from] shared::Error),

    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("rendering YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    /// The exit code a runner invocation ending with this error returns.
    pub fn exit_code(&self) -> i32 {
        use shared::error::exit;
        match self {
            Error::Invalid(_)
            | Error::Usage(_)
            | Error::Read { .. }
            | Error::BinaryNotFound { .. } => exit::USAGE,
            Error::Store(e) => e.exit_code(),
            _ => exit::FAILED_UNITS,
        }
    }
}
