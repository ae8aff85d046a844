//! The `aggregate` job: optimized 1-minute klines of each symbol, with its fundingRate and
//! metrics, → bars of length Δ with the microstructure features of `features.md` section 1, one
//! file per symbol-year (`features/<market>/<freq>/symbol=S/year=Y/part-0.parquet`).
//!
//! Incremental by content: every day's inputs (its minutes, the minute before it, the funding
//! records of the 24 h and the metrics of the hour before its end, its validation verdict) are
//! hashed; a run recomputes the bars of the days whose hash changed and keeps every other row of
//! the year file as it was. Extending a range computes only the new days; a republished month
//! recomputes only the days whose rows changed.

#![forbid(unsafe_code)]

pub mod features;
pub mod frame;
pub mod months;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{Entry, Manifest, ManifestKey, ManifestWriter, UnitStatus};
use shared::paths::{DataType, Dataset, Interval, Market, features_partition};
use shared::plan::DateRange;
use shared::report::RunReport;
use shared::{Context, Error, Result};

use features::{Bars, Funding, MINUTE_US, Metrics, Minutes};
use frame::Kind;

/// Bump when the output of a unit changes for the same input: every day is then computed again
/// (an earlier version's rows are never kept).
pub const JOB_VERSION: &str = "2";
/// The job whose outputs are the inputs.
pub const UPSTREAM: JobName = JobName::OPTIMIZE;

pub(crate) use shared::time::{DAY_US, day_of_us, day_start_us};

/// A bar length that divides a day: `1m` … `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Freq {
    minutes: i64,
}

impl Freq {
    pub fn minutes(self) -> i64 {
        self.minutes
    }

    pub fn delta_us(self) -> i64 {
        self.minutes * MINUTE_US
    }
}

impl std::fmt::Display for Freq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.minutes {
            1440 => f.write_str("1d"),
            m if m % 60 == 0 => write!(f, "{}h", m / 60),
            m => write!(f, "{m}m"),
        }
    }
}

impl From<Freq> for String {
    fn from(f: Freq) -> String {
        f.to_string()
    }
}

impl std::str::FromStr for Freq {
    type Err = Error;
    fn from_str(s: &str) -> Result<Freq> {
        let bad = || {
            Error::usage(format!(
                "--freq `{s}`: expected minutes, hours or 1d that divide a day (15m, 1h, 4h, 1d)"
            ))
        };
        let (num, unit) = s.split_at(s.len().saturating_sub(1));
        let n: i64 = num.parse().map_err(|_| bad())?;
        let minutes = match unit {
            "m" => n,
            "h" => n * 60,
            "d" if n == 1 => 1440,
            _ => return Err(bad()),
        };
        if minutes <= 0 || 1440 % minutes != 0 {
            return Err(bad());
        }
        Ok(Freq { minutes })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    pub freq: Freq,
}

/// The datasets a market's features read: 1m klines, and for futures fundingRate and metrics.
struct Inputs {
    klines: Dataset,
    funding: Option<Dataset>,
    metrics: Option<Dataset>,
}

impl Inputs {
    fn of(market: Market) -> Result<Inputs> {
        let futures = matches!(market, Market::Um | Market::Cm);
        Ok(Inputs {
            klines: Dataset::new(market, DataType::Klines, Some(Interval::M1))?,
            funding: futures
                .then(|| Dataset::new(market, DataType::FundingRate, None))
                .transpose()?,
            metrics: futures
                .then(|| Dataset::new(market, DataType::Metrics, None))
                .transpose()?,
        })
    }
}

/// One unit: a symbol-year, over the days of the range in that year.
pub struct Unit {
    /// The bar length, which names the unit in the report (`1h/BTCUSDT/2024`).
    freq: Freq,
    symbol: String,
    year: i32,
    first: NaiveDate,
    last: NaiveDate,
    /// Upstream month files and their sha256 (`kind:YYYY-MM` → sha), for the fast skip.
    months: BTreeMap<String, (String, String)>,
    writer: Arc<ManifestWriter>,
    previous: Option<Entry>,
    /// Days (from the day before `first`) whose validation verdict is an error.
    excluded: BTreeSet<NaiveDate>,
    /// Where the minutes end for now when `tail` filled past the archive (µs): only the bars
    /// that closed by then are written.
    horizon_us: Option<i64>,
}

impl Unit {
    fn key(&self) -> String {
        format!("{}/{}", self.symbol, self.year)
    }
}

/// What one unit did.
#[derive(Debug, Clone, Default)]
pub struct UnitResult {
    pub minutes_read: u64,
    pub days_computed: u64,
    pub days_kept: u64,
    pub days_excluded: u64,
    pub bars_computed: u64,
    pub bars_written: u64,
    pub bytes: u64,
}

/// The job: its spec, and the cores the month passes share.
#[derive(Serialize)]
pub struct Aggregate {
    #[serde(flatten)]
    spec: Spec,
    /// Units in flight overlap their I/O; the month passes (which use every core on their own)
    /// run for as many units at a time as there are cores, which bounds memory: a pass holds a
    /// month of minutes per thread (~3.6 MB each) and the year's funding and metrics (~12 MB).
    #[serde(skip)]
    cpu: tokio::sync::Semaphore,
}

impl Aggregate {
    pub fn new(spec: Spec) -> Aggregate {
        Aggregate {
            spec,
            cpu: tokio::sync::Semaphore::new(frames::cores()),
        }
    }
}

/// Run the job over `ctx`'s store.
pub async fn run(spec: Spec, ctx: &Context) -> Result<RunReport> {
    shared::job::run(Aggregate::new(spec), ctx).await
}

impl Job for Aggregate {
    const NAME: JobName = JobName::AGGREGATE;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "symbol-years";
    type Unit = Unit;
    type Done = UnitResult;
    type Totals = UnitResult;

