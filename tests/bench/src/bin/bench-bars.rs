//! `bench-bars`: the bars benchmark. Writes a month of synthetic UM aggTrades (20 M rows by
//! default) as `optimize` would (one Parquet file, 1 Mi-row row groups, with its optimize
//! manifest entry) into a temp local store, then measures, in one run on the same file:
//! the engine's core loop in process (trades already in memory), the release `bars` binary end
//! to end from Parquet (process wall and peak RSS), and a numba implementation of
//! dollar-imbalance bars (`tests/bench/bars_numba.py`: its loop alone, and the whole process
//! with the pyarrow read). The numba bars are checked against ours. Run it through
//! `tests/bench/bars.sh`, which builds in release and makes the numba virtualenv.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bars::engine::{Bar, Engine, State, Trades};
use bars::input::{self, ParquetFile};
use bars::spec::{BarSpec, BarType, Rule, Sign, Source};
use chrono::{Datelike, NaiveDate};
use clap::Parser;
use frames::direct::Dest;
use frames::polars::prelude::DataFrame;
use frames::{ParquetOptions, ParquetSink, to_column};
use shared::formats::ColumnData;
use shared::manifest::{Entry, ManifestKey, ManifestWriter, UnitStatus};
use shared::paths::{DataType, Dataset, Market, Period};

#[derive(Parser)]
struct Args {
    /// Synthetic aggTrades in the month (January 2024).
    #[arg(long, default_value_t = 20_000_000)]
    trades: usize,
    /// Runs of each measurement; the fastest is reported (the machine is shared).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// A python with numba, pyarrow and numpy (the bench script makes one); none skips numba.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The numba implementation.
    #[arg(long, default_value = "tests/bench/bars_numba.py")]
    numba_script: PathBuf,
    /// Where the temp store goes.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the store (prints its path).
    #[arg(long)]
    keep: bool,
}

const SYMBOL: &str = "BTCUSDT";
/// The dollar-imbalance spec compared with numba.
const INIT: f64 = 1e6;
const ALPHA: f64 = 0.1;

fn dollar_imbalance(sign: Sign) -> BarSpec {
    BarSpec::new(
        BarType::DollarImbalance,
        Rule::Imbalance {
            init_threshold: INIT,
            alpha_ticks: ALPHA,
            alpha_imbalance: ALPHA,
            min_threshold: Some(INIT / 10.0),
            max_threshold: Some(INIT * 10.0),
        },
        sign,
        Source::AggTrades,
    )
    .expect("valid spec")
}

fn standard(bar: BarType, threshold: f64) -> BarSpec {
    BarSpec::new(
        bar,
        Rule::Standard { threshold },
        Sign::Aggressor,
        Source::AggTrades,
    )
    .expect("valid spec")
}

fn imbalance(bar: BarType, init: f64) -> BarSpec {
    BarSpec::new(
        bar,
        Rule::Imbalance {
            init_threshold: init,
            alpha_ticks: ALPHA,
            alpha_imbalance: ALPHA,
            min_threshold: Some(init / 10.0),
            max_threshold: Some(init * 10.0),
        },
        Sign::Aggressor,
        Source::AggTrades,
    )
    .expect("valid spec")
}

fn day_us(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros()
}

