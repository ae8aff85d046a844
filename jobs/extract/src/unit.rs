//! One unit: get the raw zip as a seekable local file (in place on a local store, streamed to a
//! temp file otherwise) and check it is the zip the download manifest recorded, inflate its CSV
//! into a temp file off the async threads, upload that under its final name in one atomic step,
//! then record the unit in the manifest.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use shared::checksum::Hasher;
use shared::job::Stamp;
use shared::manifest::{Output, UnitStatus};
use shared::{Error, Result};
use tokio::io::AsyncWriteExt;

use crate::Run;
use crate::plan::Unit;
use crate::unzip::{CsvStats, extract_csv};

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
    let (zip_path, fetched) = match run.ctx.store.local_path(&raw) {
        Some(p) => {
            if !tokio::fs::try_exists(&p).await.unwrap_or(false) {
                return Err(absent(&raw));
            }
            (p, None)
        }
        None => {
            let tmp = fetch_to_temp(run, &raw, &tmp_dir, unit.zip_sha256()).await?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };

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
    let verify = fetched.is_none().then(|| unit.zip_sha256().to_string());
    let archive = raw.clone();
    let stats = tokio::task::spawn_blocking(move || -> Result<CsvStats> {
        if let Some(want) = verify {
            verify_local(&zip_path, &archive, &want)?;
        }
        let f = std::fs::File::open(&zip_path)
            .map_err(io_err(format!("opening {}", zip_path.display())))?;
        let len = f
            .metadata()
            .map_err(io_err(format!("reading {}", zip_path.display())))?
            .len();
        // CSVs inflate to about ten times their zip: a small file gets a small buffer.
        let mut w = std::io::BufWriter::with_capacity(buffer_for(len.saturating_mul(16)), out_file);
        extract_csv(
            BufReader::with_capacity(buffer_for(len), f),
            &archive,
            &limits,
            &mut w,
            &|| cancel.is_cancelled(),
        )
    })
    .await
    .map_err(|e| Error::Io {
        context: format!("extracting {raw}: the task panicked"),
        source: std::io::Error::other(e.to_string()),
    })??;
    drop(fetched);

    // 3. The CSV appears whole under its final name, or not at all.
    run.ctx.store.put_file(&csv, out.path()).await?;
    tracing::debug!(file = %unit.file.key(), bytes = stats.size, rows = stats.rows, "extracted");
    Ok(stats)
}

/// A read buffer for a file of `len` bytes: the file's size up to 1 MiB. Most archive files
/// are daily zips of a few KiB, and a buffer of the largest file's size, allocated and zeroed
/// for each of them, was a tenth of extract's CPU on daily data.
fn buffer_for(len: u64) -> usize {
    (len.max(1) as usize).min(1 << 20) + 1
}

fn absent(raw: &str) -> Error {
    Error::Io {
        context: format!("reading {raw}"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the download manifest records this zip but the store does not hold it: run download again",
        ),
    }
}

fn mismatch(raw: &str, want: &str, got: &str) -> Error {
    Error::ChecksumMismatch {
        path: format!(
            "{raw} (the stored zip changed since download verified it; `download --verify` over its days downloads it again)"
        ),
        expected: want.to_string(),
        actual: got.to_string(),
    }
}

/// Hash a local zip and compare it with the download manifest's fingerprint, so the manifest
/// never records a CSV as coming from a zip it did not come from.
fn verify_local(path: &Path, raw: &str, want: &str) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let len = f
        .metadata()
        .map_err(io_err(format!("reading {}", path.display())))?
        .len();
    let mut h = Hasher::new();
    let mut buf = vec![0u8; buffer_for(len)];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = h.finish_hex();
    if got != want {
        return Err(mismatch(raw, want, &got));
    }
    Ok(())
}

/// Stream a zip from a remote store into a temp file (never into memory: they reach GBs),
/// hashing it on the way and comparing with the recorded fingerprint.
async fn fetch_to_temp(
    run: &Run<'_>,
    raw: &str,
    tmp_dir: &PathBuf,
    want: &str,
) -> Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .suffix(".zip")
        .tempfile_in(tmp_dir)
        .map_err(io_err(format!(
            "creating a temp file in {}",
            tmp_dir.display()
        )))?;
    let get = run
        .ctx
        .store
        .object_store()
        .get(&object_store::path::Path::from(raw))
        .await;
    let r = match get {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Err(absent(raw)),
        Err(e) => return Err(Error::store(raw, e)),
    };
    let mut file = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(io_err(format!("opening {}", tmp.path().display())))?,
    );
    let mut h = Hasher::new();
    let mut stream = r.into_stream();
    while let Some(chunk) = stream.try_next().await.map_err(|e| Error::store(raw, e))? {
        if run.ctx.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        h.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(io_err(format!("writing {}", tmp.path().display())))?;
    }
    file.flush()
        .await
        .map_err(io_err(format!("writing {}", tmp.path().display())))?;
    let got = h.finish_hex();
    if got != want {
        return Err(mismatch(raw, want, &got));
    }
    Ok(tmp)
}
