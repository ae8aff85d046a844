//! Fetching one archive file: CHECKSUM first, then the zip streamed through sha256 into memory
//! (small files) or a staging object (large ones), written under its final name only once the
//! hash matches. Transient failures are retried with backoff; a mismatch re-fetches both the
//! CHECKSUM and the zip a bounded number of times, then quarantines the bytes and fails.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::Digest as _;
use object_store::PutPayload;
use shared::checksum::{Hasher, parse_checksum};
use shared::http::{get_small, status_error, transport_error, with_retry};
use shared::manifest::{Entry, Output, UnitStatus};
use shared::paths::ArchiveFile;
use shared::{Error, Result};

use crate::plan::{Action, PlannedUnit};
use crate::{Run, Stats, entry, record};

/// How a unit ended (errors are failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Downloaded, verified, written and recorded.
    Verified { size: u64 },
    /// Refresh found the CHECKSUM unchanged.
    Unchanged,
    /// `--verify` hashed the stored zip to the sha256 recorded when it was verified.
    Intact,
    /// The store already held verified bytes; recorded without downloading.
    Adopted { size: u64 },
    /// 404 upstream; recorded.
    Missing,
}

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Process one unit.
pub async fn process(run: &Run<'_>, unit: &PlannedUnit) -> Result<FetchOutcome> {
    Box::pin(process_unit(run, unit)).await
}

async fn process_unit(run: &Run<'_>, unit: &PlannedUnit) -> Result<FetchOutcome> {
    let file = &unit.file;
    let key = file.key();
    let result = process_inner(run, unit).await;
    match &result {
        Ok(FetchOutcome::Missing) => {
            let e = entry(
                run,
                &key,
                UnitStatus::Missing,
                None,
                None,
                Some("HTTP 404".into()),
            );
            record(&unit.writer, e).await?;
        }
        Err(Error::Interrupted) => {}
        Err(err) => {
            let e = entry(
                run,
                &key,
                UnitStatus::Failed,
                None,
                None,
                Some(err.to_string()),
            );
            record(&unit.writer, e).await?;
        }
        Ok(_) => {}
    }
    result
}

async fn process_inner(run: &Run<'_>, unit: &PlannedUnit) -> Result<FetchOutcome> {
    let file = &unit.file;
    let spec = &run.spec;
    if unit.listed.as_ref().is_some_and(|l| !l.checksum_listed) {
        return Err(crate::listed::no_checksum(file));
    }
    if unit.action == Action::Verify {
        Stats::add(&run.stats.reverified, 1);
        let stored = run.ctx.store.sha256_of(&file.raw_path()).await?;
        if stored.as_ref().map(|(sha, _, _)| sha) == unit.recorded_sha.as_ref() {
            return Ok(FetchOutcome::Intact);
        }
        Stats::add(&run.stats.damaged, 1);
        tracing::warn!(file = %file, "the stored zip no longer hashes to the sha256 recorded when it was verified: downloading it again");
    }
    let mut attempts = 0;
    let mut last_sha: Option<String> = None;
    loop {
        attempts += 1;
        let Some(expected) = fetch_checksum(run, file).await? else {
            return Ok(FetchOutcome::Missing);
        };
        match unit.action {
            Action::Refresh if attempts == 1 => {
                Stats::add(&run.stats.refresh_checks, 1);
                if unit.recorded_sha.as_deref() == Some(expected.as_str()) {
                    if let Some(l) = &unit.listed {
                        // Recorded with the listing's ETag, the next refresh asks for nothing.
                        let sha = expected.clone();
                        let mut e = verified_entry(run, file, &expected, l.size, sha, None);
                        e.inputs.extend(provenance(unit, None));
                        record(&unit.writer, e).await?;
                    }
                    return Ok(FetchOutcome::Unchanged);
                }
                tracing::info!(file = %file, "CHECKSUM changed upstream: the archive republished this file");
                Stats::add(&run.stats.republished, 1);
            }
            Action::Adopt if attempts == 1 => {
                if let Some(size) = adopt(run, unit, &expected).await? {
                    return Ok(FetchOutcome::Adopted { size });
                }
            }
            _ => {}
        }
        let body = fetch_zip(run, file).await?;
        if body.sha256 == expected {
            return store_verified(run, unit, body, &expected, None).await;
        }
        Stats::add(&run.stats.checksum_mismatches, 1);
        // The same bytes twice (or no second download allowed): ask the ETag for a second
        // opinion on the CHECKSUM.
        let settled =
            last_sha.as_deref() == Some(body.sha256.as_str()) || spec.checksum_attempts == 1;
        if settled && let Some(etag) = erratum(run, unit, &body).await? {
            tracing::warn!(file = %file, published = %expected, actual = %body.sha256, "checksum erratum: the CHECKSUM is wrong, the bytes are good (their MD5 is the bucket's ETag and the zip's CRCs pass); accepted as verified_by=etag");
            lock(&run.stats.checksum_errata).push(file.key());
            return store_verified(run, unit, body, &expected, Some(etag)).await;
        }
        last_sha = Some(body.sha256.clone());
        let mismatch = Error::ChecksumMismatch {
            path: file.key(),
            expected: expected.clone(),
            actual: body.sha256.clone(),
        };
        if attempts >= spec.checksum_attempts {
            let q = file.quarantine_path();
            body.move_to(run, &q).await?;
            tracing::error!(file = %file, quarantine = %q, "checksum never matched: quarantined");
            return Err(mismatch);
        }
        body.discard(run).await;
        tracing::warn!(file = %file, attempt = attempts, error = %mismatch, "checksum mismatch: fetching CHECKSUM and zip again");
    }
}

