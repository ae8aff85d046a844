//! The `download` job: plans archive files for (datasets, symbols, range), skips what the manifest
//! has as verified, and fetches the rest with bounded concurrency — streaming each zip while
//! hashing it, comparing with the published `.CHECKSUM`, and only then writing it under its final
//! name in the store. 404 is "missing upstream" (a missing monthly file falls back to its daily
//! files); transient failures are retried with backoff; a file that never verifies is quarantined
//! and reported as failed.

mod fetch;
mod plan;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::cli::{CommonSpec, SymbolSelection};
use shared::exec::Tally;
use shared::http::RetryPolicy;
use shared::listing::discover_symbols;
use shared::manifest::{Entry, ManifestKey, ManifestWriter, Output, UnitStatus};
use shared::report::{RunHeader, RunReport};
use shared::{Context, Error, Result};
use tokio::task::JoinSet;

pub use fetch::FetchOutcome;
pub use plan::{Action, PlannedUnit};

pub const JOB: &str = "download";
/// Bump when the meaning of a verified file changes, so manifests recompute.
pub const JOB_VERSION: &str = "1";
pub const DEFAULT_SOURCE: &str = "https://data.binance.vision";
pub const DEFAULT_LISTING_URL: &str = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision";

/// Everything `download` needs besides the common arguments.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// Download base URL (`https://data.binance.vision`).
    pub source: String,
    /// S3 ListObjects endpoint of the bucket, for `--symbols all`.
    pub listing_url: String,
    /// Re-read the CHECKSUM of verified files and re-download those the archive republished.
    pub refresh: bool,
    /// Probe again files recorded as missing upstream, however old the record.
    pub retry_missing: bool,
    /// Transient-failure retries (5xx, 403, 429, resets, truncated bodies).
    #[serde(skip)]
    pub retry: RetryPolicy,
    /// Downloads of one file before a checksum mismatch is final.
    pub checksum_attempts: u32,
    /// Bodies up to this size are verified in memory; larger ones stream through a staging object.
    pub memory_limit: usize,
    /// Show a progress bar (stderr is a terminal and logs are pretty).
    #[serde(skip)]
    pub progress: bool,
}

/// Unit-level counters that go into the report's `details`.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
    pub checksum_mismatches: AtomicU64,
    pub requests: AtomicU64,
    pub adopted: AtomicU64,
    pub republished: AtomicU64,
    pub monthly_fallbacks: AtomicU64,
    pub refresh_checks: AtomicU64,
}

impl Stats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Shared state of one run, handed to every unit task.
pub(crate) struct Run {
    pub spec: Spec,
    pub ctx: Context,
    pub http: reqwest::Client,
    pub stats: Stats,
}

