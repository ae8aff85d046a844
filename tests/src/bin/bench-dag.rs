//! `bench-dag`: the whole DAG at scale. Serves a simulated USD-M archive of N symbols × Y years
//! (1m klines, funding, metrics) in-process, runs the release `runner` over a DAG from download
//! to build-panel one step at a time, and prints per step: wall, user and sys CPU, peak RSS,
//! units, rows, rows/s, files and bytes written, manifest objects and bytes; then a no-op rerun
//! of the whole DAG and a one-day incremental run. The simulator runs as its own process (a
//! forked child would count this process's memory in its peak RSS), and its CPU (generating the
//! archive while download fetches it) is reported apart from the pipeline's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use archive_sim::{SimConfig, SymbolSpec};
use chrono::NaiveDate;
use clap::Parser;
use shared::paths::{DataType, Market};

#[derive(Parser)]
#[command(name = "bench-dag")]
struct Args {
    /// USD-M symbols.
    #[arg(long, default_value_t = 25)]
    symbols: usize,
    /// Years of data, from 2023-01-01.
    #[arg(long, default_value_t = 1)]
    years: i32,
    /// The runner's --concurrency (job processes at once).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Keep the store here instead of a temp folder.
    #[arg(long)]
    store: Option<PathBuf>,
    /// With `--store` of an earlier run of the same size: keep its downloaded zips and the
    /// download manifest, move everything else aside (deleted after the run), so the steps
    /// after download run afresh without waiting for the simulator (download then has nothing
    /// to fetch).
    #[arg(long, requires = "store")]
    reuse_download: bool,
    /// Stage the CSVs with `extract` and convert those (`convert --from csv`), instead of
    /// converting the zips directly (`--from raw`, as the production DAGs do).
    #[arg(long)]
    staged_csv: bool,
}

/// Move every object of `store` but the mirrored archive and download's manifest aside, into
/// a folder beside it that is deleted once the run is measured; returns that folder. Deleting
/// them first would charge the deletion to the steps: ext4 does not reuse an inode for a minute
/// after its file is deleted (six while its table block is dirty), and every file or folder
/// created meanwhile scans past all of those inodes, which made extract's and convert's system
/// time several times their user time after a cleanup of a 25-symbol store.
fn keep_download_only(store: &Path) -> anyhow::Result<PathBuf> {
    if !store.join("raw").is_dir() || !store.join("_manifest/download").is_dir() {
        bail!(
            "--reuse-download: {} holds no download (raw/ and _manifest/download/)",
            store.display()
        );
    }
    let name = store
        .file_name()
        .context("--store names no folder")?
        .to_string_lossy();
    let aside = store.with_file_name(format!(".{name}.previous-{}", std::process::id()));
    std::fs::create_dir(&aside)?;
    std::fs::create_dir(aside.join("_manifest"))?;
    for e in std::fs::read_dir(store)? {
        let e = e?;
        let name = e.file_name();
        if name == "raw" {
            continue;
        }
        if name == "_manifest" {
            for m in std::fs::read_dir(e.path())? {
                let m = m?;
                if m.file_name() != "download" {
                    std::fs::rename(m.path(), aside.join("_manifest").join(m.file_name()))?;
                }
            }
            continue;
        }
        std::fs::rename(e.path(), aside.join(&name))?;
    }
    Ok(aside)
}

fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    if !p.exists() {
        bail!("{} not built: run tests/bench/dag.sh", p.display());
    }
    Ok(p)
}

fn symbols(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("D{i:03}USDT")).collect()
}

/// `n` USD-M symbols with klines, funding and metrics, listed before the range, covering it and
/// one day more (the incremental run's).
fn config(n: usize, start: NaiveDate, end: NaiveDate) -> SimConfig {
    let mut c = SimConfig::demo().with_range(start, end);
    c.symbols = symbols(n)
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut spec = SymbolSpec::new(
                Market::Um,
                s,
                start - chrono::Days::new(30),
                20.0 + i as f64,
            );
            spec.data_types = Some(vec![
                DataType::Klines,
                DataType::FundingRate,
                DataType::Metrics,
            ]);
            spec
        })
        .collect();
    c
}

/// The DAG's steps, in order.
fn steps(staged_csv: bool) -> Vec<&'static str> {
    let mut s = vec!["download"];
    if staged_csv {
        s.push("extract");
    }
    s.extend([
        "convert",
        "optimize",
        "validate",
        "aggregate",
        "build-panel",
    ]);
    s
}

