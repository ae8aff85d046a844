//! The `download` job: plans archive files for (datasets, symbols, range), skips what the manifest
//! has as verified, and fetches the rest with bounded concurrency — streaming each zip while
//! hashing it, comparing with the published `.CHECKSUM`, and only then writing it under its final
//! name in the store. 404 is "missing upstream" (a missing monthly file falls back to its daily
//! files); transient failures are retried with backoff; a file that never verifies is quarantined
//! and reported as failed.

#![forbid(unsafe_code)]

mod days;
mod fetch;
mod holes;
mod listed;
mod plan;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use shared::cli::{CommonSpec, SymbolSelection};
use shared::exec::Tally;
use shared::http::RetryPolicy;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::listing::discover_symbols;
use shared::manifest::{Entry, ManifestWriter, Output, UnitStatus};
use shared::paths::{ArchiveFile, Dataset};
use shared::report::RunReport;
use shared::{Context, Error, Result};

pub use fetch::FetchOutcome;
pub use listed::{COVERAGE_UNIT, Coverage, ListedMeta};
pub use plan::{Action, PlannedUnit};

/// Targets whose folders are listed at once while planning from the listing.
const LISTING_CONCURRENCY: usize = 16;

/// Where the plan learns which files exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PlanFrom {
    /// The bucket listing when it answers, else dates.
    Auto,
    /// The bucket listing, or fail: exactly the files that exist, no 404 probing.
    Listing,
    /// Every file the dates imply, asked for; a 404 is "missing upstream".
    Dates,
}

/// Bump when the meaning of a verified file changes, so manifests recompute.
pub const JOB_VERSION: &str = "1";
pub use shared::listing::{DEFAULT_LISTING_URL, DEFAULT_SOURCE, listing_url_for};

/// Everything `download` needs besides the common arguments.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// Download base URL (`https://data.binance.vision`).
    pub source: String,
    /// S3 ListObjects endpoint of the bucket, for `--symbols all`.
    pub listing_url: String,
    /// Where the plan learns which files exist.
    pub plan_from: PlanFrom,
    /// Re-check verified files and re-download those the archive republished: by the listing's
    /// ETag and LastModified when the plan lists, else by re-reading each CHECKSUM.
    pub refresh: bool,
    /// Refuse a file whose CHECKSUM names other bytes even when its ETag vouches for them.
    pub strict_checksum: bool,
    /// Probe again files recorded as missing upstream, however old the record.
    pub retry_missing: bool,
    /// Hash every stored zip the range covers again and download the ones whose bytes changed
    /// (a damaged disk or object); no request for the intact ones.
    pub verify: bool,
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
    /// CHECKSUM responses that did not parse (asked again).
    pub checksums_garbled: AtomicU64,
    /// Stored zips hashed again (`--verify`), and those whose bytes had changed.
    pub reverified: AtomicU64,
    pub damaged: AtomicU64,
    pub requests: AtomicU64,
    pub adopted: AtomicU64,
    pub republished: AtomicU64,
    pub monthly_fallbacks: AtomicU64,
    pub refresh_checks: AtomicU64,
    /// Monthly files found lacking days, and the daily files fetched for them.
    pub monthly_holes: Mutex<Vec<holes::MonthlyHole>>,
    /// Files accepted on the ETag's word although their CHECKSUM names other bytes.
    pub checksum_errata: Mutex<Vec<String>>,
    /// Listing pages asked for to plan, and the targets planned from them.
    pub listing_pages: AtomicU64,
    pub listed_targets: AtomicU64,
    /// Files the dates imply that the listing shows absent (no request made for them).
    pub absent_in_listing: AtomicU64,
}

impl Stats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What a unit task sees of the run.
pub(crate) struct Run<'a> {
    pub spec: &'a Spec,
    pub ctx: &'a Context,
    /// What stamps the unit's manifest entries.
    pub stamp: &'a Stamp,
    pub http: &'a reqwest::Client,
    pub stats: &'a Stats,
    pub quarantined: &'a Mutex<HashSet<String>>,
}

