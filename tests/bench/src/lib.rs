//! Timing a job binary for the bench commands: its process wall time (spawn to exit) and peak
//! RSS, the fastest of a few runs (the machine is shared), with the run's stdout for its report.
//!
//! The child is spawned directly and reaped with `wait4`, whose resource usage carries its peak
//! RSS: no `/usr/bin/time` in between, whose own start (≈ 1 ms here) the figure would include.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use shared::error::{Error, Result};

/// One timed run.
pub struct Timed {
    /// Process wall time, spawn to exit.
    pub secs: f64,
    /// Peak resident set size (the kernel's `ru_maxrss`), where the platform reports it.
    pub rss_kib: Option<u64>,
    pub stdout: String,
    /// Every run's process wall and stdout, in the order they ran (the fastest is the above).
    pub runs: Vec<(f64, String)>,
}

/// Run the command `make` builds `repeat` times (at least once); the fastest run, with every
/// run's figures. A failing run is an error carrying its stderr.
pub fn timed(mut make: impl FnMut() -> Command, repeat: usize) -> Result<Timed> {
    let mut best: Option<Timed> = None;
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        let t = timed_once(make())?;
        runs.push((t.secs, t.stdout.clone()));
        if best.as_ref().is_none_or(|b| t.secs < b.secs) {
            best = Some(t);
        }
    }
    let mut best = best.expect("one run at least");
    best.runs = runs;
    Ok(best)
}

/// The median of `xs` (the mean of the middle two for an even count); `None` when empty.
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// Run `c` once: its process wall, peak RSS and stdout (`runs` is left empty). A failing run is
/// an error carrying its stderr.
pub fn timed_once(mut c: Command) -> Result<Timed> {
    let what = format!("{:?}", c.get_program());
    let io = |context: String, source: std::io::Error| Error::Io { context, source };
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = c.spawn().map_err(|e| io(format!("starting {what}"), e))?;
    let (mut out, mut err) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    // Both pipes drained at once, so a chatty child never blocks on a full one.
    let stderr = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let mut stdout = Vec::new();
    out.read_to_end(&mut stdout)
        .map_err(|e| io(format!("reading the output of {what}"), e))?;
    let (success, rss_kib) = reap(&mut child).map_err(|e| io(format!("waiting for {what}"), e))?;
    let secs = t0.elapsed().as_secs_f64();
    let stderr = stderr.join().unwrap_or_default();
    if !success {
        return Err(io(
            what,
            std::io::Error::other(format!("failed: {}", String::from_utf8_lossy(&stderr))),
        ));
    }
    Ok(Timed {
        secs,
        rss_kib,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        runs: Vec::new(),
    })
}

/// The machine a bench ran on, for its figures' header: CPU model, the cores this process may
/// use, the kernel, and the transparent-huge-page mode (the jobs' heaps are advised for them).
/// Ratios against Python moved with the host between sessions, so a figure names its host.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
    // The mode in use is the bracketed one: `always [madvise] never`.
    let thp = thp
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or("unknown");
    format!("{model}, {cores} cores, Linux {kernel}, THP {thp}")
}

/// `python`'s version and those of `modules`, as `python 3.11.7, pandas 3.1.1, …`; a module
/// that fails to import shows as `missing`. `None` when the interpreter cannot be run.
fn python_versions(python: &std::path::Path, modules: &[&str]) -> Option<String> {
    let script = format!(
        r#"
import importlib, platform
print('python ' + platform.python_version())
for m in {modules:?}:
    try:
        print(m + ' ' + importlib.import_module(m).__version__)
    except Exception:
        print(m + ' missing')
"#
    );
    let out = Command::new(python).args(["-c", &script]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().collect::<Vec<_>>().join(", "))
}

/// A bench's header lines: `machine: …` ([`machine`]), and with a Python to compare against,
/// `python: …` with the versions of `modules` ([`python_versions`]).
pub fn environment(python: Option<&std::path::Path>, modules: &[&str]) -> String {
    let mut out = format!("machine: {}", machine());
    if let Some(py) = python {
        let v = python_versions(py, modules);
        out.push_str(&format!(
            "\npython: {}",
            v.as_deref().unwrap_or("does not run")
        ));
    }
    out
}

