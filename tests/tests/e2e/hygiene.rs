//! End-to-end tests of one writer per store and of loud configuration: a job whose lease is
//! held exits 75 naming the holder, waits with `--wait-lock`, and takes a lapsed S3 lease over
//! (moto); every usage error exits 2 and writes nothing, S3 without credentials included.

use std::path::Path;
use std::time::{Duration, Instant};

use shared::lease::{Holder, Lease, Policy, Wait};
use tokio_util::sync::CancellationToken;

use crate::common::{self, Moto, stderr};

/// `convert` over one day of BTCUSDT klines: a job that takes its lease and has little to do.
fn convert(store: &str, extra: &[&str]) -> tokio::process::Command {
    let mut c = common::job("convert");
    c.args([
        "--store",
        store,
        "--symbols",
        "BTCUSDT",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-01",
    ])
    .args(extra);
    tokio::process::Command::from(c)
}

const KEY: &str = "convert/futures-um/klines-1m/shard-0-of-1";

fn holder() -> Holder {
    Holder::me("holder-run-42", "convert")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_stops_a_second_writer_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let store = shared::Store::open(&url).unwrap();
    let lease = Lease::acquire(
        &store,
        KEY,
        &holder(),
        Policy::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    // No wait: exit 75 at once, naming the holder; no manifest, no report.
    let o = convert(&url, &[]).output().await.unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(
        err.contains("holder-run-42") && err.contains("--wait-lock"),
        "{err}"
    );
    assert!(err.contains(KEY), "{err}");
    for written in ["_manifest", "reports", "_staging"] {
        assert!(!dir.path().join(written).exists(), "{written}");
    }
    // A bounded wait gives up after it.
    let t = Instant::now();
    let o = convert(&url, &["--wait-lock", "1s"])
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("gave up waiting"), "{}", stderr(&o));
    assert!(t.elapsed() >= Duration::from_secs(1));
    // Another shard is another lease.
    let o = convert(&url, &["--shard", "0/2"]).output().await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Waiting: it runs once the holder lets go.
    let waiter = convert(&url, &["--wait-lock"]).output();
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        lease.release().await;
        Instant::now()
    };
    let (o, released) = tokio::join!(waiter, release);
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(Instant::now() > released);
    assert!(dir.path().join("reports/convert").is_dir());
}

/// On S3 a holder killed without warning keeps its lease only until it lapses; a live holder
/// renews it and keeps a second writer out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_lease_of_a_killed_holder_lapses_and_a_live_one_holds() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("leases");
    let url = "s3://leases/store";
    let store = moto.store(url);
    let ttl = Duration::from_secs(3);
    let policy = Policy {
        wait: Wait::No,
        ttl,
    };

    // A live holder: refused, named.
    let live = Lease::acquire(&store, KEY, &holder(), policy, CancellationToken::new())
        .await
        .unwrap();
    let o = convert(url, &[]).envs(moto.env()).output().await.unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("holder-run-42"), "{}", stderr(&o));
    // It renews past its time to live: still held.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    let o = convert(url, &[]).envs(moto.env()).output().await.unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    live.release().await;

    // A holder gone as with SIGKILL (no renewal, no release): the waiter takes it over once
    // it lapses.
    let dead = Lease::acquire(&store, KEY, &holder(), policy, CancellationToken::new())
        .await
        .unwrap();
    dead.abandon();
    let t = Instant::now();
    let o = convert(url, &["--wait-lock", "30s"])
        .envs(moto.env())
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        t.elapsed() >= ttl - Duration::from_millis(500),
        "taken before it lapsed: {:?}",
        t.elapsed()
    );
    assert!(
        stderr(&o).contains("lease held by another writer"),
        "{}",
        stderr(&o)
    );
    // Released at the end; the run's liveness lease went too.
    assert!(
        store.list("_leases").await.unwrap().is_empty(),
        "{:?}",
        store.list("_leases").await.unwrap()
    );
}

/// Every usage error exits 2 before anything is written: no store folder, no temp folder.
#[test]
fn every_usage_error_exits_2_and_writes_nothing() {
    let base = [
        "--symbols",
        "BTCUSDT",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-02",
    ];
    let common_bad: &[(&[&str], &str)] = &[
        (&["--end", "2099-01-01"], "--allow-future"),
        (&["--symbols", "btc/usdt"], "btc/usdt"),
        (&["--shard", "2/2"], "--shard"),
        (&["--concurrency", "0"], "--concurrency"),
        (&["--wait-lock", "soon"], "--wait-lock"),
        (&["--lease-ttl", "0s"], "--lease-ttl"),
        (&["--run-id", "../x"], "--run-id"),
        (&["--market", "nyse"], "nyse"),
        (&["--data-type", "candles"], "candles"),
        (&["--start", "2025-13-01"], "2025-13-01"),
    ];
    let jobs = shared::job::JobName::ALL.map(|j| j.as_str());
    let per_job: &[(&str, &[&str], &str)] = &[
        ("download", &["--source", "htp:/nowhere"], "--source"),
        ("download", &["--source", "not a url"], "--source"),
        ("tail", &["--rest-url", "fapi.binance"], "--rest-url"),
        (
            "bars",
            &["--bar", "dollar", "--threshold", "-5"],
            "threshold",
        ),
        ("extract", &["--tmp-dir", "/no/such/folder"], "--tmp-dir"),
    ];
    let mut cases: Vec<(&str, Vec<&str>, &str)> = Vec::new();
    for j in jobs {
        for (args, says) in common_bad {
            cases.push((j, args.to_vec(), says));
        }
    }
    for (j, args, says) in per_job {
        cases.push((j, args.to_vec(), says));
    }
    let mut wrong = Vec::new();
    for (job, args, says) in &cases {
        let dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mut c = common::job(job);
        c.arg("--store").arg(&store);
        // The base arguments the case does not replace.
        for pair in base.chunks(2) {
            if !args.contains(&pair[0]) {
                c.args(pair);
            }
        }
        c.args(args);
        if *job == "bars" && !args.contains(&"--bar") {
            c.args(["--bar", "dollar", "--threshold", "1e6"]);
        }
        if *job == "build-panel" {
            c.args(["--name", "p"]);
        }
        c.env("TMPDIR", tmp.path());
        let o = common::run(&mut c);
        let err = stderr(&o);
        let temp_left = std::fs::read_dir(tmp.path()).unwrap().count();
        if o.status.code() != Some(2) || !err.contains(says) || store.exists() || temp_left > 0 {
            wrong.push(format!(
                "{job} {}: exit {:?}, store written: {}, temp entries: {temp_left}, stderr: {}",
                args.join(" "),
                o.status.code(),
                store.exists(),
                err.lines().last().unwrap_or("")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// S3 with no credentials anywhere is a configuration error naming what to set, before any
/// work (it was exit 1 with a message about the instance metadata token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_without_credentials_is_a_configuration_error() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("nocreds");
    let mut c = convert("s3://nocreds/x", &[]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        // Where the instance metadata service would be: nothing answers.
        .env("AWS_EC2_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .env("HOME", Path::new("/nonexistent"));
    let t = Instant::now();
    let o = tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("a missing credential is found out in time")
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(
        moto.store("s3://nocreds/x")
            .list("")
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );
    eprintln!(
        "missing credentials found out in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}
