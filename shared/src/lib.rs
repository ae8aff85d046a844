//! The library every job uses: store access, manifests, archive paths and planning, the bucket
//! listing, checksums, the archive CSV formats and their parser, HTTP retries, the common CLI, run
//! reports, progress, `validate`'s verdicts as downstream jobs read them, logging and the run context.
//! No job logic lives here.

pub mod checksum;
pub mod cli;
pub mod context;
pub mod error;
pub mod exec;
pub mod formats;
pub mod http;
pub mod hygiene;
pub mod instruments;
pub mod job;
pub mod jobmain;
pub mod lease;
pub mod listing;
pub mod logging;
pub mod manifest;
pub mod paths;
pub mod plan;
pub mod progress;
pub mod report;
pub mod store;
pub mod time;
pub mod unzip;
pub mod validation;

pub use context::{Clock, Context};
pub use error::{Error, Result};
pub use store::Store;
