//! `bench-download`: serves a synthetic archive on loopback and measures the release `download`
//! binary on (a) many small daily files and (b) a few large files, next to plain `curl` and
//! `curl | openssl dgst -sha256` on the same files in the same run. Run it through
//! `tests/bench/download.sh`, which builds everything in release first.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use archive_sim::{SimConfig, SimHandle, SimServer, SymbolSpec};
use chrono::NaiveDate;
use clap::Parser;
use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Interval, Market};

#[derive(Parser)]
struct Args {
    /// Symbols for the small-file part (each contributes one daily 1m-klines file per day).
    #[arg(long, default_value_t = 20)]
    small_symbols: usize,
    /// Days for the small-file part.
    #[arg(long, default_value_t = 30)]
    small_days: u32,
    /// Large files (monthly aggTrades, one per symbol).
    #[arg(long, default_value_t = 3)]
    large_files: usize,
    /// Trades per minute in the large files (sets their size).
    #[arg(long, default_value_t = 400)]
    large_trades_per_minute: u32,
    /// `download --memory-limit-mib`: files above it stream through a staging object.
    #[arg(long, default_value_t = 32)]
    memory_limit_mib: usize,
    /// Runs of each tool; the best (fastest) is reported — the machine is shared and noisy.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Concurrency of `download` and of both curl baselines.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid date")
}

struct Case {
    name: &'static str,
    files: Vec<ArchiveFile>,
    sim: SimHandle,
    bytes: u64,
}

