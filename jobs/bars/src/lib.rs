//! The `bars` job (features.md §3): tick, volume and dollar bars and their adaptive imbalance
//! counterparts from a symbol's optimized aggTrades (or trades), one dataset per bar spec at
//! `bars/<market>/<bar spec>/symbol=S/year=Y/part-0.parquet`.
//!
//! A (bar spec, symbol) is one history: it begins on the first day a run asked for and runs
//! across day, month and year boundaries. At the end of every processed day its state is
//! checkpointed (`state`), so a later run continues after the newest checkpoint: `[d1, d2]` then
//! `[d1, d3]` gives the same bars, to the bit and to the byte of the files, as `[d1, d3]` at
//! once. A run goes back instead of on when the upstream rows of a consumed day changed (it
//! restarts from the checkpoint before that day), and starts the history anew with `--force`,
//! a `--start` before the history's first day, or a new job version.
//!
//! Modules: `spec` (bar specs, their names, the parameter grid), `engine` (the bar loop and
//! its state), `upstream` (optimize's manifest: files, horizon, day fingerprints), `state`
//! (checkpoints), `input` (Parquet row groups with bounded memory), `output` (year files),
//! `pass` (one read of a symbol's trades for all its specs).

#![forbid(unsafe_code)]

pub mod engine;
/// Row-group reading of the optimized trades (`frames::file`).
pub use frames::file as input;
pub mod output;
mod pass;
pub mod spec;
pub mod state;
pub mod upstream;

use std::sync::Arc;

use chrono::NaiveDate;
use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::paths::BarsKey;
use shared::report::RunReport;
use shared::{Context, Result};

pub use pass::{DayDiag, Mode, SpecOutcome};
use pass::{SpecPlan, SymbolPass};
use spec::{BarSpec, Grid, Source};
use state::Checkpoint;
use upstream::{UPSTREAM, Upstream};

pub const JOB: JobName = JobName::BARS;
/// A checkpoint of another version starts its history anew.
pub const JOB_VERSION: &str = "1";

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// `--data-type` and `--interval` are not used: `--source` names the trades.
    pub common: CommonSpec,
    pub grid: Grid,
    /// The grid's specs, by name.
    pub specs: Vec<String>,
}

impl Spec {
    pub fn new(common: CommonSpec, grid: Grid) -> Result<Spec> {
        let specs = grid.specs()?.iter().map(BarSpec::name).collect();
        for s in grid.sources.iter() {
            s.dataset(common.market)?;
        }
        Ok(Spec {
            common,
            grid,
            specs,
        })
    }
}

/// What the plan decided for one (bar spec, symbol).
enum Planned {
    UpToDate,
    Missing(String),
    Run(Box<SpecPlan>),
}

async fn plan_spec(
    ctx: &Context,
    common: &CommonSpec,
    spec: &BarSpec,
    key: BarsKey,
    upstream: &Upstream,
) -> Result<Planned> {
    let range = common.range;
    let horizon = upstream.horizon(range.end);
    let days = state::days(&ctx.store, &key).await?;
    let years = output::existing_years(&ctx.store, &key).await?;
    let fresh = |reason: String, start: NaiveDate| SpecPlan {
        spec: *spec,
        key: key.clone(),
        mode: pass::Mode::Fresh { reason },
        start: Checkpoint::fresh(spec, &key.symbol, start),
        first_day: start,
        stale: days.clone(),
        rewrite: years.clone(),
    };
    let latest = match days.last() {
        Some(d) if !common.force => state::load(&ctx.store, &key, *d).await?,
        _ => None,
    };
    let plan = match latest {
        None if common.force => fresh("--force".into(), range.start),
        None if days.is_empty() => fresh("new history".into(), range.start),
        None => fresh("newest checkpoint unreadable".into(), range.start),
        Some(cp) if cp.job_version != JOB_VERSION => fresh(
            format!("job version {} → {JOB_VERSION}", cp.job_version),
            range.start.min(cp.history_start),
        ),
        Some(cp) if range.start < cp.history_start => fresh(
            format!(
                "--start {} is before the history's first day {}",
                range.start, cp.history_start
            ),
            range.start,
        ),
        Some(cp) => match cp
            .ledger
            .first_change(cp.history_start, |d| upstream.fingerprint(d))
        {
            None => SpecPlan {
                spec: *spec,
                key: key.clone(),
                mode: pass::Mode::Continue,
                first_day: cp.day.succ_opt().expect("date"),
                start: cp,
                stale: Vec::new(),
                rewrite: Vec::new(),
            },
            Some(changed) => {
                // The newest checkpoint before the change: the history up to it is unchanged.
                let mut back = None;
                for d in days
                    .iter()
                    .rev()
                    .filter(|d| **d < changed && **d >= cp.history_start)
                {
                    if let Some(b) = state::load(&ctx.store, &key, *d).await? {
                        back = Some(b);
                        break;
                    }
                }
                match back {
                    Some(b) => SpecPlan {
                        spec: *spec,
                        key: key.clone(),
                        mode: pass::Mode::Rollback { changed },
                        first_day: b.day.succ_opt().expect("date"),
                        stale: days.iter().copied().filter(|d| *d > b.day).collect(),
                        rewrite: years
                            .iter()
                            .copied()
                            .filter(|y| *y >= chrono::Datelike::year(&b.day))
                            .collect(),
                        start: b,
                    },
                    None => fresh(format!("upstream changed on {changed}"), cp.history_start),
                }
            }
        },
    };
    let mut plan = plan;
    // A continued history rewrites the files its new bars land in (and any later ones a killed
    // run may have left) — from the year of its first new day on.
    if plan.mode == pass::Mode::Continue {
        let y0 = chrono::Datelike::year(&plan.first_day);
        plan.rewrite = years.iter().copied().filter(|y| *y >= y0).collect();
    }
    match horizon {
        Some(h) if plan.first_day <= h => Ok(Planned::Run(Box::new(plan))),
        _ if plan.mode == pass::Mode::Continue && plan.start.day >= range.end => {
            Ok(Planned::UpToDate)
        }
        _ => Ok(Planned::Missing(format!(
            "{}: no {} upstream from {} to {}",
            plan.unit(),
            spec.source.name(),
            plan.first_day,
            range.end
        ))),
    }
}