/// Wait for `child`: whether it exited with 0, and its peak RSS in KiB.
#[cfg(unix)]
fn reap(child: &mut std::process::Child) -> std::io::Result<(bool, Option<u64>)> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child (std has not waited on it); the pointers are
        // to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Linux reports ru_maxrss in KiB.
    Ok((ok, Some(usage.ru_maxrss as u64)))
}

#[cfg(not(unix))]
fn reap(child: &mut std::process::Child) -> std::io::Result<(bool, Option<u64>)> {
    Ok((child.wait()?.success(), None))
}

/// Record `out` as unit `unit` done in `job`'s manifest of (scope, symbol), as that job would
/// after writing it: how a bench stages an upstream job's outputs without running it.
pub async fn record_done(
    store: &shared::Store,
    job: shared::job::JobName,
    scope: &str,
    symbol: &str,
    unit: String,
    out: shared::manifest::Output,
) -> Result<()> {
    use shared::manifest::{ManifestKey, ManifestWriter, UnitStatus};
    let (w, _) = ManifestWriter::open(store, &ManifestKey::new(job, scope, symbol)).await?;
    let e = shared::manifest::Entry {
        unit,
        status: UnitStatus::Done,
        inputs: Default::default(),
        job_version: "1".into(),
        params_hash: String::new(),
        outputs: vec![out],
        recorded_at: chrono::Utc::now(),
        run_id: "bench".into(),
        detail: None,
        duplicate_days: Default::default(),
        rest: None,
    };
    w.record(e).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stdout_failure_and_peak_rss() {
        let mut ok = || {
            let mut c = Command::new("sh");
            c.args(["-c", "echo hello; echo noise >&2"]);
            c
        };
        let t = timed(&mut ok, 3).unwrap();
        assert_eq!(t.stdout, "hello\n");
        assert!(t.secs > 0.0);
        assert_eq!(t.runs.len(), 3);
        assert!(
            t.runs
                .iter()
                .all(|(s, out)| *s >= t.secs && out == "hello\n")
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
        #[cfg(target_os = "linux")]
        assert!(t.rss_kib.is_some_and(|k| k > 0), "{:?}", t.rss_kib);
        let failing = || {
            let mut c = Command::new("sh");
            c.args(["-c", "echo why >&2; exit 3"]);
            c
        };
        let e = timed(failing, 1).err().expect("a failing run is an error");
        assert!(e.to_string().contains("why"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn machine_names_cores_and_kernel() {
        let m = machine();
        let cores = std::thread::available_parallelism().unwrap().get();
        assert!(m.contains(&format!(", {cores} cores, Linux ")), "{m}");
        assert!(!m.contains("Linux ,"), "{m}");
    }

    #[test]
    fn python_versions_name_each_module_or_missing() {
        // CPython is on every machine these tests run on (docs/toolchain.md).
        let py = std::path::Path::new("python3");
        let v = python_versions(py, &["json", "no_such_module_here"]).expect("python runs");
        assert!(v.starts_with("python 3."), "{v}");
        assert!(v.contains(", json "), "{v}");
        assert!(v.ends_with(", no_such_module_here missing"), "{v}");
        assert_eq!(
            python_versions(std::path::Path::new("/nonexistent/python"), &[]),
            None
        );
    }

    #[test]
    fn environment_names_the_machine_and_the_python_stack() {
        let plain = environment(None, &["json"]);
        assert_eq!(plain, format!("machine: {}", machine()));
        let py = environment(Some(std::path::Path::new("python3")), &["json"]);
        let (first, second) = py.split_once('\n').expect("two lines");
        assert_eq!(first, plain);
        assert!(second.starts_with("python: python 3."), "{second}");
        assert!(second.contains(", json "), "{second}");
        let broken = environment(Some(std::path::Path::new("/nonexistent/python")), &[]);
        assert!(broken.ends_with("\npython: does not run"), "{broken}");
    }
}
