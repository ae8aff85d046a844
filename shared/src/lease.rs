//! Leases in the store: one writer per (job, market, datasets, shard), and each run's liveness,
//! which says whose crash leftovers may be swept ([`crate::hygiene`]).
//!
//! On a local store a lease is an advisory lock (`flock`) on `_leases/<key>.lock`: the kernel
//! drops it the moment its holder dies, SIGKILL included. On S3 (and `memory://`) it is the
//! object `_leases/<key>.json`, created with a conditional put (`If-None-Match: *`), renewed every
//! third of its time to live with `If-Match` on its ETag, and taken over the same way once it
//! has expired — so a holder killed with SIGKILL releases it by expiry. Expiry is judged on the
//! system clock (not a replayed `PIPELINE_NOW`), which is what hosts share.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::store::Store;

/// Where leases live in the store.
pub const PREFIX: &str = "_leases";

/// How long a second writer waits for a lease that is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: the run stops with [`Error::Locked`] naming the holder.
    No,
    /// Up to this long, then as [`Wait::No`].
    For(Duration),
    Forever,
}

impl Wait {
    /// `forever`, or a duration: `90s`, `10m`, `2h`, or plain seconds.
    pub fn parse(s: &str) -> Result<Wait> {
        let s = s.trim();
        if s.is_empty() || s == "forever" {
            return Ok(Wait::Forever);
        }
        parse_duration(s).map(Wait::For).ok_or_else(|| {
            Error::usage(format!(
                "--wait-lock `{s}`: expected `forever` or a duration such as 90s, 10m or 2h"
            ))
        })
    }
}

/// `90s`, `10m`, `2h`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Who holds a lease: what a second writer's message names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub run_id: String,
    pub job: String,
    pub host: String,
    pub pid: u32,
    pub acquired_at: DateTime<Utc>,
    /// Remote leases only: when it lapses unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Holder {
    /// This process, for `run_id` of `job`.
    pub fn me(run_id: &str, job: &str) -> Holder {
        Holder {
            run_id: run_id.to_string(),
            job: job.to_string(),
            host: hostname(),
            pid: std::process::id(),
            acquired_at: Utc::now(),
            expires_at: None,
        }
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "run {} ({}, pid {} on {}, since {}",
            self.run_id,
            self.job,
            self.pid,
            self.host,
            self.acquired_at.format("%Y-%m-%dT%H:%M:%SZ")
        );
        if let Some(e) = self.expires_at {
            s.push_str(&format!(
                ", lapses at {} unless renewed",
                e.format("%H:%M:%SZ")
            ));
        }
        s.push(')');
        s
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// How a run takes its leases.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub wait: Wait,
    /// A remote lease's time to live; it is renewed every third of it.
    pub ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            wait: Wait::No,
            ttl: Duration::from_secs(60),
        }
    }
}

/// A lease this process holds, until [`Lease::release`] (or its death).
pub struct Lease {
    key: String,
    inner: Inner,
}

enum Inner {
    Local {
        path: PathBuf,
        // Holds the lock; closing it releases it.
        file: Option<std::fs::File>,
        /// A run's liveness lock is removed on release (nobody else ever takes it); a shared
        /// key's lock file stays, so every contender locks the same file.
        remove: bool,
    },
    Remote {
        store: Store,
        path: String,
        etag: Arc<Mutex<Option<String>>>,
        renewer: tokio::task::JoinHandle<()>,
        stop: CancellationToken,
    },
}

fn lock_path(root: &std::path::Path, key: &str) -> PathBuf {
    root.join(PREFIX).join(format!("{key}.lock"))
}

fn object_path(key: &str) -> String {
    format!("{PREFIX}/{key}.json")
}

/// The lease of a run's liveness.
fn run_key(run_id: &str) -> String {
    format!("runs/{run_id}")
}

