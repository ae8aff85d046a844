//! Planning, per (dataset, symbol): the archive files the `download` manifest has as done,
//! restricted to the run's date range, each paired with its input fingerprint (the zip's sha256)
//! and what this run does with it — extract, or skip because the `extract` manifest has it done
//! from the same zip and its CSV is in place (or was pruned after `convert` took it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use shared::Result;
use shared::manifest::{Entry, Manifest, ManifestWriter, UnitStatus};
use shared::paths::{ArchiveFile, Dataset, FileDate};
use shared::plan::DateRange;
use shared::store::Store;

use crate::{JOB_VERSION, PARAMS_HASH, is_pruned};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Extract,
    /// Nothing to do; the reason is for the dry-run listing.
    Skip(&'static str),
    /// The upstream record is unusable (no output); reported as a failure without running.
    Invalid(String),
}

impl Action {
    pub fn label(&self) -> &str {
        match self {
            Action::Extract => "extract",
            Action::Skip(why) => why,
            Action::Invalid(_) => "invalid",
        }
    }
}

/// One archive file and what to do with it.
#[derive(Clone)]
pub struct Unit {
    pub file: ArchiveFile,
    /// `{"zip": <sha256 of the raw zip>}` from the download manifest.
    pub inputs: BTreeMap<String, String>,
    /// The raw zip's size as downloaded.
    pub zip_size: u64,
    pub action: Action,
    pub writer: Arc<ManifestWriter>,
}

impl Unit {
    pub fn zip_sha256(&self) -> &str {
        self.inputs.get("zip").map(String::as_str).unwrap_or("")
    }
}

/// Whether an archive file covers any day of the range.
pub fn overlaps(date: FileDate, range: DateRange) -> bool {
    date.first_day() <= range.end && date.last_day() >= range.start
}

/// The archive files of one (dataset, symbol) that `download` has verified, in the range.
/// Returns each file with its download entry.
pub fn selected<'a>(
    download: &'a Manifest,
    ds: &Dataset,
    symbol: &str,
    range: DateRange,
) -> Vec<(ArchiveFile, &'a Entry)> {
    let mut out: Vec<_> = download
        .entries()
        .filter(|e| e.status == UnitStatus::Done)
        .filter_map(|e| match ArchiveFile::parse_key(&e.unit) {
            Ok(f) => Some((f, e)),
            Err(err) => {
                tracing::warn!(unit = %e.unit, error = %err, "download manifest entry is not an archive key; ignored");
                None
            }
        })
        .filter(|(f, _)| f.dataset == *ds && f.symbol == symbol && overlaps(f.date, range))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The folder of a store path (without the trailing `/`).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// Files of a folder asked for one by one rather than by listing the folder: a listing reads
/// every file of it (a year of daily CSVs is 365; a local listing stats each three times), so a
/// run over a few days — the daily incremental — asks for just those.
const ASK_EACH_AT_MOST: usize = 16;

/// Sizes of the staging CSVs present for these files: one listing per folder, or, for a folder
/// with few of them, a request per file.
pub async fn stored_csvs(store: &Store, files: &[ArchiveFile]) -> Result<HashMap<String, u64>> {
    let mut folders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let csv = f.csv_path();
        folders
            .entry(parent(&csv).to_string())
            .or_default()
            .push(csv);
    }
    let mut out = HashMap::new();
    for (folder, csvs) in folders {
        if csvs.len() <= ASK_EACH_AT_MOST {
            for csv in csvs.into_iter().collect::<HashSet<_>>() {
                if let Some(size) = store.size_opt(&csv).await? {
                    out.insert(csv, size);
                }
            }
        } else {
            out.extend(store.list(&format!("{folder}/")).await?);
        }
    }
    Ok(out)
}

/// Plan the units of one (dataset, symbol).
pub fn plan_units(
    files: Vec<(ArchiveFile, &Entry)>,
    extract: &Manifest,
    csvs: &HashMap<String, u64>,
    force: bool,
    writer: &Arc<ManifestWriter>,
) -> Vec<Unit> {
    files
        .into_iter()
        .map(|(file, dl)| {
            let raw = file.raw_path();
            let out = dl
                .outputs
                .iter()
                .find(|o| o.path == raw)
                .or(dl.outputs.first());
            let (inputs, zip_size, action) = match out {
                None => (
                    BTreeMap::new(),
                    0,
                    Action::Invalid(format!(
                        "the download manifest records {} as done but names no output",
                        file.key()
                    )),
                ),
                Some(o) => {
                    let inputs: BTreeMap<String, String> =
                        [("zip".to_string(), o.sha256.clone())].into();
                    let action = decide(&file, &inputs, extract.get(&file.key()), csvs, force);
                    (inputs, o.size, action)
                }
            };
            Unit {
                file,
                inputs,
                zip_size,
                action,
                writer: writer.clone(),
            }
        })
        .collect()
}