fn dag(
    url: &str,
    store: &Path,
    n: usize,
    (start, end): (NaiveDate, NaiveDate),
    staged_csv: bool,
) -> String {
    let types = "[klines, fundingRate, metrics]";
    let syms = symbols(n).join(", ");
    let convert = if staged_csv {
        format!(
            "- {{name: extract, job: extract, needs: [download], args: {{market: um, data-type: {types}, prune-converted: false}}, shard_by: symbol, parallelism: 2}}\n\
             - {{name: convert, job: convert, needs: [extract], args: {{market: um, data-type: {types}}}, shard_by: symbol, parallelism: 2}}\n"
        )
    } else {
        format!(
            "- {{name: convert, job: convert, needs: [download], args: {{market: um, data-type: {types}, from: raw}}, shard_by: symbol, parallelism: 2}}\n"
        )
    };
    format!(
        "name: bench\n\
         defaults:\n  store: {store}\n  source: {url}\n  listing-url: {url}\n  symbols: [{syms}]\n  \
         start: {start}\n  end: {end}\n  interval: 1m\n\
         steps:\n\
         - {{name: download, job: download, args: {{market: um, data-type: {types}}}, shard_by: symbol, parallelism: 2}}\n\
         {convert}\
         - {{name: optimize, job: optimize, needs: [convert], args: {{market: um, data-type: {types}}}, shard_by: symbol, parallelism: 2}}\n\
         - {{name: validate, job: validate, needs: [optimize], args: {{market: um, data-type: {types}}}}}\n\
         - {{name: aggregate, job: aggregate, needs: [validate], args: {{market: um, freq: 1h}}, shard_by: symbol, parallelism: 2}}\n\
         - {{name: build-panel, job: build-panel, needs: [aggregate], args: {{market: um, name: bench}}}}\n",
        store = store.display()
    )
}

/// CPU and peak RSS of a reaped child and everything it reaped.
struct Usage {
    wall: f64,
    user: f64,
    sys: f64,
    rss_mib: f64,
    stdout: String,
}

fn run(mut c: Command) -> anyhow::Result<Usage> {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let child = c.spawn()?;
    let pid = child.id() as libc::pid_t;
    let out = child.wait_with_output_rusage(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    let (status, stdout, stderr, ru) = out;
    if status != 0 {
        bail!("exit {status}: {}", String::from_utf8_lossy(&stderr));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage {
        wall,
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
        rss_mib: ru.ru_maxrss as f64 / 1024.0,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
    })
}

/// Reap with `wait4` for the resource usage (std's `wait` drops it).
trait WaitRusage {
    fn wait_with_output_rusage(
        self,
        pid: libc::pid_t,
    ) -> anyhow::Result<(i32, Vec<u8>, Vec<u8>, libc::rusage)>;
}

impl WaitRusage for std::process::Child {
    fn wait_with_output_rusage(
        mut self,
        pid: libc::pid_t,
    ) -> anyhow::Result<(i32, Vec<u8>, Vec<u8>, libc::rusage)> {
        use std::io::Read;
        let mut err = self.stderr.take().context("piped")?;
        let errs = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            b
        });
        let mut out = Vec::new();
        self.stdout.take().context("piped")?.read_to_end(&mut out)?;
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r != pid {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok((code, out, errs.join().unwrap_or_default(), ru))
    }
}

/// CPU seconds (user + sys) a process has used, from `/proc/<pid>/stat`.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat (utime, stime), counted from the state field (3).
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz.max(1.0)
}

/// The simulator as its own process; its URL from its second line.
fn start_sim(config: &SimConfig, dir: &Path) -> anyhow::Result<(std::process::Child, String)> {
    use std::io::BufRead;
    let path = dir.join("sim.json");
    std::fs::write(&path, serde_json::to_vec(config)?)?;
    let mut child = Command::new(release_bin("archive-sim")?)
        .arg("--config")
        .arg(&path)
        .args(["--port", "0", "--print-url"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("piped")?;
    let mut lines = std::io::BufReader::new(out).lines();
    lines.next().context("archive-sim printed nothing")??;
    let url = lines.next().context("archive-sim printed no URL")??;
    Ok((child, url.trim().to_string()))
}

/// Every file of the store: path → (size, modified).
fn scan(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(p, (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)));
            }
        }
    }
    out
}

/// The step's units done and rows, from the runner's summary and the jobs' reports.
fn units_rows(store: &Path, summary: &serde_json::Value, step: &str) -> (u64, u64) {
    let key = match step {
        "download" => "requests",
        "extract" => "csv_rows",
        "convert" => "rows",
        "optimize" => "rows_in",
        "aggregate" => "minutes_read",
        "build-panel" => "input_rows",
        _ => "",
    };
    let (mut units, mut rows) = (0, 0);
    for sh in summary["shards"].as_array().into_iter().flatten() {
        if sh["step"] != step {
            continue;
        }
        units += sh["counts"]["done"].as_u64().unwrap_or(0);
        let Some(rep) = sh["report"].as_str() else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(store.join(rep)) else {
            continue;
        };
        let r: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        rows += r["details"][key].as_u64().unwrap_or(0);
    }
    (units, rows)
}

fn runner(dag: &Path, extra: &[&str]) -> anyhow::Result<Command> {
    let mut c = Command::new(release_bin("runner")?);
    c.arg(dag)
        .args(extra)
        .env(
            "PIPELINE_BIN_DIR",
            release_bin("runner")?.parent().context("dir")?,
        )
        .env("RUST_LOG", "warn")
        .arg("--json");
    Ok(c)
}

