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
use std::time::Instant;

use bytes::Bytes;
use chrono::NaiveDate;
use serde::Serialize;
use shared::checksum::sha256_hex;
use shared::cli::CommonSpec;
use shared::exec::{self, Tally};
use shared::manifest::{
    Entry, Manifest, ManifestKey, ManifestWriter, Output, UnitStatus, select_symbols,
};
use shared::paths::{ArchiveFile, Dataset, FileDate, ValidationPath, range_name};
use shared::plan::DateRange;
use shared::report::{Outcome, RunHeader, RunReport, UnitFailure};
use shared::validation::{DatasetReport, ReportParams};
use shared::{Context, Error, Result, Store};

pub use checks::{Checker, GapMode, Kind, Profile, merge};
pub use classify::{Assembly, MIN_OUTAGE_SYMBOLS, assemble, outages};
pub use html::render as render_html;
pub use result::{DayCounts, FileState, SymbolResult};
pub use summary::text as summary_text;

pub const JOB: &str = "validate";
pub const JOB_VERSION: &str = "1";
pub const UPSTREAM: &str = "optimize";
/// Where 404s are recorded.
pub const DOWNLOAD: &str = "download";

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

/// One unit: a symbol of a dataset over the range, and what it is computed from.
struct SymbolUnit {
    dataset: Dataset,
    symbol: String,
    range: DateRange,
    /// The optimized months touching the range: (month, path).
    months: Vec<(FileDate, String)>,
    duplicate_days: Vec<(NaiveDate, u64)>,
    files: BTreeMap<NaiveDate, FileState>,
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
    let optimized = Manifest::load(store, &ManifestKey::new(UPSTREAM, &scope, symbol)).await?;
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
        let dups: Vec<(NaiveDate, u64)> =
            optimize::parse_duplicate_days(e.detail.as_deref().unwrap_or(""))
                .into_iter()
                .filter(|(d, _)| range.contains(*d))
                .collect();
        if !dups.is_empty() {
            inputs.insert(
                format!("duplicate_days:{symbol}/{month}"),
                optimize::format_duplicate_days(&dups),
            );
            duplicate_days.extend(dups);
        }
    }
    let downloaded = Manifest::load(store, &ManifestKey::new(DOWNLOAD, &scope, symbol)).await?;
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
    Ok(SymbolUnit {
        dataset: *ds,
        symbol: symbol.to_string(),
        range,
        months,
        duplicate_days,
        files,
        inputs,
        writer,
    })
}

