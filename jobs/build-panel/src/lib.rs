//! The `build` job (binary `build-panel`: cargo reserves the name `build`): `aggregate`'s hourly features of a universe → the point-in-time
//! cross-sectional panel of `features.md` section 2 (`final/<name>/panel.parquet`, sorted by
//! `(open_time, symbol)`), its `summary.json`, and the Qlib export under `final/<name>/qlib/`.
//!
//! One unit: the whole panel `<name>`. Its inputs are the sha256 of every feature file it reads
//! (from `aggregate`'s manifest) and, for `top-funding:N`, of every optimized fundingRate file
//! (from `optimize`'s manifest), plus the parameters; a rerun with the same inputs skips after
//! reading manifests only, a changed file rebuilds the panel.
//!
//! What is read: the feature rows from `--start` minus a warm-up of `168 + max_ffill_hours + 1`
//! hours (the longest lag and rolling window, plus the forward fill that can make the rows they
//! reach) up to the end of `--end`; nothing after `--end`. The listing interval therefore ends at
//! the symbol's last bar up to `--end`: the spec's forward fill and the `listed` coverage base
//! look ahead to it (a gap is filled only if the symbol trades again, by `--end`).
//!
//! Commit order (a killed run never leaves an export that looks complete): the Qlib marker
//! `qlib/_SUCCESS` is deleted, the panel is written (one atomic put), the Qlib files are written
//! and stale ones removed, then the marker (naming the panel's sha256), then `summary.json`,
//! and last the manifest entry, which is the commit point of the unit.

#![forbid(unsafe_code)]

pub mod frame;
pub mod panel;
pub mod qlib;
pub mod universe;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Datelike;
use futures::StreamExt;
use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{
    Manifest, ManifestKey, ManifestWriter, Output, UnitStatus, manifest_symbols,
};
use shared::paths::{DataType, Dataset, Market, final_dir};
use shared::report::RunReport;
use shared::{Context, Error, Result};

use panel::{HOUR_US, Params, Series, Universe};
use universe::FundingRecords;

/// Bump when the output changes for the same input. 2: the Qlib export has a `day` calendar.
pub const JOB_VERSION: &str = "2";
/// The job whose outputs are the inputs.
pub const UPSTREAM: JobName = JobName::AGGREGATE;
/// The only bar length the panel takes.
pub const FREQ: &str = "1h";
/// The manifest scope of panels (`_manifest/build-panel/final/<name>/`).
pub const SCOPE: &str = "final";

use shared::time::DAY_US;
/// Rows per Parquet row group of the panel.
const ROW_GROUP: usize = 1 << 17;

/// Which symbols the panel holds (`--universe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UniverseSpec {
    /// The `--symbols` selection (the default).
    Symbols,
    /// Every symbol with hourly features in the store, delisted included.
    All,
    List(Vec<String>),
    /// At each funding time the N candidates (`--symbols`) with the largest |settled rate|.
    TopFunding(usize),
}

impl std::str::FromStr for UniverseSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<UniverseSpec> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(UniverseSpec::All);
        }
        if s.eq_ignore_ascii_case("symbols") {
            return Ok(UniverseSpec::Symbols);
        }
        if let Some(n) = s.strip_prefix("top-funding:") {
            return match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(UniverseSpec::TopFunding(n)),
                _ => Err(Error::usage(format!(
                    "--universe `{s}`: top-funding:N takes a positive N"
                ))),
            };
        }
        let mut v = s
            .split(',')
            .map(shared::cli::validate_symbol)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::usage(format!("--universe `{s}`: {e}")))?;
        v.sort();
        v.dedup();
        Ok(UniverseSpec::List(v))
    }
}

impl std::fmt::Display for UniverseSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UniverseSpec::Symbols => f.write_str("symbols"),
            UniverseSpec::All => f.write_str("all"),
            UniverseSpec::List(v) => f.write_str(&v.join(",")),
            UniverseSpec::TopFunding(n) => write!(f, "top-funding:{n}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    pub name: String,
    pub universe: UniverseSpec,
    pub params: Params,
    /// Write the Qlib export.
    pub qlib: bool,
}