/// The published sha256, or `None` if the file is missing upstream.
async fn fetch_checksum(run: &Run<'_>, file: &ArchiveFile) -> Result<Option<String>> {
    let url = file.checksum_url(&run.spec.source);
    Stats::add(&run.stats.requests, 1);
    let on_retry = |n: u32, e: &Error, d: std::time::Duration| {
        Stats::add(&run.stats.retries, 1);
        Stats::add(&run.stats.requests, 1);
        tracing::warn!(url = %url, attempt = n, delay_ms = d.as_millis() as u64, error = %e, "retrying");
    };
    // A body that does not parse (a garbled or truncated response) is a failure of that request:
    // asked again with the same backoff and attempts as any transient failure.
    let mut on_retry = on_retry;
    let mut garbled = 0u32;
    let got = loop {
        let got = get_small(
            run.http,
            &url,
            &run.spec.retry,
            &run.ctx.cancel,
            &mut on_retry,
        )
        .await;
        let Ok(body) = got else {
            break got.map(|_| None);
        };
        match parse_checksum(&file.checksum_key(), &body, Some(&file.file_name())) {
            Ok(c) => break Ok(Some(c.sha256)),
            Err(e) => {
                garbled += 1;
                Stats::add(&run.stats.checksums_garbled, 1);
                if garbled >= run.spec.retry.max_attempts {
                    return Err(e);
                }
                let d = run.spec.retry.delay(garbled, None);
                on_retry(garbled, &e, d);
                shared::http::sleep_or_cancel(d, &run.ctx.cancel).await?;
            }
        }
    };
    match got {
        Ok(sha) => Ok(sha),
        Err(Error::MissingUpstream { .. }) => {
            // No CHECKSUM: either the zip is missing too, or it was published without one
            // (binance-archive.md §1.6), which we cannot verify and so do not accept.
            match fetch_zip_head(run, file).await? {
                false => Ok(None),
                true => Err(Error::BadChecksumFile {
                    path: file.checksum_key(),
                    reason: "the zip exists upstream but its CHECKSUM does not (HTTP 404); not accepted unverified".into(),
                }),
            }
        }
        Err(e) => Err(e),
    }
}

