//! The library every job uses: store access, manifests, archive paths and planning, the bucket
//! listing, checksums, the common CLI, run reports and logging. No job logic lives here.

pub mod error;
pub mod paths;

pub use error::{Error, Result};