impl Spec {
    /// Checks that need no store: the name, the shard, the parameters, funding for the market.
    pub fn validate(&self) -> Result<()> {
        shared::paths::validate_panel_name(&self.name)?;
        if self.common.shard.1 != 1 {
            return Err(Error::usage(
                "build makes one panel: it takes no --shard (run it as one step)",
            ));
        }
        let p = &self.params;
        if p.max_ffill_hours < 0 {
            return Err(Error::usage("--max-ffill-hours must be 0 or more"));
        }
        if !(0.0..=1.0).contains(&p.min_coverage) {
            return Err(Error::usage("--min-coverage must be in [0, 1]"));
        }
        if matches!(self.universe, UniverseSpec::TopFunding(_))
            && !matches!(self.common.market, Market::Um | Market::Cm)
        {
            return Err(Error::usage(
                "--universe top-funding:N needs a futures market (um or cm)",
            ));
        }
        Ok(())
    }

    /// The first hour read: the warm-up before `--start` (module doc).
    fn read_from(&self) -> i64 {
        self.from() - (168 + self.params.max_ffill_hours + 1) * HOUR_US
    }

    /// The day of [`Spec::read_from`], for messages.
    fn read_from_date(&self) -> chrono::NaiveDate {
        shared::time::day_of_us(self.read_from())
    }

    fn from(&self) -> i64 {
        day_start_us(self.common.range.start)
    }

    fn to(&self) -> i64 {
        day_start_us(self.common.range.end) + DAY_US
    }
}

use shared::time::day_start_us;

fn year_of_us(t: i64) -> i32 {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.year())
        .unwrap_or(1970)
}

/// Year and month of an optimized partition path (`.../year=Y/month=M/part-0.parquet`).
fn month_of_partition(path: &str) -> Option<(i32, u32)> {
    match shared::paths::Partition::parse(path).ok()? {
        shared::paths::Partition::Month { year, month, .. } => Some((year, month)),
        shared::paths::Partition::Day { .. } => None,
    }
}

/// What one symbol contributes: its feature files (in year order) and funding files.
#[derive(Debug, Clone, Default)]
struct SymbolInputs {
    features: Vec<String>,
    funding: Vec<String>,
}

/// The paths and paths-to-be of a panel.
pub struct PanelPaths {
    pub panel: String,
    pub summary: String,
    pub qlib: String,
}

impl PanelPaths {
    pub fn of(name: &str) -> PanelPaths {
        let dir = final_dir(name);
        PanelPaths {
            panel: format!("{dir}panel.parquet"),
            summary: format!("{dir}summary.json"),
            qlib: format!("{dir}qlib/"),
        }
    }
}

/// Run the job over `ctx`'s store.
pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    spec.validate()?;
    shared::job::run(BuildPanel::new(spec), ctx).await
}

/// The job: its spec, and what the plan found (the report's details).
#[derive(Serialize)]
pub struct BuildPanel {
    #[serde(flatten)]
    spec: Spec,
    #[serde(skip)]
    details: std::sync::Mutex<serde_json::Value>,
}

impl BuildPanel {
    pub fn new(spec: Spec) -> BuildPanel {
        BuildPanel {
            spec,
            details: std::sync::Mutex::new(serde_json::Value::Null),
        }
    }

