//! The `download` job: plans archive files for (datasets, symbols, range), skips what the manifest
//! has as verified, and fetches the rest with bounded concurrency — streaming each zip while
//! hashing it, comparing with the published `.CHECKSUM`, and only then writing it under its final
//! name in the store. 404 is "missing upstream" (a missing monthly file falls back to its daily
//! files); transient failures are retried with backoff; a file that never verifies is quarantined
//! and reported as failed.

#![forbid(unsafe_code)]

mod fetch;
mod plan;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use shared::cli::{CommonSpec, SymbolSelection};
use shared::exec::Tally;
use shared::http::RetryPolicy;
use shared::listing::discover_symbols;
use shared::manifest::{Entry, ManifestKey, ManifestWriter, Output, UnitStatus};
use shared::paths::Dataset;
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

/// The listing endpoint: `given`, else the bucket's own endpoint for the real archive, else
/// `source` (a mirror or the simulator serves its listing at its root). Both must be http(s)
/// URLs with a host: a malformed one is a usage error, not a network failure to retry.
pub fn listing_url_for(source: &str, given: Option<&str>) -> Result<String> {
    let check = shared::cli::check_http_url;
    check("--source", source)?;
    let listing = match given {
        Some(u) => u.to_string(),
        None if source.trim_end_matches('/') == DEFAULT_SOURCE => DEFAULT_LISTING_URL.to_string(),
        None => source.to_string(),
    };
    check("--listing-url", &listing)?;
    Ok(listing)
}

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
    let mut targets: Vec<(Dataset, String)> = Vec::new();
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
    let mut never_verified: Vec<(Dataset, String)> = Vec::new();
    for (ds, sym) in &targets {
        let key = ManifestKey::new(JOB, ds.scope(), sym.clone());
        let (writer, manifest) = ManifestWriter::open(&ctx.store, &key).await?;
        if !manifest.entries().any(|e| e.status == UnitStatus::Done) {
            never_verified.push((*ds, sym.clone()));
        }
        let stored = plan::stored_raw(&ctx.store, ds, sym).await?;
        let writer = Arc::new(writer);
        let units = plan::plan_units(&spec, ctx.clock.now(), ds, sym, &manifest, &stored, &writer);
        writers.push(writer);
        queue.extend(units);
    }

    let mut tally = Tally::default();
    // A listed symbol is checked while nothing of it is verified: a typo is a usage error
    // before any request for its files.
    if let SymbolSelection::List(_) = spec.common.symbols {
        let unlisted = check_listed(&spec, &http, ctx, &never_verified, &mut tally).await?;
        queue.retain(|u| !unlisted.contains(&(u.file.dataset, u.file.symbol.clone())));
        targets.retain(|t| !unlisted.contains(t));
    }

    if spec.common.dry_run {
        for u in &queue {
            println!("{:<10} {}", u.action.label(), u.file.key());
        }
        tally.counts.skipped = queue.iter().filter(|u| u.action.is_skip()).count() as u64;
        let not_run = queue.len() as u64 - tally.counts.skipped;
        return Ok(header.dry_run(ctx, tally, not_run, serde_json::Value::Null));
    }

    let todo = queue.iter().filter(|u| !u.action.is_skip()).count();
    // Targets with at least one file the archive has: the others get a warning at the end.
    let mut found: HashSet<(Dataset, String)> = HashSet::new();
    let mut failed: HashSet<(Dataset, String)> = HashSet::new();
    tracing::info!(
        units = queue.len(),
        to_fetch = todo,
        symbols = targets.len(),
        concurrency = spec.common.concurrency,
        "plan ready"
    );
    let progress = shared::progress::Progress::start("download", "files", queue.len() as u64);

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
                found.insert((unit.file.dataset, unit.file.symbol.clone()));
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
        progress.set_bytes(Stats::get(&run.stats.bytes));
        let key = unit.file.key();
        match &result {
            Ok(FetchOutcome::Missing) => {}
            Ok(_) => _ = found.insert((unit.file.dataset, unit.file.symbol.clone())),
            Err(_) => _ = failed.insert((unit.file.dataset, unit.file.symbol.clone())),
        }
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
    drop(progress);
    if !ctx.cancel.is_cancelled() {
        let range = run.spec.common.range;
        for (ds, sym) in &targets {
            let target = (*ds, sym.clone());
            if !found.contains(&target) && !failed.contains(&target) {
                tally.warn(format!(
                    "{sym}: the archive has no {} file from {} to {} (not listed yet in that \
                     range, or delisted before it)",
                    ds.scope(),
                    range.start,
                    range.end
                ));
            }
        }
    }
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

