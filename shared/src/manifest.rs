//! Manifests: what each job has done, per job, dataset and symbol, so reruns skip finished units
//! and upstream changes recompute exactly what they affect.
//!
//! A manifest is a log of immutable objects under `_manifest/<job>/<scope>/<symbol>/`:
//! - deltas `<version:020>.json`, each created with a conditional put (`PutMode::Create`); a
//!   writer that loses the race for a version re-lists and takes the next one, so parallel writers
//!   never overwrite each other — this works on every backend, the local folder included, which
//!   has no compare-and-swap on existing objects;
//! - checkpoints `<version:020>.checkpoint.json` holding the merged state and the exact list of
//!   delta versions they cover, written every [`CHECKPOINT_EVERY`] deltas, or sooner once the
//!   deltas since the last one outweigh it (and [`CHECKPOINT_BYTES`]): a job whose every run
//!   rewrites a large entry (a year's day fingerprints) would otherwise make each load parse up
//!   to 63 copies of it. Deltas covered by the previous checkpoint are then deleted, which keeps
//!   listings short without ever dropping a delta that a checkpoint has not absorbed.
//!
//! Entries merge last-writer-wins per unit on `(recorded_at, version)`, which makes the merge
//! independent of the order in which objects are read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex as StdMutex;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::job::JobName;
use crate::paths::manifest_prefix;
use crate::store::Store;

/// Deltas between checkpoints, at most.
pub const CHECKPOINT_EVERY: usize = 64;

/// Bytes of deltas since the last checkpoint that call for a new one when they also outweigh
/// it: a load then parses at most about twice the state's size, or this.
pub const CHECKPOINT_BYTES: u64 = 64 << 10;

/// What happened to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    /// Finished; its outputs are in place.
    Done,
    /// The input does not exist upstream (e.g. the archive answered 404).
    Missing,
    /// Failed; `detail` says why. A rerun tries again.
    Failed,
}

/// One output object of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// First and last row time (µs since the epoch), for outputs with a time column: lets a
    /// downstream job see which periods a file reaches into without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_span: Option<[i64; 2]>,
}

/// One manifest entry: a unit, what it was computed from, and what it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The unit key (an archive key, a symbol-day, …).
    pub unit: String,
    pub status: UnitStatus,
    /// Input fingerprints by name (sha256 of upstream objects or CHECKSUMs).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    pub job_version: String,
    pub params_hash: String,
    #[serde(default)]
    pub outputs: Vec<Output>,
    pub recorded_at: DateTime<Utc>,
    pub run_id: String,
    /// Why it failed or is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Days whose input held duplicated rows, with the number of rows dropped (`optimize`), so
    /// `validate` can name them without reading the inputs again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub duplicate_days: BTreeMap<NaiveDate, u64>,
    /// For a day filled from the REST API (`tail`): the interval its partition holds, and when
    /// it was fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<RestCoverage>,
}

/// The part of a day a REST partition holds: rows whose time is in `[from_us, until_us)`, all
/// the API had when fetched (only closed candles and periods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestCoverage {
    pub from_us: i64,
    pub until_us: i64,
    pub fetched_at: DateTime<Utc>,
}

impl Entry {
    /// Whether this entry says the unit is done with exactly these inputs, version and params.
    pub fn is_done_with(
        &self,
        inputs: &BTreeMap<String, String>,
        job_version: &str,
        params_hash: &str,
    ) -> bool {
        self.status == UnitStatus::Done
            && &self.inputs == inputs
            && self.job_version == job_version
            && self.params_hash == params_hash
    }
}

/// Identifies one manifest log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestKey {
    pub job: String,
    pub scope: String,
    pub symbol: String,
}

impl ManifestKey {
    pub fn new(job: JobName, scope: impl Into<String>, symbol: impl Into<String>) -> Self {
        ManifestKey {
            job: job.into(),
            scope: scope.into(),
            symbol: symbol.into(),
        }
    }

    pub fn prefix(&self) -> String {
        manifest_prefix(&self.job, &self.scope, &self.symbol)
    }
}

/// The merged state of a manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    entries: BTreeMap<String, (Entry, u64)>,
}

