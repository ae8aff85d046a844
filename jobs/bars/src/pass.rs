//! One pass over a symbol's trades for every bar spec of one source that has work: the month
//! files stream through row group by row group, each row group is cut at day boundaries, and
//! each day's trades go through every spec's engine (in cache-sized chunks, one spec after the
//! other). At each day's end the pass records the day's diagnostics and, where one is kept, a
//! checkpoint; finished bars go to the year files as they come. Then, in this order: year files,
//! checkpoints, pruning of superseded checkpoints, manifest entries — so a run killed at any
//! point leaves the newest checkpoint consistent with the files (bars past it are dropped when
//! the next run rewrites them).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use shared::manifest::{Entry, ManifestKey, ManifestWriter, UnitStatus};
use shared::paths::{BarsKey, Dataset, FileDate};
use shared::{Context, Error, Result};

use crate::engine::{Bar, Engine, Trades};
use crate::input::{self, LocalCopy, ParquetFile};
use crate::output::{self, YearFiles};
use crate::spec::{BarSpec, Source};
use crate::state::{self, Checkpoint, Ledger, month_key};
use crate::upstream::Upstream;
use crate::{JOB, JOB_VERSION};
use frames::direct::Dest;

/// Trades per engine call when several specs share a pass: the chunk stays in cache while
/// every spec runs over it.
const CHUNK: usize = 16_384;

pub(crate) use shared::time::day_start_us;
use shared::time::{DAY_US, day_of_us};

/// How a history continues in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mode {
    /// From the newest checkpoint.
    Continue,
    /// From an older checkpoint: upstream changed on `changed`.
    Rollback { changed: NaiveDate },
    /// A new history from its first day.
    Fresh { reason: String },
}

/// The work planned for one (bar spec, symbol).
#[derive(Debug, Clone)]
pub struct SpecPlan {
    pub spec: BarSpec,
    pub key: BarsKey,
    pub mode: Mode,
    /// The checkpoint the run starts from (its `day` is the day before `first_day`).
    pub start: Checkpoint,
    pub first_day: NaiveDate,
    /// Checkpoints of the history being replaced (after `start.day`), removed first.
    pub stale: Vec<NaiveDate>,
    /// Existing year files that may hold bars past `start`, rewritten.
    pub rewrite: Vec<i32>,
}

impl SpecPlan {
    pub fn unit(&self) -> String {
        format!("{}/{}", self.key.scope(), self.key.symbol)
    }
}

/// One symbol and source, with the specs that have work.
pub struct SymbolPass {
    pub symbol: String,
    pub source: Source,
    pub dataset: Dataset,
    pub upstream: Arc<Upstream>,
    /// The last day to process.
    pub last_day: NaiveDate,
    pub specs: Vec<SpecPlan>,
}

/// One day of one history, for the run report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayDiag {
    pub date: NaiveDate,
    pub trades: u64,
    pub bars: u64,
    pub threshold_start: f64,
    pub threshold_end: f64,
    /// `E_T` (null before the history's first bar, and for standard bars).
    pub e_t_start: Option<f64>,
    pub e_t_end: Option<f64>,
    /// Threshold updates clamped to the min / max during the day.
    pub clamped_min: u64,
    pub clamped_max: u64,
}

/// What a pass did for one spec.
#[derive(Debug, Clone, Serialize)]
pub struct SpecOutcome {
    pub unit: String,
    pub spec: String,
    pub symbol: String,
    #[serde(flatten)]
    pub mode: Mode,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub trades: u64,
    pub bars: u64,
    /// Bars in the history after this run.
    pub total_bars: u64,
    pub days: Vec<DayDiag>,
}

/// What the whole pass did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    pub specs: Vec<SpecOutcome>,
    /// Trades read (once, whatever the number of specs).
    pub trades_read: u64,
    pub bytes: u64,
}

struct Snapshot {
    threshold: f64,
    e_t: Option<f64>,
    bars: u64,
    trades: u64,
    clamped_min: u64,
    clamped_max: u64,
}

