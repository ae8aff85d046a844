//! The job harness: a job declares its name, version and parameters, plans its units and runs one;
//! the harness owns the rest — the report header, symbol selection and sharding, manifests and
//! up-to-date checks (a changed job version or parameter hash makes every unit out of date),
//! `--dry-run`, `--force`, bounded concurrency, cancellation, progress, the tally, the report
//! and, through [`main`], the exit code.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::cli::{CommonArgs, CommonSpec};
use crate::error::{Error, Result};
use crate::exec::Tally;
use crate::manifest::{Entry, Manifest, ManifestKey, ManifestWriter, Output, UnitStatus};
use crate::paths::Market;
use crate::report::{RunHeader, RunReport};
use crate::{Clock, Context, Store};

/// A job's name: its binary, its manifests' folder (`_manifest/<job>/`) and its reports' folder.
/// Every job is one of the constants; no job name is spelled anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName(&'static str);

impl JobName {
    pub const DOWNLOAD: JobName = JobName("download");
    pub const EXTRACT: JobName = JobName("extract");
    pub const CONVERT: JobName = JobName("convert");
    pub const OPTIMIZE: JobName = JobName("optimize");
    pub const VALIDATE: JobName = JobName("validate");
    pub const AGGREGATE: JobName = JobName("aggregate");
    pub const BARS: JobName = JobName("bars");
    pub const BUILD_PANEL: JobName = JobName("build-panel");
    pub const TAIL: JobName = JobName("tail");
    pub const INSTRUMENTS: JobName = JobName("instruments");
    pub const LOAD: JobName = JobName("load");

    /// Every job binary a DAG can run, in pipeline order.
    pub const ALL: [JobName; 11] = [
        JobName::INSTRUMENTS,
        JobName::DOWNLOAD,
        JobName::EXTRACT,
        JobName::CONVERT,
        JobName::TAIL,
        JobName::OPTIMIZE,
        JobName::VALIDATE,
        JobName::AGGREGATE,
        JobName::BARS,
        JobName::BUILD_PANEL,
        JobName::LOAD,
    ];

    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// The job of that name, if there is one.
    pub fn parse(name: &str) -> Option<JobName> {
        JobName::ALL.into_iter().find(|j| j.0 == name)
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl From<JobName> for String {
    fn from(j: JobName) -> String {
        j.0.to_string()
    }
}

impl Serialize for JobName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// What stamps a unit's manifest entry: the job, its version and parameter hash, the run.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub job: JobName,
    pub version: &'static str,
    pub params_hash: String,
    pub run_id: String,
    clock: Clock,
}

impl Stamp {
    pub fn new(job: JobName, version: &'static str, params_hash: String, ctx: &Context) -> Stamp {
        Stamp {
            job,
            version,
            params_hash,
            run_id: ctx.run_id.clone(),
            clock: ctx.clock.clone(),
        }
    }

    /// A manifest entry for `unit`, recorded now by this run.
    pub fn entry(
        &self,
        unit: impl Into<String>,
        status: UnitStatus,
        inputs: BTreeMap<String, String>,
        outputs: Vec<Output>,
    ) -> Entry {
        Entry {
            unit: unit.into(),
            status,
            inputs,
            job_version: self.version.into(),
            params_hash: self.params_hash.clone(),
            outputs,
            recorded_at: self.clock.now(),
            run_id: self.run_id.clone(),
            detail: None,
            duplicate_days: BTreeMap::new(),
            rest: None,
        }
    }

    /// Whether `prev` was recorded done by this job version with these parameters: what a job
    /// that reuses part of a unit's earlier output (its unchanged days) must check first.
    pub fn recorded_alike(&self, prev: &Entry) -> bool {
        prev.status == UnitStatus::Done
            && prev.job_version == self.version
            && prev.params_hash == self.params_hash
    }

    /// This job's manifest of one (scope, symbol).
    pub fn key(&self, scope: impl Into<String>, symbol: impl Into<String>) -> ManifestKey {
        ManifestKey::new(self.job, scope, symbol)
    }
}

/// How a unit that ran without error counts.
pub enum Finished<U> {
    Done,
    /// Found already done (verified before, unchanged upstream).
    UpToDate,
    /// Its input does not exist upstream.
    Missing,
    /// It stands for other units, queued now (a missing monthly file's days); counted as nothing.
    Expands(Vec<U>),
}

/// A job, as the harness runs it. The job's own type is its validated parameters (serialized
/// into the report's `params`) plus whatever the run shares across units.
pub trait Job: Serialize + Send + Sync + Sized + 'static {
    const NAME: JobName;
    /// Bumped whenever a unit's output changes for the same input: every unit recorded by an
    /// older version is then out of date.
    const VERSION: &'static str;
    /// What one unit is, for progress lines (`files`, `months`).
    const UNITS: &'static str;