    fn details(&self) -> serde_json::Value {
        self.details.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// The one unit: the panel, from these inputs.
pub struct PanelUnit {
    name: String,
    inputs: BTreeMap<String, String>,
    per_symbol: BTreeMap<String, SymbolInputs>,
    writer: Arc<ManifestWriter>,
}

impl Job for BuildPanel {
    const NAME: JobName = JobName::BUILD_PANEL;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "panels";
    type Unit = PanelUnit;
    type Done = (BuildStats, u64);
    type Totals = Option<(BuildStats, u64)>;

    fn common(&self) -> &CommonSpec {
        &self.spec.common
    }

    fn params_hash(&self) -> String {
        let spec = &self.spec;
        shared::manifest::params_hash(&(
            FREQ,
            spec.common.range,
            spec.universe.to_string(),
            &spec.common.symbols,
            spec.params,
            spec.qlib,
        ))
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<PanelUnit>> {
        let (spec, ctx) = (&self.spec, p.ctx);
        let market = spec.common.market;
        let scope = format!("{}/{FREQ}", market.storage_name());

        // Candidates: the universe's list, or the --symbols selection (`all`: the features
        // store).
        let candidates: Vec<String> = match (&spec.universe, &spec.common.symbols) {
            (UniverseSpec::List(v), _) => v.clone(),
            (UniverseSpec::All, _) => manifest_symbols(&ctx.store, UPSTREAM, &scope).await?,
            (_, selection) => {
                let (filters, tally) = (&spec.common.select, &mut p.tally);
                shared::manifest::select_symbols(
                    &ctx.store,
                    &[UPSTREAM],
                    &scope,
                    selection,
                    filters,
                    tally,
                )
                .await?
            }
        };
        let years = year_of_us(spec.read_from())..=spec.common.range.end.year();
        let funding_ds = match spec.universe {
            UniverseSpec::TopFunding(_) => Some(Dataset::new(market, DataType::FundingRate, None)?),
            _ => None,
        };
        // Funding months read: from a day before the warm-up (the 24 h look-back) to --end.
        let funding_from = spec.read_from() - universe::MAX_AGE_US;
        let funding_months = {
            let (y0, m0) = (year_of_us(funding_from), month_of_us(funding_from));
            let (y1, m1) = (spec.common.range.end.year(), spec.common.range.end.month());
            move |(y, m): (i32, u32)| (y0, m0) <= (y, m) && (y, m) <= (y1, m1)
        };
        let mut inputs: BTreeMap<String, String> = BTreeMap::new();
        let mut per_symbol: BTreeMap<String, SymbolInputs> = BTreeMap::new();
        let mut without_features = Vec::new();
        for sym in &candidates {
            let m = Manifest::load(&ctx.store, &ManifestKey::new(UPSTREAM, &scope, sym)).await?;
            let mut si = SymbolInputs::default();
            for year in years.clone() {
                let unit = format!("{sym}/{year}");
                let Some(e) = m.get(&unit).filter(|e| e.status == UnitStatus::Done) else {
                    continue;
                };
                // A year with no bars has no output file.
                if let Some(o) = e.outputs.first() {
                    inputs.insert(format!("features:{unit}"), o.sha256.clone());
                    si.features.push(o.path.clone());
                }
            }
            if si.features.is_empty() {
                without_features.push(sym.clone());
                continue;
            }
            if let Some(ds) = funding_ds {
                let fm = Manifest::load(
                    &ctx.store,
                    &ManifestKey::new(shared::job::JobName::OPTIMIZE, ds.scope(), sym),
                )
                .await?;
                let mut months: BTreeMap<(i32, u32), (String, String)> = BTreeMap::new();
                for e in fm.entries().filter(|e| e.status == UnitStatus::Done) {
                    for o in &e.outputs {
                        if let Some(ym) =
                            month_of_partition(&o.path).filter(|ym| funding_months(*ym))
                        {
                            months.insert(ym, (o.path.clone(), o.sha256.clone()));
                        }
                    }
                }
                for ((y, mo), (path, sha)) in months {
                    inputs.insert(format!("funding:{sym}/{y:04}-{mo:02}"), sha);
                    si.funding.push(path);
                }
            }
            per_symbol.insert(sym.clone(), si);
        }
        if !without_features.is_empty() {
            p.tally.warn(format!(
                "no hourly features from {} to {} for {} (run aggregate --freq {FREQ} over the range)",
                spec.read_from_date(),
                spec.common.range.end,
                without_features.join(", ")
            ));
        }

        let (writer, mine) = p.manifest(SCOPE, &spec.name).await?;
        if let Ok(mut d) = self.details.lock() {
            *d = serde_json::json!({
                "name": spec.name,
                "candidates": candidates.len(),
                "symbols_without_features": without_features,
            });
        }
        if per_symbol.is_empty() {
            p.tally
                .miss(format!("{} (no hourly features for any symbol)", spec.name));
            return Ok(Vec::new());
        }
        // Done with the same inputs, and every output it recorded (panel, Qlib marker, summary)
        // still there with its size: a deleted export is rebuilt.
        let prev = mine.get(&spec.name);
        let mut present = true;
        for o in prev.iter().flat_map(|e| &e.outputs) {
            if ctx.store.size_opt(&o.path).await? != Some(o.size) {
                present = false;
                break;
            }
        }
        if present && p.is_current(prev, &inputs) {
            return Ok(Vec::new());
        }
        Ok(vec![PanelUnit {
            name: spec.name.clone(),
            inputs,
            per_symbol,
            writer,
        }])
    }

    fn unit_key(u: &PanelUnit) -> String {
        u.name.clone()
    }

    fn dry_run_line(&self, u: &PanelUnit) -> String {
        let spec = &self.spec;
        let files: usize = u.per_symbol.values().map(|s| s.features.len()).sum();
        format!(
            "build {}: {} symbols, {} feature files ({}..{}), universe {} -> {}{}",
            spec.name,
            u.per_symbol.len(),
            files,
            spec.common.range.start,
            spec.common.range.end,
            spec.universe,
            PanelPaths::of(&spec.name).panel,
            if spec.qlib { " + qlib/" } else { "" }
        )
    }

    async fn dry_run(&self, _ctx: &Context, _units: &[PanelUnit]) -> Result<serde_json::Value> {
        Ok(self.details())
    }

    async fn execute(
        job: Arc<Self>,
        ctx: Context,
        stamp: Stamp,
        u: PanelUnit,
    ) -> Result<(BuildStats, u64)> {
        tracing::info!(
            name = %job.spec.name,
            symbols = u.per_symbol.len(),
            "building the panel"
        );
        // The build's future holds stream closures whose lifetimes rustc cannot prove `Send`
        // for every borrow, so it runs on a blocking thread that drives it itself rather than
        // as a spawned task; it is the run's one unit, so nothing waits on that thread.
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(build_panel(
                &job.spec,
                &ctx,
                &stamp,
                u.inputs,
                u.per_symbol,
                &u.writer,
            ))
        })
        .await
        .map_err(|e| Error::internal(format!("building the panel: {e}")))?
    }

    fn absorb(
        &self,
        t: &mut Option<(BuildStats, u64)>,
        _key: &str,
        done: (BuildStats, u64),
    ) -> Finished<PanelUnit> {
        *t = Some(done);
        Finished::Done
    }

    fn bytes(&self, t: &Option<(BuildStats, u64)>) -> u64 {
        t.as_ref().map_or(0, |(_, b)| *b)
    }

    async fn finish(
        &self,
        _ctx: &Context,
        t: Option<(BuildStats, u64)>,
        end: &mut End,
    ) -> Result<serde_json::Value> {
        let mut details = self.details();
        if let (Some((stats, _)), Some(obj)) = (t, details.as_object_mut()) {
            let secs = end.seconds;
            if let Ok(serde_json::Value::Object(s)) = serde_json::to_value(&stats) {
                obj.extend(s);
            }
            obj.insert("seconds".into(), secs.into());
            obj.insert("rows_per_sec".into(), (stats.rows as f64 / secs).into());
            if stats.rows == 0 {
                end.tally.warn(empty_panel_reason(&self.spec, &stats));
            }
        }
        Ok(details)
    }
}

/// Why a panel came out with no rows, in the terms a user can act on.
fn empty_panel_reason(spec: &Spec, stats: &BuildStats) -> String {
    let p = &stats.panel;
    let why = if p.rows_in_range == 0 {
        "no feature row falls in the range".to_string()
    } else if p.rows_outside_universe == p.rows_in_range {
        format!(
            "none of its {} rows belongs to the universe `{}` at its hour",
            p.rows_in_range, spec.universe
        )
    } else if p.rows_dropped_nulls > 0 && p.rows_dropped_coverage == 0 {
        format!(
            "all {} rows lack a factor: the factors look back up to 168 h, and the hourly \
             features do not start early enough before {} (aggregate from {} or earlier)",
            p.rows_dropped_nulls,
            spec.common.range.start,
            spec.read_from_date()
        )
    } else {
        format!(
            "the coverage filter dropped {} hours ({} rows) and the null filter {} rows",
            p.hours_dropped, p.rows_dropped_coverage, p.rows_dropped_nulls
        )
    };
    format!(
        "panel `{}` has 0 rows for {}..{}: {why}",
        spec.name, spec.common.range.start, spec.common.range.end
    )
}

fn month_of_us(t: i64) -> u32 {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.month())
        .unwrap_or(1)
}

