//! The `convert` job: archive CSVs → normalized Parquet, one file per symbol-day and source
//! period (`parquet/<market>/<dataset>/symbol=S/date=D/part-<daily|monthly>.parquet`). Units are
//! the staged CSVs the `extract` manifest records (`--from csv`), or the zips the `download`
//! manifest records (`--from raw`: each zip's CSV is inflated into memory, or a temp file when
//! large, and parsed without staging); a unit is redone only when its input's fingerprint, this
//! job's version or its parameters change. Monthly archives are split into daily partitions as
//! they stream, so a month never has to fit in memory.

mod unit;

use std::sync::Arc;

use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{ManifestWriter, UnitStatus};
use shared::paths::ArchiveFile;
use shared::{Context, Result};

pub use shared::unzip::Limits;
pub use unit::UnitResult;

/// Bump when the output of a unit changes for the same input. 3: metrics and BVOLIndex no longer
/// repeat the folder's `symbol` in the file; EOHSummary's contract column is `contract`.
pub const JOB_VERSION: &str = "3";
/// Where a unit's CSV comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The staging CSVs `extract` wrote (`csv/`), listed by its manifest.
    Csv,
    /// The downloaded zips (`raw/`), listed by the `download` manifest: no staging.
    Raw,
}

impl Source {
    /// The job whose manifest lists the inputs.
    pub fn upstream(self) -> JobName {
        match self {
            Source::Csv => JobName::EXTRACT,
            Source::Raw => JobName::DOWNLOAD,
        }
    }

    /// The key of the input's fingerprint in a unit's manifest entry.
    pub fn input_key(self) -> &'static str {
        match self {
            Source::Csv => "csv",
            Source::Raw => "zip",
        }
    }
}

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
    /// Staged CSVs or the zips themselves.
    pub from: Source,
    /// What a zip may hold (`--from raw`).
    pub limits: Limits,
}

/// One unit to convert.
pub struct Unit {
    pub file: ArchiveFile,
    pub from: Source,
    /// The staged CSV, or the zip.
    pub input_path: String,
    /// The input's sha256 as its upstream manifest records it.
    pub input_sha: String,
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
        let up = self.from.upstream();
        for ds in &self.common.datasets {
            let scope = ds.scope();
            let symbols = p.symbols(up, &scope).await?;
            p.load_ahead(&[up], &scope, &symbols);
            for sym in symbols {
                let upstream = p.upstream(up, &scope, &sym).await?;
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
                    if file.dataset != *ds || file.symbol != sym {
                        continue;
                    }
                    let Some(input) = e.outputs.first() else {
                        continue;
                    };
                    let prev = mine.get(&e.unit);
                    if p.is_current(prev, &unit::inputs(self.from, &input.sha256)) {
                        continue;
                    }
                    units.push(Unit {
                        file,
                        from: self.from,
                        input_path: input.path.clone(),
                        input_sha: input.sha256.clone(),
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
            u.input_path,
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
