//! Running a planned DAG on this machine: each step's job binary as a child process with the
//! arguments a container would get, steps in dependency order, independent steps and shards in
//! parallel up to a limit, every child's log lines prefixed with its step and shard, retries
//! with backoff, services started on first use and stopped at the end, SIGINT/SIGTERM forwarded
//! to the children's process groups, run state recorded per finished shard, and a summary.
//!
//! Children run in their own process groups (a terminal's Ctrl-C reaches only the runner, which
//! forwards it once) and get SIGTERM if the runner dies (`PR_SET_PDEATHSIG`), so a killed runner
//! leaves no job writing behind it. The runtime is single-threaded on purpose: the parent-death
//! signal follows the thread that forked, and the main thread lives as long as the runner.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::Store;
use shared::cli::LogFormat;
use shared::error::exit;
use shared::report::Counts;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dag::{Dag, Service, substitute};
use crate::error::{Error, Result};
use crate::plan::{Plan, PlannedStep, Shard};
use crate::state::{RunState, ShardRecord};

/// How a run behaves, beside its plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Child processes at once.
    pub concurrency: usize,
    /// Ignore the run state: run every shard.
    pub force: bool,
    pub log_format: LogFormat,
    pub run_id: String,
    /// `--wait-lock` for every job: how long a step waits for a lease another run holds.
    pub wait_lock: Option<String>,
}

/// How a shard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardOutcome {
    /// Ran and exited 0.
    Ok,
    /// Finished by an earlier run with the same arguments.
    Skipped,
    Failed,
    /// Never started: a step it needs failed, or the run was interrupted first.
    NotRun,
    /// Stopped by a signal.
    Interrupted,
}

impl ShardOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ShardOutcome::Ok => "ok",
            ShardOutcome::Skipped => "skipped",
            ShardOutcome::Failed => "FAILED",
            ShardOutcome::NotRun => "not run",
            ShardOutcome::Interrupted => "interrupted",
        }
    }
}

/// One line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    pub step: String,
    pub job: String,
    /// `0/2`, or `-` for an unsharded step.
    pub shard: String,
    pub outcome: ShardOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: u32,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// From the job's JSON report (for a skipped shard: the run that finished it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_run_id: Option<String>,
}

/// How the whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Ok,
    Failed,
    Interrupted,
}

/// The run summary: printed as a table on stderr and one JSON line on stdout, and written to
/// `_runs/<dag>/<run key>/runs/<run id>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub dag: String,
    pub file: String,
    pub run_id: String,
    pub run_key: String,
    pub store: String,
    pub params: crate::plan::RunParams,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub outcome: RunOutcome,
    /// 130 or 143 when a signal stopped the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_exit_code: Option<i32>,
    pub shards: Vec<ShardSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_path: Option<String>,
}

impl RunSummary {
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            RunOutcome::Ok => exit::OK,
            RunOutcome::Failed => exit::FAILED_UNITS,
            RunOutcome::Interrupted => self.signal_exit_code.unwrap_or(exit::INTERRUPTED),
        }
    }

    /// The table and the closing line, for a person.
    pub fn table(&self) -> String {
        let w = self
            .shards
            .iter()
            .map(|s| s.step.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!(
            "{:<w$}  {:<5}  {:<11}  {:>8}  {:>8}  {:>8}  {:>7}  {:>8}\n",
            "step", "shard", "outcome", "done", "skipped", "missing", "failed", "seconds"
        );
        for s in &self.shards {
            let c = s.counts.clone().unwrap_or_default();
            let n = |v: u64| {
                if s.counts.is_some() {
                    v.to_string()
                } else {
                    "-".into()
                }
            };
            out.push_str(&format!(
                "{:<w$}  {:<5}  {:<11}  {:>8}  {:>8}  {:>8}  {:>7}  {:>8.1}",
                s.step,
                s.shard,
                s.outcome.as_str(),
                n(c.done),
                n(c.skipped),
                n(c.missing),
                n(c.failed),
                s.seconds
            ));
            if let Some(r) = &s.reason {
                out.push_str(&format!("  {r}"));
            }
            out.push('\n');
        }
        let count = |o: ShardOutcome| self.shards.iter().filter(|s| s.outcome == o).count();
        out.push_str(&format!(
            "{}: {} in {:.1}s — {} shards: {} ran, {} up to date, {} failed, {} not run",
            self.dag,
            match self.outcome {
                RunOutcome::Ok => "ok",
                RunOutcome::Failed => "FAILED",
                RunOutcome::Interrupted => "interrupted",
            },
            self.seconds,
            self.shards.len(),
            count(ShardOutcome::Ok),
            count(ShardOutcome::Skipped),
            count(ShardOutcome::Failed),
            count(ShardOutcome::NotRun) + count(ShardOutcome::Interrupted),
        ));
        if let Some(p) = &self.summary_path {
            out.push_str(&format!("\nsummary: {p} in {}", self.store));
        }
        out
    }
}