async fn fetch_zip_head(run: &Run<'_>, file: &ArchiveFile) -> Result<bool> {
    let url = file.url(&run.spec.source);
    let r = with_retry(
        &run.spec.retry,
        &run.ctx.cancel,
        |_, _, _| Stats::add(&run.stats.retries, 1),
        |_| async {
            Stats::add(&run.stats.requests, 1);
            let resp = run
                .http
                .head(&url)
                .send()
                .await
                .map_err(|e| transport_error(&url, &e))?;
            if resp.status().is_success() {
                Ok(true)
            } else {
                Err(status_error(&url, resp.status(), resp.headers()))
            }
        },
    )
    .await;
    match r {
        Ok(v) => Ok(v),
        Err(Error::MissingUpstream { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A downloaded body: in memory, or in a staging object of the store.
struct Body {
    sha256: String,
    size: u64,
    /// The response's ETag, unquoted.
    etag: Option<String>,
    /// The first bytes, for the zip magic check.
    head: Vec<u8>,
    data: BodyData,
}

enum BodyData {
    Memory(Bytes),
    Staged(String),
}

impl Body {
    fn is_zip(&self) -> bool {
        self.head.starts_with(ZIP_MAGIC)
    }

    /// Put the bytes at `path` (atomically) and release the staging object.
    async fn move_to(self, run: &Run<'_>, path: &str) -> Result<()> {
        match self.data {
            BodyData::Memory(b) => run.ctx.store.put(path, PutPayload::from_bytes(b)).await,
            BodyData::Staged(s) => run.ctx.store.rename(&s, path).await,
        }
    }

    async fn discard(self, run: &Run<'_>) {
        if let BodyData::Staged(s) = self.data {
            let _ = run.ctx.store.delete(&s).await;
        }
    }
}

/// Download the zip with retries, hashing while streaming.
async fn fetch_zip(run: &Run<'_>, file: &ArchiveFile) -> Result<Body> {
    let url = file.url(&run.spec.source);
    let on_retry = |n: u32, e: &Error, d: std::time::Duration| {
        Stats::add(&run.stats.retries, 1);
        tracing::warn!(url = %url, attempt = n, delay_ms = d.as_millis() as u64, error = %e, "retrying");
    };
    with_retry(&run.spec.retry, &run.ctx.cancel, on_retry, |_| {
        fetch_zip_once(run, file, &url)
    })
    .await
}

async fn fetch_zip_once(run: &Run<'_>, file: &ArchiveFile, url: &str) -> Result<Body> {
    Stats::add(&run.stats.requests, 1);
    let resp = tokio::select! {
        r = run.http.get(url).send() => r.map_err(|e| transport_error(url, &e))?,
        _ = run.ctx.cancel.cancelled() => return Err(Error::Interrupted),
    };
    if !resp.status().is_success() {
        return Err(match status_error(url, resp.status(), resp.headers()) {
            // The CHECKSUM was there: a 404 on its zip is the archive's CDN answering before the
            // object propagated, not a missing file (missing means both 404).
            Error::MissingUpstream { url } => Error::Transient {
                url,
                reason: "HTTP 404 on the zip while its CHECKSUM exists".into(),
                retry_after: None,
            },
            e => e,
        });
    }
    let declared = resp.content_length();
    let etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        });
    let mut stream = resp.bytes_stream();
    let mut hasher = Hasher::new();
    let mut head = Vec::with_capacity(8);
    let limit = run.spec.memory_limit as u64;
    // Size the buffer from Content-Length; a body declared too big goes straight to staging.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(256 * 1024).min(limit) as usize);
    let mut size: u64 = 0;
    let mut staged: Option<(String, object_store::WriteMultipart)> = None;
    if declared.is_some_and(|n| n > limit) {
        staged = Some(start_staging(run, file).await?);
    }
    loop {
        let chunk = tokio::select! {
            c = stream.next() => c,
            _ = run.ctx.cancel.cancelled() => {
                if let Some((_, w)) = staged.take() { let _ = w.abort().await; }
                return Err(Error::Interrupted);
            }
        };
        let Some(chunk) = chunk else { break };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                if let Some((_, w)) = staged.take() {
                    let _ = w.abort().await;
                }
                return Err(transport_error(url, &e));
            }
        };
        hasher.update(&chunk);
        if head.len() < 8 {
            let take = (8 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        size += chunk.len() as u64;
        match &mut staged {
            Some((_, w)) => {
                w.wait_for_capacity(2)
                    .await
                    .map_err(|e| Error::store(file.key(), e))?;
                w.put(chunk);
            }
            None => {
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > limit {
                    // Too big to hold: continue into a staging object of the store.
                    let (path, mut w) = start_staging(run, file).await?;
                    w.put(buf.split().freeze());
                    staged = Some((path, w));
                }
            }
        }
    }
    if let Some(n) = declared
        && n != size
    {
        if let Some((_, w)) = staged.take() {
            let _ = w.abort().await;
        }
        return Err(Error::Transient {
            url: url.to_string(),
            reason: format!("truncated body: {size} of {n} bytes"),
            retry_after: None,
        });
    }
    Stats::add(&run.stats.bytes, size);
    let data = match staged {
        None => BodyData::Memory(buf.freeze()),
        Some((path, w)) => {
            w.finish().await.map_err(|e| Error::store(&path, e))?;
            BodyData::Staged(path)
        }
    };
    Ok(Body {
        sha256: hasher.finish_hex(),
        size,
        etag,
        head,
        data,
    })
}

/// Open a multipart upload to the file's staging path.
async fn start_staging(
    run: &Run<'_>,
    file: &ArchiveFile,
) -> Result<(String, object_store::WriteMultipart)> {
    let path = file.staging_path(&run.ctx.run_id);
    let upload = run.ctx.store.upload(&path).await?;
    Ok((
        path,
        object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20),
    ))
}

/// The hash matched (or an erratum was accepted on the ETag's word): check it is a zip, put it
/// under its final name, record it with what the listing or the response said of it, and, for
/// a monthly file, fetch the daily files of the days it lacks.
async fn store_verified(
    run: &Run<'_>,
    unit: &PlannedUnit,
    body: Body,
    published: &str,
    erratum: Option<String>,
) -> Result<FetchOutcome> {
    let file = &unit.file;
    if !body.is_zip() {
        // The archive published these very bytes (the hash matches): not a transfer problem.
        let q = file.quarantine_path();
        body.move_to(run, &q).await?;
        return Err(Error::NotZip { path: file.key() });
    }
    let size = body.size;
    let sha = body.sha256.clone();
    // Kept to count a monthly file's days without reading it back (a staged one is read back).
    let held = match &body.data {
        BodyData::Memory(b) => Some(b.clone()),
        BodyData::Staged(_) => None,
    };
    let mut inputs = provenance(unit, body.etag.as_deref());
    let detail = erratum.map(|etag| {
        inputs.insert("verified_by".into(), "etag".into());
        inputs.insert("etag".into(), etag);
        format!(
            "checksum erratum: the CHECKSUM names {published}, the bytes hash to {sha}; their \
             MD5 is the bucket's ETag and the zip's CRCs pass"
        )
    });
    let raw = file.raw_path();
    body.move_to(run, &raw).await?;
    // A copy an earlier run quarantined is superseded by these verified bytes.
    let q = file.quarantine_path();
    let was_quarantined = run
        .quarantined
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&q);
    if was_quarantined {
        run.ctx.store.delete(&q).await?;
    }
    let mut e = verified_entry(run, file, published, size, sha, detail);
    e.inputs.extend(inputs);
    record(&unit.writer, e).await?;
    tracing::debug!(file = %file, bytes = size, "verified");
    crate::holes::repair_month(run, unit, held).await?;
    Ok(FetchOutcome::Verified { size })
}