fn snapshot(e: &Engine) -> Snapshot {
    let s = &e.state;
    Snapshot {
        threshold: s.threshold,
        e_t: s.e_t,
        bars: s.next_bar,
        trades: s.trades,
        clamped_min: s.clamped_min,
        clamped_max: s.clamped_max,
    }
}

/// The in-memory side of one spec during the pass.
struct Track {
    /// Index of its plan in the pass.
    plan: usize,
    engine: Engine,
    ledger: Ledger,
    first_day: NaiveDate,
    out: Vec<Bar>,
    files: YearFiles,
    day_start: Option<Snapshot>,
    days: Vec<DayDiag>,
    checkpoints: Vec<Checkpoint>,
}

/// What the computation left for one spec: its days, checkpoints to write, year files, and
/// the number of bars it emitted.
struct Computed1 {
    days: Vec<DayDiag>,
    checkpoints: Vec<Checkpoint>,
    files: Vec<output::YearFile>,
    new_bars: u64,
}

struct Computed {
    tracks: Vec<Computed1>,
    trades_read: u64,
}

/// Run the pass: read, compute, write.
pub(crate) async fn run(ctx: &Context, pass: SymbolPass) -> Result<PassOutcome> {
    // The replaced part of each history goes first: a run killed after this finds the
    // checkpoint it starts from as the newest.
    for p in &pass.specs {
        for d in &p.stale {
            state::delete(&ctx.store, &p.key, *d).await?;
        }
    }
    let pass = Arc::new(pass);
    let computed = {
        let (pass, ctx) = (pass.clone(), ctx.clone());
        let handle = tokio::runtime::Handle::current();
        let symbol = pass.symbol.clone();
        tokio::task::spawn_blocking(move || compute(&ctx, &pass, handle))
            .await
            .map_err(|e| Error::Io {
                context: format!("computing bars of {symbol}"),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    let mut outcome = PassOutcome {
        trades_read: computed.trades_read,
        ..PassOutcome::default()
    };
    for (p, c) in pass.specs.iter().zip(computed.tracks) {
        let Computed1 {
            days,
            checkpoints,
            files,
            new_bars,
        } = c;
        let key = &p.key;
        let mut outputs = BTreeMap::new();
        for f in files {
            let year = f.year;
            let out = output::store_year(&ctx.store, f).await?;
            if let Some(o) = &out {
                outcome.bytes += o.size;
            }
            outputs.insert(year, out);
        }
        for c in &checkpoints {
            state::save(&ctx.store, key, c).await?;
        }
        let latest = checkpoints
            .last()
            .cloned()
            .unwrap_or_else(|| p.start.clone());
        for d in state::days(&ctx.store, key).await? {
            if !state::retained(d, latest.day) {
                state::delete(&ctx.store, key, d).await?;
            }
        }
        record(ctx, &pass, p, &latest, outputs).await?;
        outcome.specs.push(SpecOutcome {
            unit: p.unit(),
            spec: key.spec.clone(),
            symbol: key.symbol.clone(),
            mode: p.mode.clone(),
            from: p.first_day,
            to: pass.last_day,
            trades: days.iter().map(|d| d.trades).sum(),
            bars: new_bars,
            total_bars: latest.engine.next_bar,
            days,
        });
    }
    Ok(outcome)
}

/// Manifest entries: one per year file touched, with the month files the history has read.
async fn record(
    ctx: &Context,
    pass: &SymbolPass,
    p: &SpecPlan,
    latest: &Checkpoint,
    outputs: BTreeMap<i32, Option<shared::manifest::Output>>,
) -> Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let (writer, _) = ManifestWriter::open(
        &ctx.store,
        &ManifestKey::new(JOB, p.key.scope(), &p.key.symbol),
    )
    .await?;
    for (year, out) in outputs {
        let inputs = pass
            .upstream
            .months
            .iter()
            .filter(|(m, _)| {
                let first = m.first_day();
                m.last_day() >= latest.history_start && first.year() <= year && first <= latest.day
            })
            .filter_map(|(_, f)| f.as_ref().map(|f| (f.path.clone(), f.sha256.clone())))
            .collect();
        writer
            .record(Entry {
                unit: format!("{}/{year}", p.key.symbol),
                status: UnitStatus::Done,
                inputs,
                job_version: JOB_VERSION.into(),
                params_hash: shared::manifest::params_hash(&p.key.spec),
                outputs: out.into_iter().collect(),
                recorded_at: ctx.clock.now(),
                run_id: ctx.run_id.clone(),
                detail: Some(format!(
                    "history {}..{}, {} bars",
                    latest.history_start, latest.day, latest.engine.next_bar
                )),
                duplicate_days: Default::default(),
                rest: None,
            })
            .await?;
    }
    Ok(())
}

fn compute(ctx: &Context, pass: &SymbolPass, handle: tokio::runtime::Handle) -> Result<Computed> {
    let mut tracks = pass
        .specs
        .iter()
        .enumerate()
        .map(|(plan, p)| {
            Ok(Track {
                plan,
                engine: Engine::new(&p.spec, p.start.engine.clone()),
                ledger: p.start.ledger.clone(),
                first_day: p.first_day,
                out: Vec::new(),
                files: YearFiles::new(
                    ctx.store.clone(),
                    handle.clone(),
                    p.key.clone(),
                    p.start.engine.next_bar,
                    p.rewrite.iter().copied(),
                )?,
                day_start: None,
                days: Vec::new(),
                checkpoints: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let first = tracks.iter().map(|t| t.first_day).min().expect("a spec");
    let last = pass.last_day;
    let mut days = Days {
        pass,
        cur: first,
        last,
    };
    days.begin(&mut tracks);
    let mut trades_read = 0u64;
    let cols = pass.source.columns();
    let mut month = FileDate::month_of(first);
    'months: while month.first_day() <= last {
        let next = FileDate::month_of(month.last_day().succ_opt().expect("date"));
        let Some(file) = pass.upstream.month_file(month) else {
            month = next;
            continue;
        };
        let local = handle
            .block_on(LocalCopy::fetch(&ctx.store, &file.path))?
            .ok_or_else(|| Error::upstream_missing(&file.path, crate::upstream::UPSTREAM))?;
        let pf = ParquetFile::open(local.path(), &file.path)?;
        // A row group wholly before the first day is not decoded (a nightly run reads the end
        // of the month only).
        let skip_before = day_start_us(first);
        let groups: Vec<usize> = (0..pf.num_row_groups())
            .filter(|&rg| pf.max_i64(rg, cols[2]).is_none_or(|t| t >= skip_before))
            .collect();
        // Row group k + 1 is decoded (on its own threads) while the specs run over row group
        // k; two sets of column buffers go round between the two sides.
        let past_last = std::thread::scope(|scope| -> Result<bool> {
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Result<RowGroup>>(1);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<RowGroup>();
            for _ in 0..2 {
                let _ = empty_tx.send(RowGroup::default());
            }
            let pf = &pf;
            scope.spawn(move || {
                let mut scratch: [input::Scratch; 4] = Default::default();
                for rg in groups {
                    let Ok(mut c) = empty_rx.recv() else { break };
                    let r = c.decode(pf, rg, &cols, &mut scratch).map(|()| c);
                    let failed = r.is_err();
                    if full_tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
            for c in full_rx {
                if ctx.cancel.is_cancelled() {
                    return Err(Error::Interrupted);
                }
                let c = c?;
                let all = Trades {
                    price: &c.price,
                    qty: &c.qty,
                    time: &c.time,
                    buyer_maker: &c.bm,
                };
                let time = &c.time;
                let mut i = 0;
                while i < all.len() {
                    let day = day_of_us(time[i]);
                    let end = day_start_us(day) + DAY_US;
                    let j = i + time[i..].partition_point(|&t| t < end);
                    if day > last {
                        return Ok(true);
                    }
                    if day >= first {
                        days.advance(&mut tracks, day)?;
                        trades_read += (j - i) as u64;
                        feed(&mut tracks, day, all.slice(i, j))?;
                    }
                    i = j;
                }
                let _ = empty_tx.send(c);
            }
            Ok(false)
        })?;
        if past_last {
            break 'months;
        }
        month = next;
    }
    days.advance(&mut tracks, last)?;
    days.end(&mut tracks)?;
    let mut out = Vec::with_capacity(tracks.len());
    for t in tracks {
        out.push(Computed1 {
            new_bars: t.engine.state.next_bar - pass.specs[t.plan].start.engine.next_bar,
            days: t.days,
            checkpoints: t.checkpoints,
            files: t.files.finish()?,
        });
    }
    Ok(Computed {
        tracks: out,
        trades_read,
    })
}

/// One row group's trade columns, reused from one row group to the next.
#[derive(Default)]
struct RowGroup {
    price: Vec<f64>,
    qty: Vec<f64>,
    time: Vec<i64>,
    bm: Vec<bool>,
}

impl RowGroup {
    fn decode(
        &mut self,
        pf: &ParquetFile,
        rg: usize,
        cols: &[&str; 4],
        scratch: &mut [input::Scratch; 4],
    ) -> Result<()> {
        self.price.clear();
        self.qty.clear();
        self.time.clear();
        self.bm.clear();
        pf.decode(
            rg,
            cols,
            scratch,
            &mut [
                Dest::F64(&mut self.price),
                Dest::F64(&mut self.qty),
                Dest::I64(&mut self.time),
                Dest::Bool(&mut self.bm),
            ],
        )
    }
}

/// Feed one day's trades to every spec whose history covers the day.
fn feed(tracks: &mut [Track], day: NaiveDate, trades: Trades<'_>) -> Result<()> {
    let active = tracks.iter().filter(|t| t.first_day <= day).count();
    let step = if active > 1 { CHUNK } else { usize::MAX };
    let mut a = 0;
    while a < trades.len() {
        let b = a.saturating_add(step).min(trades.len());
        let chunk = trades.slice(a, b);
        for t in tracks.iter_mut().filter(|t| t.first_day <= day) {
            t.engine.process(chunk, &mut t.out);
            for bar in t.out.drain(..) {
                t.files.push(bar)?;
            }
        }
        a = b;
    }
    Ok(())
}

/// The day cursor: opens and closes days (diagnostics, ledger, checkpoints).
struct Days<'a> {
    pass: &'a SymbolPass,
    cur: NaiveDate,
    last: NaiveDate,
}

impl Days<'_> {
    fn begin(&self, tracks: &mut [Track]) {
        for t in tracks.iter_mut().filter(|t| t.first_day <= self.cur) {
            t.day_start = Some(snapshot(&t.engine));
        }
    }

    /// Close days until `day` is the current one.
    fn advance(&mut self, tracks: &mut [Track], day: NaiveDate) -> Result<()> {
        while self.cur < day {
            self.end(tracks)?;
            self.cur = self.cur.succ_opt().expect("date");
            self.begin(tracks);
        }
        Ok(())
    }

    fn end(&self, tracks: &mut [Track]) -> Result<()> {
        let d = self.cur;
        let keep = state::is_month_end(d) || month_key(d) == month_key(self.last) || d == self.last;
        let fp = self.pass.upstream.fingerprint(d);
        for t in tracks.iter_mut().filter(|t| t.first_day <= d) {
            let s0 = t.day_start.take().expect("day begun");
            let s1 = snapshot(&t.engine);
            t.days.push(DayDiag {
                date: d,
                trades: s1.trades - s0.trades,
                bars: s1.bars - s0.bars,
                threshold_start: s0.threshold,
                threshold_end: s1.threshold,
                e_t_start: s0.e_t,
                e_t_end: s1.e_t,
                clamped_min: s1.clamped_min - s0.clamped_min,
                clamped_max: s1.clamped_max - s0.clamped_max,
            });
            t.ledger.record(d, fp.clone());
            if keep {
                let p = &self.pass.specs[t.plan];
                t.checkpoints.push(Checkpoint {
                    job_version: JOB_VERSION.into(),
                    spec: p.key.spec.clone(),
                    symbol: p.key.symbol.clone(),
                    history_start: p.start.history_start,
                    day: d,
                    engine: t.engine.state.clone(),
                    ledger: t.ledger.clone(),
                });
            }
        }
        Ok(())
    }
}
