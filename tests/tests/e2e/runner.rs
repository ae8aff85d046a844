//! End-to-end tests of the `runner`: the demo DAG against the synthetic archive in temp stores —
//! a full run, a run SIGKILLed midway and resumed (its `optimized/` outputs byte-identical to
//! the full run's), a rerun that does no work, a backfill override that touches only its range,
//! SIGTERM forwarded to the jobs, a failing step retried and blocking its dependents; `validate`
//! on every kind of malformed DAG (file:line in each message); the job registry against every
//! job's `--help`; `k8s/` in sync with `dags/` and valid against Argo's and Kubernetes' schemas.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, stderr, stdout, walk};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Build every binary the demo runs (the runner finds them through PIPELINE_BIN_DIR).
fn bin_dir() -> PathBuf {
    for name in [
        "download",
        "extract",
        "convert",
        "optimize",
        "validate",
        "aggregate",
        "bars",
        "build-panel",
        "tail",
        "archive-sim",
    ] {
        bin(name);
    }
    bin("runner")
        .parent()
        .expect("target/<profile>")
        .to_path_buf()
}

/// `runner ARGS` with the job binaries next to it and a clean environment.
fn runner(args: &[&str]) -> Command {
    let mut c = Command::new(bin("runner"));
    c.args(args)
        .current_dir(repo())
        .env("PIPELINE_BIN_DIR", bin_dir())
        .env_remove("PIPELINE_STORE")
        .env_remove("PIPELINE_RUN_ID")
        .env_remove("PIPELINE_TODAY")
        .env_remove("PIPELINE_LOG_FORMAT")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

fn demo(store: &Path, extra: &[&str]) -> Command {
    let mut a = vec!["dags/demo.yaml", "--store", store.to_str().unwrap()];
    a.extend_from_slice(extra);
    runner(&a)
}

/// The run summary the runner printed as the last line of stdout.
fn summary(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary on stdout; stderr:\n{}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {line}"))
}

fn outcomes(s: &serde_json::Value) -> BTreeMap<String, String> {
    s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                format!(
                    "{} {}",
                    x["step"].as_str().unwrap(),
                    x["shard"].as_str().unwrap()
                ),
                x["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Relative path → bytes of every file under `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Processes whose command line mentions `needle` (the runner's children carry the store path).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_no_process(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still running after the runner stopped:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The demo DAG: a full run; a run killed midway and resumed, byte-identical; a rerun with
/// nothing to do; a backfill that touches only its range.
#[test]
fn demo_dag_runs_resumes_after_sigkill_and_reruns_as_a_no_op() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    bin_dir(); // built before the clock starts

    // 1. Uninterrupted.
    let t = Instant::now();
    let o = demo(a.path(), &[]).output().unwrap();
    let full_secs = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "demo run:\n{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["outcome"], "ok");
    let oc = outcomes(&s);
    // download/extract/convert/optimize-um × 2 shards, tail-um, 4 spot steps, validate-um,
    // aggregate-um and bars-um × 2 shards, and build-um.
    assert_eq!(oc.len(), 19, "{oc:?}");
    assert!(oc.values().all(|v| v == "ok"), "{oc:?}");
    // A clean run leaves no staging folder behind.
    let staging = a.path().join("_staging");
    assert!(
        !staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none(),
        "left under _staging: {:?}",
        walk(&staging)
    );
    for sh in s["shards"].as_array().unwrap() {
        // The simulator's clock stands after its last day: REST has nothing past the archive.
        if sh["step"] == "tail-um" {
            assert_eq!(sh["counts"]["skipped"].as_u64(), Some(6), "{sh}");
            continue;
        }
        assert!(
            sh["counts"]["done"].as_u64().unwrap() > 0,
            "every shard did work: {sh}"
        );
        assert!(
            sh["report"].as_str().unwrap().starts_with("reports/"),
            "{sh}"
        );
    }
    let want = tree(&a.path().join("optimized"));
    for m in ["futures-um", "spot"] {
        assert!(
            want.keys().any(
                |k| k.starts_with(&format!("{m}/klines-1m/symbol=ETHUSDT/year=2025/month=1/"))
            ),
            "{m}: {:?}",
            want.keys().collect::<Vec<_>>()
        );
    }
    assert!(
        want.keys()
            .any(|k| k.starts_with("futures-um/fundingRate/"))
    );
    assert!(want.keys().any(|k| k.starts_with("futures-um/metrics/")));
    // Run state and the summary in the store.
    let runs = a.path().join("_runs/demo");
    assert!(
        walk(&runs)
            .iter()
            .any(|p| p.ends_with("steps/optimize-um/1-of-2.json"))
    );
    assert!(a.path().join(s["summary_path"].as_str().unwrap()).is_file());
    // The table on stderr names every step.
    let err = stderr(&o);
    assert!(err.contains("download-um    0/2    ok"), "{err}");
    eprintln!("demo DAG, uninterrupted: {full_secs:.1}s");

    // 2. SIGKILL midway (once the first extract shard has finished), then resume.
    let store_b = b.path().to_str().unwrap().to_string();
    let mut child = demo(b.path(), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = b.path().join("_runs/demo");
    wait_until(
        "an extract shard to finish",
        Duration::from_secs(300),
        || {
            walk(&marker)
                .iter()
                .any(|p| p.to_string_lossy().contains("/steps/extract-um/"))
        },
    );
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    // Its children get SIGTERM from the kernel (parent-death signal) and stop.
    wait_no_process(&store_b);
    assert!(
        !b.path()
            .join("optimized/futures-um/klines-1m/symbol=ETHUSDT/year=2025/month=1")
            .exists()
            || !b.path().join("optimized/spot").exists(),
        "the kill came too late to test a resume"
    );
    let o = demo(b.path(), &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "resumed run:\n{}", stderr(&o));
    let oc = outcomes(&summary(&o));
    assert!(
        oc.values().any(|v| v == "skipped") && oc.values().any(|v| v == "ok"),
        "the resumed run skips what the killed one finished: {oc:?}"
    );
    assert_eq!(oc["download-um 0/2"], "skipped", "{oc:?}");
    let got = tree(&b.path().join("optimized"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "same optimized files"
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs from the uninterrupted run's");
    }

    // 3. The second rerun does no work.
    let mut cmd = demo(b.path(), &[]);
    let t = Instant::now();
    let o = cmd.output().unwrap();
    let noop_secs = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = summary(&o);
    assert!(
        outcomes(&s).values().all(|v| v == "skipped"),
        "{:?}",
        outcomes(&s)
    );
    assert!(
        noop_secs < 10.0,
        "a finished DAG reruns in seconds: {noop_secs:.1}s"
    );
    eprintln!("demo DAG, no-op rerun: {noop_secs:.2}s");

    // 4. A backfill override touches only its range (in a fresh store: every output counts).
    let c = tempfile::tempdir().unwrap();
    let o = demo(
        c.path(),
        &[
            "--start",
            "2025-01-10",
            "--end",
            "2025-01-11",
            "--symbols",
            "ETHUSDT",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "backfill:\n{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["params"]["start"], "2025-01-10");
    assert_eq!(s["params"]["symbols"], serde_json::json!(["ETHUSDT"]));
    // One symbol: the sharded steps run one shard.
    assert!(
        outcomes(&s).contains_key("download-um 0/1"),
        "{:?}",
        outcomes(&s)
    );
    let mut days = BTreeSet::new();
    for p in walk(&c.path().join("raw")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("ETHUSDT-"), "{name}");
        // `ETHUSDT-1m-2025-01-10.zip`; fundingRate exists only as monthly files, and
        // January's covers the range.
        let stem = name.trim_end_matches(".zip");
        let date = stem[stem.find("-20").expect("a dated file") + 1..].to_string();
        assert!(
            ["2025-01-10", "2025-01-11"].contains(&date.as_str())
                || (name.contains("fundingRate") && date == "2025-01"),
            "{name} is outside the backfill range"
        );
        days.insert(date);
    }
    assert!(
        days.contains("2025-01-10") && days.contains("2025-01-11"),
        "{days:?}"
    );
    for p in walk(&c.path().join("parquet")) {
        let s = p.to_string_lossy();
        if s.contains("/fundingRate/") {
            continue;
        }
        assert!(
            s.contains("date=2025-01-10") || s.contains("date=2025-01-11"),
            "{s} is outside the backfill range"
        );
    }
    for p in walk(&c.path().join("optimized")) {
        let s = p.to_string_lossy();
        assert!(s.contains("symbol=ETHUSDT/year=2025/month=1/"), "{s}");
    }
    // Its own run state, beside nothing else.
    let keys: Vec<_> = std::fs::read_dir(c.path().join("_runs/demo"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].starts_with("2025-01-10_2025-01-11-"), "{keys:?}");
}

/// `--steps aggregate-um` on a fresh store runs what aggregate needs for the range and nothing
/// else; with `--log-format json` every stderr line, the runner's and its jobs', is one JSON
/// object with `timestamp` and `level`, and the jobs' lines say their `step` (and `shard`); the
/// DAG's progress is among them. Run again, nothing runs.
#[test]
fn steps_run_what_they_need_and_json_logs_parse_line_by_line() {
    let a = tempfile::tempdir().unwrap();
    let args = [
        "--steps",
        "aggregate-um",
        "--start",
        "2025-01-20",
        "--end",
        "2025-01-21",
        "--log-format",
        "json",
    ];
    let mut c = demo(a.path(), &args);
    c.env("RUST_LOG", "info")
        .env("PIPELINE_PROGRESS_SECS", "0.2");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = summary(&o);
    let steps: BTreeSet<&str> = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["step"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = [
        "download-um",
        "extract-um",
        "convert-um",
        "tail-um",
        "optimize-um",
        "validate-um",
        "aggregate-um",
    ]
    .into();
    assert_eq!(steps, want);
    assert!(
        outcomes(&s).values().all(|v| v == "ok"),
        "{:?}",
        outcomes(&s)
    );
    assert!(!a.path().join("bars").exists() && !a.path().join("final").exists());
    assert!(
        !walk(&a.path().join("raw"))
            .iter()
            .any(|p| p.to_string_lossy().contains("/spot/"))
    );

    let err = stderr(&o);
    let mut by_step = BTreeSet::new();
    let mut progress = 0;
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        for field in ["timestamp", "level"] {
            assert!(
                v.get(field).is_some_and(|f| f.is_string()),
                "no {field}: {line}"
            );
        }
        if let Some(step) = v.get("step").and_then(|s| s.as_str()) {
            by_step.insert(step.to_string());
        }
        let msg = v["message"].as_str().unwrap_or_default();
        if msg.starts_with("dag progress") || msg.starts_with("progress") {
            progress += 1;
        }
    }
    // The jobs' own lines carry their step (the runner's events about a step carry it too).
    assert!(
        by_step.contains("download-um") && by_step.contains("aggregate-um"),
        "{by_step:?}"
    );
    assert!(progress >= 6, "{progress} progress lines:\n{err}");

    // The same cut again: every shard is up to date, nothing runs.
    let o = demo(a.path(), &args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = summary(&o);
    assert!(
        outcomes(&s).values().all(|v| v == "skipped"),
        "{:?}",
        outcomes(&s)
    );
    // An unknown step is a usage error that lists the DAG's steps.
    let o = demo(a.path(), &["--steps", "agregate-um"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("agregate-um") && err.contains("aggregate-um"),
        "{err}"
    );
}

/// The datasets a run produces (not its manifests, reports and run state, which name runs and
/// times): relative path → bytes.
fn datasets(store: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for d in [
        "raw",
        "csv",
        "parquet",
        "optimized",
        "features",
        "bars",
        "final",
    ] {
        for (k, v) in tree(&store.join(d)) {
            all.insert(format!("{d}/{k}"), v);
        }
    }
    all
}

/// The demo DAG over two symbols and three days: a few seconds.
const SMALL: [&str; 6] = [
    "--symbols",
    "BTCUSDT,ETHUSDT",
    "--start",
    "2025-01-09",
    "--end",
    "2025-01-11",
];

/// Every process descending from `pid` (the runner's jobs and services, their children).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if let Some(ppid) = after.split(' ').nth(1).and_then(|x| x.parse::<u32>().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let q = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == q).map(|(p, _)| *p));
        i += 1;
    }
    out
}

fn signal(pids: &[u32], sig: &str) {
    let mut c = Command::new("kill");
    c.arg(format!("-{sig}"));
    c.args(pids.iter().map(|p| p.to_string()));
    let _ = c.stderr(Stdio::null()).status();
}

/// SIGKILL a process and everything under it at one instant: stopped first (so no child sees
/// its parent die and shuts down cleanly), then killed.
fn kill_tree(pid: u32) {
    let mut seen = BTreeSet::new();
    loop {
        let now: Vec<u32> = descendants(pid)
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        if now.is_empty() {
            break;
        }
        signal(&now, "STOP");
        seen.extend(now);
    }
    let all: Vec<u32> = seen.into_iter().collect();
    signal(&all, "KILL");
    // Dead once its files (and so its locks) are closed, as a killed pod's processes are before
    // anything runs again: gone, or a zombie whose threads have all exited (no open file left).
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in all {
        loop {
            let open = std::fs::read_dir(format!("/proc/{p}/fd"))
                .map(|d| d.count())
                .unwrap_or(0);
            if open == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "process {p} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What a killed run may leave and a later run must have swept: staging objects, a local
/// store's partial writes (`…#N`), liveness leases of dead runs, temp folders.
fn leftovers(store: &Path, tmp: &Path) -> Vec<String> {
    let mut left: Vec<String> = walk(store)
        .into_iter()
        .map(|p| p.strip_prefix(store).unwrap().display().to_string())
        .filter(|p| p.starts_with("_staging/") || p.starts_with("_leases/runs/") || p.contains('#'))
        .collect();
    if store.join("_staging").exists() {
        left.push("_staging/ (a folder)".into());
    }
    left.extend(
        std::fs::read_dir(tmp)
            .unwrap()
            .map(|e| format!("temp: {}", e.unwrap().file_name().to_string_lossy())),
    );
    left
}

/// Kill-anywhere: the demo DAG (two symbols, three days) SIGKILLed with all its processes at
/// random instants; each killed run is resumed, and the resumed store holds exactly the
/// uninterrupted run's datasets and nothing a crash leaves (staging objects, partial writes,
/// leases of dead runs, temp files). `PIPELINE_KILL_TRIALS` sets the number of kills (10 by
/// default; `tests/bench/kill.sh` runs more), `PIPELINE_KILL_SEED` replays a trial.
#[test]
fn the_demo_dag_killed_anywhere_resumes_to_identical_outputs_and_leaves_nothing() {
    bin_dir();
    let kills: usize = std::env::var("PIPELINE_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("PIPELINE_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("kill-anywhere trial: {kills} kills, PIPELINE_KILL_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let range = SMALL;
    let tmp = tempfile::tempdir().unwrap();
    let run = |store: &Path| {
        let mut c = demo(store, &range);
        c.env("TMPDIR", tmp.path());
        c
    };

    let reference = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = run(reference.path()).output().unwrap();
    // The kills fall inside a run's length; the reference run may have shared the machine with
    // other tests, so a run that finishes before its kill shortens it.
    let mut full = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = datasets(reference.path());
    assert!(
        want.keys().any(|k| k.starts_with("final/")),
        "{:?}",
        want.keys()
    );
    assert_eq!(
        leftovers(reference.path(), tmp.path()),
        Vec::<String>::new()
    );

    let mut done = 0;
    let mut attempts = 0;
    while done < kills {
        attempts += 1;
        assert!(
            attempts <= kills * 3,
            "too many kills came after the run ended"
        );
        let store = tempfile::tempdir().unwrap();
        let at = full.mul_f64(rng.f64() * 0.95);
        let mut child = run(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_some() {
            // Finished before the kill: not a trial, and runs are at most this long now.
            full = full.min(started.elapsed());
            continue;
        }
        kill_tree(child.id());
        child.wait().unwrap();
        done += 1;
        let o = run(store.path()).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "resume after a kill at {at:?} (seed {seed}):\n{}",
            stderr(&o)
        );
        let got = datasets(store.path());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "kill at {at:?} (seed {seed}): other files"
        );
        for (k, v) in &want {
            assert!(got[k] == *v, "kill at {at:?} (seed {seed}): {k} differs");
        }
        assert_eq!(
            leftovers(store.path(), tmp.path()),
            Vec::<String>::new(),
            "kill at {at:?} (seed {seed}): left behind"
        );
    }
    eprintln!(
        "kill-anywhere: {done} kills over a {:.1}s run, every resume identical",
        full.as_secs_f64()
    );
}

/// Two runners started at once on one store: each step's lease lets one of them work while
/// the other waits (`--wait-lock`); together they do one run's work, and the store equals a
/// serial run's. Without `--wait-lock`, a job whose lease is held exits 75 naming the holder.
#[test]
fn two_runners_on_one_store_do_the_work_once() {
    bin_dir();
    let range = [&SMALL[..], &["--wait-lock", "5m"]].concat();
    let serial = tempfile::tempdir().unwrap();
    let o = demo(serial.path(), &range).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let done_of = |o: &Output| -> u64 {
        summary(o)["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["counts"]["done"].as_u64().unwrap_or(0))
            .sum()
    };
    let one_run = done_of(&o);

    let shared_store = tempfile::tempdir().unwrap();
    let a = demo(shared_store.path(), &range)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = demo(shared_store.path(), &range)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert_eq!(
        done_of(&a) + done_of(&b),
        one_run,
        "the two runners did the work once between them"
    );
    let (want, got) = (datasets(serial.path()), datasets(shared_store.path()));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs from the serial run's");
    }
}

/// SIGTERM: forwarded to the running jobs, the run stops with 143 and says so.
#[test]
fn sigterm_is_forwarded_and_the_run_stops_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().to_str().unwrap().to_string();
    let out_path = d.path().join("stdout");
    let mut child = demo(d.path(), &["--concurrency", "1"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the first download to write",
        Duration::from_secs(120),
        || !walk(&d.path().join("raw")).is_empty(),
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(t.elapsed() < Duration::from_secs(30));
    wait_no_process(&store);
    let out = std::fs::read_to_string(&out_path).unwrap();
    let s: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(s["outcome"], "interrupted");
    let oc = outcomes(&s);
    assert!(
        oc.values().any(|v| v == "interrupted"),
        "the running shard was interrupted: {oc:?}"
    );
    assert_eq!(oc["optimize-spot -"], "not_run", "{oc:?}");
    // Only shards that finished are recorded as done: a resumed run redoes the interrupted ones.
    for p in walk(&d.path().join("_runs")) {
        let p = p.to_string_lossy().into_owned();
        let Some(rest) = p.split("/steps/").nth(1) else {
            continue;
        };
        let (step, file) = rest.split_once('/').unwrap();
        let (i, n) = file.trim_end_matches(".json").split_once("-of-").unwrap();
        let key = if n == "1" && !step.ends_with("-um") {
            format!("{step} -")
        } else {
            format!("{step} {i}/{n}")
        };
        assert_eq!(
            oc.get(&key).map(String::as_str),
            Some("ok"),
            "{key} recorded: {oc:?}"
        );
    }
}

/// A failing step is retried as the DAG says; the steps after it do not run; exit 1.
#[test]
fn a_failing_step_is_retried_and_blocks_its_dependents() {
    let d = tempfile::tempdir().unwrap();
    let dag = d.path().join("fail.yaml");
    std::fs::write(
        &dag,
        "name: fail\n\
         defaults:\n  symbols: [BTCUSDT]\n  start: 2025-01-01\n  end: 2025-01-01\n\
         steps:\n\
         \x20 - name: download\n    job: download\n    args:\n\
         \x20     source: http://127.0.0.1:9\n      retries: 1\n      retry-base-ms: 1\n\
         \x20   retries: 1\n    retry_delay_secs: 0\n\
         \x20 - name: extract\n    job: extract\n    needs: [download]\n\
         \x20 - name: other\n    job: extract\n    args:\n      data-type: metrics\n",
    )
    .unwrap();
    let store = d.path().join("store");
    let o = runner(&[dag.to_str().unwrap(), "--store", store.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["outcome"], "failed");
    let by: BTreeMap<_, _> = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["step"].as_str().unwrap().to_string(), x.clone()))
        .collect();
    assert_eq!(by["download"]["outcome"], "failed");
    assert_eq!(by["download"]["attempts"], 2, "retried once");
    assert_eq!(by["download"]["exit_code"], 1);
    assert_eq!(by["extract"]["outcome"], "not_run");
    assert!(
        by["extract"]["reason"]
            .as_str()
            .unwrap()
            .contains("download")
    );
    // An independent step still ran.
    assert_eq!(by["other"]["outcome"], "ok");
    let err = stderr(&o);
    assert!(err.contains("download"), "{err}");
}

/// `runner validate` on each kind of malformed DAG names the file and line.
#[test]
fn validate_names_file_and_line_for_each_malformed_kind() {
    let o = runner(&[
        "validate",
        "dags/demo.yaml",
        "dags/full.yaml",
        "dags/daily.yaml",
        "dags/hourly.yaml",
        "dags/verify.yaml",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let d = tempfile::tempdir().unwrap();
    let good = "\
name: t
defaults:
  symbols: [BTCUSDT]
  start: 2025-01-01
  end: 2025-01-02
steps:
  - name: download
    job: download
    args:
      market: um
  - name: extract
    job: extract
    needs: [download]
";
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "unknown-key",
            good.replace("    job: extract\n", "    job: extract\n    retry: 3\n"),
            ":13:",
            "unknown field `retry`",
        ),
        (
            "unknown-job",
            good.replace("job: extract", "job: extrct"),
            ":12:",
            "unknown job `extrct` (did you mean `extract`?)",
        ),
        (
            "unknown-argument",
            good.replace("market: um", "markt: um"),
            ":10:",
            "unknown argument `markt` for job `download` (did you mean `market`?)",
        ),
        (
            "cycle",
            good.replace("    args:\n      market: um\n", "    needs: [extract]\n"),
            ":9:",
            "cycle: download -> extract -> download",
        ),
        (
            "missing-need",
            good.replace("needs: [download]", "needs: [downlod]"),
            ":13:",
            "needs `downlod`, which is not a step of this DAG",
        ),
        (
            "bad-symbol",
            good.replace("symbols: [BTCUSDT]", "symbols: [btc/usdt]"),
            ":3:",
            "`btc/usdt` is not a symbol name",
        ),
        (
            "bad-url",
            good.replace(
                "      market: um\n",
                "      market: um\n      source: data.binance.vision\n",
            ),
            ":11:",
            "`source` `data.binance.vision` is not an http(s) URL",
        ),
        (
            "duplicate-key",
            good.replace("name: t\n", "name: t\nname: u\n"),
            ":2:",
            "duplicate field `name`",
        ),
        (
            "bad-yaml",
            good.replace("    job: download\n", "    job: download\n     oops: 1\n"),
            ":9:",
            "mapping values are not allowed",
        ),
    ];
    for (name, text, line, msg) in cases {
        let path = d.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let o = runner(&["validate", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        let want = format!("{}{line}", path.display());
        assert!(
            err.starts_with(&want),
            "{name}: expected `{want}…`, got:\n{err}"
        );
        assert!(err.contains(msg), "{name}: expected `{msg}` in:\n{err}");
        // Running it fails the same way, before doing anything.
        let o = runner(&[
            path.to_str().unwrap(),
            "--store",
            d.path().join("s").to_str().unwrap(),
        ])
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(2), "{name}");
        assert!(stderr(&o).contains(&want), "{name}: {}", stderr(&o));
    }
    assert!(
        !d.path().join("s").exists(),
        "an invalid DAG touches no store"
    );
}

/// The registry of job flags is the jobs' own clap definitions: compared with `--help`; and
/// every job crate of the workspace is in it.
#[test]
fn the_job_registry_matches_every_jobs_help() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(m, _)| m)
        .unwrap();
    for m in members.split(',').map(|m| m.trim().trim_matches('"')) {
        // The runner and `status` (which reads the store and writes nothing) are not DAG jobs.
        if let Some(job) = m.strip_prefix("jobs/")
            && job != "runner"
            && job != "status"
        {
            assert!(
                runner::registry::job(job).is_some(),
                "job `{job}` is not in jobs/runner/src/registry.rs: add its flags there (one entry of JOBS) so DAGs can run it"
            );
        }
    }

    for job in runner::registry::JOBS {
        let o = Command::new(bin(job.name)).arg("--help").output().unwrap();
        assert!(o.status.success(), "{} --help", job.name);
        let help = stdout(&o);
        // `      --flag <VALUE>` or `  -x, --flag`: the flag and whether it takes a value.
        let mut flags = BTreeMap::new();
        for line in help.lines() {
            let t = line.trim_start();
            let t = match t.split_once(", ") {
                Some((short, rest)) if short.starts_with('-') && short.len() == 2 => rest,
                _ => t,
            };
            let Some(rest) = t.strip_prefix("--") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name == "help" || name == "version" {
                continue;
            }
            flags.insert(name, rest.contains('<'));
        }
        let registry: BTreeMap<String, bool> = job
            .all_args()
            .map(|a| {
                (
                    a.name.to_string(),
                    a.kind != runner::registry::ArgKind::Switch,
                )
            })
            .collect();
        assert_eq!(
            registry, flags,
            "jobs/runner/src/registry.rs disagrees with `{} --help` (left: registry, right: the binary)",
            job.name
        );
    }
}

fn manifests() -> Vec<(PathBuf, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join("dags"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let k = repo().join("k8s").join(p.file_name().unwrap());
            (p, k)
        })
        .collect();
    v.sort();
    v
}

/// `k8s/` holds exactly what `runner render-argo` makes of `dags/`.
/// `PIPELINE_UPDATE_K8S=1 cargo test -p archive-sim --test e2e runner::k8s` rewrites it.
#[test]
fn k8s_manifests_are_up_to_date() {
    let update = std::env::var_os("PIPELINE_UPDATE_K8S").is_some();
    assert!(manifests().len() >= 3);
    for (dag, k8s) in manifests() {
        let rel = format!("dags/{}", dag.file_name().unwrap().to_string_lossy());
        let o = runner(&["render-argo", &rel]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "render {rel}: {}", stderr(&o));
        let rendered = stdout(&o);
        if update {
            std::fs::write(&k8s, &rendered).unwrap();
            continue;
        }
        let current = std::fs::read_to_string(&k8s).unwrap_or_default();
        assert!(
            current == rendered,
            "{} is out of date: run `cargo run -p runner -- render-argo {rel} > k8s/{}` \
             (or PIPELINE_UPDATE_K8S=1 cargo test -p archive-sim --test e2e runner::k8s)",
            k8s.display(),
            dag.file_name().unwrap().to_string_lossy()
        );
    }
}

/// The rendered manifests against Argo's official JSON schema (strictly: unknown fields are
/// errors), and the plain Kubernetes objects with kubernetes-validate, both offline.
#[test]
fn k8s_manifests_validate_against_the_schemas() {
    let Some(python) = common::python_with_readers() else {
        return;
    };
    let schema = repo().join("../shared/schemas/argo-workflows.schema.json");
    if !schema.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing (CI has ../shared/)",
            schema.display()
        );
        eprintln!("SKIPPED: {} not found", schema.display());
        return;
    }
    let mut args: Vec<String> = vec![
        repo()
            .join("tests/python/validate_k8s.py")
            .display()
            .to_string(),
        "--argo-schema".into(),
        schema.display().to_string(),
        "--kubernetes".into(),
        repo().join("k8s/namespace-rbac.yaml").display().to_string(),
    ];
    args.extend(manifests().iter().map(|(_, k)| k.display().to_string()));
    let o = Command::new(&python).args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "schema validation failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    for (_, k) in manifests() {
        assert!(out.contains(&format!("{}: ok", k.display())), "{out}");
    }
    assert!(out.contains("namespace-rbac.yaml: ok"), "{out}");
}

/// A monthly file that lacks a day (binance-archive.md: #186, #220, #253): one run of the demo
/// DAG ends with the month complete — `download` counts the monthly file's days, finds the hole,
/// fetches that day's daily file from the listing, and `optimize` takes the day from it — and
/// the repair is in `download`'s report.
#[test]
fn a_monthly_file_missing_a_day_is_repaired_in_one_run() {
    let store = tempfile::tempdir().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let monthly = "data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip";
    let config = cfg_dir.path().join("sim.json");
    std::fs::write(
        &config,
        serde_json::json!({ "monthly_missing_day": [[monthly, "2024-12-15"]] }).to_string(),
    )
    .unwrap();
    let o = demo(
        store.path(),
        &["--steps", "validate-um", "--symbols", "BTCUSDT"],
    )
    .env("ARCHIVE_SIM_CONFIG", &config)
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["outcome"], "ok", "{s}");

    // The month is complete: every minute of December once.
    let month = store
        .path()
        .join("optimized/futures-um/klines-1m/symbol=BTCUSDT/year=2024/month=12/part-0.parquet");
    let df = common::read(&month);
    let times: BTreeSet<i64> = common::i64s(&df, "open_time").into_iter().collect();
    assert_eq!(df.height(), 31 * 1440);
    assert_eq!(times.len(), 31 * 1440);
    let dec15 = 1_734_220_800_000_000i64;
    assert!(times.contains(&dec15) && times.contains(&(dec15 + 86_399 * 1_000_000 - 59_000_000)));

    // The repair is reported by the download that made it.
    let dl = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["step"] == "download-um")
        .expect("a download-um shard");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.path().join(dl["report"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let holes = &report["details"]["monthly_holes"];
    assert_eq!(holes[0]["file"], monthly, "{report}");
    assert_eq!(
        holes[0]["repaired"],
        serde_json::json!(["2024-12-15"]),
        "{report}"
    );
    assert!(
        store
            .path()
            .join("raw/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12-15.zip")
            .exists()
    );
}