impl Manifest {
    pub fn get(&self, unit: &str) -> Option<&Entry> {
        self.entries.get(unit).map(|(e, _)| e)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|(e, _)| e)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Merge one entry written at `version`: last writer wins on `(recorded_at, version)`.
    fn merge(&mut self, e: Entry, version: u64) {
        match self.entries.get(&e.unit) {
            Some((old, v)) if (old.recorded_at, *v) > (e.recorded_at, version) => {}
            _ => {
                self.entries.insert(e.unit.clone(), (e, version));
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DeltaDoc {
    entries: Vec<Entry>,
}

/// A [`DeltaDoc`] to write, borrowing its entries.
#[derive(Serialize)]
struct DeltaRef<'a> {
    entries: &'a [Entry],
}

#[derive(Serialize, Deserialize)]
struct CheckpointDoc {
    version: u64,
    covers: Vec<u64>,
    entries: Vec<(Entry, u64)>,
}

enum Obj {
    Delta(u64),
    Checkpoint(u64),
}

fn classify(prefix: &str, path: &str) -> Option<Obj> {
    let name = path.strip_prefix(prefix)?;
    if let Some(v) = name.strip_suffix(".checkpoint.json") {
        return v.parse().ok().map(Obj::Checkpoint);
    }
    name.strip_suffix(".json")?.parse().ok().map(Obj::Delta)
}

fn delta_path(prefix: &str, v: u64) -> String {
    format!("{prefix}{v:020}.json")
}

fn checkpoint_path(prefix: &str, v: u64) -> String {
    format!("{prefix}{v:020}.checkpoint.json")
}

/// What a load saw: enough for a writer to continue the log.
#[derive(Debug, Clone, Default)]
struct LogView {
    max_version: u64,
    /// Latest checkpoint and its coverage.
    checkpoint: Option<(u64, BTreeSet<u64>)>,
    /// Deltas present and not covered by the latest checkpoint.
    uncovered: BTreeSet<u64>,
    /// Checkpoints older than the latest.
    older_checkpoints: Vec<u64>,
    /// Deltas present that the latest checkpoint covers (redundant, kept for readers).
    covered_present: usize,
    /// Size of the latest checkpoint, and of the deltas it does not cover.
    checkpoint_bytes: u64,
    uncovered_bytes: u64,
}

impl LogView {
    /// Whether the deltas since the last checkpoint call for a new one.
    fn wants_checkpoint(&self) -> bool {
        self.uncovered.len() >= CHECKPOINT_EVERY
            || self.uncovered_bytes >= CHECKPOINT_BYTES.max(self.checkpoint_bytes)
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// A load in progress: what the listing showed, then the newest checkpoint and the deltas it
/// does not cover merged in. Shared by the remote and the local-folder paths.
struct Loading {
    manifest: Manifest,
    view: LogView,
    deltas: BTreeSet<u64>,
    checkpoints: BTreeSet<u64>,
    /// An object listed was gone when read (a writer compacted meanwhile): load again.
    vanished: bool,
}

/// Loads of one manifest before giving up on a log that keeps changing under the reader.
const LOAD_ATTEMPTS: usize = 12;

impl Loading {
    fn listed<'a>(prefix: &str, paths: impl Iterator<Item = &'a str>) -> Loading {
        let (mut deltas, mut checkpoints) = (BTreeSet::new(), BTreeSet::new());
        for path in paths {
            match classify(prefix, path) {
                Some(Obj::Delta(v)) => {
                    deltas.insert(v);
                }
                Some(Obj::Checkpoint(v)) => {
                    checkpoints.insert(v);
                }
                None => {}
            }
        }
        let max_version = deltas
            .iter()
            .chain(&checkpoints)
            .copied()
            .max()
            .unwrap_or(0);
        Loading {
            manifest: Manifest::default(),
            view: LogView {
                max_version,
                ..Default::default()
            },
            deltas,
            checkpoints,
            vanished: false,
        }
    }

    /// Checkpoint versions, newest first: the first readable one is used (an older one
    /// survives a concurrent cleanup race).
    fn checkpoints_newest_first(&self) -> Vec<u64> {
        self.checkpoints.iter().rev().copied().collect()
    }

    /// Take checkpoint `cv` (`bytes` long).
    fn use_checkpoint(&mut self, cv: u64, doc: CheckpointDoc, bytes: u64) {
        for (e, v) in doc.entries {
            self.manifest.merge(e, v);
        }
        self.view.checkpoint = Some((cv, doc.covers.into_iter().collect()));
        self.view.checkpoint_bytes = bytes;
    }

    /// The deltas the checkpoint in use does not cover, in version order.
    fn uncovered(&mut self) -> Vec<u64> {
        let used = self.view.checkpoint.as_ref().map(|(v, _)| *v);
        self.view.older_checkpoints = self
            .checkpoints
            .iter()
            .copied()
            .filter(|c| Some(*c) != used)
            .collect();
        let covered = self.view.checkpoint.as_ref().map(|(_, c)| c);
        self.view.covered_present =
            covered.map_or(0, |c| self.deltas.iter().filter(|v| c.contains(v)).count());
        self.deltas
            .iter()
            .copied()
            .filter(|v| covered.is_none_or(|c| !c.contains(v)))
            .collect()
    }

    /// Merge delta `v` (`None`: deleted between list and get, so covered by a newer
    /// checkpoint whose entries are newer; a reload sees them there).
    fn add_delta(&mut self, v: u64, doc: Option<(DeltaDoc, u64)>) {
        match doc {
            Some((doc, bytes)) => {
                for e in doc.entries {
                    self.manifest.merge(e, v);
                }
                self.view.uncovered.insert(v);
                self.view.uncovered_bytes += bytes;
            }
            None => self.vanished = true,
        }
    }
}

/// Objects read by earlier attempts of one load, by path. Log objects are immutable once
/// written (each is created with a conditional put), so a load done again after a concurrent
/// compaction fetches only what appeared since: its window for a new race is one listing and a
/// checkpoint, not the whole log.
type Seen = HashMap<String, Bytes>;

/// Load a manifest; a load that saw an object vanish (a writer compacting the log between the
/// listing and the read) is done again, so no entry is ever missed.
async fn load_view(store: &Store, prefix: &str) -> Result<(Manifest, LogView)> {
    let mut seen = Seen::new();
    for attempt in 0..LOAD_ATTEMPTS {
        let (l, vanished, s) = load_view_once(store, prefix, seen).await?;
        if !vanished {
            return Ok(l);
        }
        seen = s;
        // A compaction deletes what its checkpoint covers one object at a time: a short wait
        // lets it finish instead of listing into the middle of it again.
        tokio::time::sleep(std::time::Duration::from_millis(1 << attempt.min(6))).await;
    }
    Err(Error::Manifest {
        path: prefix.to_string(),
        reason: format!("its objects kept vanishing while read ({LOAD_ATTEMPTS} loads)"),
    })
}

/// The object at `path`, from `seen` or the store (and then kept in `seen`).
async fn read_seen(store: &Store, path: &str, seen: &mut Seen) -> Result<Option<Bytes>> {
    if let Some(b) = seen.get(path) {
        return Ok(Some(b.clone()));
    }
    let got = store.get_opt(path).await?;
    if let Some(b) = &got {
        seen.insert(path.to_string(), b.clone());
    }
    Ok(got)
}

async fn load_view_once(
    store: &Store,
    prefix: &str,
    mut seen: Seen,
) -> Result<((Manifest, LogView), bool, Seen)> {
    if let Some(dir) = store.local_path(prefix) {
        let owned = prefix.to_string();
        return tokio::task::spawn_blocking(move || load_view_local(&dir, &owned, seen))
            .await
            .map_err(|e| Error::Manifest {
                path: prefix.to_string(),
                reason: format!("loading: {e}"),
            })?;
    }
    let listing = store.list(prefix).await?;
    let mut l = Loading::listed(prefix, listing.iter().map(|(p, _)| p.as_str()));
    for cv in l.checkpoints_newest_first() {
        let path = checkpoint_path(prefix, cv);
        if let Some(b) = read_seen(store, &path, &mut seen).await? {
            l.use_checkpoint(cv, parse_json(&path, &b)?, b.len() as u64);
            break;
        }
        l.vanished = true;
    }
    // The uncovered deltas not read before are fetched 16 at a time (each is a round trip to
    // the store) and merged in version order; what was fetched joins `seen` once all are in.
    use futures::StreamExt;
    let mut fetched = Vec::new();
    {
        let seen = &seen;
        let mut docs = futures::stream::iter(l.uncovered())
            .map(|v| async move {
                let path = delta_path(prefix, v);
                match seen.get(&path) {
                    Some(b) => Ok::<_, Error>((v, path, Some(b.clone()), true)),
                    None => Ok((v, path.clone(), store.get_opt(&path).await?, false)),
                }
            })
            .buffered(16);
        while let Some(got) = docs.next().await {
            let (v, path, bytes, known) = got?;
            let doc = bytes
                .as_ref()
                .map(|b| parse_json::<DeltaDoc>(&path, b).map(|d| (d, b.len() as u64)))
                .transpose()?;
            l.add_delta(v, doc);
            if let (Some(b), false) = (bytes, known) {
                fetched.push((path, b));
            }
        }
    }
    seen.extend(fetched);
    Ok(((l.manifest, l.view), l.vanished, seen))
}

/// [`load_view`] on a local folder: the listing and every read on one blocking thread, instead
/// of a blocking-pool hop per object (a manifest is a few small files; the hops were most of
/// the time a job spent planning).
fn load_view_local(
    dir: &std::path::Path,
    prefix: &str,
    mut seen: Seen,
) -> Result<((Manifest, LogView), bool, Seen)> {
    let io = |path: &str, e: std::io::Error| Error::Io {
        context: format!("reading manifest {path}"),
        source: e,
    };
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|d| d.ok())
            .filter(|d| d.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|d| d.file_name().into_string().ok())
            .map(|n| format!("{prefix}{n}"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(prefix, e)),
    };
    let mut read = |path: &str| -> Result<Option<Bytes>> {
        if let Some(b) = seen.get(path) {
            return Ok(Some(b.clone()));
        }
        let file = dir.join(path.strip_prefix(prefix).unwrap_or(path));
        match std::fs::read(file) {
            Ok(b) => {
                let b = Bytes::from(b);
                seen.insert(path.to_string(), b.clone());
                Ok(Some(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path, e)),
        }
    };
    let mut l = Loading::listed(prefix, names.iter().map(String::as_str));
    for cv in l.checkpoints_newest_first() {
        let path = checkpoint_path(prefix, cv);
        if let Some(b) = read(&path)? {
            l.use_checkpoint(cv, parse_json(&path, &b)?, b.len() as u64);
            break;
        }
        l.vanished = true;
    }
    for v in l.uncovered() {
        let path = delta_path(prefix, v);
        let doc = read(&path)?
            .map(|b| parse_json::<DeltaDoc>(&path, &b).map(|d| (d, b.len() as u64)))
            .transpose()?;
        l.add_delta(v, doc);
    }
    Ok(((l.manifest, l.view), l.vanished, seen))
}

impl Manifest {
    /// Load the merged state of one manifest.
    pub async fn load(store: &Store, key: &ManifestKey) -> Result<Manifest> {
        Ok(load_view(store, &key.prefix()).await?.0)
    }
}

/// Appends entries to one manifest log. Safe to share between tasks: concurrent `record` calls
/// are grouped into one delta object (group commit), and each call returns once its entry is
/// durable in the store.
pub struct ManifestWriter {
    store: Store,
    prefix: String,
    pending: StdMutex<Pending>,
    log: Mutex<LogView>,
    /// Whether this writer recorded anything (only then is there something to compact).
    wrote: std::sync::atomic::AtomicBool,
    /// Group commit ([`ManifestWriter::deferred`]): how long a recorded entry may wait to be
    /// written with the ones after it. `None`: each record is in the store when it returns.
    defer: Option<std::time::Duration>,
}

/// Entries recorded and not yet written, and when the oldest of them was.
#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    since: Option<std::time::Instant>,
}

/// Most entries a deferred writer holds before it writes them.
pub const DEFER_MAX_ENTRIES: usize = 1024;

impl ManifestWriter {
    /// Open a manifest for writing, returning its current state too.
    pub async fn open(store: &Store, key: &ManifestKey) -> Result<(ManifestWriter, Manifest)> {
        let prefix = key.prefix();
        let (m, view) = load_view(store, &prefix).await?;
        Ok((
            ManifestWriter {
                store: store.clone(),
                prefix,
                pending: StdMutex::new(Pending::default()),
                log: Mutex::new(view),
                wrote: Default::default(),
                defer: None,
            },
            m,
        ))
    }

    /// Make this writer commit in groups: a recorded entry is written with those recorded
    /// after it, once the oldest has waited `window` (a background task writes it then if no
    /// record does) or [`DEFER_MAX_ENTRIES`] wait. A run of many small units then writes a
    /// delta a second instead of one per unit — on S3 a PUT each. The owner must call
    /// [`ManifestWriter::flush`] before it ends; a process killed meanwhile loses at most the
    /// last `window` of records, and its next run redoes those units. Call it on a tokio
    /// runtime (the task is spawned there).
    pub fn deferred(self, window: std::time::Duration) -> std::sync::Arc<ManifestWriter> {
        let w = std::sync::Arc::new(ManifestWriter {
            defer: Some(window),
            ..self
        });
        let weak = std::sync::Arc::downgrade(&w);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(window).await;
                let Some(w) = weak.upgrade() else { return };
                if w.due()
                    && let Err(e) = w.flush().await
                {
                    tracing::warn!(manifest = %w.prefix, error = %e, "writing recorded entries; retried at the next record or flush");
                }
            }
        });
        w
    }

