//! The `download` binary's command-line contract: usage errors exit 2 naming the bad argument,
//! `--dry-run` prints the plan and touches nothing. (Having an integration test here also makes
//! `cargo test --workspace` build the binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

fn download() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_download"));
    c.env_remove("PIPELINE_STORE").env("RUST_LOG", "warn");
    c
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let base = [
        "--store",
        store,
        "--symbols",
        "BTCUSDT",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02",
    ];
    for (extra, needle) in [
        (&["--market", "mars"][..], "unknown market `mars`"),
        (&["--data-type", "candles"], "unknown data type `candles`"),
        (
            &["--market", "spot", "--data-type", "metrics"],
            "no `metrics` for market `spot`",
        ),
        (&["--shard", "2/2"], "--shard"),
        (&["--interval", "2m"], "unknown interval `2m`"),
    ] {
        let out = download().args(base).args(extra).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    // clap's own usage errors are exit 2 too.
    let out = download().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The end before the start.
    let out = download()
        .args([
            "--store",
            store,
            "--symbols",
            "X",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-01",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = download()
        .args([
            "--store",
            store.to_str().unwrap(),
            "--symbols",
            "BTCUSDT,ETHUSDT",
        ])
        .args(["--start", "2024-01-30", "--end", "2024-03-01", "--dry-run"])
        .args(["--source", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two daily files in January, the whole of February monthly, one daily in March, per symbol.
    for f in [
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-30.zip",
        "data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02.zip",
        "data/futures/um/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-03-01.zip",
    ] {
        assert!(stdout.contains(f), "{f} not in:\n{stdout}");
    }
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("fetch")).count(),
        8,
        "{stdout}"
    );
    // Nothing but the empty store folder exists.
    let entries: Vec<_> = std::fs::read_dir(&store).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
}