/// Where child output goes: prefixed lines (pretty) or JSON lines with `step` and `shard` added
/// (and `timestamp` and `level` for a line the child did not write as a JSON event).
#[derive(Debug, Clone, Copy)]
struct Console {
    json: bool,
}

/// Which stream a child line came from: a plain line on stderr is taken as a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Console {
    fn line(&self, step: &str, shard: Option<&str>, line: &str, stream: Stream) {
        use std::io::Write;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return;
        }
        let text = if self.json {
            let mut obj = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => {
                    let mut m = serde_json::Map::new();
                    m.insert("message".into(), line.into());
                    m
                }
            };
            if !obj.contains_key("timestamp") {
                obj.insert(
                    "timestamp".into(),
                    Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                        .into(),
                );
            }
            if !obj.contains_key("level") {
                let level = match stream {
                    Stream::Stdout => "INFO",
                    Stream::Stderr => "WARN",
                };
                obj.insert("level".into(), level.into());
            }
            obj.insert("step".into(), step.into());
            if let Some(s) = shard {
                obj.insert("shard".into(), s.into());
            }
            serde_json::Value::Object(obj).to_string()
        } else {
            match shard {
                Some(s) => format!("[{step} {s}] {line}"),
                None => format!("[{step}] {line}"),
            }
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }
}

/// A started service.
struct ServiceProc {
    pid: i32,
    child: tokio::process::Child,
}