/// The month file and its optimize manifest entry, as `optimize` leaves them.
async fn stage(store_dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let store = shared::Store::open(store_dir.to_str().context("utf-8 path")?)?;
    let ds = Dataset::new(Market::Um, DataType::AggTrades, None)?;
    let first = NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let (t0, t1) = (
        day_us(first),
        day_us(NaiveDate::from_ymd_opt(2024, 2, 1).expect("date")),
    );
    let path = ds.optimized_partition(SYMBOL, 2024, 1);
    let opts = ParquetOptions::default();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut sink: Option<ParquetSink> = None;
    let mut price_ticks: i64 = 420_000; // 42,000.0 on a 0.1 grid
    let mut maker = false;
    let chunk = 1 << 20;
    let mut done = 0usize;
    while done < n {
        let m = chunk.min(n - done);
        let mut id = Vec::with_capacity(m);
        let mut price = Vec::with_capacity(m);
        let mut qty = Vec::with_capacity(m);
        let mut time = Vec::with_capacity(m);
        let mut bm = Vec::with_capacity(m);
        for k in 0..m {
            let i = (done + k) as i64;
            id.push(i);
            // Evenly spread over the month, sorted; a few trades share a µs.
            time.push(t0 + ((t1 - t0) as i128 * i as i128 / n as i128) as i64);
            price_ticks = (price_ticks + rng.i64(-3..=3)).max(1);
            price.push(price_ticks as f64 / 10.0);
            // Log-normal-ish size in 0.001 BTC lots.
            let u: f64 = (0..4).map(|_| rng.f64()).sum::<f64>() - 2.0;
            qty.push(((u * 1.7 - 2.3).exp() * 1000.0).round().max(1.0) / 1000.0);
            // Order flow comes in runs.
            if rng.f64() < 0.3 {
                maker = !maker;
            }
            bm.push(maker);
        }
        let cols = vec![
            to_column("agg_trade_id", ColumnData::I64(id.clone()))?,
            to_column("price", ColumnData::F64(price))?,
            to_column("quantity", ColumnData::F64(qty))?,
            to_column(
                "first_trade_id",
                ColumnData::I64(id.iter().map(|x| x * 2).collect()),
            )?,
            to_column(
                "last_trade_id",
                ColumnData::I64(id.iter().map(|x| x * 2 + 1).collect()),
            )?,
            to_column("transact_time", ColumnData::TimeUs(time))?,
            to_column("is_buyer_maker", ColumnData::Bool(bm))?,
        ];
        let df = DataFrame::new(m, cols)?;
        if sink.is_none() {
            sink = Some(ParquetSink::new(df.schema(), &opts)?);
        }
        sink.as_mut().expect("created").write(&df)?;
        done += m;
    }
    let out = sink.context("no rows")?.finish(&store, &path).await?;
    let (w, _) = ManifestWriter::open(
        &store,
        &ManifestKey::new(shared::job::JobName::OPTIMIZE, ds.scope(), SYMBOL),
    )
    .await?;
    let inputs = (0..31)
        .map(|k| {
            let day = first + chrono::Days::new(k);
            (
                ds.parquet_partition(SYMBOL, day, Period::Monthly),
                format!("synthetic-{}", day.day()),
            )
        })
        .collect();
    w.record(Entry {
        unit: format!("{SYMBOL}/2024-01"),
        status: UnitStatus::Done,
        inputs,
        job_version: "1".into(),
        params_hash: "bench".into(),
        outputs: vec![out],
        recorded_at: chrono::Utc::now(),
        run_id: "bench".into(),
        detail: None,
        duplicate_days: Default::default(),
        rest: None,
    })
    .await?;
    Ok(store_dir.join(path))
}

/// The month's (price, qty, time, is_buyer_maker) in memory, via the job's own reader.
struct Columns {
    price: Vec<f64>,
    qty: Vec<f64>,
    time: Vec<i64>,
    bm: Vec<bool>,
}

fn load(path: &Path) -> anyhow::Result<(Columns, f64)> {
    let t = Instant::now();
    let f = ParquetFile::open(path, "bench")?;
    let mut c = Columns {
        price: Vec::with_capacity(f.num_rows()),
        qty: Vec::with_capacity(f.num_rows()),
        time: Vec::with_capacity(f.num_rows()),
        bm: Vec::with_capacity(f.num_rows()),
    };
    let mut scratch: [input::Scratch; 4] = Default::default();
    for rg in 0..f.num_row_groups() {
        f.decode(
            rg,
            &Source::AggTrades.columns(),
            &mut scratch,
            &mut [
                Dest::F64(&mut c.price),
                Dest::F64(&mut c.qty),
                Dest::I64(&mut c.time),
                Dest::Bool(&mut c.bm),
            ],
        )?;
    }
    Ok((c, t.elapsed().as_secs_f64()))
}

