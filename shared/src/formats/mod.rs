//! The schema registry and CSV parser: the single place in the workspace that knows each archive
//! CSV format (binance-archive.md §3, §4) and each normalized schema (architecture.md). Polars-free:
//! a Parquet writer maps `OutKind` and `ColumnData` to its own types.
//!
//! ```no_run
//! # fn demo(file: &shared::paths::ArchiveFile, bytes: &[u8]) -> shared::Result<()> {
//! use shared::formats::{Columns, Parser, format_of};
//! let format = format_of(&file.dataset);
//! let mut out = Columns::new(format);
//! let mut parser = Parser::new(format, &file.csv_path(), file);
//! for chunk in bytes.chunks(1 << 20) {
//!     parser.feed(chunk, &mut out)?;
//! }
//! parser.finish(&mut out)?;
//! # Ok(()) }
//! ```

mod cell;
mod columns;
mod parse;
mod registry;
#[cfg(test)]
mod tests;

pub use cell::TimeUnit;
pub use columns::{ColumnData, Columns};
pub use parse::{METRICS_START_LABEL_FROM, ParseStats, Parser};
pub use registry::{
    AGG_TRADES_FUTURES, AGG_TRADES_SPOT, ALL_FORMATS, BOOK_DEPTH, BOOK_TICKER, BVOL_INDEX, Derived,
    EOH_SUMMARY, EOH_TIME, FUNDING_RATE, Field, Format, InvalidRule, KLINES, Kind,
    LIQUIDATION_SNAPSHOT, METRICS, OutKind, SNAPSHOT_TIME, TRADES_CM, TRADES_SPOT, TRADES_UM,
    format_of,
};