struct Ctx {
    plan: Plan,
    state: RunState,
    opts: RunOptions,
    console: Console,
    programs: BTreeMap<String, PathBuf>,
    service_defs: BTreeMap<String, Service>,
    services: BTreeMap<String, OnceCell<std::result::Result<String, String>>>,
    service_procs: Mutex<Vec<ServiceProc>>,
    sem: Semaphore,
    cancel: CancellationToken,
    signal: AtomicI32,
    /// Process ids (= process group ids) of running children.
    children: Mutex<HashSet<i32>>,
    /// The DAG's shards ended (run, up to date or not run) of all of them.
    progress: shared::progress::Progress,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `plan` (resolved from `dag`) with the binaries in `programs`; returns the summary once
/// every step has ended one way or another. Must run on a current-thread runtime (see above).
pub async fn run(
    dag: &Dag,
    plan: Plan,
    store: Store,
    programs: BTreeMap<String, PathBuf>,
    opts: RunOptions,
) -> Result<RunSummary> {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let state = RunState::new(store, &plan);
    state.write_params(&plan).await?;
    let ctx = Arc::new(Ctx {
        state,
        console: Console {
            json: opts.log_format == LogFormat::Json,
        },
        programs,
        service_defs: dag.spec.services.clone(),
        services: dag
            .spec
            .services
            .keys()
            .map(|k| (k.clone(), OnceCell::new()))
            .collect(),
        service_procs: Mutex::new(Vec::new()),
        sem: Semaphore::new(opts.concurrency.max(1)),
        cancel: CancellationToken::new(),
        signal: AtomicI32::new(0),
        children: Mutex::new(HashSet::new()),
        progress: shared::progress::Progress::with_mode(
            shared::progress::lines_mode(),
            format!("dag {}", plan.dag),
            "shards",
            plan.steps.iter().map(|s| s.shards.len() as u64).sum(),
        ),
        opts,
        plan,
    });
    let signals = tokio::spawn(forward_signals(ctx.clone()));
    tracing::info!(
        dag = %ctx.plan.dag, run_id = %ctx.opts.run_id, store = %ctx.plan.params.store,
        state = %ctx.state.prefix(), concurrency = ctx.opts.concurrency,
        "run started"
    );

    let shards = schedule(&ctx).await?;

    stop_services(&ctx).await;
    signals.abort();
    let sig = ctx.signal.load(Ordering::SeqCst);
    let outcome = if sig != 0
        || shards
            .iter()
            .any(|s| s.outcome == ShardOutcome::Interrupted)
    {
        RunOutcome::Interrupted
    } else if shards
        .iter()
        .any(|s| matches!(s.outcome, ShardOutcome::Failed | ShardOutcome::NotRun))
    {
        RunOutcome::Failed
    } else {
        RunOutcome::Ok
    };
    let mut summary = RunSummary {
        dag: ctx.plan.dag.clone(),
        file: dag.file.display().to_string(),
        run_id: ctx.opts.run_id.clone(),
        run_key: ctx.plan.run_key.clone(),
        store: ctx.plan.params.store.clone(),
        params: ctx.plan.params.clone(),
        started_at,
        finished_at: Utc::now(),
        seconds: t0.elapsed().as_secs_f64(),
        outcome,
        signal_exit_code: (sig != 0).then_some(sig),
        shards,
        summary_path: None,
    };
    match ctx.state.write_summary(&ctx.opts.run_id, &summary).await {
        Ok(p) => summary.summary_path = Some(p),
        Err(e) => tracing::error!(error = %e, "writing the run summary"),
    }
    Ok(summary)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StepState {
    Pending,
    Running {
        left: usize,
        failed: bool,
    },
    /// `ran`: at least one shard ran in this invocation (so the steps after it must run too).
    Done {
        ran: bool,
    },
    Failed,
    NotRun,
}

/// Start steps as their needs finish; collect every shard's summary in plan order.
async fn schedule(ctx: &Arc<Ctx>) -> Result<Vec<ShardSummary>> {
    let steps = &ctx.plan.steps;
    let mut status = vec![StepState::Pending; steps.len()];
    let mut results: Vec<Vec<Option<ShardSummary>>> =
        steps.iter().map(|s| vec![None; s.shards.len()]).collect();
    let mut set: JoinSet<(usize, usize, ShardSummary)> = JoinSet::new();
    loop {
        let mut progress = true;
        while progress {
            progress = false;
            for i in 0..steps.len() {
                if status[i] != StepState::Pending {
                    continue;
                }
                let step = &steps[i];
                let blocked = step
                    .needs
                    .iter()
                    .find(|&&j| matches!(status[j], StepState::Failed | StepState::NotRun));
                if let Some(&j) = blocked {
                    let reason = format!("`{}` did not finish", steps[j].name);
                    not_run(&mut results[i], step, &reason);
                    ctx.progress.inc(step.shards.len() as u64);
                    status[i] = StepState::NotRun;
                    progress = true;
                    continue;
                }
                if ctx.cancel.is_cancelled() {
                    not_run(&mut results[i], step, "interrupted");
                    ctx.progress.inc(step.shards.len() as u64);
                    status[i] = StepState::NotRun;
                    progress = true;
                    continue;
                }
                if !step
                    .needs
                    .iter()
                    .all(|&j| matches!(status[j], StepState::Done { .. }))
                {
                    continue;
                }
                let upstream_ran = step
                    .needs
                    .iter()
                    .any(|&j| status[j] == StepState::Done { ran: true });
                let mut started = 0;
                for (k, &shard) in step.shards.iter().enumerate() {
                    if !ctx.opts.force
                        && !upstream_ran
                        && let Some(rec) = ctx.state.done(step, shard).await?
                    {
                        results[i][k] = Some(skipped(step, shard, rec));
                        ctx.progress.inc(1);
                        continue;
                    }
                    let c = ctx.clone();
                    set.spawn(async move {
                        let s = run_shard(&c, i, shard).await;
                        (i, k, s)
                    });
                    started += 1;
                }
                if started == 0 {
                    tracing::info!(step = %step.name, "up to date: finished by an earlier run");
                    status[i] = StepState::Done { ran: false };
                } else {
                    status[i] = StepState::Running {
                        left: started,
                        failed: false,
                    };
                }
                progress = true;
            }
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (i, k, summary) = joined.map_err(|e| Error::Io {
            context: "a shard task panicked".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let ok = summary.outcome == ShardOutcome::Ok;
        ctx.progress.inc(1);
        let p = ctx.progress.snapshot();
        tracing::info!(
            step = %steps[i].label(steps[i].shards[k]), outcome = ?summary.outcome,
            shards_done = p.done, shards_total = p.total,
            "dag progress: {}/{} shards", p.done, p.total
        );
        results[i][k] = Some(summary);
        if let StepState::Running { left, failed } = status[i] {
            let failed = failed || !ok;
            status[i] = if left > 1 {
                StepState::Running {
                    left: left - 1,
                    failed,
                }
            } else if failed {
                StepState::Failed
            } else {
                StepState::Done { ran: true }
            };
        }
    }
    Ok(results.into_iter().flatten().flatten().collect())
}

fn shard_label(step: &PlannedStep, shard: Shard) -> String {
    if step.sharded {
        shard.spec()
    } else {
        "-".into()
    }
}

fn not_run(results: &mut [Option<ShardSummary>], step: &PlannedStep, reason: &str) {
    for (k, &shard) in step.shards.iter().enumerate() {
        results[k] = Some(ShardSummary {
            step: step.name.clone(),
            job: step.job.clone(),
            shard: shard_label(step, shard),
            outcome: ShardOutcome::NotRun,
            reason: Some(reason.to_string()),
            attempts: 0,
            seconds: 0.0,
            exit_code: None,
            counts: None,
            report: None,
            job_run_id: None,
        });
    }
}

fn skipped(step: &PlannedStep, shard: Shard, rec: ShardRecord) -> ShardSummary {
    ShardSummary {
        step: step.name.clone(),
        job: step.job.clone(),
        shard: shard_label(step, shard),
        outcome: ShardOutcome::Skipped,
        reason: Some(format!("finished by run {}", rec.run_id)),
        attempts: 0,
        seconds: 0.0,
        exit_code: None,
        // The earlier run's figures stay in its record and report: this run did nothing.
        counts: None,
        report: rec.report,
        job_run_id: Some(rec.job_run_id),
    }
}

/// What a child left behind.
struct ChildResult {
    code: Option<i32>,
    signal: Option<i32>,
    report: Option<serde_json::Value>,
}

/// Run one shard with its retries.
async fn run_shard(ctx: &Arc<Ctx>, i: usize, shard: Shard) -> ShardSummary {
    let step = &ctx.plan.steps[i];
    let label = step.label(shard);
    let shard_text = step.sharded.then(|| shard.spec());
    // Set when the first attempt starts: time spent waiting for a slot is not the shard's.
    let mut t0: Option<Instant> = None;
    let mut out = ShardSummary {
        step: step.name.clone(),
        job: step.job.clone(),
        shard: shard_label(step, shard),
        outcome: ShardOutcome::NotRun,
        reason: None,
        attempts: 0,
        seconds: 0.0,
        exit_code: None,
        counts: None,
        report: None,
        job_run_id: None,
    };
    let finish = |mut out: ShardSummary, t0: Option<Instant>, outcome, reason: Option<String>| {
        out.outcome = outcome;
        out.reason = reason;
        out.seconds = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
        out
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let permit = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                return finish(out, t0, ShardOutcome::NotRun, Some("interrupted".into()));
            }
            p = ctx.sem.acquire() => p.expect("the semaphore is never closed"),
        };
        // Services start on first use, so a run with nothing to do starts none.
        let mut urls = BTreeMap::new();
        for name in &step.services {
            match service_url(ctx, name).await {
                Ok(u) => {
                    urls.insert(name.clone(), u);
                }
                Err(e) => {
                    return finish(out, t0, ShardOutcome::Failed, Some(e));
                }
            }
        }
        let job_run_id = if attempt == 1 {
            format!("{}-{}-{}", ctx.opts.run_id, step.name, shard.slug())
        } else {
            format!(
                "{}-{}-{}-a{attempt}",
                ctx.opts.run_id,
                step.name,
                shard.slug()
            )
        };
        let mut args: Vec<String> = step
            .shard_args(shard)
            .iter()
            .map(|a| substitute(a, &|n| urls.get(n).cloned()))
            .collect();
        args.extend([
            "--run-id".to_string(),
            job_run_id.clone(),
            "--log-format".to_string(),
            match ctx.opts.log_format {
                LogFormat::Pretty => "pretty".to_string(),
                LogFormat::Json => "json".to_string(),
            },
        ]);
        let program = ctx.programs[&step.job].clone();
        t0.get_or_insert_with(Instant::now);
        tracing::info!(step = %label, attempt, command = %format!("{} {}", step.job, args.join(" ")), "started");
        let t_attempt = Instant::now();
        let r = run_child(ctx, &program, &args, &step.name, shard_text.as_deref()).await;
        drop(permit);
        out.attempts = attempt;
        out.job_run_id = Some(job_run_id.clone());
        let res = match r {
            Ok(res) => res,
            Err(e) => return finish(out, t0, ShardOutcome::Failed, Some(e.to_string())),
        };
        out.exit_code = res.code;
        if let Some(rep) = &res.report {
            out.counts = rep
                .get("counts")
                .and_then(|c| serde_json::from_value(c.clone()).ok());
            out.report = rep
                .get("job")
                .and_then(|j| j.as_str())
                .map(|j| shared::paths::report_path(j, &job_run_id));
        }
        let secs = t_attempt.elapsed().as_secs_f64();
        if res.code == Some(exit::OK) {
            let rec = ShardRecord {
                step: step.name.clone(),
                job: step.job.clone(),
                shard: shard.spec(),
                args_hash: step.args_hash(shard),
                args: step.shard_args(shard),
                run_id: ctx.opts.run_id.clone(),
                job_run_id: job_run_id.clone(),
                finished_at: Utc::now(),
                seconds: secs,
                attempts: attempt,
                counts: out.counts.clone(),
                report: out.report.clone(),
            };
            if let Err(e) = ctx.state.record(&rec, shard).await {
                tracing::warn!(step = %label, error = %e, "could not record the finished shard: a rerun will run it again");
            }
            let c = out.counts.clone().unwrap_or_default();
            tracing::info!(step = %label, seconds = format!("{secs:.1}"), done = c.done, skipped = c.skipped, missing = c.missing, "finished");
            return finish(out, t0, ShardOutcome::Ok, None);
        }
        let reason = match (res.code, res.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended abnormally".to_string(),
        };
        if ctx.cancel.is_cancelled() {
            return finish(out, t0, ShardOutcome::Interrupted, Some(reason));
        }
        if res.code == Some(exit::USAGE) {
            tracing::error!(step = %label, "usage or configuration error (exit 2): not retried");
            return finish(
                out,
                t0,
                ShardOutcome::Failed,
                Some(format!("{reason} (usage)")),
            );
        }
        if attempt > step.retries {
            tracing::error!(step = %label, attempts = attempt, %reason, "failed");
            return finish(out, t0, ShardOutcome::Failed, Some(reason));
        }
        let delay = Duration::from_secs(
            step.retry_delay_secs
                .saturating_mul(1u64 << (attempt - 1).min(16))
                .min(600),
        );
        tracing::warn!(
            step = %label, %reason, retry_in_secs = delay.as_secs(),
            "failed; retrying (attempt {} of {})", attempt + 1, step.retries + 1
        );
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                return finish(out, t0, ShardOutcome::Interrupted, Some(format!("{reason}; interrupted before retrying")));
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// glibc malloc settings for the jobs (the Dockerfile sets the same): keep freed memory in the
/// process instead of returning it to the kernel and faulting it in again for the next file
/// (mmap and trim thresholds, heap growth step), and back the heaps with transparent huge
/// pages. A job that decodes one large column after another otherwise spends much of its CPU
/// zeroing the same pages again (tests/README.md, "Aggregate benchmark").
pub const GLIBC_TUNABLES: &str = "glibc.malloc.mmap_threshold=33554432:\
glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=67108864:glibc.malloc.hugetlb=1";

/// [`GLIBC_TUNABLES`] with one malloc arena per core: memory freed by one blocking-pool thread
/// is then reused by the next unit instead of faulted in fresh in another arena. A value the
/// user set is kept.
fn glibc_tunables() -> Option<String> {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(format!("{GLIBC_TUNABLES}:glibc.malloc.arena_max={cores}"))
}

/// Make a command: own process group, SIGTERM when the runner dies, no stdin, the jobs' malloc
/// settings.
fn command(program: &std::path::Path, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    if let Some(t) = glibc_tunables() {
        cmd.env("GLIBC_TUNABLES", t);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The runner died between fork and prctl: do not start orphaned.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the runner exited"));
            }
            Ok(())
        });
    }
    cmd
}

/// Send `sig` to a child's process group.
fn signal_group(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pid, sig);
    }
}