/// The job: its spec, the HTTP client, the run's counters, and the (dataset, symbol) targets
/// with whether a file of each was found while planning.
#[derive(Serialize)]
pub struct Download {
    #[serde(flatten)]
    spec: Spec,
    #[serde(skip)]
    http: reqwest::Client,
    #[serde(skip)]
    stats: Stats,
    #[serde(skip)]
    targets: Mutex<Vec<(Dataset, String)>>,
    #[serde(skip)]
    found_at_plan: Mutex<HashSet<(Dataset, String)>>,
    /// Quarantined copies in the store (listed once at plan): a file that verifies now
    /// supersedes its copy, which goes.
    #[serde(skip)]
    quarantined: Mutex<HashSet<String>>,
}

impl Download {
    pub fn new(spec: Spec, http: reqwest::Client) -> Download {
        Download {
            spec,
            http,
            stats: Stats::default(),
            targets: Mutex::new(Vec::new()),
            found_at_plan: Mutex::new(HashSet::new()),
            quarantined: Mutex::new(HashSet::new()),
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, stamp: &'a Stamp) -> Run<'a> {
        Run {
            spec: &self.spec,
            ctx,
            stamp,
            http: &self.http,
            stats: &self.stats,
            quarantined: &self.quarantined,
        }
    }
}

/// Targets with a file the archive has, and those with a failed file: the others get a warning.
#[derive(Default)]
pub struct Totals {
    found: HashSet<(Dataset, String)>,
    failed: HashSet<(Dataset, String)>,
}

fn target(f: &ArchiveFile) -> (Dataset, String) {
    (f.dataset, f.symbol.clone())
}

impl Job for Download {
    const NAME: JobName = JobName::DOWNLOAD;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "files";
    type Unit = PlannedUnit;
    type Done = (PlannedUnit, FetchOutcome);
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.spec.common
    }

    /// What a verified file is does not depend on any parameter.
    fn params_hash(&self) -> String {
        String::new()
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<PlannedUnit>> {
        let (spec, ctx) = (&self.spec, p.ctx);
        let quarantined: HashSet<String> = ctx
            .store
            .list("_quarantine/")
            .await?
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        *self.quarantined.lock().unwrap_or_else(|e| e.into_inner()) = quarantined;
        // 1. Symbols per dataset (listing for `all`), then this shard's share.
        let mut targets: Vec<(Dataset, String)> = Vec::new();
        for ds in &spec.common.datasets {
            let symbols = match &spec.common.symbols {
                SymbolSelection::List(v) => v.clone(),
                SymbolSelection::All => {
                    let s = discover_symbols(
                        &self.http,
                        &spec.listing_url,
                        ds,
                        &spec.retry,
                        &ctx.cancel,
                    )
                    .await?;
                    tracing::info!(dataset = %ds.scope(), symbols = s.len(), "discovered symbols from the bucket listing");
                    let select = &spec.common.select;
                    let mut s: Vec<String> = s
                        .into_iter()
                        .filter(|sym| select.admits_name(ds.market, sym))
                        .collect();
                    if let Some((a, b)) = select.listed_between {
                        s = listed::listed_between(self, ctx, ds, s, a, b).await?;
                    }
                    if s.is_empty() {
                        p.tally.warn(format!(
                            "{}: no symbol of the bucket listing passes the selection",
                            ds.scope()
                        ));
                    }
                    s
                }
            };
            for sym in spec.common.shard_of(&symbols) {
                targets.push((*ds, sym));
            }
        }

        // 2. Plan every (dataset, symbol) against its manifest and what the store holds. With
        // the listing, a target whose plan would ask for a file not yet settled is listed.
        let by_listing = spec.plan_from != PlanFrom::Dates;
        let mut queue: Vec<PlannedUnit> = Vec::new();
        let mut never_verified: Vec<(Dataset, String)> = Vec::new();
        let mut to_list: Vec<listed::Pending> = Vec::new();
        for (ds, sym) in &targets {
            let (writer, manifest) = p.manifest(&ds.scope(), sym).await?;
            if !manifest.entries().any(|e| e.status == UnitStatus::Done) {
                never_verified.push((*ds, sym.clone()));
            }
            let stored = plan::stored_raw(&ctx.store, ds, sym).await?;
            let mut units = plan::plan_units(spec, ds, sym, &manifest, &stored, &writer);
            if by_listing {
                let coverage = Coverage::recorded(&manifest);
                units.retain(|u| {
                    u.action != Action::Fetch
                        || manifest.get(&u.file.key()).is_some()
                        || !coverage.as_ref().is_some_and(|c| c.settles_absent(&u.file))
                });
                if units
                    .iter()
                    .any(|u| matches!(u.action, Action::Fetch | Action::Adopt | Action::Refresh))
                {
                    to_list.push(listed::Pending {
                        ds: *ds,
                        symbol: sym.clone(),
                        units,
                        manifest,
                        stored,
                        writer,
                    });
                    continue;
                }
            }
            queue.extend(units);
        }
        if !to_list.is_empty() {
            let done = listed::plan_listed(self, p, to_list).await?;
            queue.extend(done);
        }

        // A listed symbol is checked while nothing of it is verified: a typo is a usage error
        // before any request for its files.
        if let SymbolSelection::List(_) = spec.common.symbols {
            let unlisted =
                check_listed(spec, &self.http, ctx, &never_verified, &mut p.tally).await?;
            queue.retain(|u| !unlisted.contains(&target(&u.file)));
            targets.retain(|t| !unlisted.contains(t));
        }

        let mut units = Vec::new();
        let mut found = HashSet::new();
        for u in queue {
            let line = format!("{:<10} {}", u.action.label(), u.file.key());
            match u.action {
                Action::Skip(_) => {
                    found.insert(target(&u.file));
                    p.skip(line);
                }
                Action::KnownMissing => p.known_missing(u.file.key(), line),
                _ => units.push(u),
            }
        }
        tracing::info!(symbols = targets.len(), "targets planned");
        if let (Ok(mut t), Ok(mut f)) = (self.targets.lock(), self.found_at_plan.lock()) {
            *t = targets;
            *f = found;
        }
        Ok(units)
    }

    fn unit_key(u: &PlannedUnit) -> String {
        u.file.key()
    }

    fn dry_run_line(&self, u: &PlannedUnit) -> String {
        format!("{:<10} {}", u.action.label(), u.file.key())
    }

    async fn execute(
        job: Arc<Self>,
        ctx: Context,
        stamp: Stamp,
        u: PlannedUnit,
    ) -> Result<(PlannedUnit, FetchOutcome)> {
        let r = fetch::process(&job.run(&ctx, &stamp), &u).await?;
        Ok((u, r))
    }

    fn absorb(
        &self,
        t: &mut Totals,
        key: &str,
        (unit, outcome): (PlannedUnit, FetchOutcome),
    ) -> Finished<PlannedUnit> {
        match outcome {
            FetchOutcome::Verified { .. } => {
                t.found.insert(target(&unit.file));
                Finished::Done
            }
            FetchOutcome::Unchanged | FetchOutcome::Adopted { .. } | FetchOutcome::Intact => {
                t.found.insert(target(&unit.file));
                Finished::UpToDate
            }
            FetchOutcome::Missing => {
                let fallback = shared::plan::monthly_fallback(&unit.file, self.spec.common.range);
                if fallback.is_empty() {
                    return Finished::Missing;
                }
                tracing::info!(file = %key, days = fallback.len(), "monthly file missing upstream: falling back to daily files");
                Stats::add(&self.stats.monthly_fallbacks, 1);
                Finished::Expands(
                    fallback
                        .into_iter()
                        .map(|f| PlannedUnit {
                            file: f,
                            action: Action::Fetch,
                            writer: unit.writer.clone(),
                            recorded_sha: None,
                            listed: None,
                        })
                        .collect(),
                )
            }
        }
    }

    fn failed(&self, t: &mut Totals, key: &str) {
        if let Ok(f) = ArchiveFile::parse_key(key) {
            t.failed.insert(target(&f));
        }
    }

    fn bytes(&self, _: &Totals) -> u64 {
        Stats::get(&self.stats.bytes)
    }

    /// A target with no file in the range gets a warning; then the report's figures.
    async fn finish(&self, ctx: &Context, t: Totals, end: &mut End) -> Result<serde_json::Value> {
        if !ctx.cancel.is_cancelled() {
            let range = self.spec.common.range;
            let targets = self.targets.lock().map(|t| t.clone()).unwrap_or_default();
            let at_plan = self
                .found_at_plan
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default();
            let empty: Vec<&(Dataset, String)> = targets
                .iter()
                .filter(|tg| {
                    !t.found.contains(tg) && !at_plan.contains(tg) && !t.failed.contains(tg)
                })
                .collect();
            if self.spec.common.symbols == SymbolSelection::All {
                // Symbols of the listing outside the range are expected with `all`: one line
                // per dataset, naming a few.
                let mut by_ds: BTreeMap<String, Vec<&str>> = BTreeMap::new();
                for (ds, sym) in &empty {
                    by_ds.entry(ds.scope()).or_default().push(sym);
                }
                for (scope, syms) in by_ds {
                    let shown: Vec<&str> = syms.iter().take(10).copied().collect();
                    let more = syms.len().saturating_sub(shown.len());
                    end.tally.warn(format!(
                        "{} symbols of the listing have no {scope} file from {} to {} (listed \
                         after it or delisted before it): {}{}",
                        syms.len(),
                        range.start,
                        range.end,
                        shown.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    ));
                }
            } else {
                for (ds, sym) in empty {
                    end.tally.warn(format!(
                        "{sym}: the archive has no {} file from {} to {} (not listed yet in that \
                         range, or delisted before it)",
                        ds.scope(),
                        range.start,
                        range.end
                    ));
                }
            }
        }
        let s = &self.stats;
        let bytes = Stats::get(&s.bytes);
        let secs = end.seconds;
        Ok(serde_json::json!({
            "requests": Stats::get(&s.requests),
            "retries": Stats::get(&s.retries),
            "checksum_mismatches": Stats::get(&s.checksum_mismatches),
            "checksums_garbled": Stats::get(&s.checksums_garbled),
            "reverified": Stats::get(&s.reverified),
            "damaged_refetched": Stats::get(&s.damaged),
            "adopted": Stats::get(&s.adopted),
            "republished": Stats::get(&s.republished),
            "refresh_checks": Stats::get(&s.refresh_checks),
            "monthly_holes": s.monthly_holes.lock().map(|v| serde_json::to_value(&*v).unwrap_or_default()).unwrap_or_default(),
            "checksum_errata": s.checksum_errata.lock().map(|v| { let mut v = v.clone(); v.sort(); v }).unwrap_or_default(),
            "monthly_fallbacks": Stats::get(&s.monthly_fallbacks),
            "plan_from": self.spec.plan_from,
            "listing_pages": Stats::get(&s.listing_pages),
            "listed_targets": Stats::get(&s.listed_targets),
            "absent_in_listing": Stats::get(&s.absent_in_listing),
            "seconds": secs,
            "files_per_sec": end.tally.counts.done as f64 / secs,
            "mb_per_sec": bytes as f64 / 1e6 / secs,
        }))
    }
}

/// Run the job over `ctx`'s store.
pub async fn run(spec: Spec, ctx: &Context, http: reqwest::Client) -> Result<RunReport> {
    shared::job::run(Download::new(spec, http), ctx).await
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
    run: &Run<'_>,
    unit: &str,
    status: UnitStatus,
    checksum: Option<&str>,
    output: Option<Output>,
    detail: Option<String>,
) -> Entry {
    let inputs = checksum
        .map(|c| [("checksum".to_string(), c.to_string())].into())
        .unwrap_or_default();
    let mut e = run
        .stamp
        .entry(unit, status, inputs, output.into_iter().collect());
    e.detail = detail;
    e
}

/// Record into a unit's manifest.
pub(crate) async fn record(writer: &ManifestWriter, e: Entry) -> Result<()> {
    writer.record(e).await
}