/// What the build did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct BuildStats {
    #[serde(flatten)]
    pub panel: panel::Stats,
    pub symbols: usize,
    pub input_rows: u64,
    pub qlib_files: usize,
}

impl std::ops::Deref for BuildStats {
    type Target = panel::Stats;
    fn deref(&self) -> &panel::Stats {
        &self.panel
    }
}

/// Read one symbol's feature files into a series of real bars.
async fn read_series(
    ctx: &Context,
    sym: &str,
    files: &[String],
    from: i64,
    to: i64,
) -> Result<Series> {
    let mut s = Series::new(sym);
    let cols = frame::feature_columns();
    for path in files {
        let Some(df) = frames::read_parquet_columns(&ctx.store, path, &cols)
            .await
            .map_err(Error::from)?
        else {
            return Err(Error::upstream_missing(path, JobName::AGGREGATE));
        };
        frame::push_features(&mut s, &df, path)?;
    }
    s.retain(|t| from <= t && t < to);
    s.check()
        .map_err(|e| Error::bad_data(files.join(", "), format!("{sym}: hourly features: {e}")))?;
    Ok(s)
}

async fn read_funding(
    ctx: &Context,
    sym: &str,
    files: &[String],
    from: i64,
) -> Result<FundingRecords> {
    let mut f = FundingRecords::default();
    for path in files {
        let Some(df) = frames::read_parquet_columns(&ctx.store, path, &frame::FUNDING_COLUMNS)
            .await
            .map_err(Error::from)?
        else {
            return Err(Error::upstream_missing(path, JobName::OPTIMIZE));
        };
        frame::push_funding(&mut f, &df, path)?;
    }
    if let Some(i) = f.calc_time.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::bad_data(
            files.join(", "),
            format!(
                "{sym}: funding calc_time not strictly increasing at row {} (run optimize)",
                i + 1
            ),
        ));
    }
    let a = f.calc_time.partition_point(|&t| t < from);
    f.calc_time.drain(..a);
    f.rate.drain(..a);
    Ok(f)
}