async fn run_child(
    ctx: &Arc<Ctx>,
    program: &std::path::Path,
    args: &[String],
    step: &str,
    shard: Option<&str>,
) -> Result<ChildResult> {
    let mut child = {
        // Spawn under the lock the signal forwarder takes: a child either exists before a
        // signal is forwarded (and gets it) or is never started.
        let mut children = lock(&ctx.children);
        if ctx.cancel.is_cancelled() {
            return Ok(ChildResult {
                code: None,
                signal: None,
                report: None,
            });
        }
        let mut cmd = command(program, args);
        if let Some(w) = &ctx.opts.wait_lock {
            cmd.env("PIPELINE_WAIT_LOCK", w);
        }
        let child = cmd.spawn().map_err(|e| Error::Spawn {
            program: program.display().to_string(),
            source: e,
        })?;
        if let Some(pid) = child.id() {
            children.insert(pid as i32);
        }
        child
    };
    let pid = child.id().map(|p| p as i32);
    let console = ctx.console;
    let (step_s, shard_s) = (step.to_string(), shard.map(str::to_string));
    let stderr = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(pump(stderr, console, step_s.clone(), shard_s.clone()));
    let stdout = child.stdout.take().expect("piped");
    let out_task = tokio::spawn(async move {
        let mut report = None;
        let mut lines = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            match serde_json::from_str::<serde_json::Value>(line.trim()) {
                Ok(v) if v.get("counts").is_some() && v.get("job").is_some() => report = Some(v),
                _ => console.line(&step_s, shard_s.as_deref(), &line, Stream::Stdout),
            }
        }
        report
    });
    let status = child.wait().await;
    if let Some(pid) = pid {
        lock(&ctx.children).remove(&pid);
    }
    let _ = err_task.await;
    let report = out_task.await.ok().flatten();
    let status = status.map_err(|e| Error::Io {
        context: format!("waiting for {}", program.display()),
        source: e,
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(ChildResult {
        code: status.code(),
        signal: status.signal(),
        report,
    })
}

async fn pump(
    stream: impl AsyncRead + Unpin,
    console: Console,
    step: String,
    shard: Option<String>,
) {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => console.line(
                &step,
                shard.as_deref(),
                &String::from_utf8_lossy(&buf),
                Stream::Stderr,
            ),
        }
    }
}

