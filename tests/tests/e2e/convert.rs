//! `convert` on hand-made staged CSVs: a malformed row fails its file with path, line and column
//! and leaves what was converted before untouched; rows the archive marks invalid are dropped and
//! counted; a monthly archive lands in daily partitions.

use crate::common;

use std::path::Path;

use chrono::Utc;
use common::{job, report, run, stderr, walk};
use shared::checksum::sha256_hex;
use shared::manifest::{Entry, ManifestKey, ManifestWriter, Output, UnitStatus};
use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Market, Period};

/// Put a CSV where `extract` would have, and record it in the extract manifest.
async fn stage(root: &Path, file: &ArchiveFile, csv: &str) {
    let store = shared::Store::open(root.to_str().unwrap()).unwrap();
    store
        .put(&file.csv_path(), csv.as_bytes().to_vec())
        .await
        .unwrap();
    let key = ManifestKey::new(
        shared::job::JobName::EXTRACT,
        file.dataset.scope(),
        file.symbol.clone(),
    );
    let (w, _) = ManifestWriter::open(&store, &key).await.unwrap();
    w.record(Entry {
        unit: file.key(),
        status: UnitStatus::Done,
        inputs: [("zip".to_string(), "test".to_string())].into(),
        job_version: "1".into(),
        params_hash: String::new(),
        outputs: vec![Output {
            path: file.csv_path(),
            size: csv.len() as u64,
            sha256: sha256_hex(csv.as_bytes()),
            rows: None,
            time_span: None,
        }],
        recorded_at: Utc::now(),
        run_id: "test".into(),
        detail: None,
        duplicate_days: Default::default(),
        rest: None,
    })
    .await
    .unwrap();
}

fn convert(root: &Path) -> std::process::Output {
    run(job("convert").args([
        "--store",
        root.to_str().unwrap(),
        "--market",
        "spot",
        "--data-type",
        "aggTrades",
        "--symbols",
        "BTCUSDT",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-31",
    ]))
}

/// Spot aggTrades of January 2024 (ms, no header, 8 columns), two rows a day, the first row of
/// day 3 marked invalid by the archive (price 0, ids -1).
fn month_csv() -> String {
    let mut s = String::new();
    let mut id = 1000;
    for day in 1..=31u32 {
        let t0 = 1_704_067_200_000i64 + (day as i64 - 1) * 86_400_000;
        for k in 0..2 {
            if day == 3 && k == 0 {
                s.push_str(&format!(
                    "{id},0.00000000,0.00000000,-1,-1,{},True,True\n",
                    t0 + 5
                ));
            } else {
                s.push_str(&format!(
                    "{id},42000.10000000,0.50000000,{id},{id},{},False,True\n",
                    t0 + 1000 * k
                ));
            }
            id += 1;
        }
    }
    s
}

fn file() -> ArchiveFile {
    let ds = Dataset::new(Market::Spot, DataType::AggTrades, None).unwrap();
    ArchiveFile::new(
        ds,
        "BTCUSDT",
        FileDate::Month {
            year: 2024,
            month: 1,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_file_splits_into_days_and_drops_invalid_rows() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), &file(), &month_csv()).await;
    let out = convert(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["details"]["rows"], 61, "{r}");
    assert_eq!(r["details"]["dropped_invalid_rows"], 1);
    assert_eq!(r["details"]["partitions_written"], 31);
    let ds = file().dataset;
    for day in 1..=31u32 {
        let date = chrono::NaiveDate::from_ymd_opt(2024, 1, day).unwrap();
        let p = dir
            .path()
            .join(ds.parquet_partition("BTCUSDT", date, Period::Monthly));
        assert!(p.exists(), "{}", p.display());
    }
    // A rerun does nothing.
    let out = convert(dir.path());
    assert_eq!(report(&out)["counts"]["done"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_row_fails_the_file_and_touches_nothing_converted_before() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), &file(), &month_csv()).await;
    assert_eq!(convert(dir.path()).status.code(), Some(0));
    let ds = file().dataset;
    let part = |day| {
        dir.path().join(ds.parquet_partition(
            "BTCUSDT",
            chrono::NaiveDate::from_ymd_opt(2024, 1, day).unwrap(),
            Period::Monthly,
        ))
    };
    let before: Vec<Vec<u8>> = (1..=31).map(|d| std::fs::read(part(d)).unwrap()).collect();

    // The archive republishes the month with a broken price on line 57 (day 29).
    let mut lines: Vec<String> = month_csv().lines().map(str::to_string).collect();
    lines[56] = lines[56].replace("42000.10000000", "42000.1x");
    stage(dir.path(), &file(), &(lines.join("\n") + "\n")).await;
    let out = convert(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    let reason = r["failures"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{}:57", file().csv_path())) && reason.contains("price"),
        "{reason}"
    );
    assert!(stderr(&out).contains(":57"), "{}", stderr(&out));
    // Every partition is byte-identical to the good conversion; nothing staged is left over.
    let after: Vec<Vec<u8>> = (1..=31).map(|d| std::fs::read(part(d)).unwrap()).collect();
    assert!(
        before == after,
        "a failed conversion changed earlier outputs"
    );
    let staging = dir.path().join("_staging");
    let leftovers = walk(&staging);
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// An empty file and a header-only one become empty days, each named by a warning in the report
/// (issue: a 0-row day appeared without a word).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_header_only_files_convert_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::new(Market::Spot, DataType::AggTrades, None).unwrap();
    let empty = ArchiveFile::new(ds, "BTCUSDT", FileDate::Day("2024-01-02".parse().unwrap()));
    let header = ArchiveFile::new(ds, "BTCUSDT", FileDate::Day("2024-01-03".parse().unwrap()));
    stage(dir.path(), &empty, "").await;
    stage(
        dir.path(),
        &header,
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n",
    )
    .await;
    let out = convert(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    let warnings = common::warnings(&r);
    for f in [&empty, &header] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&f.key()) && w.contains("holds no row")),
            "{}: {warnings:?}",
            f.key()
        );
    }
    assert_eq!(r["details"]["empty_files"].as_array().unwrap().len(), 2);
}
