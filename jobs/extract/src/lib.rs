//! The `extract` job: zip → CSV. Its units are the archive files the `download` manifest has as
//! done (per dataset and symbol, within the date range and this shard); each is skipped when the
//! `extract` manifest has it done from the same zip (sha256) and its CSV is in place, otherwise
//! its single CSV entry is checked (entry count, safe name, zip-bomb limits, CRC) and streamed into
//! `csv/<archive path>.csv` atomically. `--prune-converted` then deletes the CSVs `convert` has
//! recorded as consumed. The zip handling itself is [`unzip`]; planning is [`plan`].

#![forbid(unsafe_code)]

mod plan;
mod prune;
mod unit;
pub mod unzip;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use shared::cli::CommonSpec;
use shared::exec::{self, Tally};
use shared::manifest::{Entry, Manifest, ManifestKey, ManifestWriter, select_symbols};
use shared::report::{RunHeader, RunReport};
use shared::{Context, Result};

pub use plan::{Action, Unit};
pub use unzip::{CsvStats, Limits};

pub const JOB: &str = "extract";
/// Bump when the meaning of an extracted CSV changes, so manifests recompute.
pub const JOB_VERSION: &str = "1";
/// The limits do not change what a successful extraction writes, so no parameter enters the
/// fingerprint.
pub const PARAMS_HASH: &str = "";
/// The upstream job whose manifest lists the zips.
pub const DOWNLOAD_JOB: &str = "download";
/// How a pruned unit's `detail` starts.
const PRUNED_PREFIX: &str = "pruned:";

/// Whether an extract entry records that its CSV was deleted after `convert` took it.
pub fn is_pruned(e: &Entry) -> bool {
    e.detail
        .as_deref()
        .is_some_and(|d| d.starts_with(PRUNED_PREFIX))
}

/// The `detail` of a pruned unit.
pub fn pruned_detail(csv_sha256: &str, run_id: &str) -> String {
    format!(
        "{PRUNED_PREFIX} CSV (sha256 {csv_sha256}) deleted by run {run_id} after convert recorded it"
    )
}

/// Everything `extract` needs besides the common arguments.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    pub limits: Limits,
    /// Delete staging CSVs that `convert` has recorded as consumed.
    pub prune_converted: bool,
    /// Where temp files go (inflated CSVs before upload; zips fetched from a remote store).
    /// `None`: the system temp folder.
    pub tmp_dir: Option<PathBuf>,
}

/// Shared state of one run, handed to every unit task.
pub(crate) struct Run {
    pub spec: Spec,
    pub ctx: Context,
}