    type Unit: Send + 'static;
    type Done: Send + 'static;
    /// What the run adds up over its units, for the report's details.
    type Totals: Default + Send;

    fn common(&self) -> &CommonSpec;

    /// The hash of the parameters that shape outputs: a change makes every unit out of date.
    fn params_hash(&self) -> String;

    /// The units to run: those not up to date ([`Planner::is_current`] counts the others).
    fn plan(&self, p: &mut Planner<'_>) -> impl Future<Output = Result<Vec<Self::Unit>>> + Send;

    /// The unit's name in the tally, the report and the log.
    fn unit_key(unit: &Self::Unit) -> String;

    /// The units of the tally a unit of work stands for: itself, or, for a job that runs several
    /// at once over one input (bars' specs over one symbol's trades), each of them.
    fn members(unit: &Self::Unit) -> Vec<String> {
        vec![Self::unit_key(unit)]
    }

    /// One line of `--dry-run` output for a unit the run would execute.
    fn dry_run_line(&self, unit: &Self::Unit) -> String;

    /// After a dry run's lines: anything more it shows, and the report's details.
    fn dry_run(
        &self,
        _ctx: &Context,
        _units: &[Self::Unit],
    ) -> impl Future<Output = Result<serde_json::Value>> + Send {
        async { Ok(serde_json::Value::Null) }
    }

    /// Run one unit.
    fn execute(
        job: Arc<Self>,
        ctx: Context,
        stamp: Stamp,
        unit: Self::Unit,
    ) -> impl Future<Output = Result<Self::Done>> + Send + 'static;

    /// Fold a unit that ran without error into the totals, and say how it counts.
    fn absorb(
        &self,
        totals: &mut Self::Totals,
        key: &str,
        done: Self::Done,
    ) -> Finished<Self::Unit>;

    /// A unit that failed (the harness has counted it): for jobs whose totals track failures.
    fn failed(&self, _totals: &mut Self::Totals, _key: &str) {}

    /// The bytes the run has written so far (the report's `bytes`, and progress lines).
    fn bytes(&self, totals: &Self::Totals) -> u64;

    /// After the last unit: run-level work (a summary, a heatmap), warnings, and the report's
    /// details.
    fn finish(
        &self,
        ctx: &Context,
        totals: Self::Totals,
        end: &mut End,
    ) -> impl Future<Output = Result<serde_json::Value>> + Send;

    /// Units run at once (`--concurrency`, unless the job bounds it further).
    fn concurrency(&self) -> usize {
        self.common().concurrency
    }

    /// Where the job's temp files go (a `--tmp-dir`), when not the system's temp folder.
    fn temp_base(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// The lease one writer at a time holds (`_leases/<key>`): this job over these data types
    /// of this market, this shard. Two runs over the same data would do the same work twice
    /// and race on its manifests.
    fn lease_key(&self) -> String {
        let c = self.common();
        lease_key(Self::NAME.as_str(), c.market, &c.datasets, c.shard)
    }
}

/// The lease of `job` over (market, datasets, shard I of N), as [`Job::lease_key`] takes it; the
/// runner's DAG check spells it the same way.
pub fn lease_key(
    job: &str,
    market: Market,
    datasets: &[crate::paths::Dataset],
    (shard, of): (usize, usize),
) -> String {
    let names: Vec<String> = datasets.iter().map(|d| d.name()).collect();
    format!(
        "{job}/{}/{}/shard-{shard}-of-{of}",
        market.storage_name(),
        names.join("+")
    )
}

/// Where a run stands when its last unit has ended.
pub struct End {
    pub tally: Tally,
    /// Since the run started.
    pub seconds: f64,
    /// This shard's symbols of each scope, as [`Planner::symbols`] gave them.
    pub symbols: BTreeMap<String, Vec<String>>,
}

/// How long a unit's manifest entry may wait to be written with the next ones (group commit):
/// a run of many small units writes a delta per second and manifest, not one per unit. A run
/// killed meanwhile redoes at most this much of its last work.
pub const RECORD_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// What a job's plan works with: the run's context and arguments, the symbols and manifests, and
/// the tally of units found up to date, missing or to warn about.
pub struct Planner<'a> {
    pub ctx: &'a Context,
    pub common: &'a CommonSpec,
    pub stamp: Stamp,
    pub tally: Tally,
    /// Dry-run lines of units the plan settled itself (up to date, known missing).
    notes: Vec<String>,
    symbols: BTreeMap<String, Vec<String>>,
    /// The manifests this run writes, compacted at its end.
    writers: Vec<Arc<ManifestWriter>>,
    /// Manifests loading ahead of the plan's walk over the symbols ([`Planner::symbols_of`]).
    ahead: std::sync::Mutex<Ahead>,
}

/// Symbols whose manifests load concurrently ahead of the one being planned: on S3 a load is
/// a listing and a GET, whose latency a plan of hundreds of symbols would otherwise pay one after
/// another; locally the parsing runs on both cores. At most this many symbols' manifests are
/// held ahead, so memory stays bounded whatever the store holds.
pub const LOAD_AHEAD: usize = 16;

/// A manifest loaded ahead: an upstream job's, or this job's own with its writer.
enum Loaded {
    Upstream(Manifest),
    Own(Box<(ManifestWriter, Manifest)>),
}

/// The look-ahead's state: symbols not started yet, in the order the plan walks them, and the
/// symbols started, each with its loads by manifest prefix.
#[derive(Default)]
struct Ahead {
    queue: VecDeque<(Vec<JobName>, ManifestKey, String, String)>,
    window: VecDeque<HashMap<String, tokio::task::JoinHandle<Result<Loaded>>>>,
}

impl Ahead {
    /// Start loading until [`LOAD_AHEAD`] symbols are in the window.
    fn top_up(&mut self, store: &crate::Store) {
        while self.window.len() < LOAD_AHEAD {
            let Some((upstreams, own, scope, symbol)) = self.queue.pop_front() else {
                return;
            };
            let mut loads = HashMap::new();
            for job in upstreams {
                let key = ManifestKey::new(job, scope.clone(), symbol.clone());
                let prefix = key.prefix();
                let store = store.clone();
                let task = tokio::spawn(async move {
                    Manifest::load(&store, &key).await.map(Loaded::Upstream)
                });
                loads.insert(prefix, task);
            }
            let prefix = own.prefix();
            let store = store.clone();
            let task = tokio::spawn(async move {
                ManifestWriter::open(&store, &own)
                    .await
                    .map(|wm| Loaded::Own(Box::new(wm)))
            });
            loads.insert(prefix, task);
            self.window.push_back(loads);
        }
    }

