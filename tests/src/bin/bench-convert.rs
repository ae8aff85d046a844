//! `bench-convert`: stages synthetic archive CSVs (with their `extract` manifest entries) in a
//! temp local store and measures the release `convert` binary on (a) many small daily 1m-kline
//! files, (b) a large monthly aggTrades file and (c) a few large daily aggTrades files, then the
//! release `optimize` binary on (b)'s month — wall time, rows/s, MB/s and peak RSS, next to the
//! in-process `shared::formats::Parser` alone on the same bytes. Run it through
//! `tests/bench/convert.sh`, which builds everything in release first.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use archive_sim::{Archive, SimConfig, SymbolSpec};
use chrono::{NaiveDate, Utc};
use clap::Parser as ClapParser;
use shared::checksum::Hasher;
use shared::formats::{Columns, Parser, format_of};
use shared::manifest::{Entry, ManifestKey, ManifestWriter, Output, UnitStatus};
use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Interval, Market};

#[derive(ClapParser)]
struct Args {
    /// (a) symbols, each contributing one daily UM 1m-klines file (1440 rows) per day.
    #[arg(long, default_value_t = 20)]
    small_symbols: usize,
    /// (a) days per symbol (from 2024-01-01).
    #[arg(long, default_value_t = 30)]
    small_days: u32,
    /// (b) rows of the monthly UM aggTrades file (January 2024).
    #[arg(long, default_value_t = 20_000_000)]
    month_rows: u64,
    /// (c) large daily UM aggTrades files (one symbol each, 2024-02-01).
    #[arg(long, default_value_t = 2)]
    day_files: usize,
    /// (c) rows per large daily aggTrades file.
    #[arg(long, default_value_t = 3_000_000)]
    day_rows: u64,
    /// `--concurrency` of the jobs (their default is 16).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Runs of each case on a fresh store; the fastest is reported (the machine is shared).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Where the temp store goes (it needs about 2.5× the CSVs' size).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the staged template store (for profiling a job on it by hand); prints its path.
    #[arg(long)]
    keep: bool,
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid date")
}

/// One staged input set and the job arguments that select it.
struct Case {
    name: &'static str,
    data_type: &'static str,
    symbols: Vec<String>,
    start: NaiveDate,
    end: NaiveDate,
    files: Vec<ArchiveFile>,
    bytes: u64,
}

/// One measured job run.
#[derive(Clone, Default)]
struct Run {
    secs: f64,
    rows: u64,
    /// rows/s as the job reports it (its own clock, from plan to last unit).
    job_rows_per_sec: f64,
    done: u64,
    rss_kib: Option<u64>,
    /// User + system CPU seconds of the process.
    cpu_secs: Option<f64>,
    /// Bytes the job wrote (Parquet), from its report.
    out_bytes: u64,
}

/// The parser alone, in this process, one thread.
struct ParseOnly {
    rows: u64,
    cpu_secs: f64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let (convert, optimize) = (bin_dir.join("convert"), bin_dir.join("optimize"));
    for b in [&convert, &optimize] {
        if !b.exists() {
            bail!(
                "{} missing: build with `cargo build --release -p convert -p optimize`",
                b.display()
            );
        }
    }
    let work = match &args.work_dir {
        Some(p) => tempfile::tempdir_in(p)?,
        None => tempfile::tempdir()?,
    };
    let template = work.path().join("template");
    std::fs::create_dir_all(&template)?;
    let store = shared::Store::open(template.to_str().context("utf-8 path")?)?;

