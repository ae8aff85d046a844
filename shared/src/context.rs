//! The run context: everything a job touches in the world — the store, the HTTP client, the
//! shutdown signal, the clock and the run id — so tests can build one over an in-memory store
//! and a fixed clock, and job code never reads the environment or calls `now()` itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::exit;
use crate::store::Store;

/// Where time comes from.
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    Fixed(DateTime<Utc>),
    /// The system clock moved by a constant: a run replayed as if it started at another time.
    Shifted(chrono::Duration),
}

/// The variable that sets every job's clock: `PIPELINE_NOW=2025-01-20T06:17:30Z` runs as if the
/// clock read that instant when the process started (a replay, a simulated archive's clock);
/// the clock then runs on.
pub const NOW_VAR: &str = "PIPELINE_NOW";

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(t) => *t,
            Clock::Shifted(d) => Utc::now() + *d,
        }
    }

    /// The system clock, or the one [`NOW_VAR`] sets; a value that is no RFC 3339 instant is a
    /// usage error naming it.
    pub fn from_env() -> crate::Result<Clock> {
        match std::env::var(NOW_VAR) {
            Ok(v) if !v.trim().is_empty() => {
                let at = DateTime::parse_from_rfc3339(v.trim()).map_err(|e| {
                    crate::Error::usage(format!(
                        "{NOW_VAR}=`{v}`: expected an RFC 3339 instant such as 2025-01-20T06:17:30Z ({e})"
                    ))
                })?;
                Ok(Clock::Shifted(at.with_timezone(&Utc) - Utc::now()))
            }
            _ => Ok(Clock::System),
        }
    }
}

/// Work left for the very end of a process, after its report is written (releasing leases).
type ExitHook = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub run_id: String,
    pub cancel: CancellationToken,
    pub clock: Clock,
    /// Which signal cancelled the run (exit code 130 or 143), 0 if none.
    pub signal: Arc<AtomicI32>,
    exit_hooks: Arc<std::sync::Mutex<Vec<ExitHook>>>,
}

impl Context {
    pub fn new(store: Store, run_id: Option<String>, clock: Clock) -> Context {
        let run_id = run_id.unwrap_or_else(|| new_run_id(clock.now()));
        Context {
            store: store.for_run(&run_id),
            run_id,
            cancel: CancellationToken::new(),
            clock,
            signal: Arc::new(AtomicI32::new(0)),
            exit_hooks: Arc::default(),
        }
    }

    /// Run `f` once the run's last write (its report) is done.
    pub fn at_exit(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.exit_hooks.lock().unwrap().push(Box::pin(f));
    }

    /// The work [`Context::at_exit`] left, in the order it was left.
    pub async fn run_exit_hooks(&self) {
        let hooks = std::mem::take(&mut *self.exit_hooks.lock().unwrap());
        for h in hooks {
            h.await;
        }
    }

    /// The exit code of an interrupted run: 143 for SIGTERM, 75 for a lost lease, 130 otherwise.
    pub fn interrupted_exit_code(&self) -> i32 {
        match self.signal.load(Ordering::SeqCst) {
            exit::TERMINATED => exit::TERMINATED,
            // Stopped because its lease was lost to another writer.
            exit::LOCKED => exit::LOCKED,
            _ => exit::INTERRUPTED,
        }
    }

    /// Cancel the run on SIGINT or SIGTERM; a second signal exits at once.
    pub fn install_signal_handlers(&self) {
        let cancel = self.cancel.clone();
        let signal = self.signal.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal as sig};
            let (Ok(mut int), Ok(mut term)) =
                (sig(SignalKind::interrupt()), sig(SignalKind::terminate()))
            else {
                return;
            };
            loop {
                let code = tokio::select! {
                    _ = int.recv() => exit::INTERRUPTED,
                    _ = term.recv() => exit::TERMINATED,
                };
                if cancel.is_cancelled() {
                    std::process::exit(code);
                }
                signal.store(code, Ordering::SeqCst);
                tracing::warn!(
                    code,
                    "signal received: finishing in-flight writes and stopping"
                );
                cancel.cancel();
            }
        });
    }
}

/// `20240101T120000Z-3f9a`: sortable by time, unique enough across parallel shards.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    format!("{}-{:04x}", now.format("%Y%m%dT%H%M%SZ"), fastrand::u16(..))
}