    /// The load started for `prefix`, if any. The plan has then moved past the symbols before
    /// it (one it skipped never asks for its manifests): their loads are dropped, and the
    /// window moves on.
    fn take(
        &mut self,
        prefix: &str,
        store: &crate::Store,
    ) -> Option<tokio::task::JoinHandle<Result<Loaded>>> {
        let at = self.window.iter().position(|l| l.contains_key(prefix))?;
        for passed in self.window.drain(..at) {
            passed.values().for_each(|t| t.abort());
        }
        let loads = self.window.front_mut().expect("found");
        let task = loads.remove(prefix);
        if loads.is_empty() {
            self.window.pop_front();
        }
        self.top_up(store);
        task
    }
}

impl<'a> Planner<'a> {
    fn new(ctx: &'a Context, common: &'a CommonSpec, stamp: Stamp) -> Planner<'a> {
        Planner {
            ctx,
            common,
            stamp,
            tally: Tally::default(),
            notes: Vec::new(),
            symbols: BTreeMap::new(),
            writers: Vec::new(),
            ahead: Default::default(),
        }
    }

    /// This shard's share of the symbols to work on for `scope`: `all` is every symbol `upstream`
    /// has recorded; a listed symbol `upstream` knows nothing of gets a warning.
    pub async fn symbols(&mut self, upstream: JobName, scope: &str) -> Result<Vec<String>> {
        self.symbols_of(&[upstream], scope).await
    }

    /// [`Planner::symbols`] for a job with several upstream jobs (`optimize` reads `convert`'s
    /// days and `tail`'s): `all` is every symbol any of them recorded.
    pub async fn symbols_of(&mut self, upstreams: &[JobName], scope: &str) -> Result<Vec<String>> {
        let all = crate::manifest::select_symbols(
            &self.ctx.store,
            upstreams,
            scope,
            &self.common.symbols,
            &self.common.select,
            &mut self.tally,
        )
        .await?;
        let mine = self.common.shard_of(&all);
        self.symbols.insert(scope.to_string(), mine.clone());
        Ok(mine)
    }

