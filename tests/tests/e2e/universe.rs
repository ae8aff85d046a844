//! End-to-end tests of the whole archive as a universe: `download` planning from the bucket
//! listing over every symbol's life (no 404s, one CHECKSUM and one zip per existing file), a
//! monthly file the archive lacks replaced by its daily files without probing, and a rerun that
//! asks for nothing the listing already settled.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use archive_sim::{SimConfig, SimHandle, SimServer};
use chrono::NaiveDate;
use common::{job, report, stderr, walk};
use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Interval, Market};

async fn start(config: SimConfig) -> SimHandle {
    SimServer::start(config, 0).await.expect("sim starts")
}

/// `download` against the sim, with fast retries.
fn download(sim: &SimHandle, store: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = job("download");
    c.args(["--store", store.to_str().unwrap()])
        .args([
            "--source",
            &sim.base_url(),
            "--listing-url",
            &sim.base_url(),
        ])
        .args(["--retry-base-ms", "20", "--retry-max-secs", "2"])
        .args(args);
    tokio::process::Command::from(c)
}

async fn run_ok(c: tokio::process::Command) -> serde_json::Value {
    let mut c = c;
    let out = c.output().await.expect("download runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    report(&out)
}

/// The archive files under `raw/`, by (dataset, symbol).
fn raw_files(root: &Path) -> BTreeMap<(Dataset, String), Vec<ArchiveFile>> {
    let mut out: BTreeMap<(Dataset, String), Vec<ArchiveFile>> = BTreeMap::new();
    for p in walk(&root.join("raw")) {
        let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let f = ArchiveFile::parse_raw_path(&rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
        out.entry((f.dataset, f.symbol.clone()))
            .or_default()
            .push(f);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_planned_download_asks_only_for_files_that_exist() {
    let mut config = SimConfig::universe();
    // Pages of 40 keys: a month of daily files and their CHECKSUMs takes two.
    config.page_size = 40;
    let klines = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap();
    let funding = Dataset::new(Market::Um, DataType::FundingRate, None).unwrap();
    // The archive lacks a monthly file: its daily files stand in, found in the listing.
    let hole = ArchiveFile::new(
        klines,
        "ETHUSDT",
        FileDate::Month {
            year: 2024,
            month: 11,
        },
    );
    config.missing = vec![hole.key()];
    let universe = config.clone();
    let sim = start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--symbols",
        "all",
        "--data-type",
        "klines,fundingRate",
        "--start",
        "2024-10-01",
        "--end",
        "2025-01-31",
        "--plan-from",
        "listing",
    ];
    let r = run_ok(download(&sim, dir.path(), &args)).await;

    // Nothing asked for was absent: every request found its object or page.
    let requests = sim.requests();
    let failed: Vec<_> = requests.iter().filter(|q| q.status != 200).collect();
    assert!(failed.is_empty(), "requests that did not find: {failed:?}");
    // One CHECKSUM and one zip per file, nothing asked twice; the rest are listing pages.
    let objects: Vec<&str> = requests
        .iter()
        .filter(|q| !q.path.is_empty())
        .map(|q| q.path.as_str())
        .collect();
    let unique: BTreeSet<&str> = objects.iter().copied().collect();
    assert_eq!(unique.len(), objects.len(), "a key was asked for twice");
    let done = r["counts"]["done"].as_u64().unwrap();
    assert_eq!(objects.len() as u64, 2 * done, "{r}");
    let pages = requests.iter().filter(|q| q.path.is_empty()).count() as u64;
    assert!(pages >= r["details"]["listing_pages"].as_u64().unwrap());
    assert_eq!(r["details"]["plan_from"], "listing");
    assert_eq!(r["counts"]["failed"], 0, "{r}");

    // Each UM symbol's life in the coverage is covered by exactly one file a day, and nothing
    // lies outside it.
    let got = raw_files(dir.path());
    let (start, end) = (universe.start, universe.end);
    let mut expected_symbols = BTreeSet::new();
    for s in universe.symbols.iter().filter(|s| s.market == Market::Um) {
        let first = s.listed.max(start);
        let last = s.delisted.map_or(end, |x| x.min(end));
        for ds in [klines, funding] {
            if !s.data_types().contains(&ds.data_type) {
                assert!(!got.contains_key(&(ds, s.symbol.clone())), "{}", s.symbol);
                continue;
            }
            expected_symbols.insert(s.symbol.clone());
            let files = got
                .get(&(ds, s.symbol.clone()))
                .unwrap_or_else(|| panic!("no {} file of {}", ds.scope(), s.symbol));
            let mut days: Vec<NaiveDate> = files.iter().flat_map(|f| f.date.days()).collect();
            days.sort();
            // The archive's monthly files cover whole months, a listing or delisting month
            // included: the days are those of every month the life touches.
            let want: Vec<NaiveDate> = FileDate::month_of(first)
                .first_day()
                .iter_days()
                .take_while(|x| *x <= FileDate::month_of(last).last_day())
                .collect();
            assert_eq!(days, want, "{} {}", ds.scope(), s.symbol);
        }
    }
    let hole_days = got[&(klines, "ETHUSDT".to_string())]
        .iter()
        .filter(|f| f.period() == shared::paths::Period::Daily)
        .count();
    assert_eq!(
        hole_days, 30,
        "November's daily files replace its monthly file"
    );
    assert_eq!(r["details"]["monthly_fallbacks"], 1, "{r}");
    assert!(expected_symbols.contains("BTCUSDT_241227"));
    assert!(expected_symbols.contains("NEWUSDT"));

    // A rerun asks for no file: the listing's coverage settles the absent ones. Only the
    // symbols of `all` are listed again.
    sim.clear_log();
    let r2 = run_ok(download(&sim, dir.path(), &args)).await;
    assert_eq!(r2["counts"]["done"], 0, "{r2}");
    assert_eq!(r2["details"]["listing_pages"], 0, "{r2}");
    let asked: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|q| !q.path.is_empty())
        .collect();
    assert!(asked.is_empty(), "the rerun asked for {asked:?}");
}

fn day(sym: &str, d: &str) -> ArchiveFile {
    let ds = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap();
    ArchiveFile::new(
        ds,
        sym,
        FileDate::Day(NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()),
    )
}

async fn entry_of(root: &Path, f: &ArchiveFile) -> shared::manifest::Entry {
    let store = shared::Store::open(root.to_str().unwrap()).unwrap();
    let key = shared::manifest::ManifestKey::new(
        shared::job::JobName::DOWNLOAD,
        f.dataset.scope(),
        f.symbol.as_str(),
    );
    let m = shared::manifest::Manifest::load(&store, &key)
        .await
        .unwrap();
    m.get(&f.key())
        .cloned()
        .unwrap_or_else(|| panic!("no entry for {}", f.key()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_erratum_is_accepted_on_the_etags_word_unless_strict() {
    use archive_sim::{FaultKind, FaultRule, FaultTarget};
    let good = day("BTCUSDT", "2024-12-02");
    let corrupt = day("BTCUSDT", "2024-12-03");
    let rule = |f: &ArchiveFile, target, kind| FaultRule {
        key_contains: f.key(),
        exact: true,
        target,
        kind,
    };
    let mut config = SimConfig::demo();
    config.faults = vec![
        // The CHECKSUM names other bytes; the zip is the bucket's own.
        rule(
            &good,
            FaultTarget::Checksum,
            FaultKind::WrongChecksum { first_n: None },
        ),
        // A corrupt body with a CHECKSUM that lies too: refused whatever the ETag says.
        rule(
            &corrupt,
            FaultTarget::Checksum,
            FaultKind::WrongChecksum { first_n: None },
        ),
        rule(
            &corrupt,
            FaultTarget::Zip,
            FaultKind::CorruptBody { first_n: 1000 },
        ),
    ];
    let sim = start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut c = download(
            &sim,
            dir.path(),
            &[
                "--symbols",
                "BTCUSDT",
                "--start",
                "2024-12-01",
                "--end",
                "2024-12-03",
                "--checksum-attempts",
                "2",
            ],
        );
        c.args(extra);
        async move { c.output().await.expect("download runs") }
    };

    let out = run(&[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(
        r["details"]["checksum_errata"],
        serde_json::json!([good.key()]),
        "{r}"
    );
    let failed: Vec<&str> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["unit"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec![corrupt.key()], "{r}");
    let e = entry_of(dir.path(), &good).await;
    assert_eq!(e.status, shared::manifest::UnitStatus::Done);
    assert_eq!(e.inputs["verified_by"], "etag");
    assert!(
        e.detail.as_deref().unwrap().contains("checksum erratum"),
        "{e:?}"
    );
    let bytes = std::fs::read(dir.path().join(good.raw_path())).unwrap();
    assert_eq!(
        bytes,
        sim.archive()
            .zip_bytes(&good.key())
            .unwrap()
            .unwrap()
            .as_ref()
    );
    assert!(!dir.path().join(corrupt.raw_path()).exists());
    assert!(dir.path().join(corrupt.quarantine_path()).exists());

    // Planned by dates, the response's ETag is the only second opinion, and it vouches for the
    // corrupt bytes it was computed over: the zip's CRCs refuse them.
    let out = run(&["--plan-from", "dates"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(
        r["details"]["checksum_errata"],
        serde_json::json!([]),
        "{r}"
    );
    assert_eq!(r["failures"][0]["unit"], corrupt.key(), "{r}");
    assert!(!dir.path().join(corrupt.raw_path()).exists());

    // Strict: the erratum is checked again and refused.
    let out = run(&["--strict-checksum"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    let mut failed: Vec<&str> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["unit"].as_str().unwrap())
        .collect();
    failed.sort();
    assert_eq!(failed, vec![good.key(), corrupt.key()], "{r}");
    assert!(
        r["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_finds_a_republished_file_from_the_listing_alone() {
    let sim = start(SimConfig::demo()).await;
    let dir = tempfile::tempdir().unwrap();
    let range = [
        "--symbols",
        "BTCUSDT",
        "--start",
        "2024-12-01",
        "--end",
        "2024-12-05",
    ];
    run_ok(download(&sim, dir.path(), &range)).await;
    let store = dir.path().to_str().unwrap();
    let extracted = common::run_ok("extract", dir.path(), &range).await;
    assert_eq!(extracted["counts"]["done"], 5);

    let changed = day("BTCUSDT", "2024-12-03");
    sim.republish(&changed.key());
    sim.clear_log();
    let mut args = range.to_vec();
    args.push("--refresh");
    let r = run_ok(download(&sim, dir.path(), &args)).await;
    assert_eq!(r["counts"]["done"], 1, "{r}");
    assert_eq!(r["counts"]["skipped"], 4, "{r}");
    assert_eq!(r["details"]["republished"], 1, "{r}");
    assert_eq!(r["details"]["refresh_checks"], 5, "{r}");
    // Listing pages, then the changed file's CHECKSUM and zip: no CHECKSUM of the others.
    let objects: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|q| !q.path.is_empty())
        .map(|q| q.path)
        .collect();
    assert_eq!(
        objects.iter().collect::<BTreeSet<_>>(),
        [changed.checksum_key(), changed.key()]
            .iter()
            .collect::<BTreeSet<_>>(),
        "{objects:?}"
    );
    let bytes = std::fs::read(dir.path().join(changed.raw_path())).unwrap();
    assert_eq!(
        bytes,
        sim.archive()
            .zip_bytes(&changed.key())
            .unwrap()
            .unwrap()
            .as_ref()
    );
    // Downstream recomputes that file alone.
    let again = common::run_ok("extract", dir.path(), &range).await;
    assert_eq!(again["counts"]["done"], 1, "{again} ({store})");
    assert_eq!(again["counts"]["skipped"], 4, "{again}");
}

/// The registry's column as text per row (dates as YYYY-MM-DD, nulls as "").
fn texts(df: &frames::polars::prelude::DataFrame, c: &str) -> Vec<String> {
    use frames::polars::prelude::DataType as T;
    let s = df.column(c).unwrap().cast(&T::String).unwrap();
    let ca = s.str().unwrap();
    (0..ca.len())
        .map(|i| ca.get(i).unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_equals_the_universe_and_selections_select_exactly() {
    let universe = SimConfig::universe();
    let sim = start(universe.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    for market in ["um", "cm", "spot"] {
        let types = if market == "spot" {
            "klines"
        } else {
            "klines,fundingRate"
        };
        let mut c = job("instruments");
        c.args(["--store", dir.path().to_str().unwrap()])
            .args(["--source", &sim.base_url(), "--rest-url", &sim.base_url()])
            .args(["--market", market, "--symbols", "all", "--data-type", types])
            .args(["--start", "2024-10-01", "--end", "2025-01-31"]);
        let r = run_ok(tokio::process::Command::from(c)).await;
        assert_eq!(r["counts"]["done"], 1, "{r}");
    }
    for (market, name) in [
        (Market::Um, "futures-um"),
        (Market::Cm, "futures-cm"),
        (Market::Spot, "spot"),
    ] {
        let df = common::read(
            &dir.path()
                .join(format!("reference/{name}/instruments.parquet")),
        );
        let symbols = texts(&df, "symbol");
        let want: Vec<&archive_sim::SymbolSpec> = {
            let mut v: Vec<_> = universe
                .symbols
                .iter()
                .filter(|s| s.market == market)
                .collect();
            v.sort_by(|a, b| a.symbol.cmp(&b.symbol));
            v
        };
        assert_eq!(
            symbols,
            want.iter().map(|s| s.symbol.clone()).collect::<Vec<_>>(),
            "{name}"
        );
        let (first, last) = (texts(&df, "first_day"), texts(&df, "last_day"));
        let (kfirst, klast) = (texts(&df, "klines_1m_first"), texts(&df, "klines_1m_last"));
        let (contract, quote) = (texts(&df, "contract_type"), texts(&df, "quote_asset"));
        let (delivery, status) = (texts(&df, "delivery_date"), texts(&df, "status"));
        let onboard = texts(&df, "onboard_date");
        for (i, s) in want.iter().enumerate() {
            // The archive has daily klines from the listing (or the coverage's start) to the
            // delisting (or its end).
            let f = s.listed.max(universe.start).to_string();
            let l = s
                .delisted
                .map_or(universe.end, |d| d.min(universe.end))
                .to_string();
            assert_eq!((&kfirst[i], &klast[i]), (&f, &l), "{name} {}", s.symbol);
            assert!(first[i] <= f && last[i] >= l, "{name} {}", s.symbol);
            let delivered = s.symbol.split_once('_').is_some_and(|(_, d)| d != "PERP");
            let kind = match market {
                Market::Spot => "spot",
                _ if delivered => "delivery",
                _ => "perpetual",
            };
            assert_eq!(contract[i], kind, "{}", s.symbol);
            if delivered {
                let yymmdd = s.symbol.split_once('_').unwrap().1;
                let d = NaiveDate::parse_from_str(yymmdd, "%y%m%d").unwrap();
                assert_eq!(delivery[i], d.to_string(), "{}", s.symbol);
            } else {
                assert_eq!(delivery[i], "", "{}", s.symbol);
            }
            // exchangeInfo at the simulator's clock (the coverage's end + 1 day).
            let trading = s.delisted.is_none();
            assert_eq!(
                status[i],
                if trading { "trading" } else { "delisted" },
                "{}",
                s.symbol
            );
            if s.listed <= universe.end {
                assert_eq!(onboard[i], s.listed.to_string(), "{}", s.symbol);
            }
        }
        if market == Market::Um {
            let q = |sym: &str| quote[symbols.iter().position(|s| s == sym).unwrap()].clone();
            assert_eq!(q("BTCUSDC"), "USDC");
            assert_eq!(q("1000PEPEUSDT"), "USDT");
            assert_eq!(q("BTCUSDT_241227"), "USDT");
        }
    }

    // Selections: USDT perpetuals with data in December 2024, not the OLD* names.
    let args = [
        "--symbols",
        "all",
        "--data-type",
        "fundingRate",
        "--contract",
        "perpetual",
        "--quote",
        "USDT",
        "--exclude",
        "OLD*,DOGE?SDT",
        "--listed-between",
        "2024-12-01..2024-12-31",
        "--start",
        "2024-12-01",
        "--end",
        "2024-12-31",
    ];
    let r = run_ok(download(&sim, dir.path(), &args)).await;
    let got: BTreeSet<String> = raw_files(dir.path())
        .keys()
        .map(|(_, s)| s.clone())
        .collect();
    let dec = (
        NaiveDate::from_ymd_opt(2024, 12, 1).unwrap(),
        NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
    );
    let want: BTreeSet<String> = universe
        .symbols
        .iter()
        .filter(|s| s.market == Market::Um && s.data_types().contains(&DataType::FundingRate))
        .filter(|s| !s.symbol.contains('_') && s.symbol.ends_with("USDT"))
        .filter(|s| !s.symbol.starts_with("OLD") && s.symbol != "DOGEUSDT")
        .filter(|s| s.listed <= dec.1 && s.delisted.is_none_or(|d| d >= dec.0))
        .map(|s| s.symbol.clone())
        .collect();
    assert_eq!(got, want, "{r}");
    assert!(!want.contains("FTTUSDT") && want.contains("SOLUSDT") && !want.contains("NEWUSDT"));

    // Without a selection, the symbols of the listing that have no file in the range are one
    // warning, not one each.
    let args = [
        "--symbols",
        "all",
        "--data-type",
        "fundingRate",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-31",
    ];
    let r = run_ok(download(&sim, dir.path(), &args)).await;
    let w = common::warnings(&r);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("2 symbols of the listing have no futures-um/fundingRate file")
            && w[0].ends_with(": FTTUSDT, OLDUSDT"),
        "{w:?}"
    );

    // The registry again: every symbol's files ended long before the job's clock, so none is
    // listed again.
    let mut c = job("instruments");
    c.args(["--store", dir.path().to_str().unwrap()])
        .args(["--source", &sim.base_url()])
        .args([
            "--market",
            "um",
            "--symbols",
            "all",
            "--data-type",
            "klines,fundingRate",
        ])
        .args(["--start", "2024-10-01", "--end", "2025-01-31"]);
    let again = run_ok(tokio::process::Command::from(c)).await;
    assert_eq!(again["details"]["listed"], 0, "{again}");
    assert_eq!(again["details"]["pages"], 0, "{again}");
    let df = common::read(&dir.path().join("reference/futures-um/instruments.parquet"));
    assert_eq!(
        texts(&df, "klines_1m_first").len(),
        universe
            .symbols
            .iter()
            .filter(|s| s.market == Market::Um)
            .count()
    );

    // A selection with a list of symbols is refused: it would be ignored.
    let mut c = download(
        &sim,
        dir.path(),
        &[
            "--symbols",
            "BTCUSDT",
            "--quote",
            "USDT",
            "--start",
            "2024-12-01",
            "--end",
            "2024-12-01",
        ],
    );
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--symbols all"), "{}", stderr(&out));
}
