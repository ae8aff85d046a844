//! The `validate` job: data-quality verdicts on `optimize`'s monthly files, per symbol-day.
//!
//! One unit per (dataset, symbol) over the run's range of days: it streams the symbol's
//! optimized months row group by row group through the checks (`checks`), adds what the
//! `download` manifest knows (404s) and what `optimize` removed (duplicated source rows), and
//! writes `reports/validate/<market>/<dataset>/<start>_<end>/symbol=<S>.json` (`result`). Inputs
//! are fingerprinted from the upstream manifests, so a rerun with unchanged inputs does nothing.
//!
//! Then, per dataset, the report is assembled from every per-symbol result present in that
//! range's folder — whichever run or shard wrote them — because outages are a cross-symbol
//! verdict (`classify`): `report.json` (schema `validate/1`, read by `shared::validation`) and
//! `report.html` (`html`). It is rewritten only when its inputs changed, and re-checked after
//! writing, so the last shard to finish leaves a report over every symbol; a later run whose
//! units are all up to date (e.g. one unsharded run after a sharded step) does the same.
//!
//! Errors (schema, duplicates or disorder after optimize, OHLC and volume violations) fail the
//! run — exit 1 — unless `warn_only`; gaps, warnings and notes never do.

#![forbid(unsafe_code)]

mod checks;
mod classify;
mod html;
mod read;
mod result;
mod summary;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::NaiveDate;
use serde::Serialize;
use shared::checksum::sha256_hex;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{Manifest, ManifestWriter, Output, UnitStatus};
use shared::paths::{ArchiveFile, Dataset, FileDate, ValidationPath, range_name};
use shared::plan::DateRange;
use shared::report::UnitFailure;
use shared::validation::{DatasetReport, ReportParams};
use shared::{Context, Error, Result, Store};

pub use checks::{Checker, GapMode, Kind, Profile, merge};
pub use classify::{Assembly, MIN_OUTAGE_SYMBOLS, assemble, outages};
pub use html::render as render_html;
pub use result::{DayCounts, FileState, SymbolResult};
pub use summary::text as summary_text;

/// Bumped whenever a symbol's result changes for the same inputs. 2 reads the days with
/// duplicated source rows from `optimize`'s typed manifest field.
pub const JOB_VERSION: &str = "2";
pub const UPSTREAM: JobName = JobName::OPTIMIZE;
/// Where 404s are recorded.
pub const DOWNLOAD: JobName = JobName::DOWNLOAD;
/// Where the days filled from REST are recorded.
pub const TAIL: JobName = JobName::TAIL;

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// A move of more than this fraction from one row's price to the next is a warning.
    pub price_jump_threshold: f64,
    /// The share of symbols that must miss the same time for an exchange-wide outage.
    pub outage_share: f64,
    /// Report errors without failing the run.
    pub warn_only: bool,
}

impl Spec {
    /// The flags the job checks itself: a usage error names the flag.
    pub fn check(&self) -> Result<()> {
        if self.price_jump_threshold.is_nan() || self.price_jump_threshold <= 0.0 {
            return Err(Error::usage("--price-jump-threshold must be positive"));
        }
        if !(self.outage_share > 0.0 && self.outage_share <= 1.0) {
            return Err(Error::usage("--outage-share must be in (0, 1]"));
        }
        Ok(())
    }
}

/// One unit: a symbol of a dataset over the range, and what it is computed from.
pub struct SymbolUnit {
    dataset: Dataset,
    symbol: String,
    range: DateRange,
    /// The optimized months touching the range: (month, path).
    months: Vec<(FileDate, String)>,
    duplicate_days: Vec<(NaiveDate, u64)>,
    files: BTreeMap<NaiveDate, FileState>,
    /// Where the data ends for now, when `tail` has filled past the archive.
    horizon_us: Option<i64>,
    inputs: BTreeMap<String, String>,
    writer: Arc<ManifestWriter>,
}

impl SymbolUnit {
    fn result_path(&self) -> String {
        ValidationPath::Symbol {
            dataset: self.dataset,
            range: self.range,
            symbol: self.symbol.clone(),
        }
        .path()
    }
}

