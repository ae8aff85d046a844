//! One symbol's checks over a range, as stored in `symbol=<S>.json` before the cross-symbol
//! classification: per-day counts, the raw stretches without rows, the symbol's life, and the
//! findings. Each shard writes its own symbols; the dataset report is assembled from all of them
//! (`classify`). No timestamps or run ids here, so equal inputs give byte-equal results.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use shared::paths::Dataset;
use shared::plan::DateRange;
use shared::validation::{Finding, FindingKind, Severity};

/// The `schema` field of a per-symbol result.
pub const SYMBOL_SCHEMA: &str = "validate-symbol/1";

/// Findings kept per kind and symbol; the counts count them all.
pub const MAX_FINDINGS_PER_KIND: usize = 20;

/// What the `download` manifest says about the archive file(s) covering a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// A file covering the day was downloaded and verified.
    Present,
    /// Every file covering the day answered 404.
    Missing,
    /// No archive file yet: `tail` filled the day from REST (provisional).
    Rest,
    /// No record (not downloaded with this range, or failed).
    #[default]
    Unknown,
}

/// One day's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    pub rows: u64,
    pub zero_volume: u64,
    pub errors: u64,
    pub warnings: u64,
    pub source_duplicates: u64,
    pub file: FileState,
}

/// One symbol over the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolResult {
    pub schema: String,
    pub symbol: String,
    pub dataset: Dataset,
    pub range: DateRange,
    /// Grid step in µs, for datasets checked against a grid.
    pub grid_us: Option<i64>,
    pub first_data_us: Option<i64>,
    pub last_data_us: Option<i64>,
    /// `[start, end)` between the first and last data: one grid step past the last row, or
    /// whole days for datasets without a grid. `None` without data.
    pub life: Option<[i64; 2]>,
    /// Where the fetched data ends when the range reaches past it (µs, exclusive): `tail`'s
    /// last minute; later times are not yet fetched, not gaps.
    #[serde(default)]
    pub data_until_us: Option<i64>,
    /// Every day of the range.
    pub days: BTreeMap<NaiveDate, DayCounts>,
    /// Stretches of the range without rows, sorted and merged, not yet classified.
    pub gaps: Vec<[i64; 2]>,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    pub notes: Vec<Finding>,
    pub error_count: u64,
    pub warning_count: u64,
}

impl SymbolResult {
    pub fn new(symbol: &str, dataset: Dataset, range: DateRange, grid_us: Option<i64>) -> Self {
        SymbolResult {
            schema: SYMBOL_SCHEMA.into(),
            symbol: symbol.into(),
            dataset,
            range,
            grid_us,
            first_data_us: None,
            last_data_us: None,
            life: None,
            data_until_us: None,
            days: range.days().map(|d| (d, DayCounts::default())).collect(),
            gaps: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            error_count: 0,
            warning_count: 0,
        }
    }

    /// Record a finding: counted on its day, kept up to [`MAX_FINDINGS_PER_KIND`] per kind.
    pub fn find(
        &mut self,
        kind: FindingKind,
        day: NaiveDate,
        time_us: Option<i64>,
        detail: String,
    ) {
        let sev = kind.severity();
        if let Some(d) = self.days.get_mut(&day) {
            match sev {
                Severity::Error => d.errors += 1,
                Severity::Warning => d.warnings += 1,
                Severity::Note => {}
            }
        }
        let list = match sev {
            Severity::Error => {
                self.error_count += 1;
                &mut self.errors
            }
            Severity::Warning => {
                self.warning_count += 1;
                &mut self.warnings
            }
            Severity::Note => &mut self.notes,
        };
        if list.iter().filter(|f| f.kind == kind).count() < MAX_FINDINGS_PER_KIND {
            list.push(Finding {
                kind,
                day,
                time_us,
                detail,
            });
        }
    }
}