/// Check one symbol: stream its months, write its result, record it.
async fn validate_symbol(spec: &Spec, ctx: &Context, phash: &str, u: SymbolUnit) -> Result<()> {
    let mut checker = Checker::new(&u.dataset, &u.symbol, u.range, spec.price_jump_threshold);
    for (d, s) in &u.files {
        if let Some(c) = checker.res.days.get_mut(d) {
            c.file = *s;
        }
    }
    for (d, n) in &u.duplicate_days {
        checker.source_duplicates(*d, *n);
    }
    let tmp = tempfile::tempdir().map_err(|e| Error::Io {
        context: "creating a temp dir".into(),
        source: e,
    })?;
    let format = shared::formats::format_of(&u.dataset);
    for (month, path) in &u.months {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let local = read::local_copy(&ctx.store, path, tmp.path())
            .await?
            .ok_or_else(|| Error::Parse(format!("optimized file {path} is missing")))?;
        let path = path.clone();
        let span = (
            checks::day_start_us(month.first_day()),
            checks::day_start_us(month.last_day()) + checks::DAY_US,
        );
        let cancel = ctx.cancel.clone();
        checker = tokio::task::spawn_blocking(move || -> Result<Checker> {
            let mut bad: Option<String> = None;
            read::for_each_row_group(&local, &path, |df| {
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
    let entry = Entry {
        unit: range_name(u.range),
        status: UnitStatus::Done,
        inputs: u.inputs.clone(),
        job_version: JOB_VERSION.into(),
        params_hash: phash.to_string(),
        outputs: vec![out],
        recorded_at: ctx.clock.now(),
        run_id: ctx.run_id.clone(),
        detail: Some(format!(
            "errors={} warnings={} gaps={}",
            res.error_count,
            res.warning_count,
            res.gaps.len()
        )),
    };
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
        .ok_or_else(|| Error::Parse(format!("the report of {} disappeared", ds.scope())))?;
    Ok((existing, written))
}

/// Units at once: the work is CPU-bound, so no more than the cores.
fn parallelism(concurrency: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    concurrency.min(cores).max(1)
}

pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    let t0 = Instant::now();
    if spec.price_jump_threshold.is_nan() || spec.price_jump_threshold <= 0.0 {
        return Err(Error::usage("--price-jump-threshold must be positive"));
    }
    if !(spec.outage_share > 0.0 && spec.outage_share <= 1.0) {
        return Err(Error::usage("--outage-share must be in (0, 1]"));
    }
    let header = RunHeader {
        job: JOB,
        job_version: JOB_VERSION,
        store: spec.common.store.clone(),
        started_at: ctx.clock.now(),
        params: serde_json::to_value(&spec).unwrap_or_default(),
    };
    // Only what changes a symbol's result; the outage share is applied when assembling.
    let phash = shared::manifest::params_hash(&(spec.price_jump_threshold,));
    let range = spec.common.range;
    let mut tally = Tally::default();
    let mut units = Vec::new();
    let mut mine: Vec<(Dataset, Vec<String>)> = Vec::new();

    for ds in &spec.common.datasets {
        let scope = ds.scope();
        let symbols = select_symbols(
            &ctx.store,
            UPSTREAM,
            &scope,
            &spec.common.symbols,
            &mut tally,
        )
        .await?;
        let shard = spec.common.shard_of(&symbols);
        for sym in &shard {
            let (writer, done) =
                ManifestWriter::open(&ctx.store, &ManifestKey::new(JOB, &scope, sym)).await?;
            let unit = plan_symbol(&ctx.store, ds, sym, range, Arc::new(writer)).await?;
            let up_to_date = done
                .get(&range_name(range))
                .is_some_and(|e| e.is_done_with(&unit.inputs, JOB_VERSION, &phash))
                && ctx.store.size_opt(&unit.result_path()).await?.is_some();
            if up_to_date && !spec.common.force {
                tally.skip();
                continue;
            }
            units.push(unit);
        }
        mine.push((*ds, shard));
    }

    if spec.common.dry_run {
        for u in &units {
            println!(
                "validate {}/{} {} ({} optimized months) -> {}",
                u.dataset.scope(),
                u.symbol,
                range_name(u.range),
                u.months.len(),
                u.result_path()
            );
        }
        return Ok(header.dry_run(ctx, tally, units.len() as u64, serde_json::Value::Null));
    }
    tracing::info!(
        symbols = units.len(),
        up_to_date = tally.counts.skipped,
        "plan ready"
    );

    let spec = Arc::new(spec);
    let work = {
        let (spec, ctx, phash) = (spec.clone(), ctx.clone(), phash.clone());
        move |u: SymbolUnit| {
            let (spec, ctx, phash) = (spec.clone(), ctx.clone(), phash.clone());
            async move {
                let key = format!("{}/{}", u.dataset.scope(), u.symbol);
                (key, validate_symbol(&spec, &ctx, &phash, u).await)
            }
        }
    };
    let not_run = exec::for_each_bounded(
        ("validate", "symbols"),
        units,
        parallelism(spec.common.concurrency),
        &ctx.cancel,
        work,
        |key, r| {
            tally.record(&key, r);
        },
    )
    .await?;
    tally.counts.not_run += not_run;
    let cancelled = ctx.cancel.is_cancelled();

    let mut details = Vec::new();
    let mut data_errors = Vec::new();
    if !cancelled {
        for (ds, shard) in &mine {
            let (report, written) = assemble_dataset(&spec, ctx, ds).await?;
            let html_path = ValidationPath::Html {
                dataset: *ds,
                range,
            }
            .path();
            println!("{}", summary::text(&report, &html_path));
            for sym in shard {
                if let Some(s) = report.symbols.get(sym)
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

    let mut outcome = tally.outcome(cancelled);
    if !data_errors.is_empty() && !spec.warn_only {
        tally.failures.extend(data_errors.iter().cloned());
        if outcome == Outcome::Ok {
            outcome = Outcome::Failed;
        }
    }
    let details = serde_json::json!({
        "datasets": details,
        "data_errors": data_errors,
        "warn_only": spec.warn_only,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    Ok(header.report(ctx, outcome, tally, 0, details))
}

#[cfg(test)]
mod tests;