fn decide(
    file: &ArchiveFile,
    inputs: &BTreeMap<String, String>,
    recorded: Option<&Entry>,
    csvs: &HashMap<String, u64>,
    force: bool,
) -> Action {
    let Some(e) = recorded else {
        return Action::Extract;
    };
    if force || !e.is_done_with(inputs, JOB_VERSION, PARAMS_HASH) {
        return Action::Extract;
    }
    if is_pruned(e) {
        return Action::Skip("pruned");
    }
    let csv = file.csv_path();
    let recorded_size = e.outputs.iter().find(|o| o.path == csv).map(|o| o.size);
    match (recorded_size, csvs.get(&csv)) {
        (Some(want), Some(have)) if want == *have => Action::Skip("up-to-date"),
        _ => Action::Extract,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use shared::manifest::Output;
    use shared::paths::{DataType, Interval, Market};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// A few files of a folder are asked for one by one, many by one listing; either way only
    /// the CSVs present are sized.
    #[tokio::test]
    async fn stored_csvs_ask_a_few_files_and_list_many() {
        let store = Store::open("memory://").unwrap();
        let day = |i: u32| {
            ArchiveFile::parse_key(&format!(
                "data/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-01-{i:02}.zip"
            ))
            .unwrap()
        };
        for i in 1..=30 {
            if i != 2 {
                store
                    .put(&day(i).csv_path(), vec![0u8; i as usize])
                    .await
                    .unwrap();
            }
        }
        let few = stored_csvs(&store, &[day(1), day(2), day(3)])
            .await
            .unwrap();
        assert_eq!(few.len(), 2);
        assert_eq!(few.get(&day(3).csv_path()), Some(&3));
        assert!(!few.contains_key(&day(2).csv_path()));
        let many: Vec<ArchiveFile> = (1..=20).map(day).collect();
        let listed = stored_csvs(&store, &many).await.unwrap();
        assert_eq!(listed.len(), 29, "the listing sizes the whole folder");
        assert_eq!(listed.get(&day(20).csv_path()), Some(&20));
        assert!(!listed.contains_key(&day(2).csv_path()));
    }

    #[test]
    fn a_file_overlapping_the_range_counts() {
        let r = DateRange::new(d("2024-12-30"), d("2025-01-02")).unwrap();
        assert!(overlaps(FileDate::Day(d("2024-12-30")), r));
        assert!(overlaps(FileDate::Day(d("2025-01-02")), r));
        assert!(!overlaps(FileDate::Day(d("2024-12-29")), r));
        assert!(overlaps(
            FileDate::Month {
                year: 2024,
                month: 12
            },
            r
        ));
        assert!(overlaps(
            FileDate::Month {
                year: 2025,
                month: 1
            },
            r
        ));
        assert!(!overlaps(
            FileDate::Month {
                year: 2025,
                month: 2
            },
            r
        ));
    }

    #[test]
    fn skip_needs_same_zip_and_the_csv_in_place_or_pruned() {
        let ds = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap();
        let file = ArchiveFile::new(ds, "BTCUSDT", FileDate::Day(d("2024-12-01")));
        let inputs: BTreeMap<String, String> = [("zip".to_string(), "aa".to_string())].into();
        let mut e = Entry {
            unit: file.key(),
            status: UnitStatus::Done,
            inputs: inputs.clone(),
            job_version: JOB_VERSION.into(),
            params_hash: PARAMS_HASH.into(),
            outputs: vec![Output {
                path: file.csv_path(),
                size: 10,
                sha256: "cc".into(),
                rows: Some(1),
                time_span: None,
            }],
            recorded_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            run_id: "r".into(),
            detail: None,
            duplicate_days: Default::default(),
            rest: None,
        };
        let present: HashMap<String, u64> = [(file.csv_path(), 10)].into();
        let resized: HashMap<String, u64> = [(file.csv_path(), 9)].into();
        let none = HashMap::new();
        assert_eq!(
            decide(&file, &inputs, None, &present, false),
            Action::Extract
        );
        assert_eq!(
            decide(&file, &inputs, Some(&e), &present, false),
            Action::Skip("up-to-date")
        );
        assert_eq!(
            decide(&file, &inputs, Some(&e), &present, true),
            Action::Extract
        );
        assert_eq!(
            decide(&file, &inputs, Some(&e), &resized, false),
            Action::Extract
        );
        assert_eq!(
            decide(&file, &inputs, Some(&e), &none, false),
            Action::Extract
        );
        let other: BTreeMap<String, String> = [("zip".to_string(), "bb".to_string())].into();
        assert_eq!(
            decide(&file, &other, Some(&e), &present, false),
            Action::Extract
        );
        e.detail = Some(crate::pruned_detail("cc", "r2"));
        assert_eq!(
            decide(&file, &inputs, Some(&e), &none, false),
            Action::Skip("pruned")
        );
        assert_eq!(
            decide(&file, &other, Some(&e), &none, false),
            Action::Extract
        );
        e.detail = None;
        e.status = UnitStatus::Failed;
        assert_eq!(
            decide(&file, &inputs, Some(&e), &present, false),
            Action::Extract
        );
    }
}
