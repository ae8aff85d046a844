//! The pipeline runner: DAG files (`dag`), the job registry (`registry`), resolving a DAG for a
//! run (`plan`), running it locally as child processes with resumable run state (`exec`,
//! `state`, `bins`), and rendering it as Argo Workflows manifests (`argo`). Polars-free: it
//! depends on `shared` only and never links a job.

pub mod argo;
pub mod bins;
pub mod dag;
pub mod error;
pub mod exec;
pub mod locate;
pub mod plan;
pub mod registry;
pub mod state;
pub mod yamlout;

pub use dag::Dag;
pub use error::{Error, Result};