    /// Announce that the plan walks `symbols` of `scope` next, in this order, asking for each
    /// symbol's manifests of `upstreams` ([`Planner::upstream`]) and then for its own
    /// ([`Planner::manifest`]): they load concurrently, [`LOAD_AHEAD`] symbols ahead.
    pub fn load_ahead(&mut self, upstreams: &[JobName], scope: &str, symbols: &[String]) {
        let ahead = self.ahead.get_mut().expect("not poisoned");
        for sym in symbols {
            ahead.queue.push_back((
                upstreams.to_vec(),
                self.stamp.key(scope, sym.as_str()),
                scope.to_string(),
                sym.clone(),
            ));
        }
        ahead.top_up(&self.ctx.store);
    }

    /// The manifest at `key` loaded ahead, if it was.
    async fn loaded(&self, key: &ManifestKey) -> Result<Option<Loaded>> {
        let task = self
            .ahead
            .lock()
            .expect("not poisoned")
            .take(&key.prefix(), &self.ctx.store);
        match task {
            None => Ok(None),
            Some(t) => t
                .await
                .map_err(|e| Error::Internal(format!("loading {} ahead: {e}", key.prefix())))?
                .map(Some),
        }
    }

    /// `job`'s manifest of (scope, symbol), as recorded.
    pub async fn upstream(&self, job: JobName, scope: &str, symbol: &str) -> Result<Manifest> {
        let key = ManifestKey::new(job, scope, symbol);
        if let Some(Loaded::Upstream(m)) = self.loaded(&key).await? {
            return Ok(m);
        }
        Manifest::load(&self.ctx.store, &key).await
    }

    /// This job's manifest of (scope, symbol): the writer units record into, and what it holds.
    pub async fn manifest(
        &mut self,
        scope: &str,
        symbol: &str,
    ) -> Result<(Arc<ManifestWriter>, Manifest)> {
        let key = self.stamp.key(scope, symbol);
        let (w, m) = match self.loaded(&key).await? {
            Some(Loaded::Own(wm)) => *wm,
            _ => ManifestWriter::open(&self.ctx.store, &key).await?,
        };
        let w = w.deferred(RECORD_WINDOW);
        self.writers.push(w.clone());
        Ok((w, m))
    }

    /// Whether the unit `prev` records is up to date for `inputs` — done from those inputs by
    /// this job version with these parameters, and no `--force` — counting it as skipped if so.
    pub fn is_current(&mut self, prev: Option<&Entry>, inputs: &BTreeMap<String, String>) -> bool {
        self.is_current_with(prev, |p| &p.inputs == inputs)
    }

    /// [`Planner::is_current`] for a job whose inputs are not compared as a whole: recorded done
    /// by this version with these parameters, no `--force`, and `inputs_match`.
    pub fn is_current_with(
        &mut self,
        prev: Option<&Entry>,
        inputs_match: impl FnOnce(&Entry) -> bool,
    ) -> bool {
        let current = !self.common.force
            && prev.is_some_and(|p| self.stamp.recorded_alike(p) && inputs_match(p));
        if current {
            self.tally.skip();
        }
        current
    }

    /// A unit the plan found up to date by its own test; `line` is its dry-run line.
    pub fn skip(&mut self, line: String) {
        self.tally.skip();
        self.notes.push(line);
    }

    /// A unit recorded missing upstream and not due to be asked again.
    pub fn known_missing(&mut self, key: String, line: String) {
        self.tally.miss(key);
        self.notes.push(line);
    }
}