/// The manifest entry of a verified file: the CHECKSUM it was checked against, and its zip
/// under `raw/`, `size` bytes that hash to `sha`.
fn verified_entry(
    run: &Run<'_>,
    file: &ArchiveFile,
    published: &str,
    size: u64,
    sha: String,
    detail: Option<String>,
) -> Entry {
    let out = Output {
        path: file.raw_path(),
        size,
        sha256: sha,
        rows: None,
        time_span: None,
    };
    entry(
        run,
        &file.key(),
        UnitStatus::Done,
        Some(published),
        Some(out),
        detail,
    )
}

/// The ETag and LastModified a verified file had, so that `--refresh` can compare them with the
/// listing instead of asking for its CHECKSUM: the listing's, else the response's ETag when it
/// is an MD5 (its Last-Modified is in another format than the listing's, so it is not kept).
fn provenance(unit: &PlannedUnit, response_etag: Option<&str>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    match &unit.listed {
        Some(l) => {
            m.insert("etag".into(), l.etag.clone());
            m.insert("last_modified".into(), l.last_modified.clone());
        }
        None => {
            if let Some(e) = response_etag.filter(|e| crate::listed::is_md5(e)) {
                m.insert("etag".into(), e.to_string());
            }
        }
    }
    m
}

/// The second opinion on a CHECKSUM that names other bytes than the archive serves: the body
/// is accepted when its MD5 equals the object's single-part ETag (the listing's, else the
/// response's) and every entry of the zip inflates to its CRC-32. Never with
/// `--strict-checksum`, and never on a multipart ETag (`<hex>-<parts>` is no MD5). Returns the
/// ETag that vouched.
async fn erratum(run: &Run<'_>, unit: &PlannedUnit, body: &Body) -> Result<Option<String>> {
    if run.spec.strict_checksum {
        return Ok(None);
    }
    let etag = match &unit.listed {
        Some(l) => l.md5().map(str::to_string),
        None => body.etag.clone().filter(|e| crate::listed::is_md5(e)),
    };
    let Some(etag) = etag else {
        return Ok(None);
    };
    let key = unit.file.key();
    let checked = match &body.data {
        BodyData::Memory(b) => {
            let b = b.clone();
            tokio::task::spawn_blocking(move || {
                let md5 = hex::encode(md5::Md5::digest(&b));
                (md5, zip_crcs_pass(std::io::Cursor::new(&b[..])))
            })
            .await
        }
        BodyData::Staged(path) => {
            // Too big to hold: a local copy, read twice.
            let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::Io {
                context: "creating a temp file for a zip's CRC check".into(),
                source: e,
            })?;
            run.ctx.store.download_to(path, tmp.path()).await?;
            tokio::task::spawn_blocking(move || {
                let md5 = file_md5(tmp.path()).unwrap_or_default();
                let crcs = std::fs::File::open(tmp.path()).is_ok_and(zip_crcs_pass);
                (md5, crcs)
            })
            .await
        }
    };
    let (md5, crcs) =
        checked.map_err(|e| Error::Internal(format!("{key}: checking the zip's CRCs: {e}")))?;
    if !md5.eq_ignore_ascii_case(&etag) {
        tracing::info!(file = %unit.file, etag = %etag, md5 = %md5, "the body's MD5 is not the ETag: no erratum");
        return Ok(None);
    }
    if !crcs {
        tracing::info!(file = %unit.file, "a zip entry fails its CRC-32: no erratum");
        return Ok(None);
    }
    Ok(Some(etag))
}

/// The MD5 hex of a local file, read in 1 MiB blocks.
fn file_md5(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Whether every entry of the zip reads to its end without a CRC-32 or format error.
fn zip_crcs_pass(r: impl std::io::Read + std::io::Seek) -> bool {
    let Ok(mut z) = zip::ZipArchive::new(r) else {
        return false;
    };
    (0..z.len()).all(|i| {
        z.by_index(i)
            .is_ok_and(|mut e| std::io::copy(&mut e, &mut std::io::sink()).is_ok())
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store holds the file but the manifest does not: hash the stored bytes.
async fn adopt(run: &Run<'_>, unit: &PlannedUnit, expected: &str) -> Result<Option<u64>> {
    let file = &unit.file;
    let raw = file.raw_path();
    let Some((sha, size, head)) = run.ctx.store.sha256_of(&raw).await? else {
        return Ok(None);
    };
    if sha != expected || !head.starts_with(ZIP_MAGIC) {
        tracing::info!(file = %file, "stored copy does not match the CHECKSUM: downloading again");
        return Ok(None);
    }
    let e = verified_entry(run, file, expected, size, expected.to_string(), None);
    record(&unit.writer, e).await?;
    Stats::add(&run.stats.adopted, 1);
    Ok(Some(size))
}