    /// Whether the oldest pending entry has waited its window.
    fn due(&self) -> bool {
        let p = self.pending.lock().expect("not poisoned");
        match (p.since, self.defer) {
            (Some(since), Some(window)) => since.elapsed() >= window,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Record one entry. It is in the store when this returns, unless the writer is
    /// [`ManifestWriter::deferred`]: then once its group is written.
    pub async fn record(&self, entry: Entry) -> Result<()> {
        {
            let mut p = self.pending.lock().expect("not poisoned");
            p.entries.push(entry);
            let since = *p.since.get_or_insert_with(std::time::Instant::now);
            if let Some(window) = self.defer
                && since.elapsed() < window
                && p.entries.len() < DEFER_MAX_ENTRIES
            {
                return Ok(());
            }
        }
        self.flush().await
    }

    /// Write every entry recorded and not yet written, as one delta. On failure they stay
    /// pending, for the next flush.
    pub async fn flush(&self) -> Result<()> {
        let mut log = self.log.lock().await;
        let batch = {
            let mut p = self.pending.lock().expect("not poisoned");
            p.since = None;
            std::mem::take(&mut p.entries)
        };
        if batch.is_empty() {
            return Ok(()); // an earlier holder of the lock flushed ours
        }
        match self.write_delta(&mut log, &batch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut p = self.pending.lock().expect("not poisoned");
                let later = std::mem::replace(&mut p.entries, batch);
                p.entries.extend(later);
                p.since.get_or_insert_with(std::time::Instant::now);
                Err(e)
            }
        }
    }

    async fn write_delta(&self, log: &mut LogView, entries: &[Entry]) -> Result<()> {
        let path_for = |v| delta_path(&self.prefix, v);
        let body =
            Bytes::from(
                serde_json::to_vec(&DeltaRef { entries }).map_err(|e| Error::Json {
                    context: format!("serializing a delta of {}", self.prefix),
                    source: e,
                })?,
            );
        let mut v = log.max_version + 1;
        loop {
            if self.store.put_if_absent(&path_for(v), body.clone()).await? {
                break;
            }
            // Another writer took this version: learn the log's end and try after it.
            let (_, fresh) = load_view(&self.store, &self.prefix).await?;
            *log = fresh;
            v = log.max_version + 1;
        }
        self.wrote.store(true, std::sync::atomic::Ordering::Relaxed);
        log.max_version = v;
        log.uncovered.insert(v);
        log.uncovered_bytes += body.len() as u64;
        if log.wants_checkpoint() {
            self.checkpoint(log).await?;
        }
        Ok(())
    }

    /// At the end of a run: fold this run's deltas into one checkpoint and delete every object
    /// it makes redundant (the deltas it covers, the older checkpoints), so the next load reads
    /// one object. A reader that listed a deleted object loads again ([`load_view`]). Nothing
    /// happens when this writer recorded nothing or the log is one checkpoint already.
    pub async fn compact(&self) -> Result<()> {
        self.flush().await?;
        if !self.wrote.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let mut log = self.log.lock().await;
        let (_, view) = load_view(&self.store, &self.prefix).await?;
        if view.uncovered.is_empty()
            && view.older_checkpoints.is_empty()
            && view.covered_present == 0
        {
            return Ok(());
        }
        if !view.uncovered.is_empty() || view.checkpoint.is_none() {
            // It leaves the log view at the new checkpoint, the previous one as the older.
            self.checkpoint(&mut log).await?;
        } else {
            *log = view;
        }
        if let Some((cv, covers)) = &log.checkpoint {
            self.delete_covered(*cv, covers, &log.older_checkpoints)
                .await?;
        }
        log.older_checkpoints.clear();
        log.covered_present = 0;
        Ok(())
    }

    /// Delete what checkpoint `cv` makes redundant: the deltas it `covers` and the checkpoints
    /// among `older` that precede it.
    async fn delete_covered(&self, cv: u64, covers: &BTreeSet<u64>, older: &[u64]) -> Result<()> {
        for v in covers {
            self.store.delete(&delta_path(&self.prefix, *v)).await?;
        }
        for c in older.iter().filter(|c| **c < cv) {
            self.store
                .delete(&checkpoint_path(&self.prefix, *c))
                .await?;
        }
        Ok(())
    }

    /// Write a checkpoint of everything present now, then delete what the previous one covered.
    async fn checkpoint(&self, log: &mut LogView) -> Result<()> {
        let (m, view) = load_view(&self.store, &self.prefix).await?;
        let version = view.max_version;
        let mut covers: BTreeSet<u64> = view.uncovered.clone();
        if let Some((cv, _)) = &view.checkpoint {
            covers.insert(*cv);
        }
        let doc = CheckpointDoc {
            version,
            covers: covers.iter().copied().collect(),
            entries: m.entries.into_values().collect(),
        };
        let body = serde_json::to_vec(&doc).map_err(|e| Error::Json {
            context: format!("serializing a checkpoint of {}", self.prefix),
            source: e,
        })?;
        let checkpoint_bytes = body.len() as u64;
        let path = checkpoint_path(&self.prefix, version);
        // Losing this race means someone else checkpointed the same version: fine either way.
        self.store.put_if_absent(&path, Bytes::from(body)).await?;
        // Cleanup: deltas the previous checkpoint covered, and checkpoints before it.
        if let Some((prev, prev_covers)) = &view.checkpoint {
            self.delete_covered(*prev, prev_covers, &view.older_checkpoints)
                .await?;
        }
        *log = LogView {
            max_version: version,
            checkpoint: Some((version, covers)),
            uncovered: BTreeSet::new(),
            older_checkpoints: view.checkpoint.iter().map(|(v, _)| *v).collect(),
            covered_present: 0,
            checkpoint_bytes,
            uncovered_bytes: 0,
        };
        Ok(())
    }
}

/// The symbols that have a manifest for a job and scope (what an upstream job has produced):
/// how a downstream job resolves `--symbols all` without asking the archive.
pub async fn manifest_symbols(store: &Store, job: JobName, scope: &str) -> Result<Vec<String>> {
    let prefix = format!("_manifest/{job}/{scope}/");
    Ok(store
        .list_dirs(&prefix)
        .await?
        .into_iter()
        .filter_map(|p| p.rsplit('/').next().map(str::to_string))
        .collect())
}

/// The symbols a downstream job works on for one dataset: `all` is every symbol `upstream`'s
/// manifests know; a list is kept as given, with a warning in `tally` for each symbol `upstream`
/// has recorded nothing for (a typo, or a step that has not run), so a run that finds nothing
/// says why instead of reporting everything up to date.
pub async fn select_symbols(
    store: &Store,
    upstreams: &[JobName],
    scope: &str,
    selection: &crate::cli::SymbolSelection,
    filters: &crate::instruments::Selection,
    tally: &mut crate::exec::Tally,
) -> Result<Vec<String>> {
    let mut known: Vec<String> = Vec::new();
    for job in upstreams {
        for s in manifest_symbols(store, *job, scope).await? {
            if !known.contains(&s) {
                known.push(s);
            }
        }
    }
    known.sort();
    let names = upstreams
        .iter()
        .map(|j| format!("`{j}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    match selection {
        crate::cli::SymbolSelection::All => {
            // By name only: the span of `--listed-between` is the archive's, applied where
            // `all` is read from it (`download`); downstream follows what was downloaded.
            let market = scope
                .split('/')
                .next()
                .and_then(crate::paths::Market::from_storage_name);
            if let Some(m) = market {
                known.retain(|s| filters.admits_name(m, s));
            }
            if known.is_empty() {
                tally.warn(format!(
                    "{scope}: {names} has recorded no symbol yet; nothing to do"
                ));
            }
            Ok(known)
        }
        crate::cli::SymbolSelection::List(v) => {
            for sym in v.iter().filter(|s| !known.contains(s)) {
                tally.warn(format!(
                    "{sym}: {names} has recorded nothing for {scope}; nothing to do for it"
                ));
            }
            Ok(v.clone())
        }
    }
}

/// How far a symbol's dataset reaches: the end (µs, exclusive) of the last day `convert` wrote
/// from the archive, and of what `tail` fetched from REST.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    pub archive_until_us: Option<i64>,
    pub rest_until_us: Option<i64>,
    /// The first and last day with rows from either source.
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
}

impl Reach {
    /// Where the data ends for now when REST reaches past the archive: the current day is
    /// being filled, and later times are not yet fetched rather than missing. `None` when the
    /// archive reaches as far (its days are whole).
    pub fn horizon_us(&self) -> Option<i64> {
        let rest = self.rest_until_us?;
        (rest > self.archive_until_us.unwrap_or(i64::MIN)).then_some(rest)
    }