/// Run `job` over the context's store: plan, print the plan (`--dry-run`) or execute it, and
/// build the report.
pub async fn run<J: Job>(job: J, ctx: &Context) -> Result<RunReport> {
    let t0 = Instant::now();
    let common = job.common();
    let header = RunHeader {
        job: J::NAME.as_str(),
        job_version: J::VERSION,
        store: common.store.clone(),
        started_at: ctx.clock.now(),
        params: serde_json::to_value(&job).unwrap_or_default(),
    };
    let stamp = Stamp::new(J::NAME, J::VERSION, job.params_hash(), ctx);
    let mut planner = Planner::new(ctx, common, stamp.clone());
    let units = job.plan(&mut planner).await?;
    let Planner {
        mut tally,
        notes,
        symbols,
        writers,
        ..
    } = planner;
    if common.dry_run {
        for line in notes
            .iter()
            .cloned()
            .chain(units.iter().map(|u| job.dry_run_line(u)))
        {
            println!("{line}");
        }
        let details = job.dry_run(ctx, &units).await?;
        let not_run = units.iter().map(|u| J::members(u).len() as u64).sum();
        return Ok(header.dry_run(ctx, tally, not_run, details));
    }
    tracing::info!(
        units = units.len(),
        up_to_date = tally.counts.skipped,
        concurrency = job.concurrency(),
        "plan ready"
    );

    let concurrency = job.concurrency().max(1);
    let job = Arc::new(job);
    let mut totals = J::Totals::default();
    let progress = crate::progress::Progress::start(J::NAME.as_str(), J::UNITS, units.len() as u64);
    let mut queue: VecDeque<J::Unit> = units.into();
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    let mut tasks: JoinSet<(String, Result<J::Done>)> = JoinSet::new();
    loop {
        while tasks.len() < concurrency && !ctx.cancel.is_cancelled() {
            let Some(u) = queue.pop_front() else { break };
            let key = J::unit_key(&u);
            members.insert(key.clone(), J::members(&u));
            let work = J::execute(job.clone(), ctx.clone(), stamp.clone(), u);
            tasks.spawn(async move { (key, work.await) });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (key, r) = joined.map_err(|e| Error::Internal(format!("a unit task panicked: {e}")))?;
        progress.inc(1);
        let names = members.remove(&key).unwrap_or_else(|| vec![key.clone()]);
        let n = names.len() as u64;
        match r {
            Ok(done) => match job.absorb(&mut totals, &key, done) {
                Finished::Done => tally.counts.done += n,
                Finished::UpToDate => tally.counts.skipped += n,
                Finished::Missing => names.into_iter().for_each(|m| tally.miss(m)),
                Finished::Expands(more) => {
                    progress.inc_length(more.len() as u64);
                    queue.extend(more);
                }
            },
            Err(Error::Interrupted) => tally.counts.not_run += n,
            Err(e) => {
                job.failed(&mut totals, &key);
                let reason = e.to_string();
                for m in names {
                    tally.fail(m, reason.clone());
                }
            }
        }
        let bytes = job.bytes(&totals);
        if bytes > 0 {
            progress.set_bytes(bytes);
        }
    }
    drop(progress);
    // Units never started because the run was cancelled.
    tally.counts.not_run += queue
        .iter()
        .map(|u| J::members(u).len() as u64)
        .sum::<u64>();
    let bytes = job.bytes(&totals);
    let mut end = End {
        tally,
        seconds: t0.elapsed().as_secs_f64().max(1e-9),
        symbols,
    };
    // Every unit's entry in the store before the run reports (and before `finish`, which may
    // fail): what was recorded is never lost to an error after it.
    flush(&writers).await?;
    let details = job.finish(ctx, totals, &mut end).await?;
    compact(writers).await;
    // Nothing staged outlives its run: a unit that failed mid-way left its part here.
    if let Err(e) = crate::hygiene::clear_staging(&ctx.store, &ctx.run_id).await {
        tracing::warn!(error = %e, "removing this run's staging objects");
    }
    let mut tally = end.tally;
    let outcome = tally.outcome(ctx.cancel.is_cancelled());
    Ok(header.report(ctx, outcome, tally, bytes, details))
}

/// Write the entries the run's manifests hold back ([`ManifestWriter::deferred`]).
async fn flush(writers: &[Arc<ManifestWriter>]) -> Result<()> {
    use futures::StreamExt;
    let mut done = futures::stream::iter(writers)
        .map(|w| w.flush())
        .buffer_unordered(8);
    let mut first = None;
    while let Some(r) = done.next().await {
        if let Err(e) = r {
            first = first.or(Some(e));
        }
    }
    first.map_or(Ok(()), Err)
}

/// Fold each manifest the run wrote into one object, so the next load (this job's next run, a
/// downstream job's plan) reads one checkpoint instead of a delta per unit. A failure costs only
/// speed: it is logged, and the log stays as it was.
async fn compact(writers: Vec<Arc<ManifestWriter>>) {
    use futures::StreamExt;
    let mut done = futures::stream::iter(writers)
        .map(|w| async move { w.compact().await })
        .buffer_unordered(8);
    while let Some(r) = done.next().await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "compacting a manifest");
        }
    }
}

/// A job binary's `main`: parse nothing more, build the job from the common arguments (`make`
/// validates the rest and may return a usage error), open the store, install the signal
/// handlers, run the job through the harness and exit with the documented code.
pub fn main<J, F>(common: CommonArgs, make: F) -> ExitCode
where
    J: Job,
    F: FnOnce(CommonSpec) -> std::result::Result<J, crate::jobmain::BoxError>,
{
    let output = common.output();
    crate::jobmain::main(output, J::NAME.as_str(), async move {
        let clock = Clock::from_env()?;
        let spec = common.into_spec(clock.now().date_naive())?;
        let job = make(spec)?;
        let common = job.common();
        let store = Store::open(&common.store)?;
        store.probe(&common.store).await?;
        let ctx = Context::new(store, common.run_id.clone(), clock);
        ctx.install_signal_handlers();
        let guard = if common.dry_run {
            None
        } else {
            Some(Guard::take(&job, &ctx).await?)
        };
        let report = run(job, &ctx).await;
        if let Some(g) = guard {
            // Held until the report is written: a run without its liveness lease would have
            // its staging folder swept by another job mid-write.
            match &report {
                Ok(_) => ctx.at_exit(g.release()),
                Err(_) => g.release().await,
            }
        }
        Ok((ctx, report?))
    })
}