/// Run the job over `ctx`'s store.
pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    shared::job::run(spec, ctx).await
}

#[derive(Default)]
pub struct Totals {
    bytes: u64,
    trades_read: u64,
    outcomes: Vec<SpecOutcome>,
}

/// A unit of work is one pass over a symbol's trades; each of its (bar spec, symbol) histories
/// is a unit of the tally.
impl Job for Spec {
    const NAME: JobName = JobName::BARS;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "passes";
    type Unit = SymbolPass;
    type Done = pass::PassOutcome;
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.common
    }

    /// Each history's checkpoints record its own spec; this stamps the run's grid.
    fn params_hash(&self) -> String {
        shared::manifest::params_hash(&self.specs)
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<SymbolPass>> {
        let ctx = p.ctx;
        let specs = self.grid.specs()?;
        let mut sources: Vec<Source> = specs.iter().map(|s| s.source).collect();
        sources.sort();
        sources.dedup();
        let mut passes = Vec::new();
        for source in sources {
            let ds = source.dataset(self.common.market)?;
            for sym in p.symbols(UPSTREAM, &ds.scope()).await? {
                let upstream = Arc::new(Upstream::load(&ctx.store, &ds, &sym).await?);
                let mut plans = Vec::new();
                for s in specs.iter().filter(|s| s.source == source) {
                    let key = BarsKey::new(self.common.market, s.name(), &sym)?;
                    match plan_spec(ctx, &self.common, s, key, &upstream).await? {
                        Planned::UpToDate => p.tally.skip(),
                        Planned::Missing(why) => p.tally.miss(why),
                        Planned::Run(p) => plans.push(*p),
                    }
                }
                if plans.is_empty() {
                    continue;
                }
                let last_day = upstream
                    .horizon(self.common.range.end)
                    .expect("planned only with upstream data");
                passes.push(SymbolPass {
                    symbol: sym.clone(),
                    source,
                    dataset: ds,
                    upstream,
                    last_day,
                    specs: plans,
                });
            }
        }
        Ok(passes)
    }

    fn unit_key(p: &SymbolPass) -> String {
        pass_key(p)
    }

    fn members(p: &SymbolPass) -> Vec<String> {
        p.specs.iter().map(SpecPlan::unit).collect()
    }

    fn dry_run_line(&self, p: &SymbolPass) -> String {
        let lines: Vec<String> = p
            .specs
            .iter()
            .map(|s| {
                let how = match &s.mode {
                    Mode::Continue => "continue".to_string(),
                    Mode::Rollback { changed } => {
                        format!("go back (upstream changed on {changed})")
                    }
                    Mode::Fresh { reason } => format!("new history ({reason})"),
                };
                format!(
                    "bars {} {}..{} {how} -> {}",
                    s.unit(),
                    s.first_day,
                    p.last_day,
                    s.key.symbol_dir()
                )
            })
            .collect();
        lines.join("\n")
    }

    async fn execute(
        _job: Arc<Self>,
        ctx: Context,
        _stamp: Stamp,
        p: SymbolPass,
    ) -> Result<pass::PassOutcome> {
        pass::run(&ctx, p).await
    }

    fn absorb(&self, t: &mut Totals, _key: &str, o: pass::PassOutcome) -> Finished<SymbolPass> {
        t.bytes += o.bytes;
        t.trades_read += o.trades_read;
        for s in o.specs {
            tracing::info!(unit = %s.unit, trades = s.trades, bars = s.bars, from = %s.from, to = %s.to, "bars done");
            t.outcomes.push(s);
        }
        Finished::Done
    }

    fn bytes(&self, t: &Totals) -> u64 {
        t.bytes
    }

    async fn finish(&self, _ctx: &Context, t: Totals, end: &mut End) -> Result<serde_json::Value> {
        let secs = end.seconds;
        Ok(serde_json::json!({
            "trades_read": t.trades_read,
            "seconds": secs,
            "trades_per_sec": t.trades_read as f64 / secs,
            "units": t.outcomes,
        }))
    }
}

fn pass_key(p: &SymbolPass) -> String {
    format!("{}/{}", p.dataset.scope(), p.symbol)
}