    // (a) many small daily 1m-kline files, from the archive-sim generator.
    let t0 = Instant::now();
    let klines = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1))?;
    let small_end = d(2024, 1, 1) + chrono::Days::new(args.small_days.max(1) as u64 - 1);
    let mut config = SimConfig::demo().with_range(d(2024, 1, 1), small_end);
    config.symbols = (0..args.small_symbols)
        .map(|i| {
            SymbolSpec::new(
                Market::Um,
                &format!("SYM{i:03}USDT"),
                d(2020, 1, 1),
                10.0 + i as f64,
            )
        })
        .collect();
    let small_symbols: Vec<String> = config.symbols.iter().map(|s| s.symbol.clone()).collect();
    let archive = Archive::new(config);
    let mut small = Case {
        name: "(a) small 1m-kline days",
        data_type: "klines",
        symbols: small_symbols.clone(),
        start: d(2024, 1, 1),
        end: small_end,
        files: Vec::new(),
        bytes: 0,
    };
    for s in &small_symbols {
        for k in 0..args.small_days as u64 {
            let f = ArchiveFile::new(
                klines,
                s.clone(),
                FileDate::Day(d(2024, 1, 1) + chrono::Days::new(k)),
            );
            let csv = archive
                .csv(&f.key())
                .with_context(|| format!("generator has no {}", f.key()))?;
            small.bytes += stage_bytes(&store, &template, &f, csv.as_bytes()).await?;
            small.files.push(f);
        }
    }
    eprintln!(
        "(a) {} kline files, {:.1} MB generated in {:.1} s",
        small.files.len(),
        small.bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );

    // (b) one large monthly aggTrades file, (c) a few large daily ones: written directly.
    let agg = Dataset::new(Market::Um, DataType::AggTrades, None)?;
    let t0 = Instant::now();
    let month_file = ArchiveFile::new(
        agg,
        "BIGMONTHUSDT",
        FileDate::Month {
            year: 2024,
            month: 1,
        },
    );
    let month_bytes = stage_agg_trades(&store, &template, &month_file, args.month_rows, 1).await?;
    let month = Case {
        name: "(b) aggTrades month",
        data_type: "aggTrades",
        symbols: vec![month_file.symbol.clone()],
        start: d(2024, 1, 1),
        end: d(2024, 1, 31),
        files: vec![month_file],
        bytes: month_bytes,
    };
    let mut days = Case {
        name: "(c) aggTrades big days",
        data_type: "aggTrades",
        symbols: Vec::new(),
        start: d(2024, 2, 1),
        end: d(2024, 2, 1),
        files: Vec::new(),
        bytes: 0,
    };
    for i in 0..args.day_files {
        let f = ArchiveFile::new(agg, format!("BIGDAY{i}USDT"), FileDate::Day(d(2024, 2, 1)));
        days.bytes += stage_agg_trades(&store, &template, &f, args.day_rows, 2 + i as u64).await?;
        days.symbols.push(f.symbol.clone());
        days.files.push(f);
    }
    eprintln!(
        "(b)+(c) aggTrades: {:.1} MB generated in {:.1} s",
        (month.bytes + days.bytes) as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let mut cases = vec![small, month];
    if !days.files.is_empty() {
        cases.push(days);
    }

    // The parser alone on the same bytes: what the job could reach on one core.
    let parse_only: Vec<ParseOnly> = cases
        .iter()
        .map(|c| parse_only(&template, &c.files))
        .collect::<anyhow::Result<_>>()?;

    let mut conv: Vec<Option<Run>> = vec![None; cases.len()];
    let mut opt: Option<Run> = None;
    for rep in 0..args.repeat.max(1) {
        // A fresh store per run: CSVs hard-linked from the template, manifests copied.
        let run_dir = work.path().join(format!("run{rep}"));
        link_tree(&template, &run_dir)?;
        for (i, c) in cases.iter().enumerate() {
            let r = run_job(&convert, &run_dir, c, &args)?;
            if r.done != c.files.len() as u64 {
                bail!(
                    "convert {}: {} of {} files done",
                    c.name,
                    r.done,
                    c.files.len()
                );
            }
            if conv[i].as_ref().is_none_or(|b| r.secs < b.secs) {
                conv[i] = Some(r);
            }
            eprintln!("run {rep}: convert {} done", c.name);
        }
        let r = run_job(&optimize, &run_dir, &cases[1], &args)?;
        if r.done != 1 {
            bail!("optimize: {} months done, expected 1", r.done);
        }
        if opt.as_ref().is_none_or(|b| r.secs < b.secs) {
            opt = Some(r);
        }
        eprintln!("run {rep}: optimize done");
        std::fs::remove_dir_all(&run_dir)?;
    }

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "convert/optimize benchmark: {cores} cores, local-folder store (page cache warm), --concurrency {}, best of {}\n",
        args.concurrency,
        args.repeat.max(1)
    );
    println!(
        "{:<25} {:<9} {:>5} {:>10} {:>8} {:>7} {:>9} {:>7} {:>8} {:>7} {:>9} {:>12}",
        "case",
        "job",
        "files",
        "rows",
        "in MB",
        "secs",
        "M rows/s",
        "MB/s",
        "ms/file",
        "CPU s",
        "peak RSS",
        "parser only"
    );
    let fmt_rss = |r: &Run| {
        r.rss_kib
            .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into())
    };
    let fmt_cpu = |r: &Run| {
        r.cpu_secs
            .map(|c| format!("{c:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    for ((c, r), p) in cases.iter().zip(&conv).zip(&parse_only) {
        let r = r.as_ref().context("measured")?;
        let mb = c.bytes as f64 / 1e6;
        println!(
            "{:<25} {:<9} {:>5} {:>10} {:>8.1} {:>7.2} {:>9.2} {:>7.0} {:>8.2} {:>7} {:>9} {:>7.2} M/s",
            c.name,
            "convert",
            c.files.len(),
            r.rows,
            mb,
            r.secs,
            r.rows as f64 / r.secs / 1e6,
            mb / r.secs,
            1e3 * r.secs / c.files.len() as f64,
            fmt_cpu(r),
            fmt_rss(r),
            p.rows as f64 / p.cpu_secs / 1e6,
        );
    }
    let o = opt.as_ref().context("measured")?;
    let conv_month = conv[1].as_ref().context("measured")?;
    println!(
        "{:<25} {:<9} {:>5} {:>10} {:>8.1} {:>7.2} {:>9.2} {:>7.0} {:>8} {:>7} {:>9} {:>12}",
        "(b) month -> optimized",
        "optimize",
        conv_month.done,
        o.rows,
        conv_month.out_bytes as f64 / 1e6,
        o.secs,
        o.rows as f64 / o.secs / 1e6,
        conv_month.out_bytes as f64 / 1e6 / o.secs,
        "-",
        fmt_cpu(o),
        fmt_rss(o),
        "-"
    );

    // Derived figures.
    let (small_case, small_run, small_parse) = (
        &cases[0],
        conv[0].as_ref().context("measured")?,
        &parse_only[0],
    );
    let files = small_case.files.len() as f64;
    let par = cores.min(args.concurrency) as f64;
    let overhead = (small_run.secs - small_parse.cpu_secs / par) / files;
    let month_case = &cases[1];
    let big_mbps = month_case.bytes as f64 / conv_month.secs;
    let overhead_b = (small_run.secs - small_case.bytes as f64 / big_mbps) / files;
    println!(
        "\n(a) per-file overhead: {:.2} ms = (wall − parser-only CPU time of the same files / {par:.0} cores) / files; \
         {:.2} ms = (wall − in bytes at (b)'s MB/s) / files. Target ≤ 1 ms.",
        1e3 * overhead,
        1e3 * overhead_b
    );
    let month_mib = month_case.bytes as f64 / (1 << 20) as f64;
    let rss = |r: &Run| r.rss_kib.map(|k| k as f64 / 1024.0);
    if let (Some(c), Some(o)) = (rss(conv_month), rss(o)) {
        println!(
            "memory: the month's CSV is {month_mib:.0} MiB ({} rows); convert peaked at {c:.0} MiB ({:.0}% of it), \
             optimize at {o:.0} MiB ({:.0}%; its input, the Parquet days, is {:.0} MiB).",
            conv_month.rows,
            100.0 * c / month_mib,
            100.0 * o / month_mib,
            conv_month.out_bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "throughput: (b) {:.2} M rows/s end to end ({:.2} M rows/s by the job's own clock) vs the parser alone {:.2} M rows/s \
         on one core; target ≥ 10 M rows/s.",
        conv_month.rows as f64 / conv_month.secs / 1e6,
        conv_month.job_rows_per_sec / 1e6,
        parse_only[1].rows as f64 / parse_only[1].cpu_secs / 1e6
    );
    println!(
        "secs = process wall time (start to exit); CPU s = user+sys of the process; parser only = \
         shared::formats::Parser in this process, one thread, CPU time, same bytes in 8 MiB reads."
    );
    if args.keep {
        eprintln!(
            "kept the staged store: {}",
            work.keep().join("template").display()
        );
    }
    Ok(())
}

/// Put a CSV at the file's `csv_path` and record it as extracted.
async fn stage_bytes(
    store: &shared::Store,
    root: &Path,
    file: &ArchiveFile,
    csv: &[u8],
) -> anyhow::Result<u64> {
    let path = root.join(file.csv_path());
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(&path, csv)?;
    let mut h = Hasher::new();
    h.update(csv);
    record_extracted(store, file, csv.len() as u64, h.finish_hex()).await?;
    Ok(csv.len() as u64)
}

/// The `extract` manifest entry `convert` plans from (as `tests/tests/e2e/convert.rs` stages it).
async fn record_extracted(
    store: &shared::Store,
    file: &ArchiveFile,
    size: u64,
    sha256: String,
) -> anyhow::Result<()> {
    let key = ManifestKey::new(
        shared::job::JobName::EXTRACT,
        file.dataset.scope(),
        file.symbol.clone(),
    );
    let (w, _) = ManifestWriter::open(store, &key).await?;
    w.record(Entry {
        unit: file.key(),
        status: UnitStatus::Done,
        inputs: [("zip".to_string(), "bench".to_string())].into(),
        job_version: "1".into(),
        params_hash: String::new(),
        outputs: vec![Output {
            path: file.csv_path(),
            size,
            sha256,
            rows: None,
            time_span: None,
        }],
        recorded_at: Utc::now(),
        run_id: "bench".into(),
        detail: None,
        duplicate_days: Default::default(),
        rest: None,
    })
    .await?;
    Ok(())
}

/// Append `v` in decimal.
fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Append `v / 10^dec` with exactly `dec` decimals.
fn push_fixed(buf: &mut Vec<u8>, v: u64, dec: u32) {
    let p = 10u64.pow(dec);
    push_u64(buf, v / p);
    buf.push(b'.');
    let frac = v % p;
    let start = buf.len();
    push_u64(buf, frac);
    let digits = (buf.len() - start) as u32;
    for _ in digits..dec {
        buf.insert(start, b'0');
    }
}

/// Write a UM aggTrades CSV (header, ms times spread evenly over the file's period, increasing
/// ids, a random-walk price) at the file's `csv_path`, hashing as it goes, and record it.
async fn stage_agg_trades(
    store: &shared::Store,
    root: &Path,
    file: &ArchiveFile,
    rows: u64,
    seed: u64,
) -> anyhow::Result<u64> {
    let path = root.join(file.csv_path());
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    let (first, last) = (file.date.first_day(), file.date.last_day());
    let t0 = first
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc()
        .timestamp_millis() as u64;
    let span_ms = ((last - first).num_days() as u64 + 1) * 86_400_000;
    let (size, sha) = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, String)> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut h = Hasher::new();
        let mut size = 0u64;
        let mut buf = Vec::with_capacity(9 << 20);
        buf.extend_from_slice(
            b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n",
        );
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut id, mut trade) = (3_449_899_747u64, 8_078_264_332u64);
        let mut price = 420_000u64; // tenths: 42000.0
        for i in 0..rows {
            // Evenly spread, non-decreasing ms times with a little jitter inside each slot.
            let t = t0 + (i as u128 * span_ms as u128 / rows.max(1) as u128) as u64;
            let n = rng.u64(0..4);
            price = (price as i64 + rng.i64(-3..=3)).max(10) as u64;
            push_u64(&mut buf, id);
            buf.push(b',');
            push_fixed(&mut buf, price, 1);
            buf.push(b',');
            push_fixed(&mut buf, rng.u64(1..50_000), 3);
            buf.push(b',');
            push_u64(&mut buf, trade);
            buf.push(b',');
            push_u64(&mut buf, trade + n);
            buf.push(b',');
            push_u64(&mut buf, t);
            buf.extend_from_slice(if rng.bool() { b",true\n" } else { b",false\n" });
            id += 1;
            trade += n + 1;
            if buf.len() >= 8 << 20 {
                h.update(&buf);
                out.write_all(&buf)?;
                size += buf.len() as u64;
                buf.clear();
            }
        }
        h.update(&buf);
        out.write_all(&buf)?;
        size += buf.len() as u64;
        out.flush()?;
        Ok((size, h.finish_hex()))
    })
    .await??;
    record_extracted(store, file, size, sha).await?;
    Ok(size)
}