/// Check the symbols of `targets` never downloaded before against the bucket listing of their
/// datasets. A symbol listed for none of the run's datasets is [`Error::UnknownSymbol`] (a typo,
/// another market's spelling), with the closest listed names; one listed for some datasets but
/// not others gets a warning for each dataset it lacks, and its targets there are returned to be
/// dropped. A listing that cannot be read is a warning, not a failure: the files are still asked
/// for, and a symbol the archive lacks then shows as missing upstream.
async fn check_listed(
    spec: &Spec,
    http: &reqwest::Client,
    ctx: &Context,
    targets: &[(Dataset, String)],
    tally: &mut Tally,
) -> Result<HashSet<(Dataset, String)>> {
    let mut by_dataset: BTreeMap<Dataset, Vec<&str>> = BTreeMap::new();
    for (ds, sym) in targets {
        by_dataset.entry(*ds).or_default().push(sym);
    }
    let mut absent: BTreeMap<&str, Vec<Dataset>> = BTreeMap::new();
    let mut all_listed: Vec<String> = Vec::new();
    for (ds, symbols) in &by_dataset {
        let listed =
            match discover_symbols(http, &spec.listing_url, ds, &spec.retry, &ctx.cancel).await {
                Ok(listed) => listed,
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    tally.warn(format!(
                        "could not check {} against the bucket listing of {} ({e}); a symbol \
                         the archive lacks will show as missing upstream",
                        symbols.join(", "),
                        ds.scope()
                    ));
                    continue;
                }
            };
        for sym in symbols {
            if listed.binary_search_by(|l| l.as_str().cmp(sym)).is_err() {
                absent.entry(sym).or_default().push(*ds);
            }
        }
        all_listed.extend(listed);
    }
    all_listed.sort();
    all_listed.dedup();
    let mut drop = HashSet::new();
    for (sym, lacking) in absent {
        // Every dataset of the run this symbol could be downloaded for.
        let requested = spec.common.datasets.len();
        if lacking.len() == requested {
            return Err(Error::UnknownSymbol {
                symbol: sym.to_string(),
                dataset: lacking
                    .iter()
                    .map(|d| d.scope())
                    .collect::<Vec<_>>()
                    .join(", "),
                closest: shared::cli::closest_names(sym, &all_listed, 5),
            });
        }
        for ds in lacking {
            tally.warn(format!(
                "{sym}: the archive lists no {} for it; skipped",
                ds.scope()
            ));
            drop.insert((ds, sym.to_string()));
        }
    }
    Ok(drop)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_url_follows_the_source() {
        assert_eq!(
            listing_url_for(DEFAULT_SOURCE, None).unwrap(),
            DEFAULT_LISTING_URL
        );
        assert_eq!(
            listing_url_for("http://127.0.0.1:8765", None).unwrap(),
            "http://127.0.0.1:8765"
        );
        assert_eq!(
            listing_url_for("http://127.0.0.1:8765", Some("http://h/b")).unwrap(),
            "http://h/b"
        );
        for bad in ["127.0.0.1:8765", "ftp://x", "http//x", "https://"] {
            let e = listing_url_for(bad, None).unwrap_err();
            assert_eq!(e.exit_code(), shared::error::exit::USAGE, "{bad}: {e}");
        }
        assert!(listing_url_for(DEFAULT_SOURCE, Some("nope")).is_err());
    }
}