/// CPU time the hypervisor has taken from this machine since boot, all CPUs (`/proc/stat`).
fn steal_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |ticks| ticks / 100.0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let start = NaiveDate::from_ymd_opt(2023, 1, 1).context("date")?;
    let end = NaiveDate::from_ymd_opt(2023 + a.years, 1, 1).context("date")? - chrono::Days::new(1);
    let extra_day = end + chrono::Days::new(1);
    let tmp = tempfile::tempdir()?;
    let (mut sim, url) = start_sim(&config(a.symbols, start, extra_day), tmp.path())?;
    let sim_pid = sim.id();
    let store = a.store.clone().unwrap_or_else(|| tmp.path().join("store"));
    let aside = if a.reuse_download {
        Some(keep_download_only(&store)?)
    } else {
        None
    };
    let dag_path = tmp.path().join("bench.yaml");
    std::fs::write(
        &dag_path,
        dag(&url, &store, a.symbols, (start, end), a.staged_csv),
    )?;
    let conc = a.concurrency.to_string();
    println!(
        "bench-dag: {} USD-M symbols x {} year(s) ({start}..{end}), 1m klines + fundingRate + metrics, runner --concurrency {conc}",
        a.symbols, a.years
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    println!(
        "machine: {model}, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "\n{:<12} {:>8} {:>8} {:>8} {:>8} {:>7} {:>11} {:>10} {:>7} {:>9} {:>9} {:>9}",
        "step",
        "wall s",
        "user s",
        "sys s",
        "RSS MiB",
        "units",
        "rows",
        "rows/s",
        "files",
        "MiB out",
        "manifests",
        "man. MiB"
    );
    let mut after_download = 0.0;
    for step in steps(a.staged_csv) {
        let before = scan(&store);
        let sim_cpu0 = cpu_of(sim_pid);
        let steal0 = steal_secs();
        let u = run(runner(
            &dag_path,
            &["--steps", step, "--concurrency", &conc],
        )?)?;
        let sim_cpu = cpu_of(sim_pid) - sim_cpu0;
        let summary: serde_json::Value =
            serde_json::from_str(u.stdout.lines().last().context("no summary")?)?;
        let after = scan(&store);
        let (mut files, mut bytes) = (0u64, 0u64);
        for (p, (size, t)) in &after {
            if before.get(p) != Some(&(*size, *t)) {
                files += 1;
                bytes += size;
            }
        }
        let manifests: Vec<u64> = after
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix(&store)
                    .is_ok_and(|r| r.starts_with("_manifest"))
            })
            .map(|(_, (s, _))| *s)
            .collect();
        let (units, rows) = units_rows(&store, &summary, step);
        println!(
            "{:<12} {:>8.2} {:>8.2} {:>8.2} {:>8.0} {:>7} {:>11} {:>10.0} {:>7} {:>9.1} {:>9} {:>9.1}",
            step,
            u.wall,
            u.user,
            u.sys,
            u.rss_mib,
            units,
            rows,
            rows as f64 / u.wall,
            files,
            mib(bytes),
            manifests.len(),
            mib(manifests.iter().sum())
        );
        let steal = steal_secs() - steal0;
        if step == "download" {
            println!(
                "{:<12} simulator CPU while serving it: {sim_cpu:.2} s (not the pipeline's)",
                ""
            );
        } else {
            after_download += u.wall;
            // Anything else on the CPUs during the step makes its figures not the pipeline's.
            if sim_cpu > 0.1 {
                println!(
                    "{:<12} the simulator used {sim_cpu:.2} s of CPU meanwhile",
                    ""
                );
            }
        }
        if steal > 0.5 {
            println!(
                "{:<12} the hypervisor stole {steal:.2} s of CPU meanwhile",
                ""
            );
        }
    }
    println!("\nafter download: {after_download:.2} s");

    let u = run(runner(&dag_path, &["--concurrency", &conc])?)?;
    println!("no-op rerun of the whole DAG: {:.2} s wall", u.wall);
    let u = run(runner(
        &dag_path,
        &[
            "--concurrency",
            &conc,
            "--start",
            &extra_day.to_string(),
            "--end",
            &extra_day.to_string(),
        ],
    )?)?;
    let summary: serde_json::Value =
        serde_json::from_str(u.stdout.lines().last().context("no summary")?)?;
    let mut per_step: BTreeMap<String, f64> = BTreeMap::new();
    for sh in summary["shards"].as_array().into_iter().flatten() {
        *per_step
            .entry(sh["step"].as_str().unwrap_or("?").to_string())
            .or_default() += sh["seconds"].as_f64().unwrap_or(0.0);
    }
    let download = per_step.get("download").copied().unwrap_or(0.0);
    println!(
        "one-day incremental run ({extra_day}): {:.2} s wall, {:.2} s of it after download ({:.2} s user, {:.2} s sys, peak RSS {:.0} MiB); shard seconds per step: {per_step:?}",
        u.wall,
        u.wall - download,
        u.user,
        u.sys,
        u.rss_mib
    );
    let _ = sim.kill();
    let _ = sim.wait();
    if let Some(aside) = aside {
        std::fs::remove_dir_all(&aside)
            .with_context(|| format!("removing the previous outputs in {}", aside.display()))?;
        println!(
            "removed the previous outputs ({}); a run within six minutes pays for their inodes",
            aside.display()
        );
    }
    Ok(())
}