/// Best wall time of the engine over all trades, and its bars.
fn core_loop(spec: &BarSpec, c: &Columns, repeat: usize) -> (f64, Vec<Bar>) {
    let trades = Trades {
        price: &c.price,
        qty: &c.qty,
        time: &c.time,
        buyer_maker: &c.bm,
    };
    let mut best = f64::INFINITY;
    let mut bars = Vec::new();
    for _ in 0..repeat {
        let mut e = Engine::new(spec, State::fresh(spec));
        let mut out = Vec::with_capacity(1 << 16);
        let t = Instant::now();
        e.process(trades, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
        bars = out;
    }
    (best, bars)
}

/// Wall seconds and peak RSS (KiB) of a command (`bench::timed_once`, as the other benches time
/// their jobs); its stdout.
fn timed(cmd: Command) -> anyhow::Result<(f64, u64, String)> {
    let t = bench::timed_once(cmd)?;
    Ok((t.secs, t.rss_kib.unwrap_or(0), t.stdout))
}

struct Row {
    case: String,
    secs: f64,
    rss_kib: Option<u64>,
    bars: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let store = work.path().join("store");
    eprintln!("staging {} synthetic aggTrades …", args.trades);
    let file = rt.block_on(stage(&store, args.trades))?;
    let size = std::fs::metadata(&file)?.len();
    eprintln!(
        "{} ({:.1} MiB)",
        file.display(),
        size as f64 / (1 << 20) as f64
    );
    let n = args.trades as f64;
    let mut rows: Vec<Row> = Vec::new();

    // The core loop: trades in memory, one spec at a time.
    let (cols, read_secs) = load(&file)?;
    rows.push(Row {
        case: "Rust: read the month's 4 columns into memory (in process)".into(),
        secs: read_secs,
        rss_kib: None,
        bars: 0,
    });
    let di = dollar_imbalance(Sign::Aggressor);
    let (secs, ours) = core_loop(&di, &cols, args.repeat);
    rows.push(Row {
        case: format!("Rust core loop: {}", di.name()),
        secs,
        rss_kib: None,
        bars: ours.len(),
    });
    for spec in [
        dollar_imbalance(Sign::TickRule),
        standard(BarType::Tick, 1000.0),
        standard(BarType::Volume, 100.0),
        standard(BarType::Dollar, 5e6),
        imbalance(BarType::TickImbalance, 100.0),
        imbalance(BarType::VolumeImbalance, 20.0),
    ] {
        let (secs, bars) = core_loop(&spec, &cols, args.repeat);
        rows.push(Row {
            case: format!("Rust core loop: {}", spec.name()),
            secs,
            rss_kib: None,
            bars: bars.len(),
        });
    }
    drop(cols);

    // End to end: the release `bars` binary from the Parquet file, a fresh history each run.
    let exe = std::env::current_exe()?;
    let bars_bin = exe.with_file_name("bars");
    let grids: [(&str, Vec<String>); 2] = [
        (
            "",
            vec![
                "--bar".into(),
                "dollar_imbalance".into(),
                "--init-threshold".into(),
                format!("{INIT:e}"),
            ],
        ),
        (
            " (grid of 8 specs, one pass)",
            vec![
                "--bar".into(),
                "dollar_imbalance,volume_imbalance".into(),
                "--init-threshold".into(),
                "1e6".into(),
                "--alpha-ticks".into(),
                "0.05,0.1".into(),
                "--alpha-imbalance".into(),
                "0.05,0.1".into(),
            ],
        ),
    ];
    for (label, grid) in grids {
        let mut best: Option<(f64, u64, u64)> = None;
        for _ in 0..args.repeat {
            for sub in ["bars", "_state", "_manifest/bars", "reports"] {
                let _ = std::fs::remove_dir_all(store.join(sub));
            }
            let mut c = Command::new(&bars_bin);
            c.args(["--store", store.to_str().context("utf-8")?])
                .args(["--market", "um", "--symbols", SYMBOL])
                .args(["--start", "2024-01-01", "--end", "2024-01-31"])
                .args(&grid)
                .env("RUST_LOG", "warn");
            let (secs, rss, stdout) = timed(c)?;
            let report: serde_json::Value =
                serde_json::from_str(stdout.lines().last().context("no report")?)?;
            let units = report["details"]["units"].as_array().context("units")?;
            let bars: u64 = units.iter().map(|u| u["bars"].as_u64().unwrap_or(0)).sum();
            if label.is_empty() && bars != ours.len() as u64 {
                bail!("bars wrote {bars} bars, the core loop {}", ours.len());
            }
            if best.is_none_or(|b| secs < b.0) {
                best = Some((secs, rss, bars));
            }
        }
        let (secs, rss, bars) = best.expect("ran");
        rows.push(Row {
            case: format!("Rust end to end: `bars` binary from Parquet{label}"),
            secs,
            rss_kib: Some(rss),
            bars: bars as usize,
        });
    }

    // numba: the whole process as a user's script (best of `repeat`), then its phases.
    if let Some(python) = &args.python {
        let out_json = work.path().join("numba.json");
        let numba = |mode: &str| -> anyhow::Result<(f64, u64, serde_json::Value)> {
            let mut c = Command::new(python);
            c.arg(&args.numba_script)
                .arg(mode)
                .arg(&file)
                .args([INIT, ALPHA, ALPHA, INIT / 10.0, INIT * 10.0].map(|x| format!("{x:?}")))
                .arg(&out_json);
            let (secs, rss, _) = timed(c)?;
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_json)?)?;
            let nb = r["bars"].as_u64().unwrap_or(0) as usize;
            if nb != ours.len() {
                bail!("numba made {nb} bars, ours {}", ours.len());
            }
            // Bar for bar: the same trades in each bar, the same imbalance to 1e-9 (numba's
            // LLVM may fuse a multiply and an add, which moves the last bits).
            let nb_file = ParquetFile::open(&out_json.with_extension("json.parquet"), "numba")?;
            let mut k = 0usize;
            for rg in 0..nb_file.num_row_groups() {
                let s = nb_file.read(rg, &["ticks", "imbalance"])?;
                let (ticks, imb) = (input::f64s(&s[0], "numba")?, input::f64s(&s[1], "numba")?);
                for (t, x) in ticks.iter().zip(imb.iter()) {
                    let b = &ours[k];
                    if *t != b.ticks as f64 || (x - b.imbalance).abs() > 1e-9 * b.imbalance.abs() {
                        bail!(
                            "numba's bar {k} differs: ticks {t} vs {}, imbalance {x} vs {}",
                            b.ticks,
                            b.imbalance
                        );
                    }
                    k += 1;
                }
            }
            if k != ours.len() {
                bail!("numba's file holds {k} bars, ours {}", ours.len());
            }
            Ok((secs, rss, r))
        };
        let mut best: Option<(f64, u64)> = None;
        for _ in 0..args.repeat {
            let (secs, rss, _) = numba("e2e")?;
            if best.is_none_or(|b| secs < b.0) {
                best = Some((secs, rss));
            }
        }
        let (_, _, phases) = numba("phases")?;
        let nb = ours.len();
        for (what, key) in [
            ("numba phase: import numba, numpy, pyarrow", "import_s"),
            (
                "numba phase: pyarrow read of the 4 columns + to_numpy",
                "read_s",
            ),
            ("numba phase: JIT compile (first call)", "compile_s"),
            ("numba phase: write the bars (pyarrow)", "write_s"),
        ] {
            rows.push(Row {
                case: what.into(),
                secs: phases[key].as_f64().unwrap_or(f64::NAN),
                rss_kib: None,
                bars: 0,
            });
        }
        rows.push(Row {
            case: "numba core loop: dollar imbalance (compiled, best of 3)".into(),
            secs: phases["loop_s"].as_f64().unwrap_or(f64::NAN),
            rss_kib: None,
            bars: nb,
        });
        let (secs, rss) = best.expect("ran");
        rows.push(Row {
            case: "numba end to end: python process (import, read, compile, loop, write)".into(),
            secs,
            rss_kib: Some(rss),
            bars: nb,
        });
        rows.push(Row {
            case: "numba end to end, warm: read + loop + write in a process already compiled"
                .into(),
            secs: phases["warm_e2e_s"].as_f64().unwrap_or(f64::NAN),
            rss_kib: None,
            bars: nb,
        });
    }

    println!(
        "\n{} synthetic aggTrades, {:.1} MiB of Parquet; best of {}\n",
        args.trades,
        size as f64 / (1 << 20) as f64,
        args.repeat
    );
    println!(
        "{}\n",
        bench::environment(args.python.as_deref(), &["numba", "pyarrow", "numpy"])
    );
    println!("| case | s | M trades/s | peak RSS | bars |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.1} | {} | {} |",
            r.case,
            r.secs,
            n / r.secs / 1e6,
            r.rss_kib
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or_default(),
            if r.bars > 0 {
                r.bars.to_string()
            } else {
                String::new()
            }
        );
    }
    let find = |p: &str| rows.iter().find(|r| r.case.starts_with(p)).map(|r| r.secs);
    if let (Some(ours), Some(theirs)) = (
        find("Rust core loop: dollar_imbalance"),
        find("numba core loop"),
    ) {
        println!(
            "\ncore loop, dollar imbalance: Rust {:.1}× numba",
            theirs / ours
        );
    }
    if let (Some(ours), Some(theirs)) = (
        find("Rust end to end: `bars` binary from Parquet"),
        find("numba end to end: python process"),
    ) {
        println!(
            "end to end: Rust {:.1}× numba (process wall)",
            theirs / ours
        );
    }
    if let (Some(ours), Some(theirs)) = (
        find("Rust end to end: `bars` binary from Parquet"),
        find("numba end to end, warm"),
    ) {
        println!(
            "end to end: Rust {:.1}× numba (numba warm, in process)",
            theirs / ours
        );
    }
    if args.keep {
        let kept = work.keep();
        eprintln!("store kept at {}", kept.display());
    }
    Ok(())
}