struct Figure {
    tool: String,
    secs: f64,
    /// Peak RSS in KiB, where measured.
    rss_kib: Option<u64>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let download = bin_dir.join("download");
    if !download.exists() {
        bail!(
            "{} missing: build with `cargo build --release -p download`",
            download.display()
        );
    }
    let klines = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1))?;
    let agg = Dataset::new(Market::Um, DataType::AggTrades, None)?;

    // (a) many small files.
    let mut small = SimConfig::demo().with_range(d(2024, 1, 1), d(2024, 12, 31));
    small.symbols = (0..args.small_symbols)
        .map(|i| {
            SymbolSpec::new(
                Market::Um,
                &format!("SYM{i:03}USDT"),
                d(2020, 1, 1),
                10.0 + i as f64,
            )
        })
        .collect();
    small.cache_bytes = 8 << 30;
    let small_files: Vec<ArchiveFile> = small
        .symbols
        .iter()
        .flat_map(|s| {
            (1..=args.small_days).map(move |k| {
                ArchiveFile::new(
                    klines,
                    s.symbol.clone(),
                    FileDate::Day(d(2024, 1, 1) + chrono::Days::new(k as u64 - 1)),
                )
            })
        })
        .collect();

    // (b) a few large files.
    let mut large = SimConfig::demo().with_range(d(2024, 1, 1), d(2024, 1, 31));
    large.symbols = (0..args.large_files)
        .map(|i| {
            SymbolSpec::new(
                Market::Um,
                &format!("BIG{i}USDT"),
                d(2020, 1, 1),
                100.0 * (i + 1) as f64,
            )
        })
        .collect();
    large.trades_per_minute = (
        args.large_trades_per_minute,
        args.large_trades_per_minute + 50,
    );
    large.cache_bytes = 8 << 30;
    let large_files: Vec<ArchiveFile> = large
        .symbols
        .iter()
        .map(|s| {
            ArchiveFile::new(
                agg,
                s.symbol.clone(),
                FileDate::Month {
                    year: 2024,
                    month: 1,
                },
            )
        })
        .collect();

    let mut cases = Vec::new();
    for (name, config, files) in [
        ("small daily files", small, small_files),
        ("large files", large, large_files),
    ] {
        let sim = SimServer::start(config, 0).await?;
        // Generate and cache every object before timing: the bench measures transfer, not generation.
        eprintln!("generating {} files for '{name}'…", files.len());
        let mut bytes = 0;
        for f in &files {
            let key = f.key();
            let archive = sim.archive_arc();
            let z = tokio::task::spawn_blocking(move || archive.zip_bytes(&key)).await??;
            bytes += z.context("file exists")?.len() as u64;
            sim.archive().checksum(&f.checksum_key())?;
        }
        cases.push(Case {
            name,
            files,
            sim,
            bytes,
        });
    }

    println!(
        "download benchmark: concurrency {}, {} cores, loopback, local-folder store\n",
        args.concurrency,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<18} {:<34} {:>6} {:>9} {:>8} {:>9} {:>8} {:>10} {:>9}",
        "case", "tool", "files", "MB", "secs", "files/s", "MB/s", "vs curl", "peak RSS"
    );
    for case in &cases {
        let mut figures = vec![
            Figure {
                tool: "curl (xargs -P, to files)".into(),
                secs: f64::MAX,
                rss_kib: None,
            },
            Figure {
                tool: "curl | openssl dgst -sha256".into(),
                secs: f64::MAX,
                rss_kib: None,
            },
            Figure {
                tool: "download (verify+store+manifest)".into(),
                secs: f64::MAX,
                rss_kib: None,
            },
        ];
        for _ in 0..args.repeat.max(1) {
            // A fresh folder per run: a second download into the same store would be a no-op.
            let tmp = tempfile::tempdir()?;
            let t = run_curl(&case.sim, &case.files, tmp.path(), args.concurrency)?;
            figures[0].secs = figures[0].secs.min(t);
            let t = run_curl_openssl(&case.sim, &case.files, args.concurrency)?;
            figures[1].secs = figures[1].secs.min(t);
            let (t, rss) = run_download(&download, &case.sim, &case.files, tmp.path(), &args)?;
            if t < figures[2].secs {
                figures[2].secs = t;
                figures[2].rss_kib = rss;
            }
        }
        let curl_secs = figures[0].secs;
        let mb = case.bytes as f64 / 1e6;
        for f in &figures {
            println!(
                "{:<18} {:<34} {:>6} {:>9.1} {:>8.3} {:>9.0} {:>8.1} {:>9.0}% {:>9}",
                case.name,
                f.tool,
                case.files.len(),
                mb,
                f.secs,
                case.files.len() as f64 / f.secs,
                mb / f.secs,
                100.0 * curl_secs / f.secs,
                f.rss_kib
                    .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    println!(
        "\nbest of {} runs each; 'vs curl' is curl's time over the tool's: byte throughput relative to plain curl.",
        args.repeat.max(1)
    );
    Ok(())
}

fn time(cmd: &mut Command) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    let secs = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(secs)
}

/// Plain curl, one process per file, `concurrency` at a time, writing files (what `download`
/// does too) — the byte-throughput yardstick.
fn run_curl(
    sim: &SimHandle,
    files: &[ArchiveFile],
    dir: &Path,
    conc: usize,
) -> anyhow::Result<f64> {
    let out = dir.join("curl");
    std::fs::create_dir_all(&out)?;
    let lines: String = files
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{} {}/{i}.zip\n", f.url(&sim.base_url()), out.display()))
        .collect();
    xargs(&lines, conc, "curl -s -f -o \"$1\" \"$0\"", 2)
}

/// The naive verifying pipeline: `curl | openssl dgst -sha256`, one per file, nothing written.
fn run_curl_openssl(sim: &SimHandle, files: &[ArchiveFile], conc: usize) -> anyhow::Result<f64> {
    let urls: String = files
        .iter()
        .map(|f| f.url(&sim.base_url()) + "\n")
        .collect();
    xargs(
        &urls,
        conc,
        "curl -s -f \"$0\" | openssl dgst -sha256 >/dev/null",
        1,
    )
}

/// Run `sh -c script` over the input lines, `per` arguments at a time, `conc` in parallel.
fn xargs(input: &str, conc: usize, script: &str, per: usize) -> anyhow::Result<f64> {
    let mut child = Command::new("xargs")
        .args([
            "-P",
            &conc.to_string(),
            "-n",
            &per.to_string(),
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let t0 = Instant::now();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("xargs {script} failed: {status}");
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn run_download(
    bin: &PathBuf,
    sim: &SimHandle,
    files: &[ArchiveFile],
    dir: &Path,
    args: &Args,
) -> anyhow::Result<(f64, Option<u64>)> {
    let store = dir.join("store");
    let ds = files[0].dataset;
    let mut symbols: Vec<String> = files.iter().map(|f| f.symbol.clone()).collect();
    symbols.dedup();
    let first = files
        .iter()
        .map(|f| f.date.first_day())
        .min()
        .context("files")?;
    let last = files
        .iter()
        .map(|f| f.date.last_day())
        .max()
        .context("files")?;
    let interval = ds
        .interval
        .map(|i| i.as_str().to_string())
        .unwrap_or_else(|| "1m".into());
    // GNU time reports the peak RSS, where it is installed.
    let gnu_time = Path::new("/usr/bin/time");
    let rss_file = dir.join("rss.txt");
    let mut cmd = if gnu_time.exists() {
        let mut c = Command::new(gnu_time);
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let secs = time(
        cmd.args(["--store", store.to_str().context("utf-8 path")?])
            .args(["--source", &sim.base_url(), "--market", "um"])
            .args(["--data-type", ds.data_type.name(), "--interval", &interval])
            .args(["--symbols", &symbols.join(",")])
            .args(["--start", &first.to_string(), "--end", &last.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--memory-limit-mib", &args.memory_limit_mib.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse().ok());
    Ok((secs, rss))
}
