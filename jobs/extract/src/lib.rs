//! The `extract` job: zip → CSV. Its units are the archive files the `download` manifest has as
//! done (per dataset and symbol, within the date range and this shard); each is skipped when the
//! `extract` manifest has it done from the same zip (sha256) and its CSV is in place, otherwise
//! its single CSV entry is checked (entry count, safe name, zip-bomb limits, CRC) and streamed into
//! `csv/<archive path>.csv` atomically. `--prune-converted` then deletes the CSVs `convert` has
//! recorded as consumed. The zip handling itself is `shared::unzip`; planning is [`plan`].

#![forbid(unsafe_code)]

mod plan;
mod prune;
mod unit;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::Entry;
use shared::report::RunReport;
use shared::{Context, Error, Result};

pub use plan::{Action, Unit};
pub use shared::unzip::{CsvStats, Limits};

pub const JOB: JobName = JobName::EXTRACT;
/// Bump when the meaning of an extracted CSV changes, so manifests recompute.
pub const JOB_VERSION: &str = "1";
/// The limits do not change what a successful extraction writes, so no parameter enters the
/// fingerprint.
pub const PARAMS_HASH: &str = "";
/// The upstream job whose manifest lists the zips.
pub const DOWNLOAD_JOB: JobName = JobName::DOWNLOAD;
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

/// What a unit task sees of the run.
pub(crate) struct Run<'a> {
    pub spec: &'a Spec,
    pub ctx: &'a Context,
}

impl Run<'_> {
    /// The run's temp folder (made under `--tmp-dir` by the harness), or `--tmp-dir` itself
    /// when no run made one (library tests).
    fn tmp_dir(&self) -> PathBuf {
        shared::hygiene::temp_dir_or(self.spec.tmp_dir.clone().unwrap_or_else(std::env::temp_dir))
    }
}

/// The job: its spec, and every planned unit by (dataset, symbol), kept for `--prune-converted`
/// once the units have run.
#[derive(Serialize)]
pub struct Extract {
    #[serde(flatten)]
    spec: Spec,
    #[serde(skip)]
    groups: Mutex<Vec<Vec<Unit>>>,
}

impl Extract {
    pub fn new(spec: Spec) -> Extract {
        Extract {
            spec,
            groups: Mutex::new(Vec::new()),
        }
    }

    fn groups(&self) -> Vec<Vec<Unit>> {
        self.groups.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Totals {
    csv_bytes: u64,
    zip_bytes: u64,
    rows: u64,
}

impl Job for Extract {
    const NAME: JobName = JobName::EXTRACT;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "files";
    type Unit = Unit;
    type Done = (CsvStats, u64);
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.spec.common
    }

    fn temp_base(&self) -> Option<PathBuf> {
        self.spec.tmp_dir.clone()
    }

    fn params_hash(&self) -> String {
        PARAMS_HASH.to_string()
    }

    /// Every (dataset, symbol) from the download manifest against the extract manifest.
    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<Unit>> {
        let store = &p.ctx.store;
        let mut groups: Vec<Vec<Unit>> = Vec::new();
        for ds in &self.spec.common.datasets {
            let scope = ds.scope();
            let symbols = p.symbols(DOWNLOAD_JOB, &scope).await?;
            p.load_ahead(&[DOWNLOAD_JOB], &scope, &symbols);
            for sym in symbols {
                let download = p.upstream(DOWNLOAD_JOB, &scope, &sym).await?;
                let files = plan::selected(&download, ds, &sym, self.spec.common.range);
                if files.is_empty() {
                    continue;
                }
                let (writer, extract) = p.manifest(&scope, &sym).await?;
                let names: Vec<_> = files.iter().map(|(f, _)| f.clone()).collect();
                let csvs = plan::stored_csvs(store, &names).await?;
                groups.push(plan::plan_units(
                    files,
                    &extract,
                    &csvs,
                    self.spec.common.force,
                    &writer,
                ));
            }
        }
        let mut units = Vec::new();
        for u in groups.iter().flatten() {
            match u.action {
                Action::Skip(why) => p.skip(format!("{why:<10} {}", u.file.key())),
                Action::Extract | Action::Invalid(_) => units.push(u.clone()),
            }
        }
        if let Ok(mut g) = self.groups.lock() {
            *g = groups;
        }
        Ok(units)
    }

    fn unit_key(u: &Unit) -> String {
        u.file.key()
    }

    fn dry_run_line(&self, u: &Unit) -> String {
        format!("{:<10} {}", u.action.label(), u.file.key())
    }

    async fn dry_run(&self, ctx: &Context, _units: &[Unit]) -> Result<serde_json::Value> {
        let mut prunable = 0;
        if self.spec.prune_converted {
            let run = Run {
                spec: &self.spec,
                ctx,
            };
            for g in &self.groups() {
                for c in prune::candidates(&run, g).await? {
                    println!("{:<10} {}", "prune", c.csv);
                    prunable += 1;
                }
            }
        }
        Ok(serde_json::json!({ "prunable": prunable }))
    }

    async fn execute(
        job: Arc<Self>,
        ctx: Context,
        stamp: Stamp,
        u: Unit,
    ) -> Result<(CsvStats, u64)> {
        if let Action::Invalid(reason) = &u.action {
            return Err(Error::bad_data(u.file.key(), reason.clone()));
        }
        let run = Run {
            spec: &job.spec,
            ctx: &ctx,
        };
        unit::process(&run, &stamp, &u)
            .await
            .map(|s| (s, u.zip_size))
    }

    fn absorb(&self, t: &mut Totals, _key: &str, (s, zip): (CsvStats, u64)) -> Finished<Unit> {
        t.csv_bytes += s.size;
        t.zip_bytes += zip;
        t.rows += s.rows;
        Finished::Done
    }

    fn bytes(&self, t: &Totals) -> u64 {
        t.csv_bytes
    }

    /// Prune the CSVs that convert has consumed.
    async fn finish(&self, ctx: &Context, t: Totals, end: &mut End) -> Result<serde_json::Value> {
        let mut pruned = 0u64;
        let mut pruned_bytes = 0u64;
        if self.spec.prune_converted && !ctx.cancel.is_cancelled() {
            let run = Run {
                spec: &self.spec,
                ctx,
            };
            for g in &self.groups() {
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
        let secs = end.seconds;
        Ok(serde_json::json!({
            "pruned": pruned,
            "pruned_bytes": pruned_bytes,
            "zip_bytes": t.zip_bytes,
            "csv_rows": t.rows,
            "seconds": secs,
            "files_per_sec": end.tally.counts.done as f64 / secs,
            "csv_mb_per_sec": t.csv_bytes as f64 / 1e6 / secs,
        }))
    }
}

/// Run the job over `ctx`'s store.
pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    shared::job::run(Extract::new(spec), ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::cli::LogFormat;
    use shared::manifest::{Manifest, ManifestKey, ManifestWriter};
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
                    select: Default::default(),
                    range: DateRange::new(good.date.first_day(), swapped.date.first_day()).unwrap(),
                    shard: (0, 1),
                    concurrency: 2,
                    force: false,
                    dry_run: false,
                    log_format: LogFormat::Json,
                    run_id: None,
                    lease: Default::default(),
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