/// CPU time of this thread in seconds (Linux `schedstat`).
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// Parse the files with `shared::formats::Parser` as `convert` feeds it (8 MiB reads, output
/// taken every 2^20 rows), timing this thread's CPU.
fn parse_only(root: &Path, files: &[ArchiveFile]) -> anyhow::Result<ParseOnly> {
    let mut buf = vec![0u8; 8 << 20];
    let (mut rows, mut cpu) = (0u64, 0f64);
    for f in files {
        let format = format_of(&f.dataset);
        let path = f.csv_path();
        let mut file = std::fs::File::open(root.join(&path))?;
        let mut parser = Parser::new(format, &path, f);
        let mut cols = Columns::new(format);
        let (c0, w0) = (thread_cpu_secs().unwrap_or(0.0), Instant::now());
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            parser.feed(&buf[..n], &mut cols)?;
            if cols.len() >= 1 << 20 {
                rows += cols.len() as u64;
                cols = Columns::new(format);
            }
        }
        parser.finish(&mut cols)?;
        rows += cols.len() as u64;
        // schedstat advances at ticks and switches: below ~10 ms it can read 0, so take wall.
        let c = thread_cpu_secs().unwrap_or(0.0) - c0;
        let w = w0.elapsed().as_secs_f64();
        cpu += if c >= 0.01 { c } else { w };
    }
    Ok(ParseOnly {
        rows,
        cpu_secs: cpu.max(1e-9),
    })
}