/// What the upstream manifests say about one symbol over the range.
async fn plan_symbol(
    store: &Store,
    ds: &Dataset,
    symbol: &str,
    range: DateRange,
    writer: Arc<ManifestWriter>,
) -> Result<SymbolUnit> {
    let scope = ds.scope();
    let mut inputs = BTreeMap::new();
    let optimized = Manifest::load(
        store,
        &shared::manifest::ManifestKey::new(UPSTREAM, &scope, symbol),
    )
    .await?;
    let mut months = Vec::new();
    let mut duplicate_days = Vec::new();
    for month in range.months() {
        let Some(e) = optimized.get(&format!("{symbol}/{month}")) else {
            continue;
        };
        if e.status != UnitStatus::Done {
            continue;
        }
        if let Some(o) = e.outputs.first() {
            inputs.insert(format!("optimized:{}", o.path), o.sha256.clone());
            months.push((month, o.path.clone()));
        }
        let dups: Vec<(NaiveDate, u64)> = e
            .duplicate_days
            .iter()
            .map(|(d, n)| (*d, *n))
            .filter(|(d, _)| range.contains(*d))
            .collect();
        if !dups.is_empty() {
            let list: Vec<String> = dups.iter().map(|(d, n)| format!("{d}:{n}")).collect();
            inputs.insert(format!("duplicate_days:{symbol}/{month}"), list.join(","));
            duplicate_days.extend(dups);
        }
    }
    let downloaded = Manifest::load(
        store,
        &shared::manifest::ManifestKey::new(DOWNLOAD, &scope, symbol),
    )
    .await?;
    let mut files: BTreeMap<NaiveDate, FileState> = BTreeMap::new();
    for e in downloaded.entries() {
        let Ok(f) = ArchiveFile::parse_key(&e.unit) else {
            continue;
        };
        let days: Vec<NaiveDate> = f.date.days().filter(|d| range.contains(*d)).collect();
        if days.is_empty() {
            continue;
        }
        let state = match e.status {
            UnitStatus::Done => FileState::Present,
            UnitStatus::Missing => FileState::Missing,
            UnitStatus::Failed => continue,
        };
        inputs.insert(
            format!("download:{}", e.unit),
            format!("{:?}", e.status).to_lowercase(),
        );
        for d in days {
            let s = files.entry(d).or_default();
            // A day is missing only when no file covering it is present.
            if *s != FileState::Present {
                *s = state;
            }
        }
    }
    // Days `tail` filled from REST where the archive has no file yet: provisional. The data
    // then ends where the later of the archive's last day and REST's last minute ends.
    let rest = Manifest::load(
        store,
        &shared::manifest::ManifestKey::new(TAIL, &scope, symbol),
    )
    .await?;
    let mut rest_until: Option<i64> = None;
    for e in rest.entries().filter(|e| e.status == UnitStatus::Done) {
        let (Some(r), Ok(day)) = (e.rest, NaiveDate::parse_from_str(&e.unit, "%Y-%m-%d")) else {
            continue;
        };
        rest_until = Some(rest_until.map_or(r.until_us, |u| u.max(r.until_us)));
        if !range.contains(day) {
            continue;
        }
        inputs.insert(format!("tail:{}", e.unit), r.until_us.to_string());
        let s = files.entry(day).or_default();
        if *s != FileState::Present {
            *s = FileState::Rest;
        }
    }
    let archive_until = files
        .iter()
        .filter(|(_, s)| **s == FileState::Present)
        .map(|(d, _)| checks::day_start_us(*d) + checks::DAY_US)
        .max();
    let horizon_us = rest_until.map(|r| r.max(archive_until.unwrap_or(i64::MIN)));
    Ok(SymbolUnit {
        dataset: *ds,
        symbol: symbol.to_string(),
        range,
        months,
        duplicate_days,
        files,
        horizon_us,
        inputs,
        writer,
    })
}

