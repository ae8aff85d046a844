//! The `convert` job: staged archive CSVs → normalized Parquet, one file per symbol-day and
//! source period (`parquet/<market>/<dataset>/symbol=S/date=D/part-<daily|monthly>.parquet`).
//! Units are the CSVs the `extract` manifest records; a unit is redone only when its CSV's
//! fingerprint, this job's version or its parameters change. Monthly archives are split into
//! daily partitions as they stream, so a month never has to fit in memory.

mod unit;

use std::sync::Arc;

use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{ManifestWriter, UnitStatus};
use shared::paths::ArchiveFile;
use shared::{Context, Result};

pub use unit::UnitResult;

/// Bump when the output of a unit changes for the same input. 3: metrics and BVOLIndex no longer
/// repeat the folder's `symbol` in the file; EOHSummary's contract column is `contract`.
pub const JOB_VERSION: &str = "3";
/// The job whose manifest lists the inputs.
pub const UPSTREAM: JobName = JobName::EXTRACT;

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Bytes parsed from a CSV at a time.
    pub read_chunk: usize,
    /// zstd level of the Parquet pages other than floats' (those are fast LZ4).
    pub zstd_level: i32,
    /// Parser threads per file, and partition-writer threads per monthly file (a daily file
    /// has one writer).
    pub threads: usize,
}

/// One unit to convert.
pub struct Unit {
    pub file: ArchiveFile,
    pub csv_path: String,
    pub csv_sha: String,
    pub writer: Arc<ManifestWriter>,
    /// Outputs of the previous conversion, to delete those no longer produced.
    pub previous: Vec<String>,
}

#[derive(Default)]
pub struct Totals {
    bytes: u64,
    rows: u64,
    dropped: u64,
    partitions: u64,
    /// Archive files that held no row (empty, or a header only).
    empty: Vec<String>,
}

impl Job for Spec {
    const NAME: JobName = JobName::CONVERT;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "files";
    type Unit = Unit;
    type Done = UnitResult;
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.common
    }

    fn params_hash(&self) -> String {
        shared::manifest::params_hash(&(self.row_group_rows, self.zstd_level))
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<Unit>> {
        let mut units = Vec::new();
        for ds in &self.common.datasets {
            let scope = ds.scope();
            let symbols = p.symbols(UPSTREAM, &scope).await?;
            p.load_ahead(&[UPSTREAM], &scope, &symbols);
            for sym in symbols {
                let upstream = p.upstream(UPSTREAM, &scope, &sym).await?;
                let (writer, mine) = p.manifest(&scope, &sym).await?;
                for e in upstream.entries() {
                    if e.status != UnitStatus::Done {
                        continue;
                    }
                    let Ok(file) = ArchiveFile::parse_key(&e.unit) else {
                        continue;
                    };
                    let r = self.common.range;
                    if file.date.last_day() < r.start || file.date.first_day() > r.end {
                        continue;
                    }
                    let Some(csv) = e.outputs.first() else {
                        continue;
                    };
                    let prev = mine.get(&e.unit);
                    if p.is_current(prev, &unit::inputs(&csv.sha256)) {
                        continue;
                    }
                    units.push(Unit {
                        file,
                        csv_path: csv.path.clone(),
                        csv_sha: csv.sha256.clone(),
                        writer: writer.clone(),
                        previous: prev
                            .map(|p| p.outputs.iter().map(|o| o.path.clone()).collect())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(units)
    }

    fn unit_key(u: &Unit) -> String {
        u.file.key()
    }

    fn dry_run_line(&self, u: &Unit) -> String {
        format!(
            "convert {} -> {}",
            u.csv_path,
            u.file.dataset.parquet_symbol_dir(&u.file.symbol)
        )
    }

    async fn execute(job: Arc<Self>, ctx: Context, stamp: Stamp, u: Unit) -> Result<UnitResult> {
        unit::convert(&job, &ctx, &stamp, u).await
    }

    fn absorb(&self, t: &mut Totals, key: &str, u: UnitResult) -> Finished<Unit> {
        if u.rows == 0 {
            t.empty.push(key.to_string());
        }
        t.bytes += u.bytes;
        t.rows += u.rows;
        t.dropped += u.dropped_invalid;
        t.partitions += u.partitions;
        Finished::Done
    }

    fn bytes(&self, t: &Totals) -> u64 {
        t.bytes
    }

    async fn finish(&self, _ctx: &Context, t: Totals, end: &mut End) -> Result<serde_json::Value> {
        let secs = end.seconds;
        // An archive file without rows is converted (its days exist, empty), but never silently.
        for key in &t.empty {
            end.tally.warn(format!(
                "{key}: the archive file holds no row (empty, or a header only): its days are empty"
            ));
        }
        Ok(serde_json::json!({
            "rows": t.rows,
            "empty_files": t.empty,
            "dropped_invalid_rows": t.dropped,
            "partitions_written": t.partitions,
            "seconds": secs,
            "rows_per_sec": t.rows as f64 / secs,
        }))
    }
}