/// The URL of a service, starting it on first use.
async fn service_url(ctx: &Arc<Ctx>, name: &str) -> std::result::Result<String, String> {
    let cell = &ctx.services[name];
    cell.get_or_init(|| async { start_service(ctx, name).await.map_err(|e| e.to_string()) })
        .await
        .clone()
}

async fn start_service(ctx: &Arc<Ctx>, name: &str) -> Result<String> {
    let def = &ctx.service_defs[name];
    let program = ctx.programs[&def.command[0]].clone();
    let timeout = Duration::from_secs(def.ready_timeout_secs.unwrap_or(60));
    let label = format!("service {name}");
    let mut child = {
        let mut children = lock(&ctx.children);
        if ctx.cancel.is_cancelled() {
            return Err(Error::Service {
                name: name.into(),
                reason: "interrupted".into(),
            });
        }
        let child = command(&program, &def.command[1..])
            .spawn()
            .map_err(|e| Error::Spawn {
                program: program.display().to_string(),
                source: e,
            })?;
        if let Some(pid) = child.id() {
            children.insert(pid as i32);
        }
        child
    };
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    tracing::info!(service = name, command = %def.command.join(" "), "starting service");
    let stderr = child.stderr.take().expect("piped");
    tokio::spawn(pump(stderr, ctx.console, label.clone(), None));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let console = ctx.console;
    let found = tokio::time::timeout(timeout, async {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdout.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim().to_string();
            if (line.starts_with("http://") || line.starts_with("https://"))
                && !line.contains(char::is_whitespace)
            {
                return Some(line.trim_end_matches('/').to_string());
            }
            console.line(&label, None, &line, Stream::Stdout);
        }
    })
    .await;
    let fail = |reason: String| Error::Service {
        name: name.into(),
        reason,
    };
    let url = match found {
        Ok(Some(u)) => u,
        Ok(None) => {
            lock(&ctx.children).remove(&pid);
            let status = child.wait().await.ok();
            return Err(fail(format!(
                "exited ({}) before printing its URL",
                status.map_or("?".into(), |s| s.to_string())
            )));
        }
        Err(_) => {
            lock(&ctx.children).remove(&pid);
            signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
            return Err(fail(format!(
                "printed no URL within {}s",
                timeout.as_secs()
            )));
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(pump(stdout, console, label, None));
    tracing::info!(service = name, url = %url, "service ready");
    lock(&ctx.service_procs).push(ServiceProc { pid, child });
    Ok(url)
}

async fn stop_services(ctx: &Arc<Ctx>) {
    let procs: Vec<ServiceProc> = std::mem::take(&mut *lock(&ctx.service_procs));
    for mut p in procs {
        signal_group(p.pid, libc::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), p.child.wait())
            .await
            .is_err()
        {
            signal_group(p.pid, libc::SIGKILL);
            let _ = p.child.wait().await;
        }
        lock(&ctx.children).remove(&p.pid);
    }
}