/// Check one symbol: stream its months, write its result, record it.
async fn validate_symbol(spec: &Spec, ctx: &Context, stamp: &Stamp, u: SymbolUnit) -> Result<()> {
    let mut checker = Checker::new(&u.dataset, &u.symbol, u.range, spec.price_jump_threshold);
    for (d, s) in &u.files {
        if let Some(c) = checker.res.days.get_mut(d) {
            c.file = *s;
        }
    }
    for (d, n) in &u.duplicate_days {
        checker.source_duplicates(*d, *n);
    }
    if let Some(h) = u.horizon_us {
        checker.set_horizon(h);
    }
    let format = shared::formats::format_of(&u.dataset);
    for (month, path) in &u.months {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let local = frames::file::LocalCopy::fetch(&ctx.store, path)
            .await?
            .ok_or_else(|| Error::upstream_missing(path, JobName::OPTIMIZE))?;
        let path = path.clone();
        let span = (
            checks::day_start_us(month.first_day()),
            checks::day_start_us(month.last_day()) + checks::DAY_US,
        );
        let cancel = ctx.cancel.clone();
        checker = tokio::task::spawn_blocking(move || -> Result<Checker> {
            let mut bad: Option<String> = None;
            read::for_each_row_group(local.path(), &path, |df| {
                if cancel.is_cancelled() {
                    return Err(Error::Interrupted);
                }
                if bad.is_some() {
                    return Ok(());
                }
                match read::schema_mismatch(&df, format) {
                    Some(why) => bad = Some(why),
                    None => checker.push(&df)?,
                }
                Ok(())
            })?;
            if let Some(why) = bad {
                checker.schema_error(&path, span, &why);
            }
            Ok(checker)
        })
        .await
        .map_err(|e| Error::Io {
            context: format!("validating {}", u.symbol),
            source: std::io::Error::other(e.to_string()),
        })??;
    }
    let res = checker.finish();
    let body = serde_json::to_vec_pretty(&res).map_err(|e| Error::Json {
        context: format!("serializing the result of {}", u.symbol),
        source: e,
    })?;
    let out_path = u.result_path();
    let out = Output {
        path: out_path.clone(),
        size: body.len() as u64,
        sha256: sha256_hex(&body),
        rows: None,
        time_span: None,
    };
    ctx.store.put(&out_path, Bytes::from(body)).await?;
    let mut entry = stamp.entry(
        range_name(u.range),
        UnitStatus::Done,
        u.inputs.clone(),
        vec![out],
    );
    entry.detail = Some(format!(
        "errors={} warnings={} gaps={}",
        res.error_count,
        res.warning_count,
        res.gaps.len()
    ));
    u.writer.record(entry).await
}

/// Every per-symbol result in a range's folder: (symbol, sha256 of its bytes, result).
async fn symbol_results(
    store: &Store,
    ds: &Dataset,
    range: DateRange,
) -> Result<Vec<(String, String, SymbolResult)>> {
    let mut out = Vec::new();
    for (path, _) in store.list(&ValidationPath::dir(ds, range)).await? {
        let Ok(ValidationPath::Symbol { symbol, .. }) = ValidationPath::parse(&path) else {
            continue;
        };
        let Some(bytes) = store.get_opt(&path).await? else {
            continue; // removed since the listing
        };
        let r: SymbolResult = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            context: format!("reading {path}"),
            source: e,
        })?;
        out.push((symbol, sha256_hex(&bytes), r));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn fingerprint(params: &ReportParams, results: &[(String, String, SymbolResult)]) -> String {
    let v = serde_json::json!({
        "job_version": JOB_VERSION,
        "params": params,
        "symbols": results.iter().map(|(s, h, _)| (s, h)).collect::<Vec<_>>(),
    });
    sha256_hex(v.to_string().as_bytes())
}

/// The dataset report over every symbol result present, written when its inputs changed.
/// Returns the report and whether it was (re)written.
async fn assemble_dataset(
    spec: &Spec,
    ctx: &Context,
    ds: &Dataset,
) -> Result<(DatasetReport, bool)> {
    let range = spec.common.range;
    let params = ReportParams {
        price_jump_threshold: spec.price_jump_threshold,
        outage_share: spec.outage_share,
    };
    let html_path = ValidationPath::Html {
        dataset: *ds,
        range,
    }
    .path();
    let mut written = false;
    // Another shard may add its symbols while this one writes: re-read until nothing changed.
    for _ in 0..8 {
        let results = symbol_results(&ctx.store, ds, range).await?;
        let fp = fingerprint(&params, &results);
        if let Some(existing) = shared::validation::load(&ctx.store, ds, range).await?
            && existing.fingerprint == fp
            && ctx.store.size_opt(&html_path).await?.is_some()
        {
            return Ok((existing, written));
        }
        let list: Vec<SymbolResult> = results.into_iter().map(|(_, _, r)| r).collect();
        let report = assemble(
            &list,
            Assembly {
                dataset: *ds,
                range,
                params: params.clone(),
                fingerprint: fp,
                generated_at: ctx.clock.now(),
                run_id: &ctx.run_id,
            },
        );
        let body = serde_json::to_vec_pretty(&report).map_err(|e| Error::Json {
            context: format!("serializing {}", report.path()),
            source: e,
        })?;
        ctx.store
            .put(&html_path, Bytes::from(html::render(&report)))
            .await?;
        ctx.store.put(&report.path(), Bytes::from(body)).await?;
        written = true;
    }
    let existing = shared::validation::load(&ctx.store, ds, range)
        .await?
        .ok_or_else(|| Error::internal(format!("the report of {} disappeared", ds.scope())))?;
    Ok((existing, written))
}

