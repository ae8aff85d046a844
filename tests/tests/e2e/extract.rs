//! End-to-end tests of the `extract` binary: download → extract against the synthetic archive
//! (CSV bytes, manifests, report counts), idempotence, re-extraction of exactly a republished
//! file, hand-made bad zips (several entries, escaping and absolute names, zip bombs, a CRC error)
//! failing by name while good units extract, and `--prune-converted`.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;

use archive_sim::{SimConfig, SimHandle, SimServer};
use chrono::NaiveDate;
use common::{job, report, stderr, walk};
use shared::Store;
use shared::checksum::sha256_hex;
use shared::manifest::{Entry, Manifest, ManifestKey, ManifestWriter, Output, UnitStatus};
use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Interval, Market};

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn klines_um() -> Dataset {
    Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap()
}

fn day_file(day: &str) -> ArchiveFile {
    ArchiveFile::new(klines_um(), "BTCUSDT", FileDate::Day(d(day)))
}

fn download(sim: &SimHandle, store: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = job("download");
    c.args(["--store", store, "--source", &sim.base_url()])
        .args(["--listing-url", &sim.base_url(), "--retry-base-ms", "20"])
        .args(args);
    tokio::process::Command::from(c)
}

fn extract(store: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = job("extract");
    c.args(["--store", store, "--concurrency", "4"]).args(args);
    tokio::process::Command::from(c)
}

async fn output(mut c: tokio::process::Command) -> std::process::Output {
    c.output().await.expect("job runs")
}

fn lines(b: &[u8]) -> u64 {
    let n = b.iter().filter(|&&c| c == b'\n').count() as u64;
    n + u64::from(b.last().is_some_and(|&c| c != b'\n'))
}

/// Every file under `csv/`, as store paths.
fn csvs(root: &Path) -> Vec<String> {
    walk(&root.join("csv"))
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_str().unwrap().to_string())
        .collect()
}

