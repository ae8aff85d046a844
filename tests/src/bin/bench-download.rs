//! `bench-download`: serves a synthetic archive on loopback and measures the release `download`
//! binary on (a) many small daily files and (b) a few large files, next to plain `curl` and
//! `curl | openssl dgst -sha256` on the same files in the same run. Run it through
//! `tests/bench/download.sh`, which builds everything in release first.

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
        "{:<18} {:<34} {:>6} {:>9} {:>8} {:>9} {:>8} {:>10}",
        "case", "tool", "files", "MB", "secs", "files/s", "MB/s", "vs curl"
    );
    for case in &cases {
        let tmp = tempfile::tempdir()?;
        let mut figures = Vec::new();
        figures.push(Figure {
            tool: "curl --parallel".into(),
            secs: run_curl(&case.sim, &case.files, tmp.path(), args.concurrency)?,
        });
        figures.push(Figure {
            tool: "curl | openssl dgst -sha256".into(),
            secs: run_curl_openssl(&case.sim, &case.files, args.concurrency)?,
        });
        figures.push(Figure {
            tool: "download (verify+store+manifest)".into(),
            secs: run_download(
                &download,
                &case.sim,
                &case.files,
                tmp.path(),
                args.concurrency,
            )?,
        });
        let curl_secs = figures[0].secs;
        let mb = case.bytes as f64 / 1e6;
        for f in &figures {
            println!(
                "{:<18} {:<34} {:>6} {:>9.1} {:>8.3} {:>9.0} {:>8.1} {:>9.0}%",
                case.name,
                f.tool,
                case.files.len(),
                mb,
                f.secs,
                case.files.len() as f64 / f.secs,
                mb / f.secs,
                100.0 * curl_secs / f.secs
            );
        }
    }
    println!("\n'vs curl' is curl's time over the tool's: byte throughput relative to plain curl.");
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

fn run_curl(
    sim: &SimHandle,
    files: &[ArchiveFile],
    dir: &Path,
    conc: usize,
) -> anyhow::Result<f64> {
    let out = dir.join("curl");
    std::fs::create_dir_all(&out)?;
    let mut cfg = String::new();
    for (i, f) in files.iter().enumerate() {
        cfg.push_str(&format!(
            "url = \"{}\"\noutput = \"{}/{i}.zip\"\n",
            f.url(&sim.base_url()),
            out.display()
        ));
    }
    let cfg_path = dir.join("curl.cfg");
    std::fs::write(&cfg_path, cfg)?;
    time(
        Command::new("curl")
            .args([
                "-s",
                "-f",
                "--parallel",
                "--parallel-max",
                &conc.to_string(),
                "-K",
            ])
            .arg(&cfg_path)
            .stdout(Stdio::null()),
    )
}

fn run_curl_openssl(sim: &SimHandle, files: &[ArchiveFile], conc: usize) -> anyhow::Result<f64> {
    let urls: String = files
        .iter()
        .map(|f| f.url(&sim.base_url()) + "\n")
        .collect();
    let mut child = Command::new("xargs")
        .args([
            "-P",
            &conc.to_string(),
            "-n",
            "1",
            "sh",
            "-c",
            "curl -s -f \"$0\" | openssl dgst -sha256 >/dev/null",
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
            .write_all(urls.as_bytes())?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("curl | openssl failed: {status}");
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn run_download(
    bin: &PathBuf,
    sim: &SimHandle,
    files: &[ArchiveFile],
    dir: &Path,
    conc: usize,
) -> anyhow::Result<f64> {
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
    time(
        Command::new(bin)
            .args(["--store", store.to_str().context("utf-8 path")?])
            .args(["--source", &sim.base_url(), "--market", "um"])
            .args(["--data-type", ds.data_type.name(), "--interval", &interval])
            .args(["--symbols", &symbols.join(",")])
            .args(["--start", &first.to_string(), "--end", &last.to_string()])
            .args([
                "--concurrency",
                &conc.to_string(),
                "--memory-limit-mib",
                "64",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    )
}