impl Lease {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Take the lease `key` (a path under `_leases/`) for `holder`, waiting as `policy` says.
    /// `lost` is cancelled if a remote lease is lost (its renewal found another holder).
    pub async fn acquire(
        store: &Store,
        key: &str,
        holder: &Holder,
        policy: Policy,
        lost: CancellationToken,
    ) -> Result<Lease> {
        let deadline = match policy.wait {
            Wait::No => Some(std::time::Instant::now()),
            Wait::For(d) => Some(std::time::Instant::now() + d),
            Wait::Forever => None,
        };
        let mut announced = false;
        let mut vanished = 0;
        loop {
            let held = match store.local_path("") {
                Some(root) => match try_local(&root, key, holder, false)? {
                    Ok(file) => {
                        return Ok(Lease {
                            key: key.to_string(),
                            inner: Inner::Local {
                                path: lock_path(&root, key),
                                file: Some(file),
                                remove: false,
                            },
                        });
                    }
                    Err(h) => h,
                },
                None => match try_remote(store, key, holder, policy.ttl).await? {
                    Ok(etag) => return Ok(Lease::remote(store, key, holder, policy, etag, lost)),
                    Err(h) => h,
                },
            };
            // Released between our two looks: try again at once.
            if held.is_none() && store.local_path("").is_none() && vanished < 3 {
                vanished += 1;
                continue;
            }
            let who = held
                .as_ref()
                .map(Holder::describe)
                .unwrap_or_else(|| "another run".into());
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(Error::Locked {
                    lease: format!("{}/{PREFIX}/{key}", store.url().trim_end_matches('/')),
                    holder: who,
                    waited: policy.wait != Wait::No,
                });
            }
            if !announced {
                tracing::warn!(lease = %key, holder = %who, "lease held by another writer: waiting for it");
                announced = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Take this run's liveness lease (nobody else ever asks for it: it never waits).
    pub async fn acquire_run(
        store: &Store,
        holder: &Holder,
        ttl: Duration,
        lost: CancellationToken,
    ) -> Result<Lease> {
        let key = run_key(&holder.run_id);
        match store.local_path("") {
            Some(root) => match try_local(&root, &key, holder, true)? {
                Ok(file) => Ok(Lease {
                    key: key.clone(),
                    inner: Inner::Local {
                        path: lock_path(&root, &key),
                        file: Some(file),
                        remove: true,
                    },
                }),
                Err(h) => Err(Error::Locked {
                    lease: key,
                    holder: h.map(|h| h.describe()).unwrap_or_default(),
                    waited: false,
                }),
            },
            None => {
                let policy = Policy {
                    wait: Wait::No,
                    ttl,
                };
                Lease::acquire(store, &key, holder, policy, lost).await
            }
        }
    }

    fn remote(
        store: &Store,
        key: &str,
        holder: &Holder,
        policy: Policy,
        etag: Option<String>,
        lost: CancellationToken,
    ) -> Lease {
        let path = object_path(key);
        let etag = Arc::new(Mutex::new(etag));
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            store.clone(),
            path.clone(),
            holder.clone(),
            policy.ttl,
            etag.clone(),
            stop.clone(),
            lost,
        ));
        Lease {
            key: key.to_string(),
            inner: Inner::Remote {
                store: store.clone(),
                path,
                etag,
                renewer,
                stop,
            },
        }
    }

    /// Give the lease up.
    pub async fn release(mut self) {
        match &mut self.inner {
            Inner::Local { path, file, remove } => {
                if *remove {
                    let _ = std::fs::remove_file(&*path);
                } else if let Some(f) = file.as_mut() {
                    // Leave no stale holder in the file for the next reader.
                    let _ = f.set_len(0);
                }
                drop(file.take());
            }
            Inner::Remote {
                store,
                path,
                etag,
                renewer,
                stop,
            } => {
                stop.cancel();
                let _ = (&mut *renewer).await;
                let mine = etag.lock().unwrap().clone();
                // Only our own: a lease taken over after we lapsed is the new holder's.
                let current = store
                    .object_store()
                    .head(&Path::from(path.as_str()))
                    .await
                    .ok()
                    .and_then(|m| m.e_tag);
                if mine.is_some() && current == mine {
                    let _ = store.delete(path).await;
                }
            }
        }
    }

    /// Drop the lease as a killed process would: no release, no renewal (tests of expiry).
    #[doc(hidden)]
    pub fn abandon(self) {
        match self.inner {
            Inner::Local { file, .. } => drop(file),
            Inner::Remote { renewer, .. } => renewer.abort(),
        }
    }
}