impl Run {
    fn tmp_dir(&self) -> PathBuf {
        self.spec.tmp_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// Run the job. Errors returned here end the run (configuration, store, manifests); per-unit
/// failures are in the report.
pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    let t0 = Instant::now();
    let header = RunHeader {
        job: JOB,
        job_version: JOB_VERSION,
        store: spec.common.store.clone(),
        started_at: ctx.clock.now(),
        params: serde_json::to_value(&spec).unwrap_or_default(),
    };
    let store = &ctx.store;
    let mut tally = Tally::default();

    // 1. Symbols per dataset (those with a download manifest for `all`), then this shard's.
    let mut targets = Vec::new();
    for ds in &spec.common.datasets {
        let symbols = select_symbols(
            store,
            DOWNLOAD_JOB,
            &ds.scope(),
            &spec.common.symbols,
            &mut tally,
        )
        .await?;
        for sym in spec.common.shard_of(&symbols) {
            targets.push((*ds, sym));
        }
    }

    // 2. Plan every (dataset, symbol) from the download manifest against the extract manifest.
    let mut groups: Vec<Vec<Unit>> = Vec::new();
    for (ds, sym) in &targets {
        let download =
            Manifest::load(store, &ManifestKey::new(DOWNLOAD_JOB, ds.scope(), sym)).await?;
        let files = plan::selected(&download, ds, sym, spec.common.range);
        if files.is_empty() {
            continue;
        }
        let key = ManifestKey::new(JOB, ds.scope(), sym.clone());
        let (writer, extract) = ManifestWriter::open(store, &key).await?;
        let names: Vec<_> = files.iter().map(|(f, _)| f.clone()).collect();
        let csvs = plan::stored_csvs(store, &names).await?;
        let writer = Arc::new(writer);
        groups.push(plan::plan_units(
            files,
            &extract,
            &csvs,
            spec.common.force,
            &writer,
        ));
    }
    let run = Arc::new(Run {
        spec,
        ctx: ctx.clone(),
    });
    let units: Vec<&Unit> = groups.iter().flatten().collect();

    if run.spec.common.dry_run {
        for u in &units {
            println!("{:<10} {}", u.action.label(), u.file.key());
        }
        let mut prunable = 0;
        if run.spec.prune_converted {
            for g in &groups {
                for c in prune::candidates(&run, g).await? {
                    println!("{:<10} {}", "prune", c.csv);
                    prunable += 1;
                }
            }
        }
        tally.counts.skipped = units
            .iter()
            .filter(|u| matches!(u.action, Action::Skip(_)))
            .count() as u64;
        let not_run = units.len() as u64 - tally.counts.skipped;
        let details = serde_json::json!({ "prunable": prunable });
        return Ok(header.dry_run(ctx, tally, not_run, details));
    }

    let todo = units.iter().filter(|u| u.action == Action::Extract).count();
    tracing::info!(
        units = units.len(),
        to_extract = todo,
        symbols = targets.len(),
        concurrency = run.spec.common.concurrency,
        "plan ready"
    );

    // 3. Execute with bounded concurrency.
    let mut todo_units = Vec::new();
    for u in units {
        match &u.action {
            Action::Skip(_) => tally.skip(),
            Action::Invalid(reason) => tally.fail(u.file.key(), reason.clone()),
            Action::Extract => todo_units.push(u.clone()),
        }
    }
    let (mut csv_bytes, mut zip_bytes, mut rows) = (0u64, 0u64, 0u64);
    let work = {
        let run = run.clone();
        move |unit: Unit| {
            let run = run.clone();
            async move {
                let r = unit::process(&run, &unit).await.map(|s| (s, unit.zip_size));
                (unit.file.key(), r)
            }
        }
    };
    let not_run = exec::for_each_bounded(
        ("extract", "files"),
        todo_units,
        run.spec.common.concurrency,
        &ctx.cancel,
        work,
        |key, r| {
            if let Some((s, zip_size)) = tally.record(&key, r) {
                csv_bytes += s.size;
                zip_bytes += zip_size;
                rows += s.rows;
            }
        },
    )
    .await?;
    tally.counts.not_run += not_run;

    // 4. Prune CSVs that convert has consumed.
    let mut pruned = 0u64;
    let mut pruned_bytes = 0u64;
    if run.spec.prune_converted && !ctx.cancel.is_cancelled() {
        for g in &groups {
            for c in prune::candidates(&run, g).await? {
                let Some(u) = g.iter().find(|u| u.file.csv_path() == c.csv) else {
                    continue;
                };
                let size = c.entry.outputs.first().map(|o| o.size).unwrap_or(0);
                prune::prune(&run, u, c).await?;
                pruned += 1;
                pruned_bytes += size;
            }
        }
        tracing::info!(pruned, bytes = pruned_bytes, "pruned converted CSVs");
    }

    let outcome = tally.outcome(ctx.cancel.is_cancelled());
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let details = serde_json::json!({
        "pruned": pruned,
        "pruned_bytes": pruned_bytes,
        "zip_bytes": zip_bytes,
        "csv_rows": rows,
        "seconds": secs,
        "files_per_sec": tally.counts.done as f64 / secs,
        "csv_mb_per_sec": csv_bytes as f64 / 1e6 / secs,
    });
    Ok(header.report(ctx, outcome, tally, csv_bytes, details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::cli::LogFormat;
    use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Interval, Market};
    use shared::plan::DateRange;
    use shared::{Clock, Store};
    use std::io::Write;

    fn zip_of(name: &str, body: &[u8]) -> Vec<u8> {
        let mut w = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(name, ::zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
        w.finish().unwrap().into_inner()
    }

    /// A download entry as `download` writes it (built from JSON so new optional fields of
    /// `Output` do not break this test).
    fn download_entry(file: &ArchiveFile, size: usize, sha: &str) -> Entry {
        serde_json::from_value(serde_json::json!({
            "unit": file.key(), "status": "done", "inputs": {"checksum": sha},
            "job_version": "1", "params_hash": "", "recorded_at": "2025-01-01T00:00:00Z",
            "run_id": "dl", "outputs": [{"path": file.raw_path(), "size": size, "sha256": sha}],
        }))
        .unwrap()
    }

    /// Local folder (zip read in place) and memory (zip streamed to a temp file) alike: the CSV
    /// lands under its final name, and a zip that is not the one `download` recorded fails.
    #[tokio::test]
    async fn local_and_remote_stores_extract_and_check_the_zip_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        for url in [dir.path().to_str().unwrap(), "memory://"] {
            let store = Store::open(url).unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let ds = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap();
            let day = |d| {
                let date = chrono::NaiveDate::from_ymd_opt(2024, 12, d).unwrap();
                ArchiveFile::new(ds, "BTCUSDT", FileDate::Day(date))
            };
            let (good, swapped) = (day(1), day(2));
            let csv = b"a,b\n1,2\n".to_vec();
            let zip = zip_of("BTCUSDT-1m-2024-12-01.csv", &csv);
            let key = ManifestKey::new(DOWNLOAD_JOB, ds.scope(), "BTCUSDT");
            let (w, _) = ManifestWriter::open(&store, &key).await.unwrap();
            for f in [&good, &swapped] {
                store.put(&f.raw_path(), zip.clone()).await.unwrap();
            }
            let sha = shared::checksum::sha256_hex(&zip);
            w.record(download_entry(&good, zip.len(), &sha))
                .await
                .unwrap();
            w.record(download_entry(&swapped, zip.len(), &"0".repeat(64)))
                .await
                .unwrap();
            let t = chrono::DateTime::from_timestamp(1_735_000_000, 0).unwrap();
            let ctx = Context::new(store.clone(), Some("r1".into()), Clock::Fixed(t));
            let spec = Spec {
                common: CommonSpec {
                    store: url.into(),
                    market: Market::Um,
                    datasets: vec![ds],
                    symbols: shared::cli::SymbolSelection::All,
                    range: DateRange::new(good.date.first_day(), swapped.date.first_day()).unwrap(),
                    shard: (0, 1),
                    concurrency: 2,
                    force: false,
                    dry_run: false,
                    log_format: LogFormat::Json,
                    run_id: None,
                },
                limits: Limits::default(),
                prune_converted: false,
                tmp_dir: Some(tmp.path().to_path_buf()),
            };
            let r = run(spec, &ctx).await.unwrap();
            assert_eq!((r.counts.done, r.counts.failed), (1, 1), "{url}: {r:?}");
            assert_eq!(r.failures[0].unit, swapped.key());
            let reason = &r.failures[0].reason;
            assert!(
                reason.contains(&swapped.raw_path()) && reason.contains("checksum mismatch"),
                "{url}: {reason}"
            );
            let got = store.get_opt(&good.csv_path()).await.unwrap().unwrap();
            assert_eq!(got.as_ref(), csv.as_slice(), "{url}");
            assert!(store.get_opt(&swapped.csv_path()).await.unwrap().is_none());
            assert_eq!(
                std::fs::read_dir(tmp.path()).unwrap().count(),
                0,
                "{url}: temp files left"
            );
            let m = Manifest::load(&store, &ManifestKey::new(JOB, ds.scope(), "BTCUSDT"))
                .await
                .unwrap();
            let e = m.get(&good.key()).unwrap();
            assert_eq!(e.inputs["zip"], sha);
            assert_eq!(e.outputs[0].rows, Some(2));
        }
    }
}