/// The pure part: forward fill, factors, universe, filters.
pub fn compute(
    real: Vec<Series>,
    funding: Option<(usize, Vec<FundingRecords>)>,
    from: i64,
    to: i64,
    params: &Params,
) -> (Vec<Series>, Vec<panel::Factors>, panel::Panel) {
    // Each input is freed once filled: the two copies of the whole history never coexist.
    let cores = frames::cores();
    let series: Vec<Series> = frames::par_map(real, cores, |s| {
        panel::forward_fill(&s, params.max_ffill_hours)
    });
    let factors: Vec<_> = frames::par_map(series.iter().collect(), cores, panel::ts_factors);
    let universe = match funding {
        None => Universe::Static,
        Some((n, f)) => {
            let names: Vec<String> = series.iter().map(|s| s.symbol.clone()).collect();
            Universe::Ranked(universe::top_funding(&names, &f, n))
        }
    };
    let p = panel::build(&series, &factors, &universe, from, to, params);
    (series, factors, p)
}

async fn build_panel(
    spec: &Spec,
    ctx: &Context,
    stamp: &Stamp,
    inputs: BTreeMap<String, String>,
    per_symbol: BTreeMap<String, SymbolInputs>,
    writer: &ManifestWriter,
) -> Result<(BuildStats, u64)> {
    let (read_from, from, to) = (spec.read_from(), spec.from(), spec.to());
    let top = match spec.universe {
        UniverseSpec::TopFunding(n) => Some(n),
        _ => None,
    };
    // Read every symbol (bounded concurrency, in symbol order); reading is most of a big
    // panel's time, so its progress is the job's.
    let conc = spec.common.concurrency.max(1);
    let reading = shared::progress::Progress::start(
        "build-panel (reading)",
        "symbols",
        per_symbol.len() as u64,
    );
    let progress = &reading;
    let read: Vec<Result<(Series, Option<FundingRecords>)>> =
        futures::stream::iter(per_symbol.iter())
            .map(|(sym, si)| async move {
                let s = read_series(ctx, sym, &si.features, read_from, to).await?;
                let f = match top {
                    Some(_) => Some(
                        read_funding(ctx, sym, &si.funding, read_from - universe::MAX_AGE_US)
                            .await?,
                    ),
                    None => None,
                };
                progress.inc(1);
                Ok((s, f))
            })
            .buffered(conc)
            .collect()
            .await;
    drop(reading);
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let mut real = Vec::new();
    let mut funding = Vec::new();
    for r in read {
        let (s, f) = r?;
        if s.is_empty() {
            continue;
        }
        real.push(s);
        funding.push(f.unwrap_or_default());
    }
    let input_rows: u64 = real.iter().map(|s| s.len() as u64).sum();
    let params = spec.params;
    let (series, factors, panel) = tokio::task::spawn_blocking(move || {
        compute(real, top.map(|n| (n, funding)), from, to, &params)
    })
    .await
    .map_err(|e| Error::Io {
        context: "computing the panel".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let paths = PanelPaths::of(&spec.name);
    // The old export is incomplete from here on.
    let marker = format!("{}{}", paths.qlib, qlib::MARKER);
    ctx.store.delete(&marker).await?;

    // The panel, in row groups, through a local temp file (the encoded panel is not held in
    // memory), uploaded whole. Its row groups are encoded on a blocking thread while the Qlib
    // export below is written from the same arrays: the two take about as long.
    let data = Arc::new((series, factors, panel));
    let encoding = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || -> Result<frames::ParquetSink> {
            let (series, factors, panel) = &*data;
            let mut sink = frames::ParquetSink::new(
                frame::panel_frame(panel, series, factors, 0..0)?.schema(),
                &frames::ParquetOptions {
                    row_group_rows: Some(ROW_GROUP),
                    ..frames::ParquetOptions::default()
                },
            )
            .map_err(Error::from)?;
            let mut k = 0;
            while k < panel.rows.len() {
                let e = (k + ROW_GROUP).min(panel.rows.len());
                sink.write(&frame::panel_frame(panel, series, factors, k..e)?)
                    .map_err(Error::from)?;
                k = e;
            }
            Ok(sink)
        })
    };
    let (series, factors, panel) = &*data;
    let time = |k: usize| {
        let (s, r) = panel.rows[k];
        series[s as usize].open_time[r as usize]
    };
    let span = (!panel.rows.is_empty()).then(|| (time(0), time(panel.rows.len() - 1)));
    let mut bytes = 0;

    // Rows of each symbol, in time order.
    let mut by_symbol: Vec<Vec<usize>> = vec![Vec::new(); series.len()];
    for (k, (s, _)) in panel.rows.iter().enumerate() {
        by_symbol[*s as usize].push(k);
    }
    let symbols: Vec<String> = by_symbol
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(s, _)| series[s].symbol.clone())
        .collect();

    // The Qlib export.
    let mut qlib_files = 0;
    let existing: BTreeSet<String> = ctx
        .store
        .list(&paths.qlib)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut outputs = Vec::new();
    if let (true, Some((first, last))) = (spec.qlib, span) {
        {
            let q = &paths.qlib;
            for (name, text) in qlib::calendars(first, last) {
                let cal = format!("{q}calendars/{name}");
                ctx.store.put(&cal, Bytes::from(text)).await?;
                written.insert(cal);
            }
            let spans: Vec<(String, i64, i64)> = by_symbol
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.is_empty())
                .map(|(s, r)| (series[s].symbol.clone(), time(r[0]), time(r[r.len() - 1])))
                .collect();
            let inst = format!("{q}instruments/all.txt");
            ctx.store
                .put(&inst, Bytes::from(qlib::instruments(&spans)))
                .await?;
            written.insert(inst);
            for (s, rows) in by_symbol.iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                if ctx.cancel.is_cancelled() {
                    return Err(Error::Interrupted);
                }
                let dir = format!("{q}features/{}/", series[s].symbol.to_lowercase());
                let files = qlib::symbol_files(panel, series, factors, rows, first);
                let puts = files.into_iter().map(|(field, b)| {
                    let path = format!("{dir}{field}.{}.bin", qlib::FREQ);
                    written.insert(path.clone());
                    bytes += b.len() as u64;
                    let store = ctx.store.clone();
                    async move { store.put(&path, Bytes::from(b)).await }
                });
                let results: Vec<Result<()>> = futures::stream::iter(puts)
                    .buffer_unordered(conc)
                    .collect()
                    .await;
                results.into_iter().collect::<Result<Vec<()>>>()?;
            }
            qlib_files = written.len();
        }
    }
    let sink = encoding.await.map_err(|e| Error::Io {
        context: format!("encoding {}", paths.panel),
        source: std::io::Error::other(e.to_string()),
    })??;
    let mut out = sink
        .finish(&ctx.store, &paths.panel)
        .await
        .map_err(Error::from)?;
    out.time_span = span.map(|(a, b)| [a, b + HOUR_US - 1000]);
    bytes += out.size;
    outputs.insert(0, out.clone());

    // Files of an earlier export that this one does not have (a symbol gone, --qlib false).
    for p in existing.difference(&written) {
        if !p.ends_with(qlib::MARKER) {
            ctx.store.delete(p).await?;
        }
    }
    if spec.qlib && span.is_some() {
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "panel": paths.panel,
            "panel_sha256": out.sha256,
            "files": qlib_files,
            "run_id": ctx.run_id,
        }))
        .map_err(|e| Error::Json {
            context: format!("serializing {marker}"),
            source: e,
        })?;
        let sha = shared::checksum::sha256_hex(&body);
        let size = body.len() as u64;
        ctx.store.put(&marker, Bytes::from(body)).await?;
        outputs.push(Output {
            path: marker.clone(),
            size,
            sha256: sha,
            rows: None,
            time_span: None,
        });
    }

    // The summary.
    let stats = BuildStats {
        panel: panel.stats.clone(),
        symbols: symbols.len(),
        input_rows,
        qlib_files,
    };
    let summary = serde_json::json!({
        "name": spec.name,
        "job_version": JOB_VERSION,
        "market": spec.common.market.cli_name(),
        "freq": FREQ,
        "start": spec.common.range.start.to_string(),
        "end": spec.common.range.end.to_string(),
        "universe": spec.universe.to_string(),
        "params": spec.params,
        "qlib": spec.qlib,
        "symbols": symbols,
        "first_hour": span.map(|(a, _)| qlib::hour_label(a)),
        "last_hour": span.map(|(_, b)| qlib::hour_label(b)),
        "hours_kept": stats.hours_kept,
        "hours_dropped_by_coverage": stats.hours_dropped,
        "rows": stats.rows,
        "filled_rows": stats.filled_rows,
        "rows_in_range": stats.rows_in_range,
        "rows_outside_universe": stats.rows_outside_universe,
        "rows_dropped_by_coverage": stats.rows_dropped_coverage,
        "rows_dropped_for_nulls": stats.rows_dropped_nulls,
        "columns": frame::panel_columns(),
        "panel": {"path": out.path, "sha256": out.sha256, "size": out.size},
        "qlib_files": qlib_files,
    });
    let body = serde_json::to_vec_pretty(&summary).map_err(|e| Error::Json {
        context: format!("serializing {}", paths.summary),
        source: e,
    })?;
    outputs.push(Output {
        path: paths.summary.clone(),
        size: body.len() as u64,
        sha256: shared::checksum::sha256_hex(&body),
        rows: None,
        time_span: None,
    });
    bytes += body.len() as u64;
    ctx.store.put(&paths.summary, Bytes::from(body)).await?;

    let mut entry = stamp.entry(spec.name.clone(), UnitStatus::Done, inputs, outputs);
    entry.detail = Some(format!(
        "symbols={} rows={} hours_kept={} hours_dropped={}",
        stats.symbols, stats.rows, stats.hours_kept, stats.hours_dropped
    ));
    writer.record(entry).await?;
    tracing::info!(rows = stats.rows, symbols = stats.symbols, "panel written");
    Ok((stats, bytes))
}