/// Try the local lock once: `Ok(Ok(file))` holds it, `Ok(Err(holder))` names who does. A run's
/// liveness lock is made under a private name and renamed into place once locked, so a sweeper
/// never finds it unlocked while its run is alive.
fn try_local(
    root: &std::path::Path,
    key: &str,
    holder: &Holder,
    private: bool,
) -> Result<std::result::Result<std::fs::File, Option<Holder>>> {
    let path = lock_path(root, key);
    let dir = path.parent().expect("a lease path has a folder");
    let io = |what: &str, e: std::io::Error| Error::Io {
        context: format!("{what} {}", path.display()),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating the folder of", e))?;
    let open_at = if private {
        dir.join(format!(".new-{}-{}", std::process::id(), fastrand::u64(..)))
    } else {
        path.clone()
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&open_at)
        .map_err(|e| io("opening", e))?;
    match file.try_lock() {
        Ok(()) => {
            let body = serde_json::to_vec(holder).unwrap_or_default();
            file.set_len(0).map_err(|e| io("writing", e))?;
            file.rewind().map_err(|e| io("writing", e))?;
            file.write_all(&body).map_err(|e| io("writing", e))?;
            if private {
                std::fs::rename(&open_at, &path).map_err(|e| io("placing", e))?;
            }
            Ok(Ok(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Ok(Err(serde_json::from_str(&text).ok()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io("locking", e)),
    }
}

/// Try the remote lease once: create it, or take it over if it has lapsed.
async fn try_remote(
    store: &Store,
    key: &str,
    holder: &Holder,
    ttl: Duration,
) -> Result<std::result::Result<Option<String>, Option<Holder>>> {
    let path = object_path(key);
    let os = store.object_store();
    let loc = Path::from(path.as_str());
    let body = |h: &Holder| {
        let mut h = h.clone();
        h.expires_at = Some(Utc::now() + ttl);
        Bytes::from(serde_json::to_vec(&h).unwrap_or_default())
    };
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match os.put_opts(&loc, body(holder).into(), create).await {
        Ok(r) => return Ok(Ok(r.e_tag)),
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(Error::store(&path, e)),
    }
    let got = match os.get(&loc).await {
        Ok(g) => g,
        // Released in between: try again at once.
        Err(object_store::Error::NotFound { .. }) => return Ok(Err(None)),
        Err(e) => return Err(Error::store(&path, e)),
    };
    let meta = got.meta.clone();
    let bytes = got.bytes().await.map_err(|e| Error::store(&path, e))?;
    let current: Option<Holder> = serde_json::from_slice(&bytes).ok();
    // An unreadable lease lapses a time to live after it was written.
    let expires = current
        .as_ref()
        .and_then(|h| h.expires_at)
        .unwrap_or_else(|| meta.last_modified + ttl);
    if expires > Utc::now() {
        return Ok(Err(current));
    }
    let update = PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        }),
        ..Default::default()
    };
    match os.put_opts(&loc, body(holder).into(), update).await {
        Ok(r) => {
            if let Some(h) = &current {
                tracing::warn!(lease = %key, lapsed = %h.describe(), "took over a lapsed lease");
            }
            Ok(Ok(r.e_tag))
        }
        // Someone else took it over, or it was released: look again.
        Err(
            object_store::Error::Precondition { .. }
            | object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. },
        ) => Ok(Err(current)),
        Err(e) => Err(Error::store(&path, e)),
    }
}

/// Renew a remote lease every third of its time to live; cancel `lost` if it is gone or taken.
async fn renew(
    store: Store,
    path: String,
    holder: Holder,
    ttl: Duration,
    etag: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let every = ttl / 3;
    let mut valid_until = std::time::Instant::now() + ttl;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut h = holder.clone();
        h.expires_at = Some(Utc::now() + ttl);
        let body = Bytes::from(serde_json::to_vec(&h).unwrap_or_default());
        let opts = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag: etag.lock().unwrap().clone(),
                version: None,
            }),
            ..Default::default()
        };
        let sent = std::time::Instant::now();
        match store
            .object_store()
            .put_opts(&Path::from(path.as_str()), body.into(), opts)
            .await
        {
            Ok(r) => {
                *etag.lock().unwrap() = r.e_tag;
                valid_until = sent + ttl;
            }
            Err(
                e @ (object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. }),
            ) => {
                tracing::error!(lease = %path, error = %e, "lease lost to another writer: stopping");
                lost.cancel();
                return;
            }
            Err(e) if std::time::Instant::now() >= valid_until => {
                tracing::error!(lease = %path, error = %e, "lease lapsed: it could not be renewed in time; stopping");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %path, error = %e, "renewing the lease failed: trying again")
            }
        }
    }
}

/// Whether the run `run_id` is alive, judged by its liveness lease. A dead run's lease left
/// behind (a local lock file, an expired object) is removed on the way.
pub async fn run_alive(store: &Store, run_id: &str) -> Result<bool> {
    let key = run_key(run_id);
    if let Some(root) = store.local_path("") {
        let path = lock_path(&root, &key);
        let file = match std::fs::OpenOptions::new().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(Error::Io {
                    context: format!("opening {}", path.display()),
                    source: e,
                });
            }
        };
        return match file.try_lock() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                Ok(false)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Io {
                context: format!("locking {}", path.display()),
                source: e,
            }),
        };
    }
    let path = object_path(&key);
    let Some(bytes) = store.get_opt(&path).await? else {
        return Ok(false);
    };
    let alive = serde_json::from_slice::<Holder>(&bytes)
        .ok()
        .and_then(|h| h.expires_at)
        .is_some_and(|e| e > Utc::now());
    if !alive {
        store.delete(&path).await?;
    }
    Ok(alive)
}

