//! Timing a job binary for the bench commands: wall time and peak RSS under `/usr/bin/time`,
//! the fastest of a few runs (the machine is shared), with the run's stdout for its report.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};

/// One timed run.
pub struct Timed {
    /// Process wall time, start to exit.
    pub secs: f64,
    /// Peak resident set size, when `/usr/bin/time` reported it.
    pub rss_kib: Option<u64>,
    pub stdout: String,
}

/// Run the command `make` builds under `/usr/bin/time` `repeat` times (at least once); the
/// fastest run. `scratch` holds the time file. A failing run is an error carrying its stderr.
pub fn timed(mut make: impl FnMut() -> Command, repeat: usize, scratch: &Path) -> Result<Timed> {
    let mut best: Option<Timed> = None;
    for _ in 0..repeat.max(1) {
        let time_file = scratch.join("time.txt");
        let inner = make();
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"])
            .arg(&time_file)
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let t0 = Instant::now();
        let out = c.output().map_err(|e| Error::Io {
            context: "running /usr/bin/time".into(),
            source: e,
        })?;
        let secs = t0.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(Error::Io {
                context: format!("{:?}", inner.get_program()),
                source: std::io::Error::other(format!(
                    "failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )),
            });
        }
        let rss_kib = std::fs::read_to_string(&time_file)
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()));
        let t = Timed {
            secs,
            rss_kib,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        };
        if best.as_ref().is_none_or(|b| t.secs < b.secs) {
            best = Some(t);
        }
    }
    Ok(best.expect("one run at least"))
}
