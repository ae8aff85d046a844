//! One unit: get the raw zip as a seekable local file (in place on a local store, streamed to a
//! temp file otherwise) and check it is the zip the download manifest recorded, inflate its CSV
//! into a temp file off the async threads, upload that under its final name in one atomic step,
//! then record the unit in the manifest.

use std::io::BufReader;

use shared::job::Stamp;
use shared::manifest::{Output, UnitStatus};
use shared::unzip::{CsvStats, LocalZip, buffer_for, extract_csv};
use shared::{Error, Result};

use crate::Run;
use crate::plan::Unit;

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Extract one unit and record it: `Done` with the CSV as output, or `Failed` with the reason.
/// An interrupted unit records nothing.
pub async fn process(run: &Run<'_>, stamp: &Stamp, unit: &Unit) -> Result<CsvStats> {
    let result = extract_unit(run, unit).await;
    let entry = |status, outputs, detail| {
        let mut e = stamp.entry(unit.file.key(), status, unit.inputs.clone(), outputs);
        e.detail = detail;
        e
    };
    match &result {
        Ok(s) => {
            let out = Output {
                path: unit.file.csv_path(),
                size: s.size,
                sha256: s.sha256.clone(),
                rows: Some(s.rows),
                time_span: None,
            };
            unit.writer
                .record(entry(UnitStatus::Done, vec![out], None))
                .await?;
        }
        Err(Error::Interrupted) => {}
        Err(e) => {
            unit.writer
                .record(entry(UnitStatus::Failed, vec![], Some(e.to_string())))
                .await?;
        }
    }
    result
}

async fn extract_unit(run: &Run<'_>, unit: &Unit) -> Result<CsvStats> {
    if run.ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let raw = unit.file.raw_path();
    let csv = unit.file.csv_path();
    let tmp_dir = run.tmp_dir();

    // 1. A seekable local copy of the zip, known to be the one the download manifest recorded.
    let zip = LocalZip::open(
        &run.ctx.store,
        &raw,
        unit.zip_sha256(),
        &tmp_dir,
        &run.ctx.cancel,
    )
    .await?;

    // 2. Inflate into a temp file next to nothing final: a killed run leaves no partial CSV.
    let out = tempfile::Builder::new()
        .prefix(".extract-")
        .suffix(".csv")
        .tempfile_in(&tmp_dir)
        .map_err(io_err(format!(
            "creating a temp file in {}",
            tmp_dir.display()
        )))?;
    let out_file = out
        .reopen()
        .map_err(io_err(format!("opening {}", out.path().display())))?;
    let limits = run.spec.limits;
    let cancel = run.ctx.cancel.clone();
    let want = unit.zip_sha256().to_string();
    let archive = raw.clone();
    let stats = tokio::task::spawn_blocking(move || -> Result<CsvStats> {
        zip.verify(&archive, &want)?;
        let f = std::fs::File::open(&zip.path)
            .map_err(io_err(format!("opening {}", zip.path.display())))?;
        let len = f
            .metadata()
            .map_err(io_err(format!("reading {}", zip.path.display())))?
            .len();
        // CSVs inflate to about ten times their zip: a small file gets a small buffer.
        let mut w = std::io::BufWriter::with_capacity(buffer_for(len.saturating_mul(16)), out_file);
        extract_csv(
            BufReader::with_capacity(buffer_for(len), f),
            &archive,
            &limits,
            &mut w,
            true,
            &|| cancel.is_cancelled(),
        )
    })
    .await
    .map_err(|e| Error::Io {
        context: format!("extracting {raw}: the task panicked"),
        source: std::io::Error::other(e.to_string()),
    })??;

    // 3. The CSV appears whole under its final name, or not at all.
    run.ctx.store.put_file(&csv, out.path()).await?;
    tracing::debug!(file = %unit.file.key(), bytes = stats.size, rows = stats.rows, "extracted");
    Ok(stats)
}
