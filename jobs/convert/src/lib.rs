//! The `convert` job: staged archive CSVs → normalized Parquet (zstd), one file per symbol-day and
//! source period (`parquet/<market>/<dataset>/symbol=S/date=D/part-<daily|monthly>.parquet`).
//! Units are the CSVs the `extract` manifest records; a unit is redone only when its CSV's
//! fingerprint, this job's version or its parameters change. Monthly archives are split into
//! daily partitions as they stream, so a month never has to fit in memory.

mod unit;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use shared::cli::CommonSpec;
use shared::exec::{self, Tally};
use shared::manifest::{Manifest, ManifestKey, ManifestWriter, UnitStatus, select_symbols};
use shared::paths::ArchiveFile;
use shared::report::{RunHeader, RunReport};
use shared::{Context, Result};

pub use unit::UnitResult;

pub const JOB: &str = "convert";
/// Bump when the output of a unit changes for the same input. 3: metrics and BVOLIndex no longer
/// repeat the folder's `symbol` in the file; EOHSummary's contract column is `contract`.
pub const JOB_VERSION: &str = "3";
/// The job whose manifest lists the inputs.
pub const UPSTREAM: &str = "extract";

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Bytes parsed from a CSV at a time.
    pub read_chunk: usize,
    /// zstd level of the Parquet pages.
    pub zstd_level: i32,
    /// Parser threads per file, and partition-writer threads per monthly file (a daily file
    /// has one writer).
    pub threads: usize,
}

/// What the parameters that shape outputs hash to (recorded per unit).
fn params_hash(spec: &Spec) -> String {
    shared::manifest::params_hash(&(spec.row_group_rows, spec.zstd_level))
}

/// One unit to convert.
pub(crate) struct Unit {
    pub file: ArchiveFile,
    pub csv_path: String,
    pub csv_sha: String,
    pub writer: Arc<ManifestWriter>,
    /// Outputs of the previous conversion, to delete those no longer produced.
    pub previous: Vec<String>,
}

pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    let t0 = Instant::now();
    let header = RunHeader {
        job: JOB,
        job_version: JOB_VERSION,
        store: spec.common.store.clone(),
        started_at: ctx.clock.now(),
        params: serde_json::to_value(&spec).unwrap_or_default(),
    };
    let phash = params_hash(&spec);
    let mut tally = Tally::default();
    let mut units = Vec::new();

    for ds in &spec.common.datasets {
        let scope = ds.scope();
        let symbols = select_symbols(
            &ctx.store,
            UPSTREAM,
            &scope,
            &spec.common.symbols,
            &mut tally,
        )
        .await?;
        for sym in spec.common.shard_of(&symbols) {
            let upstream =
                Manifest::load(&ctx.store, &ManifestKey::new(UPSTREAM, &scope, &sym)).await?;
            let (writer, mine) =
                ManifestWriter::open(&ctx.store, &ManifestKey::new(JOB, &scope, &sym)).await?;
            let writer = Arc::new(writer);
            for e in upstream.entries() {
                if e.status != UnitStatus::Done {
                    continue;
                }
                let Ok(file) = ArchiveFile::parse_key(&e.unit) else {
                    continue;
                };
                let r = spec.common.range;
                if file.date.last_day() < r.start || file.date.first_day() > r.end {
                    continue;
                }
                let Some(csv) = e.outputs.first() else {
                    continue;
                };
                let inputs = [("csv".to_string(), csv.sha256.clone())].into();
                let prev = mine.get(&e.unit);
                if !spec.common.force
                    && prev.is_some_and(|p| p.is_done_with(&inputs, JOB_VERSION, &phash))
                {
                    tally.skip();
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

    if spec.common.dry_run {
        for u in &units {
            println!(
                "convert {} -> {}",
                u.csv_path,
                u.file.dataset.parquet_symbol_dir(&u.file.symbol)
            );
        }
        return Ok(header.dry_run(ctx, tally, units.len() as u64, serde_json::Value::Null));
    }
    tracing::info!(
        units = units.len(),
        up_to_date = tally.counts.skipped,
        "plan ready"
    );

    let spec = Arc::new(spec);
    let (mut bytes, mut rows, mut dropped, mut partitions) = (0u64, 0u64, 0u64, 0u64);
    let work = {
        let (spec, ctx, phash) = (spec.clone(), ctx.clone(), phash.clone());
        move |u: Unit| {
            let (spec, ctx, phash) = (spec.clone(), ctx.clone(), phash.clone());
            async move {
                let key = u.file.key();
                (key, unit::convert(&spec, &ctx, &phash, u).await)
            }
        }
    };
    let not_run = exec::for_each_bounded(
        ("convert", "files"),
        units,
        spec.common.concurrency,
        &ctx.cancel,
        work,
        |key, r| {
            if let Some(u) = tally.record(&key, r) {
                bytes += u.bytes;
                rows += u.rows;
                dropped += u.dropped_invalid;
                partitions += u.partitions;
            }
        },
    )
    .await?;
    tally.counts.not_run += not_run;
    let outcome = tally.outcome(ctx.cancel.is_cancelled());
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let details = serde_json::json!({
        "rows": rows,
        "dropped_invalid_rows": dropped,
        "partitions_written": partitions,
        "seconds": secs,
        "rows_per_sec": rows as f64 / secs,
    });
    Ok(header.report(ctx, outcome, tally, bytes, details))
}