/// What a job binary holds while it writes: its run's liveness lease and temp folder, and the
/// lease of its (job, market, datasets, shard). Taking it sweeps the leftovers of dead runs.
struct Guard {
    run: crate::lease::Lease,
    job: crate::lease::Lease,
}

impl Guard {
    async fn take<J: Job>(job: &J, ctx: &Context) -> Result<Guard> {
        use crate::lease::{Holder, Lease};
        let policy = job.common().lease;
        let holder = Holder::me(&ctx.run_id, J::NAME.as_str());
        let system_temp = std::env::temp_dir();
        let base = job.temp_base().unwrap_or_else(|| system_temp.clone());
        crate::hygiene::init_temp(&base, &ctx.run_id)?;
        // A lease that is lost (it lapsed, another writer took it) stops the run.
        let lost = tokio_util::sync::CancellationToken::new();
        {
            let (lost, cancel, signal) = (lost.clone(), ctx.cancel.clone(), ctx.signal.clone());
            tokio::spawn(async move {
                lost.cancelled().await;
                signal.store(
                    crate::error::exit::LOCKED,
                    std::sync::atomic::Ordering::SeqCst,
                );
                cancel.cancel();
            });
        }
        let run = Lease::acquire_run(&ctx.store, &holder, policy.ttl, lost.clone()).await?;
        let key = job.lease_key();
        let job_lease = match Lease::acquire(&ctx.store, &key, &holder, policy, lost).await {
            Ok(l) => l,
            Err(e) => {
                run.release().await;
                crate::hygiene::remove_temp();
                return Err(e);
            }
        };
        let mut bases = vec![system_temp];
        if base != bases[0] {
            bases.push(base);
        }
        crate::hygiene::sweep(&ctx.store, &ctx.run_id, &bases).await?;
        Ok(Guard {
            run,
            job: job_lease,
        })
    }