    /// The later of the two ends.
    pub fn until_us(&self) -> Option<i64> {
        match (self.archive_until_us, self.rest_until_us) {
            (Some(a), Some(r)) => Some(a.max(r)),
            (a, r) => a.or(r),
        }
    }
}

/// [`Reach`] of `symbol` in `scope`, from the `convert` and `tail` manifests.
pub async fn reach(store: &Store, scope: &str, symbol: &str) -> Result<Reach> {
    use crate::paths::Partition;
    let mut r = Reach::default();
    let mut day = |d: NaiveDate| {
        r.first_day = Some(r.first_day.map_or(d, |f| f.min(d)));
        r.last_day = Some(r.last_day.map_or(d, |l| l.max(d)));
    };
    let convert = Manifest::load(store, &ManifestKey::new(JobName::CONVERT, scope, symbol)).await?;
    let mut archive_last: Option<NaiveDate> = None;
    for e in convert.entries().filter(|e| e.status == UnitStatus::Done) {
        for o in &e.outputs {
            if let Ok(Partition::Day { date, .. }) = Partition::parse(&o.path)
                && o.rows.unwrap_or(0) > 0
            {
                day(date);
                archive_last = Some(archive_last.map_or(date, |l| l.max(date)));
            }
        }
    }
    let tail = Manifest::load(store, &ManifestKey::new(JobName::TAIL, scope, symbol)).await?;
    let mut rest_until: Option<i64> = None;
    for e in tail.entries().filter(|e| e.status == UnitStatus::Done) {
        let Some(c) = e.rest else { continue };
        rest_until = Some(rest_until.map_or(c.until_us, |u| u.max(c.until_us)));
        if e.outputs.iter().any(|o| o.rows.unwrap_or(0) > 0)
            && let Ok(d) = NaiveDate::parse_from_str(&e.unit, "%Y-%m-%d")
        {
            day(d);
        }
    }
    r.archive_until_us = archive_last.map(|d| crate::time::day_start_us(d) + crate::time::DAY_US);
    r.rest_until_us = rest_until;
    Ok(r)
}

/// A short, stable hash of a job's parameters (anything `Serialize`), for `params_hash`.
pub fn params_hash<T: Serialize>(params: &T) -> String {
    let json = serde_json::to_vec(params).expect("parameters serialize");
    crate::checksum::sha256_hex(&json)[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(unit: &str, run: &str, at: i64) -> Entry {
        Entry {
            unit: unit.into(),
            status: UnitStatus::Done,
            inputs: [("checksum".to_string(), "ab".to_string())].into(),
            job_version: "1".into(),
            params_hash: "p".into(),
            outputs: vec![Output {
                path: format!("raw/{unit}"),
                size: 1,
                sha256: "ab".into(),
                rows: None,
                time_span: None,
            }],
            recorded_at: DateTime::from_timestamp(at, 0).unwrap(),
            run_id: run.into(),
            detail: None,
            duplicate_days: Default::default(),
            rest: None,
        }
    }

    fn key() -> ManifestKey {
        ManifestKey::new(JobName::DOWNLOAD, "futures-um/klines-1m", "BTCUSDT")
    }

    /// The store a test runs on: `"local"` is a folder in `dir`, anything else a store URL.
    fn store_of(url: &str, dir: &std::path::Path) -> Store {
        if url == "local" {
            Store::open(dir.to_str().unwrap()).unwrap()
        } else {
            Store::open(url).unwrap()
        }
    }

    #[tokio::test]
    async fn records_survive_reload_and_last_writer_wins() {
        let store = Store::open("memory://").unwrap();
        let (w, m) = ManifestWriter::open(&store, &key()).await.unwrap();
        assert!(m.is_empty());
        w.record(entry("a", "r1", 10)).await.unwrap();
        w.record(entry("b", "r1", 10)).await.unwrap();
        w.record(entry("a", "r2", 20)).await.unwrap();
        assert_eq!(
            manifest_symbols(&store, JobName::DOWNLOAD, "futures-um/klines-1m")
                .await
                .unwrap(),
            vec!["BTCUSDT"]
        );
        let m = Manifest::load(&store, &key()).await.unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a").unwrap().run_id, "r2");
        assert!(m.get("a").unwrap().is_done_with(
            &[("checksum".to_string(), "ab".to_string())].into(),
            "1",
            "p"
        ));
        assert!(!m.get("a").unwrap().is_done_with(&BTreeMap::new(), "1", "p"));
    }

    #[tokio::test]
    async fn two_writers_on_one_manifest_lose_nothing() {
        // Two writers opened on the same (empty) state race for the same versions.
        for url in ["memory://", "local"] {
            let dir = tempfile::tempdir().unwrap();
            let store = store_of(url, dir.path());
            let (w1, _) = ManifestWriter::open(&store, &key()).await.unwrap();
            let (w2, _) = ManifestWriter::open(&store, &key()).await.unwrap();
            let (w1, w2) = (Arc::new(w1), Arc::new(w2));
            // Each writer records sequentially, so the two race for every version.
            let mut tasks = Vec::new();
            for (k, w) in [w1, w2].into_iter().enumerate() {
                tasks.push(tokio::spawn(async move {
                    for i in 0..75 {
                        w.record(entry(&format!("w{k}-u{i}"), "r", 1))
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let m = Manifest::load(&store, &key()).await.unwrap();
            assert_eq!(m.len(), 150, "{url}");
            // Checkpoints happened and old deltas were cleaned up.
            let objs = store.list(&key().prefix()).await.unwrap();
            assert!(
                objs.iter().any(|(p, _)| p.ends_with(".checkpoint.json")),
                "{url}: {objs:?}"
            );
            assert!(objs.len() < 150, "{url}: {} objects", objs.len());
        }
    }

    /// A deferred writer holds entries back until its window passes (a background task writes
    /// them then), it holds too many, or it is flushed; a failed write keeps them pending.
    #[tokio::test]
    async fn a_deferred_writer_commits_in_groups_and_loses_nothing() {
        let store = Store::open("memory://").unwrap();
        let deltas = |store: Store| async move {
            let objs = store.list(&key().prefix()).await.unwrap();
            objs.iter()
                .filter(|(p, _)| !p.contains("checkpoint"))
                .count()
        };
        let (w, _) = ManifestWriter::open(&store, &key()).await.unwrap();
        let w = w.deferred(std::time::Duration::from_secs(3600));
        for i in 0..10 {
            w.record(entry(&format!("u{i}"), "r", i)).await.unwrap();
        }
        assert!(Manifest::load(&store, &key()).await.unwrap().is_empty());
        w.flush().await.unwrap();
        assert_eq!(Manifest::load(&store, &key()).await.unwrap().len(), 10);
        assert_eq!(deltas(store.clone()).await, 1);
        // A full group is written by the record that fills it.
        for i in 0..DEFER_MAX_ENTRIES {
            w.record(entry(&format!("v{i}"), "r", i as i64))
                .await
                .unwrap();
        }
        assert_eq!(
            Manifest::load(&store, &key()).await.unwrap().len(),
            10 + DEFER_MAX_ENTRIES
        );
        assert_eq!(deltas(store.clone()).await, 2);

        // With a short window, the background task writes what waits, with no further record.
        let store = Store::open("memory://").unwrap();
        let (w, _) = ManifestWriter::open(&store, &key()).await.unwrap();
        let w = w.deferred(std::time::Duration::from_millis(50));
        w.record(entry("a", "r", 1)).await.unwrap();
        w.record(entry("b", "r", 2)).await.unwrap();
        let t0 = std::time::Instant::now();
        while Manifest::load(&store, &key()).await.unwrap().len() < 2 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(deltas(store.clone()).await, 1);
        // Compaction flushes first: nothing recorded is left out of the checkpoint.
        w.record(entry("c", "r", 3)).await.unwrap();
        w.compact().await.unwrap();
        assert_eq!(Manifest::load(&store, &key()).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn checkpoints_compact_and_keep_every_entry() {
        let store = Store::open("memory://").unwrap();
        let (w, _) = ManifestWriter::open(&store, &key()).await.unwrap();
        for i in 0..(CHECKPOINT_EVERY * 3 + 5) {
            w.record(entry(&format!("u{i}"), "r", i as i64))
                .await
                .unwrap();
        }
        let m = Manifest::load(&store, &key()).await.unwrap();
        assert_eq!(m.len(), CHECKPOINT_EVERY * 3 + 5);
        let objs = store.list(&key().prefix()).await.unwrap();
        assert!(objs.len() <= 2 * CHECKPOINT_EVERY + 2, "{}", objs.len());
        // A writer opened later continues the log.
        let (w2, m2) = ManifestWriter::open(&store, &key()).await.unwrap();
        assert_eq!(m2, m);
        w2.record(entry("late", "r", 1)).await.unwrap();
        assert_eq!(
            Manifest::load(&store, &key()).await.unwrap().len(),
            m.len() + 1
        );
    }

    /// A run's end folds its deltas into one checkpoint and deletes the rest; readers loading
    /// all the while never miss an entry (a vanished object makes them load again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_leaves_one_object_and_readers_miss_nothing() {
        for url in ["memory://", "local"] {
            let dir = tempfile::tempdir().unwrap();
            let store = store_of(url, dir.path());
            for run in 0..3 {
                let (w, _) = ManifestWriter::open(&store, &key()).await.unwrap();
                let n = 40 * (run + 1);
                let reader = {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut seen = 0;
                        for _ in 0..200 {
                            let m = Manifest::load(&store, &key()).await.unwrap();
                            assert!(m.len() >= seen, "{} entries after {seen}", m.len());
                            seen = m.len();
                            tokio::task::yield_now().await;
                        }
                    })
                };
                for i in 0..n {
                    w.record(entry(&format!("u{i}"), "r", i as i64))
                        .await
                        .unwrap();
                }
                w.compact().await.unwrap();
                reader.await.unwrap();
                let objs = store.list(&key().prefix()).await.unwrap();
                assert_eq!(objs.len(), 1, "{url}: {objs:?}");
                assert!(objs[0].0.ends_with(".checkpoint.json"), "{url}: {objs:?}");
                assert_eq!(Manifest::load(&store, &key()).await.unwrap().len(), n);
            }
            // A writer that recorded nothing leaves the log alone.
            let (w, _) = ManifestWriter::open(&store, &key()).await.unwrap();
            let before = store.list(&key().prefix()).await.unwrap();
            w.compact().await.unwrap();
            assert_eq!(store.list(&key().prefix()).await.unwrap(), before);
        }
    }

    #[tokio::test]
    async fn large_deltas_are_checkpointed_by_size() {
        // A unit rewritten by every run with a year of day fingerprints (~17 KB a delta): the
        // deltas a load reads stay within the size rule, not up to 63 of them.
        for url in ["memory://", "local"] {
            let dir = tempfile::tempdir().unwrap();
            let store = store_of(url, dir.path());
            let big = |run: usize| {
                let mut e = entry("SYM/2023", &format!("r{run}"), run as i64);
                e.inputs = (0..365)
                    .map(|d| (format!("day:{d:03}"), format!("{:032x}", d * 1000 + run)))
                    .collect();
                e
            };
            let delta = serde_json::to_vec(&DeltaDoc {
                entries: vec![big(0)],
            })
            .unwrap()
            .len() as u64;
            assert!(delta > 15_000, "{delta}");
            let mut checkpoints = 0;
            for run in 0..20 {
                let (w, m) = ManifestWriter::open(&store, &key()).await.unwrap();
                if run > 0 {
                    assert_eq!(m.get("SYM/2023").unwrap().run_id, format!("r{}", run - 1));
                }
                w.record(big(run)).await.unwrap();
                let (m, view) = load_view(&store, &key().prefix()).await.unwrap();
                assert_eq!(m.len(), 1);
                assert_eq!(m.get("SYM/2023"), Some(&big(run)));
                assert!(
                    view.uncovered_bytes < CHECKPOINT_BYTES.max(view.checkpoint_bytes),
                    "{url}, run {run}: {} bytes of deltas after a {}-byte checkpoint",
                    view.uncovered_bytes,
                    view.checkpoint_bytes
                );
                assert!(
                    view.uncovered.len() as u64 <= CHECKPOINT_BYTES / delta,
                    "{url}"
                );
                checkpoints += view.uncovered.is_empty() as usize;
            }
            // One checkpoint every few runs, and the listing stays short.
            assert!((4..=10).contains(&checkpoints), "{url}: {checkpoints}");
            let objs = store.list(&key().prefix()).await.unwrap();
            assert!(objs.len() <= 8, "{url}: {objs:?}");
        }
    }

    #[tokio::test]
    async fn a_local_folder_loads_what_the_object_store_path_loads() {
        // A log with a checkpoint, deltas it covers (not yet cleaned up) and deltas after it,
        // written to memory, then copied object by object into a local folder.
        let mem = Store::open("memory://").unwrap();
        let (w, _) = ManifestWriter::open(&mem, &key()).await.unwrap();
        for i in 0..(CHECKPOINT_EVERY + 7) {
            w.record(entry(&format!("u{}", i % 40), "r", i as i64))
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path().to_str().unwrap()).unwrap();
        for (path, _) in mem.list(&key().prefix()).await.unwrap() {
            let b = mem.get_opt(&path).await.unwrap().unwrap();
            local.put(&path, b).await.unwrap();
        }
        let (m_mem, v_mem) = load_view(&mem, &key().prefix()).await.unwrap();
        let (m_loc, v_loc) = load_view(&local, &key().prefix()).await.unwrap();
        assert!(v_loc.checkpoint.is_some());
        assert_eq!(m_loc, m_mem);
        assert_eq!(m_loc.len(), 40);
        assert_eq!(v_loc.max_version, v_mem.max_version);
        assert_eq!(v_loc.uncovered, v_mem.uncovered);
        assert_eq!(v_loc.checkpoint, v_mem.checkpoint);
        assert_eq!(v_loc.older_checkpoints, v_mem.older_checkpoints);
        // A missing folder is an empty manifest; a corrupt delta is named.
        let other = ManifestKey::new(JobName::DOWNLOAD, "futures-um/klines-1m", "ETHUSDT");
        assert!(Manifest::load(&local, &other).await.unwrap().is_empty());
        let bad = format!("{}{:020}.json", key().prefix(), v_loc.max_version + 1);
        local.put(&bad, Bytes::from_static(b"[")).await.unwrap();
        let e = Manifest::load(&local, &key()).await.unwrap_err();
        assert!(e.to_string().contains(&bad), "{e}");
    }

    #[tokio::test]
    async fn a_corrupt_object_is_named() {
        let store = Store::open("memory://").unwrap();
        let p = format!("{}{:020}.json", key().prefix(), 1);
        store
            .put(&p, Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        let e = Manifest::load(&store, &key()).await.unwrap_err();
        assert!(e.to_string().contains(&p), "{e}");
    }

    #[test]
    fn params_hash_is_stable() {
        #[derive(Serialize)]
        struct P {
            a: u32,
        }
        assert_eq!(params_hash(&P { a: 1 }), params_hash(&P { a: 1 }));
        assert_ne!(params_hash(&P { a: 1 }), params_hash(&P { a: 2 }));
    }
}