/// On SIGINT/SIGTERM: stop starting work and forward the signal to every child's process group
/// (a second signal is forwarded too: jobs exit at once on their second).
async fn forward_signals(ctx: Arc<Ctx>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    loop {
        let (sig, code) = tokio::select! {
            _ = int.recv() => (libc::SIGINT, exit::INTERRUPTED),
            _ = term.recv() => (libc::SIGTERM, exit::TERMINATED),
        };
        let _ = ctx
            .signal
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        let children = lock(&ctx.children);
        ctx.cancel.cancel();
        tracing::warn!(
            signal = sig,
            running = children.len(),
            "signal received: forwarding it to the running jobs and stopping"
        );
        for &pid in children.iter() {
            signal_group(pid, sig);
        }
    }
}

/// What a run would do, without doing it: one line per shard.
pub async fn dry_run(plan: &Plan, state: &RunState, force: bool) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut runs = vec![false; plan.steps.len()];
    for i in topo(plan) {
        let step = &plan.steps[i];
        let upstream = step.needs.iter().any(|&j| runs[j]);
        for &shard in &step.shards {
            let rec = if force || upstream {
                None
            } else {
                state.done(step, shard).await?
            };
            let what = match &rec {
                Some(r) => format!("up to date (run {})", r.run_id),
                None => {
                    runs[i] = true;
                    "run".to_string()
                }
            };
            lines.push(format!(
                "[{}] {what}: {} {}",
                step.label(shard),
                step.job,
                step.shard_args(shard).join(" ")
            ));
        }
    }
    Ok(lines)
}

fn topo(plan: &Plan) -> Vec<usize> {
    let n = plan.steps.len();
    let mut done = vec![false; n];
    let mut out = Vec::new();
    while out.len() < n {
        let before = out.len();
        for i in 0..n {
            if !done[i] && plan.steps[i].needs.iter().all(|&j| done[j]) {
                done[i] = true;
                out.push(i);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// The image runs jobs without the runner (Argo): it must set the same malloc settings.
    #[test]
    fn the_image_sets_the_runners_glibc_tunables() {
        let dockerfile = include_str!("../../../Dockerfile");
        let line = format!("ENV GLIBC_TUNABLES={}", super::GLIBC_TUNABLES);
        assert!(dockerfile.lines().any(|l| l == line), "{line}");
    }
}