/// Remove the private files of run locks that never reached their name (`.new-<pid>-<n>` in the
/// run leases' folder of a local store): what a process killed between creating one and renaming
/// it into place leaves. A file goes only when no process on this host has its pid and nobody
/// holds its lock, so a run still setting its lock up keeps it. Returns how many went.
pub fn sweep_unplaced_run_locks(store: &Store) -> u64 {
    let Some(root) = store.local_path("") else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(root.join(PREFIX).join("runs")) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".new-")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let unlocked = std::fs::File::open(e.path()).is_ok_and(|f| f.try_lock().is_ok());
        if unlocked && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The run ids that have (or had) a liveness lease in the store.
pub async fn run_ids(store: &Store) -> Result<Vec<String>> {
    let folder = format!("{PREFIX}/runs");
    if let Some(root) = store.local_path("") {
        let Ok(entries) = std::fs::read_dir(root.join(&folder)) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".lock").map(str::to_string)
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        return Ok(out);
    }
    Ok(store
        .list(&folder)
        .await?
        .into_iter()
        .filter_map(|(p, _)| {
            p.rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run: &str) -> Holder {
        Holder::me(run, "download")
    }

    fn short(wait: Wait) -> Policy {
        Policy {
            wait,
            ttl: Duration::from_millis(600),
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("7d"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(Wait::parse("forever").unwrap(), Wait::Forever);
        assert!(Wait::parse("soon").is_err());
    }

    async fn second_writer_is_refused_then_waits(store: Store) {
        let a = Lease::acquire(
            &store,
            "download/um/klines-1m/shard-0-of-1",
            &holder("run-a"),
            short(Wait::No),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let e = Lease::acquire(
            &store,
            "download/um/klines-1m/shard-0-of-1",
            &holder("run-b"),
            short(Wait::No),
            CancellationToken::new(),
        )
        .await
        .err()
        .expect("held");
        assert_eq!(e.exit_code(), crate::error::exit::LOCKED, "{e}");
        assert!(e.to_string().contains("run run-a"), "{e}");
        assert!(e.to_string().contains("--wait-lock"), "{e}");
        // Another shard is another lease.
        Lease::acquire(
            &store,
            "download/um/klines-1m/shard-0-of-2",
            &holder("run-b"),
            short(Wait::No),
            CancellationToken::new(),
        )
        .await
        .unwrap()
        .release()
        .await;
        // A waiter gets it once the holder releases it; the holder renews past its TTL meanwhile.
        let s = store.clone();
        let waiter = tokio::spawn(async move {
            Lease::acquire(
                &s,
                "download/um/klines-1m/shard-0-of-1",
                &holder("run-b"),
                short(Wait::Forever),
                CancellationToken::new(),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!waiter.is_finished(), "the holder renews its lease");
        a.release().await;
        let b = waiter.await.unwrap().unwrap();
        b.release().await;
    }

    #[tokio::test]
    async fn local_leases_exclude_and_wait() {
        let dir = tempfile::tempdir().unwrap();
        second_writer_is_refused_then_waits(Store::open(dir.path().to_str().unwrap()).unwrap())
            .await;
    }

    #[tokio::test]
    async fn object_leases_exclude_and_wait() {
        second_writer_is_refused_then_waits(Store::open("memory://").unwrap()).await;
    }

    #[tokio::test]
    async fn a_lapsed_object_lease_is_taken_over_and_its_holder_told() {
        let store = Store::open("memory://").unwrap();
        let lost = CancellationToken::new();
        let a = Lease::acquire(&store, "k", &holder("a"), short(Wait::No), lost.clone())
            .await
            .unwrap();
        a.abandon(); // as SIGKILL would: no renewal, no release
        let t = std::time::Instant::now();
        let b = Lease::acquire(
            &store,
            "k",
            &holder("b"),
            short(Wait::For(Duration::from_secs(5))),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        b.release().await;
        assert!(store.get_opt("_leases/k.json").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn run_liveness_follows_the_run_lease() {
        for url in ["memory://", "local"] {
            let dir = tempfile::tempdir().unwrap();
            let store = if url == "local" {
                Store::open(dir.path().to_str().unwrap()).unwrap()
            } else {
                Store::open(url).unwrap()
            };
            let ttl = Duration::from_millis(600);
            let live = Lease::acquire_run(&store, &holder("r1"), ttl, CancellationToken::new())
                .await
                .unwrap();
            let dead = Lease::acquire_run(&store, &holder("r2"), ttl, CancellationToken::new())
                .await
                .unwrap();
            dead.abandon();
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert_eq!(run_ids(&store).await.unwrap(), ["r1", "r2"], "{url}");
            assert!(run_alive(&store, "r1").await.unwrap(), "{url}");
            assert!(!run_alive(&store, "r2").await.unwrap(), "{url}");
            assert!(!run_alive(&store, "never").await.unwrap(), "{url}");
            // The dead run's lease is gone.
            assert_eq!(run_ids(&store).await.unwrap(), ["r1"], "{url}");
            live.release().await;
            assert!(run_ids(&store).await.unwrap().is_empty(), "{url}");
        }
    }
}
