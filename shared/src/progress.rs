//! Progress of a job's units: a bar on a terminal, and off a terminal (piped, under the runner,
//! on Kubernetes) a `progress` log event every few seconds with units done of total, bytes, rate
//! and ETA, in whichever log format the job runs with. The mode is chosen once per process by
//! [`configure`] (called from `logging::init`); a process that never configures it logs lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::report::human_bytes;

/// How progress shows in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An indicatif bar on stderr (a terminal, pretty logs).
    Bar,
    /// A `progress` event every `interval` (and none for work that ends sooner).
    Lines { interval: Duration },
    /// Nothing (tests that count log lines).
    Off,
}

/// Seconds between progress lines off a terminal, unless `PIPELINE_PROGRESS_SECS` says otherwise.
pub const DEFAULT_INTERVAL_SECS: f64 = 10.0;

static MODE: OnceLock<Mode> = OnceLock::new();

/// Fix the mode for this process: a bar when stderr is a terminal and logs are pretty, else
/// lines every `PIPELINE_PROGRESS_SECS` seconds (default 10; 0 turns them off).
pub fn configure(terminal_and_pretty: bool) {
    let _ = MODE.set(if terminal_and_pretty {
        Mode::Bar
    } else {
        lines_mode()
    });
}

/// Lines every `PIPELINE_PROGRESS_SECS` seconds (default 10; 0: off), whatever the terminal: for
/// a process whose stderr carries other programs' lines too (the runner), where a bar would be
/// torn by them.
pub fn lines_mode() -> Mode {
    let secs = std::env::var("PIPELINE_PROGRESS_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(DEFAULT_INTERVAL_SECS);
    if secs == 0.0 {
        Mode::Off
    } else {
        Mode::Lines {
            interval: Duration::from_secs_f64(secs),
        }
    }
}

fn mode() -> Mode {
    *MODE.get_or_init(|| Mode::Lines {
        interval: Duration::from_secs_f64(DEFAULT_INTERVAL_SECS),
    })
}

#[derive(Debug)]
struct State {
    what: String,
    unit: &'static str,
    done: AtomicU64,
    total: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
}

impl State {
    /// The figures of one progress line.
    fn snapshot(&self) -> Snapshot {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed).max(done);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let eta_secs = (rate > 0.0).then(|| (total - done) as f64 / rate);
        Snapshot {
            done,
            total,
            bytes: self.bytes.load(Ordering::Relaxed),
            rate,
            eta_secs,
        }
    }

    fn log(&self) {
        let s = self.snapshot();
        let percent = if s.total == 0 {
            100.0
        } else {
            100.0 * s.done as f64 / s.total as f64
        };
        let eta = s
            .eta_secs
            .map(|e| format!("{e:.0}s"))
            .unwrap_or_else(|| "unknown".into());
        // Bytes only where the phase counts them (download).
        let bytes = if s.bytes > 0 {
            format!(", {}", human_bytes(s.bytes))
        } else {
            String::new()
        };
        tracing::info!(
            what = %self.what,
            done = s.done,
            total = s.total,
            percent = (percent * 10.0).round() / 10.0,
            bytes = s.bytes,
            rate_per_sec = (s.rate * 100.0).round() / 100.0,
            eta_secs = s.eta_secs.map(|e| e.round() as u64),
            "progress: {} {}/{} {} ({percent:.0}%){bytes}, {:.2} {}/s, eta {eta}",
            self.what,
            s.done,
            s.total,
            self.unit,
            s.rate,
            self.unit,
        );
    }
}

/// One progress line's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
    /// Units per second since the start.
    pub rate: f64,
    /// Seconds left at that rate; `None` before the first unit.
    pub eta_secs: Option<f64>,
}

/// The progress of one phase of a job (its units). Dropping it stops the lines and the bar.
#[derive(Debug)]
pub struct Progress {
    state: Arc<State>,
    bar: Option<indicatif::ProgressBar>,
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Start showing the progress of `total` units (`unit`: "files", "months", …) of `what`.
    pub fn start(what: impl Into<String>, unit: &'static str, total: u64) -> Progress {
        Progress::with_mode(mode(), what, unit, total)
    }

    /// [`Progress::start`] in a given mode (tests).
    pub fn with_mode(
        mode: Mode,
        what: impl Into<String>,
        unit: &'static str,
        total: u64,
    ) -> Progress {
        let state = Arc::new(State {
            what: what.into(),
            unit,
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
        });
        let mut p = Progress {
            state,
            bar: None,
            stop: None,
            ticker: None,
        };
        match mode {
            Mode::Off => {}
            Mode::Bar => {
                let bar = indicatif::ProgressBar::new(total);
                let template = format!(
                    "{{spinner}} {} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} \
                     {{msg}} ({{per_sec}}, eta {{eta}})",
                    p.state.what
                );
                if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(200));
                p.bar = Some(bar);
            }
            Mode::Lines { interval } => {
                let (tx, rx) = mpsc::channel::<()>();
                let state = p.state.clone();
                let ticker = std::thread::Builder::new()
                    .name("progress".into())
                    .spawn(move || {
                        // A message or a dropped sender both mean stop.
                        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                            state.log();
                        }
                    })
                    .ok();
                p.stop = Some(tx);
                p.ticker = ticker;
            }
        }
        p
    }

    /// `n` more units finished (done, skipped, missing or failed alike).
    pub fn inc(&self, n: u64) {
        self.state.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// `n` more units to do (a missing monthly file replaced by its days).
    pub fn inc_length(&self, n: u64) {
        self.state.total.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc_length(n);
        }
    }

    /// Bytes written or fetched so far (a running total).
    pub fn set_bytes(&self, bytes: u64) {
        self.state.bytes.store(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_message(human_bytes(bytes));
        }
    }

    /// The figures a line would show now.
    pub fn snapshot(&self) -> Snapshot {
        self.state.snapshot()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.stop.take();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_counts_rate_and_eta() {
        let p = Progress::with_mode(Mode::Off, "test", "files", 10);
        let s = p.snapshot();
        assert_eq!((s.done, s.total, s.eta_secs), (0, 10, None));
        p.inc(4);
        p.inc_length(2);
        p.set_bytes(1 << 20);
        let s = p.snapshot();
        assert_eq!((s.done, s.total, s.bytes), (4, 12, 1 << 20));
        assert!(s.rate > 0.0);
        let eta = s.eta_secs.unwrap();
        assert!((eta - 8.0 / s.rate).abs() < 1e-6 * eta.max(1.0), "{eta}");
    }

    #[test]
    fn lines_stop_when_dropped() {
        let t0 = Instant::now();
        let p = Progress::with_mode(
            Mode::Lines {
                interval: Duration::from_millis(5),
            },
            "test",
            "files",
            3,
        );
        p.inc(1);
        std::thread::sleep(Duration::from_millis(20));
        drop(p);
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