    async fn release(self) {
        self.job.release().await;
        crate::hygiene::remove_temp();
        self.run.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{LogFormat, SymbolSelection};
    use crate::paths::Market;
    use crate::plan::DateRange;
    use crate::report::Outcome;

    /// A job of version `V` whose units are `a` and `b`, each recorded with an input that does
    /// not change, so only the version, the parameter and `--force` can make one out of date.
    #[derive(Serialize)]
    struct Toy<const V: u8> {
        #[serde(skip)]
        common: CommonSpec,
        param: u32,
    }

    impl<const V: u8> Job for Toy<V> {
        const NAME: JobName = JobName::CONVERT;
        const VERSION: &'static str = if V == 1 { "1" } else { "2" };
        const UNITS: &'static str = "units";
        type Unit = (String, Arc<ManifestWriter>);
        type Done = ();
        type Totals = u64;

        fn common(&self) -> &CommonSpec {
            &self.common
        }

        fn params_hash(&self) -> String {
            crate::manifest::params_hash(&self.param)
        }

        async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<Self::Unit>> {
            let (writer, mine) = p.manifest("scope", "SYM").await?;
            let mut units = Vec::new();
            for u in ["a", "b"] {
                if !p.is_current(mine.get(u), &inputs()) {
                    units.push((u.to_string(), writer.clone()));
                }
            }
            Ok(units)
        }

        fn unit_key(u: &Self::Unit) -> String {
            u.0.clone()
        }

        fn dry_run_line(&self, u: &Self::Unit) -> String {
            format!("toy {}", u.0)
        }

        async fn execute(_: Arc<Self>, _: Context, stamp: Stamp, u: Self::Unit) -> Result<()> {
            let e = stamp.entry(u.0, UnitStatus::Done, inputs(), Vec::new());
            u.1.record(e).await
        }

        fn absorb(&self, t: &mut u64, _: &str, _: ()) -> Finished<Self::Unit> {
            *t += 1;
            Finished::Done
        }

        fn bytes(&self, _: &u64) -> u64 {
            0
        }

        async fn finish(&self, _: &Context, t: u64, _: &mut End) -> Result<serde_json::Value> {
            Ok(serde_json::json!({ "ran": t }))
        }
    }

    fn inputs() -> BTreeMap<String, String> {
        [("in".to_string(), "sha".to_string())].into()
    }

    fn common(force: bool, dry_run: bool) -> CommonSpec {
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        CommonSpec {
            store: "memory://".into(),
            market: Market::Um,
            datasets: Vec::new(),
            symbols: SymbolSelection::All,
            select: Default::default(),
            range: DateRange::new(day, day).unwrap(),
            shard: (0, 1),
            concurrency: 2,
            force,
            dry_run,
            log_format: LogFormat::Json,
            run_id: None,
            lease: Default::default(),
        }
    }

    /// (done, skipped) of a run.
    async fn counts<J: Job>(job: J, ctx: &Context) -> (u64, u64) {
        let r = run(job, ctx).await.unwrap();
        (r.counts.done, r.counts.skipped)
    }

    #[tokio::test]
    async fn a_new_version_a_new_parameter_or_force_make_units_out_of_date() {
        let store = Store::open("memory://").unwrap();
        let ctx = Context::new(store, Some("r".into()), Clock::System);
        let v1 = |param| Toy::<1> {
            common: common(false, false),
            param,
        };
        let v2 = |param, force| Toy::<2> {
            common: common(force, false),
            param,
        };
        assert_eq!(counts(v1(1), &ctx).await, (2, 0), "first run");
        assert_eq!(counts(v1(1), &ctx).await, (0, 2), "nothing changed");
        assert_eq!(counts(v2(1, false), &ctx).await, (2, 0), "new job version");
        assert_eq!(counts(v2(1, false), &ctx).await, (0, 2));
        assert_eq!(counts(v2(7, false), &ctx).await, (2, 0), "new parameter");
        assert_eq!(counts(v2(7, true), &ctx).await, (2, 0), "--force");
        assert_eq!(counts(v2(7, false), &ctx).await, (0, 2));

        // A dry run plans the out-of-date units and runs none.
        let dry = Toy::<1> {
            common: common(false, true),
            param: 7,
        };
        let r = run(dry, &ctx).await.unwrap();
        assert_eq!(r.outcome, Outcome::DryRun);
        assert_eq!((r.counts.done, r.counts.not_run), (0, 2));
        assert_eq!(
            counts(v2(7, false), &ctx).await,
            (0, 2),
            "the dry run wrote nothing"
        );
    }

    /// Manifests loaded ahead are those a direct load gives, whichever symbols the plan skips
    /// or asks only part of, and the window never holds more than [`LOAD_AHEAD`] symbols.
    #[tokio::test]
    async fn manifests_loaded_ahead_are_the_ones_a_direct_load_gives() {
        let store = Store::open("memory://").unwrap();
        let ctx = Context::new(store.clone(), Some("r".into()), Clock::System);
        let syms: Vec<String> = (0..40).map(|i| format!("S{i:02}")).collect();
        let stamp = Stamp::new(JobName::CONVERT, "1", "p".into(), &ctx);
        for (i, s) in syms.iter().enumerate() {
            let (up, _) =
                ManifestWriter::open(&store, &ManifestKey::new(JobName::DOWNLOAD, "sc", s))
                    .await
                    .unwrap();
            let e = stamp.entry(format!("up-{s}"), UnitStatus::Done, inputs(), Vec::new());
            up.record(e).await.unwrap();
            if i % 2 == 0 {
                let (own, _) = ManifestWriter::open(&store, &stamp.key("sc", s.as_str()))
                    .await
                    .unwrap();
                let e = stamp.entry(format!("own-{s}"), UnitStatus::Done, inputs(), Vec::new());
                own.record(e).await.unwrap();
            }
        }
        let common = common(false, false);
        let mut p = Planner::new(&ctx, &common, stamp.clone());
        p.load_ahead(&[JobName::DOWNLOAD], "sc", &syms);
        assert_eq!(p.ahead.lock().unwrap().window.len(), LOAD_AHEAD);
        for (i, s) in syms.iter().enumerate() {
            assert!(p.ahead.lock().unwrap().window.len() <= LOAD_AHEAD);
            if i % 7 == 3 {
                continue; // a symbol the plan passes over
            }
            let up = p.upstream(JobName::DOWNLOAD, "sc", s).await.unwrap();
            assert_eq!(up.len(), 1);
            assert!(up.get(&format!("up-{s}")).is_some(), "{s}");
            if i % 5 == 1 {
                continue; // upstream only
            }
            let (_, mine) = p.manifest("sc", s).await.unwrap();
            assert_eq!(mine.len(), usize::from(i % 2 == 0), "{s}");
            assert_eq!(mine.get(&format!("own-{s}")).is_some(), i % 2 == 0, "{s}");
        }
        // A manifest nobody announced loads directly.
        let other = p.upstream(JobName::DOWNLOAD, "sc", "S00").await.unwrap();
        assert_eq!(other.len(), 1);
        assert!(p.ahead.lock().unwrap().window.is_empty());
    }

    /// Ten units that each take a moment, count how many run at once, and fail on unit 4.
    #[derive(Serialize)]
    struct Busy {
        #[serde(skip)]
        common: CommonSpec,
        #[serde(skip)]
        running: Arc<std::sync::atomic::AtomicUsize>,
        #[serde(skip)]
        peak: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Job for Busy {
        const NAME: JobName = JobName::EXTRACT;
        const VERSION: &'static str = "1";
        const UNITS: &'static str = "units";
        type Unit = u32;
        type Done = ();
        type Totals = ();

        fn common(&self) -> &CommonSpec {
            &self.common
        }

        fn params_hash(&self) -> String {
            String::new()
        }

        async fn plan(&self, _: &mut Planner<'_>) -> Result<Vec<u32>> {
            Ok((0..10).collect())
        }

        fn unit_key(u: &u32) -> String {
            format!("u{u}")
        }

        fn dry_run_line(&self, u: &u32) -> String {
            format!("busy {u}")
        }

        async fn execute(job: Arc<Self>, _: Context, _: Stamp, u: u32) -> Result<()> {
            use std::sync::atomic::Ordering;
            let n = job.running.fetch_add(1, Ordering::SeqCst) + 1;
            job.peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            job.running.fetch_sub(1, Ordering::SeqCst);
            if u == 4 {
                return Err(Error::bad_data("u4.parquet", "a bad row"));
            }
            Ok(())
        }

        fn absorb(&self, _: &mut (), _: &str, _: ()) -> Finished<u32> {
            Finished::Done
        }

        fn bytes(&self, _: &()) -> u64 {
            0
        }

        async fn finish(&self, _: &Context, _: (), _: &mut End) -> Result<serde_json::Value> {
            Ok(serde_json::Value::Null)
        }
    }

    fn busy(concurrency: usize) -> Busy {
        let mut common = common(false, false);
        common.concurrency = concurrency;
        Busy {
            common,
            running: Default::default(),
            peak: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn units_run_bounded_and_a_failure_is_named_in_the_report() {
        let ctx = Context::new(Store::open("memory://").unwrap(), None, Clock::System);
        let job = busy(3);
        let peak = job.peak.clone();
        let r = run(job, &ctx).await.unwrap();
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=3).contains(&peak), "{peak} units at once");
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            (r.counts.done, r.counts.failed, r.counts.planned),
            (9, 1, 10)
        );
        assert_eq!(r.failures[0].unit, "u4");
        assert!(
            r.failures[0].reason.contains("u4.parquet: a bad row"),
            "{r:?}"
        );
        assert_eq!(r.exit_code(), crate::error::exit::FAILED_UNITS);
    }

    #[tokio::test]
    async fn nothing_starts_after_cancel() {
        let ctx = Context::new(Store::open("memory://").unwrap(), None, Clock::System);
        ctx.cancel.cancel();
        let r = run(busy(2), &ctx).await.unwrap();
        assert_eq!(r.outcome, Outcome::Interrupted);
        assert_eq!((r.counts.done, r.counts.not_run), (0, 10));
    }

    #[test]
    fn recorded_alike_needs_done_the_same_version_and_parameters() {
        let ctx = Context::new(Store::open("memory://").unwrap(), None, Clock::System);
        let stamp = Stamp::new(JobName::AGGREGATE, "2", "p".into(), &ctx);
        let e = stamp.entry("u", UnitStatus::Done, inputs(), Vec::new());
        assert!(stamp.recorded_alike(&e));
        let older = Stamp::new(JobName::AGGREGATE, "1", "p".into(), &ctx);
        assert!(!older.recorded_alike(&e));
        let other = Stamp::new(JobName::AGGREGATE, "2", "q".into(), &ctx);
        assert!(!other.recorded_alike(&e));
        let failed = stamp.entry("u", UnitStatus::Failed, inputs(), Vec::new());
        assert!(!stamp.recorded_alike(&failed));
    }

    #[test]
    fn job_names_parse_back() {
        for j in JobName::ALL {
            assert_eq!(JobName::parse(j.as_str()), Some(j));
        }
        assert_eq!(JobName::parse("nope"), None);
    }
}