/// Run the job. Errors returned here end the run (configuration, listing, store); per-unit
/// failures are in the report.
pub async fn run(spec: Spec, ctx: &Context, http: reqwest::Client) -> Result<RunReport> {
    let t0 = Instant::now();
    let header = RunHeader {
        job: JOB,
        job_version: JOB_VERSION,
        store: spec.common.store.clone(),
        started_at: ctx.clock.now(),
        params: serde_json::to_value(&spec).unwrap_or_default(),
    };

    // 1. Symbols per dataset (listing for `all`), then this shard's share.
    let mut targets = Vec::new();
    for ds in &spec.common.datasets {
        let symbols = match &spec.common.symbols {
            SymbolSelection::List(v) => v.clone(),
            SymbolSelection::All => {
                let s = discover_symbols(&http, &spec.listing_url, ds, &spec.retry, &ctx.cancel)
                    .await?;
                tracing::info!(dataset = %ds.scope(), symbols = s.len(), "discovered symbols from the bucket listing");
                s
            }
        };
        for sym in spec.common.shard_of(&symbols) {
            targets.push((*ds, sym));
        }
    }

    // 2. Plan every (dataset, symbol) against its manifest and what the store holds.
    let mut writers = Vec::new();
    let mut queue: VecDeque<PlannedUnit> = VecDeque::new();
    for (ds, sym) in &targets {
        let key = ManifestKey::new(JOB, ds.scope(), sym.clone());
        let (writer, manifest) = ManifestWriter::open(&ctx.store, &key).await?;
        let stored = plan::stored_raw(&ctx.store, ds, sym).await?;
        let writer = Arc::new(writer);
        let units = plan::plan_units(&spec, ctx.clock.now(), ds, sym, &manifest, &stored, &writer);
        writers.push(writer);
        queue.extend(units);
    }

    let mut tally = Tally::default();

    if spec.common.dry_run {
        for u in &queue {
            println!("{:<10} {}", u.action.label(), u.file.key());
        }
        tally.counts.skipped = queue.iter().filter(|u| u.action.is_skip()).count() as u64;
        let not_run = queue.len() as u64 - tally.counts.skipped;
        return Ok(header.dry_run(ctx, tally, not_run, serde_json::Value::Null));
    }

    let todo = queue.iter().filter(|u| !u.action.is_skip()).count();
    tracing::info!(
        units = queue.len(),
        to_fetch = todo,
        symbols = targets.len(),
        concurrency = spec.common.concurrency,
        "plan ready"
    );
    let progress = progress_bar(spec.progress, queue.len() as u64);

    // 3. Execute with bounded concurrency; a missing monthly file enqueues its daily files.
    let run = Arc::new(Run {
        spec,
        ctx: ctx.clone(),
        http,
        stats: Stats::default(),
    });
    let mut tasks: JoinSet<(PlannedUnit, Result<FetchOutcome>)> = JoinSet::new();
    loop {
        while tasks.len() < run.spec.common.concurrency && !ctx.cancel.is_cancelled() {
            let Some(unit) = queue.pop_front() else { break };
            if let Action::Skip(_) = unit.action {
                tally.skip();
                progress.inc(1);
                continue;
            }
            if let Action::KnownMissing = unit.action {
                tally.miss(unit.file.key());
                progress.inc(1);
                continue;
            }
            let run = run.clone();
            tasks.spawn(async move {
                let r = fetch::process(&run, &unit).await;
                (unit, r)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (unit, result) = joined.map_err(|e| Error::Io {
            context: "a download task panicked".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        progress.inc(1);
        let key = unit.file.key();
        match result {
            Ok(FetchOutcome::Verified { .. }) => tally.counts.done += 1,
            Ok(FetchOutcome::Unchanged | FetchOutcome::Adopted { .. }) => tally.skip(),
            Ok(FetchOutcome::Missing) => {
                let fallback = shared::plan::monthly_fallback(&unit.file, run.spec.common.range);
                if fallback.is_empty() {
                    tally.miss(key);
                } else {
                    tracing::info!(file = %key, days = fallback.len(), "monthly file missing upstream: falling back to daily files");
                    Stats::add(&run.stats.monthly_fallbacks, 1);
                    progress.inc_length(fallback.len() as u64);
                    for f in fallback {
                        queue.push_back(PlannedUnit {
                            file: f,
                            action: Action::Fetch,
                            writer: unit.writer.clone(),
                            recorded_sha: None,
                        });
                    }
                }
            }
            Err(e) => {
                tally.record::<()>(&key, Err(e));
            }
        }
        if ctx.cancel.is_cancelled() && tasks.is_empty() {
            break;
        }
    }
    progress.finish_and_clear();
    // Units never started because of an interrupt.
    tally.counts.not_run += queue.iter().filter(|u| !u.action.is_skip()).count() as u64;
    tally.counts.skipped += queue.iter().filter(|u| u.action.is_skip()).count() as u64;
    let outcome = tally.outcome(ctx.cancel.is_cancelled());
    let s = &run.stats;
    let bytes = Stats::get(&s.bytes);
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let details = serde_json::json!({
        "requests": Stats::get(&s.requests),
        "retries": Stats::get(&s.retries),
        "checksum_mismatches": Stats::get(&s.checksum_mismatches),
        "adopted": Stats::get(&s.adopted),
        "republished": Stats::get(&s.republished),
        "refresh_checks": Stats::get(&s.refresh_checks),
        "monthly_fallbacks": Stats::get(&s.monthly_fallbacks),
        "seconds": secs,
        "files_per_sec": tally.counts.done as f64 / secs,
        "mb_per_sec": bytes as f64 / 1e6 / secs,
    });
    Ok(header.report(ctx, outcome, tally, bytes, details))
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A manifest entry for a unit of this job.
pub(crate) fn entry(
    run: &Run,
    unit: &str,
    status: UnitStatus,
    checksum: Option<&str>,
    output: Option<Output>,
    detail: Option<String>,
) -> Entry {
    Entry {
        unit: unit.to_string(),
        status,
        inputs: checksum
            .map(|c| [("checksum".to_string(), c.to_string())].into())
            .unwrap_or_default(),
        job_version: JOB_VERSION.into(),
        params_hash: String::new(),
        outputs: output.into_iter().collect(),
        recorded_at: run.ctx.clock.now(),
        run_id: run.ctx.run_id.clone(),
        detail,
    }
}

/// Record into a unit's manifest.
pub(crate) async fn record(writer: &ManifestWriter, e: Entry) -> Result<()> {
    writer.record(e).await
}