    fn common(&self) -> &CommonSpec {
        &self.spec.common
    }

    fn params_hash(&self) -> String {
        shared::manifest::params_hash(&(self.spec.freq.minutes,))
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<Unit>> {
        let spec = &self.spec;
        let ctx = p.ctx;
        let market = spec.common.market;
        let inputs = Inputs::of(market)?;
        let scope = format!("{}/{}", market.storage_name(), spec.freq);
        let mut units = Vec::new();
        let symbols = p.symbols(UPSTREAM, &inputs.klines.scope()).await?;
        let range = spec.common.range;
        // Symbol-days the validation reports mark as errors are left out (as if absent) and
        // counted.
        let verdicts = shared::validation::Verdicts::load(&ctx.store, &inputs.klines).await?;
        // Each symbol's upstream month outputs (for the fast up-to-date check), how far its
        // klines reach (archive and REST) and its own manifest, loaded for 8 symbols at a time:
        // each is a few small reads, latency more than work.
        type Loaded = (
            String,
            Upstream,
            shared::manifest::Reach,
            ManifestWriter,
            Manifest,
        );
        let loaded: Vec<Result<Loaded>> = {
            use futures::StreamExt;
            let (store, inputs, stamp) = (&ctx.store, &inputs, &p.stamp);
            futures::stream::iter(symbols)
                .map(|sym| {
                    let key = stamp.key(&scope, &sym);
                    async move {
                        let upstream = load_upstream(store, inputs, &sym).await?;
                        let reach =
                            shared::manifest::reach(store, &inputs.klines.scope(), &sym).await?;
                        let (writer, mine) = ManifestWriter::open(store, &key).await?;
                        Ok((sym, upstream, reach, writer, mine))
                    }
                })
                .buffered(8)
                .collect()
                .await
        };
        for got in loaded {
            let (sym, upstream, reach, writer, mine) = got?;
            let writer = Arc::new(writer);
            for year in range.start.year()..=range.end.year() {
                let first = range
                    .start
                    .max(NaiveDate::from_ymd_opt(year, 1, 1).expect("Jan 1"));
                let last = range
                    .end
                    .min(NaiveDate::from_ymd_opt(year, 12, 31).expect("Dec 31"));
                // The months whose files the days need: from the day before the first (its last
                // minute, the funding and metrics lookbacks) to the last.
                let lookback = first.pred_opt().unwrap_or(first);
                let months: BTreeMap<String, (String, String)> = DateRange::new(lookback, last)?
                    .months()
                    .into_iter()
                    .flat_map(|m| {
                        let key =
                            format!("{:04}-{:02}", m.first_day().year(), m.first_day().month());
                        ["klines", "funding", "metrics"]
                            .into_iter()
                            .filter_map(|k| {
                                let id = format!("{k}:{key}");
                                upstream.get(&id).map(|v| (id, v.clone()))
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if !months.keys().any(|k| k.starts_with("klines:")) {
                    p.tally.miss(format!("{sym}/{year}"));
                    continue;
                }
                // The error verdicts of the days read (the lookback day included) are an input
                // too: a new verdict recomputes the days it touches.
                let excluded: BTreeSet<NaiveDate> = lookback
                    .iter_days()
                    .take_while(|d| *d <= last)
                    .filter(|d| verdicts.is_error(&sym, *d))
                    .collect();
                let mut months = months;
                months.insert(
                    "verdicts".into(),
                    (String::new(), shared::manifest::params_hash(&excluded)),
                );
                // The current day, filled from REST up to its last closed minute: its open bar
                // is left out until a run sees it closed.
                let horizon_us = reach
                    .horizon_us()
                    .filter(|h| *h <= day_start_us(last) + DAY_US);
                if let Some(h) = horizon_us {
                    months.insert("horizon".into(), (String::new(), h.to_string()));
                }
                let key = format!("{sym}/{year}");
                let previous = mine.get(&key);
                if p.is_current_with(previous, |e| covers(e, &months, first, last)) {
                    continue;
                }
                // Unchanged days are kept from the previous output only if this version with
                // these parameters wrote it: their fingerprints hash the inputs, not the code.
                let previous = previous
                    .filter(|e| !spec.common.force && p.stamp.recorded_alike(e))
                    .cloned();
                units.push(Unit {
                    freq: spec.freq,
                    symbol: sym.clone(),
                    year,
                    first,
                    last,
                    months,
                    writer: writer.clone(),
                    previous,
                    excluded,
                    horizon_us,
                });
            }
        }
        Ok(units)
    }

    fn unit_key(u: &Unit) -> String {
        format!("{}/{}", u.freq, u.key())
    }

    fn dry_run_line(&self, u: &Unit) -> String {
        format!(
            "aggregate {} {}..{} -> {}",
            u.key(),
            u.first,
            u.last,
            features_partition(
                self.spec.common.market,
                &self.spec.freq.to_string(),
                &u.symbol,
                u.year
            )
        )
    }

    async fn execute(job: Arc<Self>, ctx: Context, stamp: Stamp, u: Unit) -> Result<UnitResult> {
        let _permit = job
            .cpu
            .acquire()
            .await
            .map_err(|_| Error::internal("the core semaphore closed"))?;
        aggregate_unit(&job.spec, &ctx, &stamp, u).await
    }

    fn absorb(&self, total: &mut UnitResult, _key: &str, u: UnitResult) -> Finished<Unit> {
        total.minutes_read += u.minutes_read;
        total.days_computed += u.days_computed;
        total.days_kept += u.days_kept;
        total.days_excluded += u.days_excluded;
        total.bars_computed += u.bars_computed;
        total.bars_written += u.bars_written;
        total.bytes += u.bytes;
        Finished::Done
    }

    fn bytes(&self, t: &UnitResult) -> u64 {
        t.bytes
    }

    async fn finish(
        &self,
        _ctx: &Context,
        total: UnitResult,
        end: &mut End,
    ) -> Result<serde_json::Value> {
        let secs = end.seconds;
        Ok(serde_json::json!({
            "freq": self.spec.freq.to_string(),
            "minutes_read": total.minutes_read,
            "days_computed": total.days_computed,
            "days_kept": total.days_kept,
            "symbol_days_excluded": total.days_excluded,
            "bars_computed": total.bars_computed,
            "bars_written": total.bars_written,
            "seconds": secs,
            "minutes_per_sec": total.minutes_read as f64 / secs,
        }))
    }
}

/// `kind:YYYY-MM` → (path, sha256) of a symbol's optimized upstream months.
type Upstream = BTreeMap<String, (String, String)>;

/// The done month outputs of `sym`'s klines, funding and metrics in the optimize manifests.
async fn load_upstream(store: &shared::Store, inputs: &Inputs, sym: &str) -> Result<Upstream> {
    let mut upstream = Upstream::new();
    for (kind, ds) in [
        ("klines", Some(inputs.klines)),
        ("funding", inputs.funding),
        ("metrics", inputs.metrics),
    ] {
        let Some(ds) = ds else { continue };
        let m = Manifest::load(store, &ManifestKey::new(UPSTREAM, ds.scope(), sym)).await?;
        for e in m.entries().filter(|e| e.status == UnitStatus::Done) {
            for o in &e.outputs {
                if let Some(month) = month_of_partition(&o.path) {
                    upstream.insert(
                        format!("{kind}:{month}"),
                        (o.path.clone(), o.sha256.clone()),
                    );
                }
            }
        }
    }
    Ok(upstream)
}

/// `YYYY-MM` of an optimized partition path (`.../year=Y/month=M/part-0.parquet`).
fn month_of_partition(path: &str) -> Option<String> {
    match shared::paths::Partition::parse(path).ok()? {
        shared::paths::Partition::Month { year, month, .. } => {
            Some(format!("{year:04}-{month:02}"))
        }
        shared::paths::Partition::Day { .. } => None,
    }
}

/// The previous run covered every day of `[first, last]` from exactly these upstream months.
fn covers(
    p: &Entry,
    months: &BTreeMap<String, (String, String)>,
    first: NaiveDate,
    last: NaiveDate,
) -> bool {
    months
        .iter()
        .all(|(k, (_, sha))| p.inputs.get(k) == Some(sha))
        && first
            .iter_days()
            .take_while(|d| *d <= last)
            .all(|d| p.inputs.contains_key(&day_key(d)))
}

pub(crate) fn day_key(d: NaiveDate) -> String {
    format!("day:{d}")
}

async fn aggregate_unit(spec: &Spec, ctx: &Context, stamp: &Stamp, u: Unit) -> Result<UnitResult> {
    let market = spec.common.market;
    let freq = spec.freq.to_string();
    let out_path = features_partition(market, &freq, &u.symbol, u.year);
    let mut res = UnitResult::default();

    // The rows already written, if the file is the one the manifest recorded.
    let existing = match &u.previous {
        Some(p) if p.status == UnitStatus::Done => match p.outputs.first() {
            Some(o) => match ctx.store.get_opt(&o.path).await? {
                Some(bytes) if shared::checksum::sha256_hex(&bytes) == o.sha256 => {
                    let df = frames::read_parquet_bytes(bytes, &o.path).map_err(Error::from)?;
                    Some(frame::from_frame(&df, &o.path)?)
                }
                _ => None,
            },
            None => Some(Bars::default()),
        },
        _ => None,
    };
    let prev_inputs = match (&u.previous, &existing) {
        (Some(p), Some(_)) => p.inputs.clone(),
        _ => BTreeMap::new(),
    };

    // Inputs: the months listed (missing ones simply have no rows), passed over month by month
    // on every core: fingerprints of every day, bars of the changed ones.
    let files: Vec<(Kind, NaiveDate, String)> = u
        .months
        .iter()
        .filter_map(|(key, (path, _))| {
            let (kind, month) = key.split_once(':')?;
            let kind = match kind {
                "klines" => Kind::Klines,
                "funding" => Kind::Funding,
                "metrics" => Kind::Metrics,
                _ => return None,
            };
            let month = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()?;
            Some((kind, month, path.clone()))
        })
        .collect();
    let files = fetch_sources(&ctx.store, files).await?;
    let threads = frames::cores();
    let days = months::Days {
        first: u.first,
        last: u.last,
        excluded: u.excluded.clone(),
        previous: prev_inputs,
        delta_us: spec.freq.delta_us(),
        unit: u.key(),
    };
    let (days, pass) = tokio::task::spawn_blocking(move || {
        let pass = months::run(files, &days, threads);
        (days, pass)
    })
    .await
    .map_err(|e| Error::internal(format!("{}: the month pass: {e}", u.key())))?;
    let pass = pass?;
    let prev_inputs = days.previous;
    res.minutes_read = pass.minutes_read;
    let n_days = pass.hashes.len();
    res.days_excluded = pass
        .hashes
        .keys()
        .filter(|d| u.excluded.contains(d))
        .count() as u64;
    let changed = pass.changed;
    res.days_computed = changed.len() as u64;
    res.days_kept = (n_days - changed.len()) as u64;

    // Keep the existing rows of unchanged days (and of days outside this run's range).
    let mut kept = Bars::default();
    if let Some(old) = &existing {
        for i in 0..old.len() {
            if !changed.contains(&day_of_us(old.open_time[i])) {
                kept.push_row(old, i);
            }
        }
    }
    let fresh = pass.bars;
    res.bars_computed = fresh.len() as u64;
    let delta = spec.freq.delta_us();
    let mut all = Bars::merge(kept, fresh);
    if let Some(h) = u.horizon_us {
        let mut closed = Bars::default();
        for i in 0..all.len() {
            if all.open_time[i] + delta <= h {
                closed.push_row(&all, i);
            }
        }
        all = closed;
    }
    res.bars_written = all.len() as u64;
    let hashes = pass.hashes;

    // Write the year (atomically), then record it with every day's fingerprint.
    let mut outputs = Vec::new();
    if !all.is_empty() {
        // `frames`' page encoding (a year's columns shared out over the cores), as `optimize`
        // writes its months; hashed on another thread while the store writes it.
        let span = [
            all.open_time[0],
            all.open_time[all.len() - 1] + delta - 1000,
        ];
        let df = frame::to_frame(all)?;
        let mut buf = frames::ParquetBuffer::new(df.schema(), &frames::ParquetOptions::default())
            .map_err(Error::from)?;
        buf.write(&df).map_err(Error::from)?;
        let mut out = buf
            .finish_to(&ctx.store, &out_path)
            .await
            .map_err(Error::from)?;
        out.time_span = Some(span);
        res.bytes = out.size;
        outputs.push(out);
    } else if existing.as_ref().is_some_and(|b| !b.is_empty()) {
        ctx.store.delete(&out_path).await?;
    }
    let mut inputs: BTreeMap<String, String> = prev_inputs
        .into_iter()
        .filter(|(k, _)| k.starts_with("day:"))
        .collect();
    for (d, h) in &hashes {
        inputs.insert(day_key(*d), h.clone());
    }
    for (k, (_, sha)) in &u.months {
        inputs.insert(k.clone(), sha.clone());
    }
    let mut entry = stamp.entry(u.key(), UnitStatus::Done, inputs, outputs);
    entry.detail = Some(format!(
        "days_computed={} days_kept={} bars={}",
        res.days_computed, res.days_kept, res.bars_written
    ));
    u.writer.record(entry).await?;
    Ok(res)
}

/// The input files: a local store's by path (each read by the month thread that decodes it), a
/// remote store's fetched eight at a time.
async fn fetch_sources(
    store: &shared::Store,
    files: Vec<(Kind, NaiveDate, String)>,
) -> Result<Vec<frame::InputFile>> {
    let mut out = Vec::with_capacity(files.len());
    if store.local_path("").is_some() {
        for (kind, month, path) in files {
            let local = store.local_path(&path).expect("local store");
            out.push(frame::InputFile {
                kind,
                month,
                path,
                source: frame::Source::Local(local),
            });
        }
        return Ok(out);
    }
    for chunk in files.chunks(8) {
        let got = futures::future::join_all(chunk.iter().map(|(_, _, p)| store.get_opt(p))).await;
        for ((kind, month, path), g) in chunk.iter().zip(got) {
            match g? {
                Some(b) => out.push(frame::InputFile {
                    kind: *kind,
                    month: *month,
                    path: path.clone(),
                    source: frame::Source::Bytes(frames::Buffer::from_owner(b)),
                }),
                None => return Err(frame::missing(path)),
            }
        }
    }
    Ok(out)
}

/// Everything a day's bars depend on, hashed: its minutes and the one before, the funding
/// records of the 24 h before its end, the metrics of the hour before its end, its exclusion.
/// xxh3-128, not sha256: a fingerprint against accidental change (a republished file), where
/// sha256 over every value was 15% of the job's CPU (tests/README.md); `buf` is reused.
pub(crate) fn day_hash(
    buf: &mut Vec<u8>,
    m: &Minutes,
    funding: Option<&Funding>,
    metrics: Option<&Metrics>,
    day: NaiveDate,
    excluded: bool,
) -> String {
    let (s, e) = (day_start_us(day), day_start_us(day) + DAY_US);
    // The minutes' columns are hashed as they lie in memory (native-endian: a fingerprint is
    // only compared with one made on the same kind of machine); the small rest is serialized.
    let mut h = twox_hash::XxHash3_128::new();
    h.write(&[excluded as u8]);
    let a = m.open_time.partition_point(|&t| t < s - MINUTE_US);
    let b = m.open_time.partition_point(|&t| t < e);
    h.write(bytemuck::cast_slice(&m.open_time[a..b]));
    h.write(bytemuck::cast_slice(&m.trades[a..b]));
    for c in [
        &m.open,
        &m.high,
        &m.low,
        &m.close,
        &m.volume,
        &m.quote_volume,
        &m.taker_buy_volume,
        &m.taker_buy_quote_volume,
    ] {
        h.write(bytemuck::cast_slice(&c[a..b]));
    }
    buf.clear();
    buf.extend_from_slice(b"|funding");
    if let Some(f) = funding {
        let a = f
            .calc_time
            .partition_point(|&t| t < s - features::FUNDING_MAX_AGE_US);
        let b = f.calc_time.partition_point(|&t| t < e);
        for i in a..b {
            buf.extend_from_slice(&f.calc_time[i].to_le_bytes());
            buf.extend_from_slice(&f.rate[i].to_bits().to_le_bytes());
            buf.extend_from_slice(&f.interval_hours[i].to_le_bytes());
        }
    }
    buf.extend_from_slice(b"|metrics");
    if let Some(mt) = metrics {
        let a = mt
            .snapshot_time
            .partition_point(|&t| t < s - features::METRICS_MAX_AGE_US);
        let b = mt.snapshot_time.partition_point(|&t| t < e);
        // A record's bytes gathered in a stack array, appended with one copy (appended value by
        // value, the length checks cost more than the hashing of the day's metrics).
        for i in a..b {
            let mut rec = [0u8; 8 * 7];
            rec[..8].copy_from_slice(&mt.snapshot_time[i].to_le_bytes());
            let mut at = 8;
            for v in [
                mt.open_interest[i],
                mt.open_interest_value[i],
                mt.top_trader_account_ls_ratio[i],
                mt.top_trader_position_ls_ratio[i],
                mt.account_ls_ratio[i],
                mt.taker_ls_volume_ratio[i],
            ] {
                match v {
                    Some(v) => {
                        rec[at..at + 8].copy_from_slice(&v.to_bits().to_le_bytes());
                        at += 8;
                    }
                    None => {
                        rec[at] = b'n';
                        at += 1;
                    }
                }
            }
            buf.extend_from_slice(&rec[..at]);
        }
    }
    h.write(buf);
    format!("{:032x}", h.finish_128())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day's fingerprint is the XXH3-128 of this byte layout, which the manifests of earlier
    /// runs hold digests of: it must not move (a changed layout recomputes every day once). The
    /// layout written out plainly here, against `day_hash`'s, on a day with the minute before it,
    /// funding of the 24 h before, and metrics with and without values.
    #[test]
    fn day_fingerprints_keep_their_byte_layout() {
        let day = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap();
        let s = day_start_us(day);
        let t: Vec<i64> = (-2..5).map(|i| s + i * MINUTE_US).collect();
        let f = |k: f64| {
            t.iter()
                .map(|&x| k + (x % 977) as f64 / 7.0)
                .collect::<Vec<f64>>()
        };
        let m = Minutes {
            open_time: t.clone(),
            open: f(1.0),
            high: f(2.0),
            low: f(0.5),
            close: f(1.5),
            volume: f(10.0),
            quote_volume: f(20.0),
            trades: t.iter().map(|x| x % 31).collect(),
            taker_buy_volume: f(4.0),
            taker_buy_quote_volume: f(8.0),
        };
        let fu = Funding {
            calc_time: vec![
                s - 2 * DAY_US,
                s - 8 * 3_600_000_000 + 7_000,
                s + 3_600_000_000,
            ],
            rate: vec![0.0001, -0.00025, 0.0003],
            interval_hours: vec![8, 8, 4],
        };
        let mt = Metrics {
            snapshot_time: vec![s - 2 * 3_600_000_000, s - 300_000_000, s, s + DAY_US],
            open_interest: vec![Some(1.0), Some(2.0), None, Some(3.0)],
            open_interest_value: vec![Some(10.0), None, None, Some(30.0)],
            top_trader_account_ls_ratio: vec![Some(1.1), Some(1.2), None, Some(1.3)],
            top_trader_position_ls_ratio: vec![None, Some(0.9), None, Some(0.8)],
            account_ls_ratio: vec![Some(2.1), Some(2.2), Some(2.3), None],
            taker_ls_volume_ratio: vec![Some(0.5), None, Some(0.7), Some(0.6)],
        };
        let reference = |excluded: bool| {
            let mut b = vec![excluded as u8];
            // The minute before the day and the day's own (not the earlier one).
            let r = 1..t.len();
            b.extend(t[r.clone()].iter().flat_map(|v| v.to_ne_bytes()));
            b.extend(m.trades[r.clone()].iter().flat_map(|v| v.to_ne_bytes()));
            // Then the float columns in this order, each as it lies in memory.
            for c in [
                &m.open,
                &m.high,
                &m.low,
                &m.close,
                &m.volume,
                &m.quote_volume,
                &m.taker_buy_volume,
                &m.taker_buy_quote_volume,
            ] {
                b.extend(c[r.clone()].iter().flat_map(|v| v.to_ne_bytes()));
            }
            b.extend(b"|funding");
            for i in 1..3 {
                b.extend(fu.calc_time[i].to_le_bytes());
                b.extend(fu.rate[i].to_bits().to_le_bytes());
                b.extend(fu.interval_hours[i].to_le_bytes());
            }
            b.extend(b"|metrics");
            for i in 1..3 {
                b.extend(mt.snapshot_time[i].to_le_bytes());
                for c in [
                    &mt.open_interest,
                    &mt.open_interest_value,
                    &mt.top_trader_account_ls_ratio,
                    &mt.top_trader_position_ls_ratio,
                    &mt.account_ls_ratio,
                    &mt.taker_ls_volume_ratio,
                ] {
                    match c[i] {
                        Some(v) => b.extend(v.to_bits().to_le_bytes()),
                        None => b.push(b'n'),
                    }
                }
            }
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&b))
        };
        let mut buf = Vec::new();
        for excluded in [false, true] {
            let got = day_hash(&mut buf, &m, Some(&fu), Some(&mt), day, excluded);
            assert_eq!(got, reference(excluded), "excluded {excluded}");
        }
    }

    /// Day fingerprints already in manifests were made with xxhash-rust's XXH3-128: twox-hash's
    /// (AVX2 when the CPU has it) must give the same digests, whatever the pieces fed.
    #[test]
    fn fingerprints_match_xxhash_rust_xxh3_128() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for pieces in [
            vec![],
            vec![0],
            vec![1, 3, 16, 17],
            vec![128, 129, 240, 241],
            vec![1024, 1, 100_000],
            vec![9, 35_000, 64, 8 * 1441, 150_000],
        ] {
            let (mut a, mut b) = (
                twox_hash::XxHash3_128::new(),
                xxhash_rust::xxh3::Xxh3::new(),
            );
            let mut at = 0;
            for n in &pieces {
                a.write(&data[at..at + n]);
                b.update(&data[at..at + n]);
                at += n;
            }
            assert_eq!(a.finish_128(), b.digest128(), "{pieces:?}");
        }
    }
}