const RANGE: [&str; 4] = ["--start", "2024-12-30", "--end", "2025-01-31"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extracts_what_download_verified_then_only_what_changed() {
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.to_str().unwrap();
    let sel = [
        "--symbols",
        "BTCUSDT",
        "--data-type",
        "klines,fundingRate,metrics",
    ];
    let out = output(download(&sim, store, &[&sel[..], &RANGE[..]].concat())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // klines: two December days + the January monthly; funding: two monthly; metrics: 33 days.
    let out = output(extract(store, &[&sel[..], &RANGE[..]].concat())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["counts"]["planned"], 38, "{r}");
    assert_eq!(r["counts"]["done"], 38, "{r}");
    assert_eq!(r["counts"]["failed"], 0, "{r}");

    // Every CSV equals the generator's bytes; the manifest links it to its zip.
    let store_h = Store::open(store).unwrap();
    let (mut total, mut rows, mut seen) = (0u64, 0u64, 0);
    for dt in [DataType::Klines, DataType::FundingRate, DataType::Metrics] {
        let ds =
            Dataset::new(Market::Um, dt, dt.is_kline_family().then_some(Interval::M1)).unwrap();
        let dl = Manifest::load(
            &store_h,
            &ManifestKey::new(shared::job::JobName::DOWNLOAD, ds.scope(), "BTCUSDT"),
        )
        .await
        .unwrap();
        let ex = Manifest::load(
            &store_h,
            &ManifestKey::new(shared::job::JobName::EXTRACT, ds.scope(), "BTCUSDT"),
        )
        .await
        .unwrap();
        // The download manifest's `listing` entry records what the listing settled: no file.
        let files: Vec<_> = dl.entries().filter(|e| e.unit != "listing").collect();
        assert_eq!(files.len(), ex.len(), "{}", ds.scope());
        for e in files {
            let file = ArchiveFile::parse_key(&e.unit).unwrap();
            let got = std::fs::read(root.join(file.csv_path())).unwrap();
            let want = sim.archive().csv(&e.unit).unwrap();
            assert!(
                got == want.as_bytes(),
                "{} differs from the generator",
                file.csv_path()
            );
            let x = ex.get(&e.unit).unwrap();
            assert_eq!(x.status, UnitStatus::Done);
            assert_eq!(x.inputs["zip"], e.outputs[0].sha256, "{}", e.unit);
            let o = &x.outputs[0];
            assert_eq!(o.path, file.csv_path());
            assert_eq!(o.size, got.len() as u64);
            assert_eq!(o.sha256, sha256_hex(&got));
            assert_eq!(o.rows, Some(lines(&got)));
            total += o.size;
            rows += lines(&got);
            seen += 1;
        }
    }
    assert_eq!(seen, 38);
    assert_eq!(r["bytes"], total);
    assert_eq!(r["details"]["csv_rows"], rows);
    assert_eq!(csvs(root).len(), 38, "stray files under csv/");
    assert!(
        store_h.size_opt(&r_path(&r)).await.unwrap().is_some(),
        "the report is in the store"
    );

    // A rerun does nothing.
    let out = output(extract(store, &[&sel[..], &RANGE[..]].concat())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(
        (
            r["counts"]["done"].as_u64(),
            r["counts"]["skipped"].as_u64()
        ),
        (Some(0), Some(38)),
        "{r}"
    );
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));

    // Republished upstream, refreshed by download: exactly that file is extracted again.
    let changed = day_file("2024-12-31");
    let before = std::fs::read(root.join(changed.csv_path())).unwrap();
    sim.republish(&changed.key());
    let mut args = [&sel[..], &RANGE[..]].concat();
    args.push("--refresh");
    let out = output(download(&sim, store, &args)).await;
    assert_eq!(report(&out)["counts"]["done"], 1, "{}", stderr(&out));
    let out = output(extract(store, &[&sel[..], &RANGE[..]].concat())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(
        (
            r["counts"]["done"].as_u64(),
            r["counts"]["skipped"].as_u64()
        ),
        (Some(1), Some(37)),
        "{r}"
    );
    let after = std::fs::read(root.join(changed.csv_path())).unwrap();
    assert_ne!(before, after);
    assert!(after == sim.archive().csv(&changed.key()).unwrap().as_bytes());

    // --dry-run lists the units and changes nothing.
    let mut args = [&sel[..], &RANGE[..]].concat();
    args.push("--dry-run");
    let out = output(extract(store, &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = common::stdout(&out);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.starts_with("up-to-date"))
            .count(),
        38,
        "{listed}"
    );
    assert_eq!(report(&out)["outcome"], "dry_run");
}

fn r_path(r: &serde_json::Value) -> String {
    format!("reports/extract/{}.json", r["run_id"].as_str().unwrap())
}

/// A zip of named entries (deflated unless `stored`).
fn zip_of(entries: &[(&str, &[u8])], stored: bool) -> Vec<u8> {
    let method = if stored {
        zip::CompressionMethod::Stored
    } else {
        zip::CompressionMethod::Deflated
    };
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .compression_level((!stored).then_some(1));
    for (name, body) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// `mib` MiB of zeros, deflated hard (ratio ~1000), written in 1 MiB pieces so the test never
/// holds them.
fn zeros_zip(name: &str, mib: usize) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9));
    w.start_file(name, opts).unwrap();
    let mib_of_zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        w.write_all(&mib_of_zeros).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Put a zip into the store as a raw file and record it in the download manifest, as `download`
/// would have.
async fn plant(store: &Store, w: &ManifestWriter, file: &ArchiveFile, zip: &[u8]) {
    store.put(&file.raw_path(), zip.to_vec()).await.unwrap();
    let sha = sha256_hex(zip);
    w.record(Entry {
        unit: file.key(),
        status: UnitStatus::Done,
        inputs: [("checksum".to_string(), sha.clone())].into(),
        job_version: "1".into(),
        params_hash: String::new(),
        outputs: vec![Output {
            path: file.raw_path(),
            size: zip.len() as u64,
            sha256: sha,
            rows: None,
            time_span: None,
        }],
        recorded_at: chrono::Utc::now(),
        run_id: "test".into(),
        detail: None,
        duplicate_days: Default::default(),
        rest: None,
    })
    .await
    .unwrap();
}

fn good_csv(day: &str) -> Vec<u8> {
    let mut s = String::from("open_time,open,high,low,close\n");
    for i in 0..500 {
        s.push_str(&format!("{day}-{i},{i}.5,{}.25,{i}.0,{i}.1\n", i + 1));
    }
    s.into_bytes()
}

/// Plant the good files, then each bad one; returns the good (file, csv) pairs.
async fn plant_good(
    store: &Store,
    w: &ManifestWriter,
    days: &[&str],
) -> Vec<(ArchiveFile, Vec<u8>)> {
    let mut out = Vec::new();
    for day in days {
        let f = day_file(day);
        let csv = good_csv(day);
        let name = f.file_name().replace(".zip", ".csv");
        plant(store, w, &f, &zip_of(&[(&name, &csv)], false)).await;
        out.push((f, csv));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_zips_fail_by_name_and_good_ones_still_extract() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root.to_str().unwrap()).unwrap();
    let (w, _) = ManifestWriter::open(
        &store,
        &ManifestKey::new(
            shared::job::JobName::DOWNLOAD,
            klines_um().scope(),
            "BTCUSDT",
        ),
    )
    .await
    .unwrap();
    let good = plant_good(&store, &w, &["2024-12-01", "2024-12-02"]).await;

    // Bombs: 64 MiB of zeros (ratio ~1000) with an honest header, and the same with a header
    // patched to claim 1 MiB so only the streaming count can stop it.
    let bomb = zeros_zip("BTCUSDT-1m-2024-12-06.csv", 64);
    let mut liar = bomb.clone();
    let (real, fake) = ((64u32 << 20).to_le_bytes(), (1u32 << 20).to_le_bytes());
    let mut patched = 0;
    for i in 0..liar.len() - 4 {
        if liar[i..i + 4] == real {
            liar[i..i + 4].copy_from_slice(&fake);
            patched += 1;
        }
    }
    assert_eq!(patched, 2);
    // A CRC error: a stored entry with one byte changed after the CRC was computed.
    let body = b"open_time,open\n1,2\n3,4\nMARKER\n".to_vec();
    let mut crc = zip_of(&[("BTCUSDT-1m-2024-12-07.csv", &body)], true);
    let at = crc.windows(6).position(|w| w == b"MARKER").unwrap();
    crc[at] = b'N';

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "2024-12-03",
            zip_of(&[("a.csv", b"1\n"), ("b.csv", b"2\n")], false),
            "holds 2 entries, expected 1",
        ),
        (
            "2024-12-04",
            zip_of(&[("../evil.csv", b"1\n")], false),
            "`..`",
        ),
        (
            "2024-12-05",
            zip_of(&[("/tmp/evil.csv", b"1\n")], false),
            "absolute path",
        ),
        ("2024-12-06", bomb, "zip bomb refused"),
        ("2024-12-07", crc, "CRC mismatch"),
        ("2024-12-08", liar, "inflates past its declared size"),
    ];
    for (day, zip, _) in &cases {
        plant(&store, &w, &day_file(day), zip).await;
    }

    let out = output(extract(
        root.to_str().unwrap(),
        &[
            "--symbols",
            "BTCUSDT",
            "--start",
            "2024-12-01",
            "--end",
            "2024-12-08",
            "--tmp-dir",
            tmp.path().to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["counts"]["done"], 2, "{r}");
    assert_eq!(r["counts"]["failed"], cases.len(), "{r}");
    let failures: BTreeMap<String, String> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["unit"].as_str().unwrap().into(),
                f["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    let ex = Manifest::load(
        &store,
        &ManifestKey::new(
            shared::job::JobName::EXTRACT,
            klines_um().scope(),
            "BTCUSDT",
        ),
    )
    .await
    .unwrap();
    for (day, _, problem) in &cases {
        let f = day_file(day);
        let reason = &failures[&f.key()];
        assert!(
            reason.contains(&f.raw_path()) && reason.contains(problem),
            "{day}: {reason}"
        );
        assert!(
            stderr(&out).contains(&format!("FAILED {}", f.key())),
            "{}",
            stderr(&out)
        );
        assert!(
            !root.join(f.csv_path()).exists(),
            "{day}: a CSV under its final name"
        );
        let e = ex.get(&f.key()).unwrap();
        assert_eq!(e.status, UnitStatus::Failed);
        assert!(e.detail.as_deref().unwrap().contains(problem));
    }
    for (f, csv) in &good {
        assert_eq!(&std::fs::read(root.join(f.csv_path())).unwrap(), csv);
    }
    assert_eq!(csvs(root).len(), good.len(), "{:?}", csvs(root));
    assert!(
        walk(tmp.path()).is_empty(),
        "temp files left: {:?}",
        walk(tmp.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_converted_deletes_exactly_the_converted_csv_and_it_stays_done() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root.to_str().unwrap()).unwrap();
    let scope = klines_um().scope();
    let (w, _) = ManifestWriter::open(
        &store,
        &ManifestKey::new(shared::job::JobName::DOWNLOAD, &scope, "BTCUSDT"),
    )
    .await
    .unwrap();
    let good = plant_good(&store, &w, &["2024-12-01", "2024-12-02", "2024-12-03"]).await;
    let args = [
        "--symbols",
        "BTCUSDT",
        "--start",
        "2024-12-01",
        "--end",
        "2024-12-03",
    ];
    let out = output(extract(root.to_str().unwrap(), &args)).await;
    assert_eq!(report(&out)["counts"]["done"], 3, "{}", stderr(&out));

    // convert took day 1 from this CSV, day 2 from some other CSV, and never saw day 3.
    let (cw, _) = ManifestWriter::open(
        &store,
        &ManifestKey::new(shared::job::JobName::CONVERT, &scope, "BTCUSDT"),
    )
    .await
    .unwrap();
    for (f, csv) in &good[..2] {
        let sha = if f.date == FileDate::Day(d("2024-12-01")) {
            sha256_hex(csv)
        } else {
            "0".repeat(64)
        };
        cw.record(Entry {
            unit: f.key(),
            status: UnitStatus::Done,
            inputs: [("csv".to_string(), sha)].into(),
            job_version: "1".into(),
            params_hash: String::new(),
            outputs: vec![],
            recorded_at: chrono::Utc::now(),
            run_id: "convert-test".into(),
            detail: None,
            duplicate_days: Default::default(),
            rest: None,
        })
        .await
        .unwrap();
    }

    let mut pargs = args.to_vec();
    pargs.push("--prune-converted");
    let mut dry = pargs.clone();
    dry.push("--dry-run");
    let out = output(extract(root.to_str().unwrap(), &dry)).await;
    let listed = common::stdout(&out);
    assert!(
        listed.contains(&format!("prune      {}", good[0].0.csv_path())),
        "{listed}"
    );
    assert!(
        root.join(good[0].0.csv_path()).exists(),
        "a dry run deleted a CSV"
    );

    let out = output(extract(root.to_str().unwrap(), &pargs)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["details"]["pruned"], 1, "{r}");
    assert_eq!(r["counts"]["skipped"], 3, "{r}");
    assert!(!root.join(good[0].0.csv_path()).exists());
    assert!(root.join(good[1].0.csv_path()).exists());
    assert!(root.join(good[2].0.csv_path()).exists());

    // Pruned is up to date: nothing is extracted again, and nothing more is pruned.
    for a in [&args[..], &pargs[..]] {
        let out = output(extract(root.to_str().unwrap(), a)).await;
        let r = report(&out);
        assert_eq!(
            (
                r["counts"]["done"].as_u64(),
                r["counts"]["skipped"].as_u64()
            ),
            (Some(0), Some(3)),
            "{r}"
        );
        assert_eq!(r["details"]["pruned"], 0, "{r}");
        assert!(!root.join(good[0].0.csv_path()).exists());
    }
    // --force brings it back.
    let mut fargs = args.to_vec();
    fargs.push("--force");
    let out = output(extract(root.to_str().unwrap(), &fargs)).await;
    assert_eq!(report(&out)["counts"]["done"], 3);
    assert_eq!(
        std::fs::read(root.join(good[0].0.csv_path())).unwrap(),
        good[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_extract_works_on_s3() {
    let Some(moto) = common::Moto::start() else {
        return;
    };
    moto.create_bucket("pipeline");
    let sim = SimServer::start(SimConfig::demo(), 0).await.unwrap();
    let store = "s3://pipeline/x";
    let sel = ["--symbols", "BTCUSDT", "--data-type", "klines,fundingRate"];
    let mut c = download(&sim, store, &[&sel[..], &RANGE[..]].concat());
    c.envs(moto.env());
    let out = output(c).await;
    assert_eq!(report(&out)["counts"]["done"], 5, "{}", stderr(&out));
    let tmp = tempfile::tempdir().unwrap();
    let run = || {
        let mut args = [&sel[..], &RANGE[..]].concat();
        args.extend(["--tmp-dir", tmp.path().to_str().unwrap()]);
        let mut c = extract(store, &args);
        c.envs(moto.env());
        output(c)
    };
    let out = run().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report(&out)["counts"]["done"], 5);
    let s3 = moto.store(store);
    let listed = s3.list("csv/").await.unwrap();
    assert_eq!(listed.len(), 5, "{listed:?}");
    for (path, _) in &listed {
        let f = ArchiveFile::parse_csv_path(path).unwrap();
        let got = s3.get_opt(path).await.unwrap().unwrap();
        assert!(
            got == sim.archive().csv(&f.key()).unwrap().as_bytes(),
            "{path}"
        );
    }
    assert!(walk(tmp.path()).is_empty(), "temp files left");
    let out = run().await;
    assert_eq!(report(&out)["counts"]["skipped"], 5, "{}", stderr(&out));
}