/// Copy a store: files under `csv/` are hard-linked (jobs only read them), the rest copied.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fn walk(from: &Path, to: &Path, link: bool) -> anyhow::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let (src, dst) = (e.path(), to.join(e.file_name()));
            if e.file_type()?.is_dir() {
                walk(&src, &dst, link || e.file_name() == "csv")?;
            } else if link {
                std::fs::hard_link(&src, &dst)?;
            } else {
                std::fs::copy(&src, &dst)?;
            }
        }
        Ok(())
    }
    walk(from, to, false)
}

/// Run a job binary on a case under `/usr/bin/time` (peak RSS, CPU) and read its JSON report.
fn run_job(bin: &Path, store: &Path, case: &Case, args: &Args) -> anyhow::Result<Run> {
    let gnu_time = Path::new("/usr/bin/time");
    let time_file = store.with_extension("time");
    let mut cmd = if gnu_time.exists() {
        let mut c = Command::new(gnu_time);
        c.args(["-f", "%M %U %S", "-o"]).arg(&time_file).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(["--store", store.to_str().context("utf-8 path")?])
        .args(["--market", "um", "--data-type", case.data_type])
        .args(["--symbols", &case.symbols.join(",")])
        .args([
            "--start",
            &case.start.to_string(),
            "--end",
            &case.end.to_string(),
        ])
        .args(["--concurrency", &args.concurrency.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON report on stdout")?;
    let report: serde_json::Value = serde_json::from_str(last)?;
    let details = &report["details"];
    let rows = details["rows"]
        .as_u64()
        .or_else(|| details["rows_in"].as_u64())
        .context("report has no rows")?;
    let timing = std::fs::read_to_string(&time_file).unwrap_or_default();
    let fields: Vec<&str> = timing
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let num = |i: usize| fields.get(i).and_then(|s| s.parse::<f64>().ok());
    let _ = std::fs::remove_file(&time_file);
    Ok(Run {
        secs,
        rows,
        job_rows_per_sec: details["rows_per_sec"].as_f64().unwrap_or(0.0),
        done: report["counts"]["done"].as_u64().unwrap_or(0),
        rss_kib: num(0).map(|k| k as u64),
        cpu_secs: num(1).zip(num(2)).map(|(u, s)| u + s),
        out_bytes: report["bytes"].as_u64().unwrap_or(0),
    })
}