/// Units at once: the work is CPU-bound, so no more than the cores.
fn parallelism(concurrency: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    concurrency.min(cores).max(1)
}

#[derive(Default)]
pub struct Totals;

impl Job for Spec {
    const NAME: JobName = JobName::VALIDATE;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "symbols";
    type Unit = SymbolUnit;
    type Done = ();
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.common
    }

    /// Only what changes a symbol's result; the outage share is applied when assembling.
    fn params_hash(&self) -> String {
        shared::manifest::params_hash(&(self.price_jump_threshold,))
    }

    fn concurrency(&self) -> usize {
        parallelism(self.common.concurrency)
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<SymbolUnit>> {
        let range = self.common.range;
        let mut units = Vec::new();
        for ds in &self.common.datasets {
            let scope = ds.scope();
            let symbols = p.symbols(UPSTREAM, &scope).await?;
            p.load_ahead(&[], &scope, &symbols);
            for sym in symbols {
                let (writer, done) = p.manifest(&scope, &sym).await?;
                let unit = plan_symbol(&p.ctx.store, ds, &sym, range, writer).await?;
                // The result file is also an output to keep: without it the unit runs again.
                let present = p.ctx.store.size_opt(&unit.result_path()).await?.is_some();
                if present && p.is_current(done.get(&range_name(range)), &unit.inputs) {
                    continue;
                }
                units.push(unit);
            }
        }
        Ok(units)
    }

    fn unit_key(u: &SymbolUnit) -> String {
        format!("{}/{}", u.dataset.scope(), u.symbol)
    }

    fn dry_run_line(&self, u: &SymbolUnit) -> String {
        format!(
            "validate {}/{} {} ({} optimized months) -> {}",
            u.dataset.scope(),
            u.symbol,
            range_name(u.range),
            u.months.len(),
            u.result_path()
        )
    }

    async fn execute(job: Arc<Self>, ctx: Context, stamp: Stamp, u: SymbolUnit) -> Result<()> {
        validate_symbol(&job, &ctx, &stamp, u).await
    }

    fn absorb(&self, _: &mut Totals, _key: &str, _: ()) -> Finished<SymbolUnit> {
        Finished::Done
    }

    fn bytes(&self, _: &Totals) -> u64 {
        0
    }

    /// Assemble each dataset's report over every symbol result present (whichever run or shard
    /// wrote them), print its summary, and fail the run on the data errors of this shard's
    /// symbols unless `warn_only`.
    async fn finish(&self, ctx: &Context, _: Totals, end: &mut End) -> Result<serde_json::Value> {
        let range = self.common.range;
        let mut details = Vec::new();
        let mut data_errors = Vec::new();
        if !ctx.cancel.is_cancelled() {
            for ds in &self.common.datasets {
                let (report, written) = assemble_dataset(self, ctx, ds).await?;
                let html_path = ValidationPath::Html {
                    dataset: *ds,
                    range,
                }
                .path();
                println!("{}", summary::text(&report, &html_path));
                let shard = end.symbols.get(&ds.scope()).cloned().unwrap_or_default();
                for sym in shard {
                    if let Some(s) = report.symbols.get(&sym)
                        && s.error_count > 0
                    {
                        data_errors.push(UnitFailure {
                            unit: format!("{}/{sym}", ds.scope()),
                            reason: summary::error_summary(s),
                        });
                    }
                }
                details.push(serde_json::json!({
                    "scope": ds.scope(),
                    "report": report.path(),
                    "html": html_path,
                    "written": written,
                    "totals": report.totals,
                    "outages": report.outages.len(),
                }));
            }
        }
        if !self.warn_only {
            for f in &data_errors {
                end.tally.fail_verdict(f.clone());
            }
        }
        Ok(serde_json::json!({
            "datasets": details,
            "data_errors": data_errors,
            "warn_only": self.warn_only,
            "seconds": end.seconds,
        }))
    }
}

#[cfg(test)]
mod tests;
