//! Crash hygiene: the per-run temp folder every job's temp files go in, and sweeping what runs
//! that are no longer alive left behind — their `_staging/<run id>/` objects, their liveness
//! leases and their temp folders. Everything a run writes before it is final carries its run id
//! (staging objects, a local store's partial writes, temp files), so a leftover's owner is
//! known and its liveness decides.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::lease;
use crate::store::Store;

/// Where a run's objects live before they are final.
pub const STAGING: &str = "_staging";

/// Prefix of a run's temp folder: `<temp>/pipeline~<run id>~<pid>/`.
const TEMP_PREFIX: &str = "pipeline~";

/// This process's temp folder and the lock that says it is alive.
struct RunTemp {
    dir: PathBuf,
    _lock: std::fs::File,
}

static TEMP: OnceLock<RunTemp> = OnceLock::new();

/// Make this process's temp folder under `base` (the system's temp folder, or a job's
/// `--tmp-dir`): every later [`temp_dir`] is inside it, and it is locked while the process lives.
pub fn init_temp(base: &Path, run_id: &str) -> Result<PathBuf> {
    if let Some(t) = TEMP.get() {
        return Ok(t.dir.clone());
    }
    let dir = base.join(format!("{TEMP_PREFIX}{run_id}~{}", std::process::id()));
    let io = |e: std::io::Error| Error::Io {
        context: format!("creating the temp folder {}", dir.display()),
        source: e,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let lock = std::fs::File::create(dir.join(".lock")).map_err(io)?;
    lock.try_lock()
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let _ = TEMP.set(RunTemp { dir, _lock: lock });
    Ok(TEMP.get().expect("set above").dir.clone())
}

/// Where temp files go: the run's folder once [`init_temp`] made it (every job binary), the
/// system's otherwise (library tests).
pub fn temp_dir() -> PathBuf {
    TEMP.get()
        .map(|t| t.dir.clone())
        .unwrap_or_else(std::env::temp_dir)
}

/// [`temp_dir`] when a run made its folder, `base` otherwise.
pub fn temp_dir_or(base: PathBuf) -> PathBuf {
    TEMP.get().map(|t| t.dir.clone()).unwrap_or(base)
}

/// Remove this process's temp folder (the end of a run).
pub fn remove_temp() {
    if let Some(t) = TEMP.get() {
        let _ = std::fs::remove_dir_all(&t.dir);
    }
}

/// Remove the temp folders under `base` whose process is gone. Returns how many.
pub fn sweep_temp(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mine = TEMP.get().map(|t| t.dir.clone());
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            || Some(&path) == mine.as_ref()
            || !path.is_dir()
        {
            continue;
        }
        let dead = match std::fs::File::open(path.join(".lock")) {
            Ok(f) => f.try_lock().is_ok(),
            // Made but not yet locked, or a lock removed by hand: dead once it is old.
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 600),
        };
        if dead && std::fs::remove_dir_all(&path).is_ok() {
            n += 1;
        }
    }
    n
}

/// What a sweep removed.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Swept {
    /// Runs no longer alive whose staging objects were removed.
    pub staging_runs: Vec<String>,
    pub staging_objects: u64,
    /// Liveness leases of dead runs.
    pub run_leases: u64,
    pub temp_dirs: u64,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self == &Swept::default()
    }
}

/// Remove the leftovers of runs that are no longer alive: staging objects, liveness leases, and
/// temp folders under `temp_bases`. Runs that are alive (their lease held) are left alone.
pub async fn sweep(store: &Store, own_run_id: &str, temp_bases: &[PathBuf]) -> Result<Swept> {
    let mut swept = Swept::default();
    for dir in store.list_dirs(STAGING).await? {
        let Some(run) = dir.rsplit('/').next() else {
            continue;
        };
        if run == own_run_id || lease::run_alive(store, run).await? {
            continue;
        }
        swept.staging_objects += clear_staging(store, run).await?;
        swept.staging_runs.push(run.to_string());
    }
    for run in lease::run_ids(store).await? {
        if run != own_run_id && !lease::run_alive(store, &run).await? {
            swept.run_leases += 1;
        }
    }
    swept.run_leases += lease::sweep_unplaced_run_locks(store);
    for base in temp_bases {
        swept.temp_dirs += sweep_temp(base) as u64;
    }
    if !swept.is_empty() {
        tracing::warn!(
            runs = ?swept.staging_runs,
            staging_objects = swept.staging_objects,
            run_leases = swept.run_leases,
            temp_dirs = swept.temp_dirs,
            "removed what runs that are no longer alive left behind"
        );
    }
    Ok(swept)
}

/// Remove everything under `_staging/<run>/`; returns the objects removed. On a local store the
/// folders go too, and `_staging/` itself once it is empty.
pub async fn clear_staging(store: &Store, run: &str) -> Result<u64> {
    let prefix = format!("{STAGING}/{run}");
    let objects = store.list(&prefix).await?;
    for (path, _) in &objects {
        store.delete(path).await?;
    }
    if let Some(dir) = store.local_path(&prefix) {
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(objects.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Holder, Lease};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// A run killed between creating its lock under a private name and renaming it into place
    /// leaves that file: the next sweep removes it, but not one of a live process.
    #[tokio::test]
    async fn a_lock_file_a_killed_run_never_placed_goes_and_a_live_ones_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let runs = dir.path().join("_leases/runs");
        std::fs::create_dir_all(&runs).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_file = runs.join(format!(".new-{dead}-7"));
        let live_file = runs.join(format!(".new-{}-8", std::process::id()));
        std::fs::write(&dead_file, b"{}").unwrap();
        std::fs::write(&live_file, b"{}").unwrap();
        let swept = sweep(&store, "me", &[]).await.unwrap();
        assert_eq!(swept.run_leases, 1);
        assert!(!dead_file.exists());
        assert!(live_file.exists());
        // A file whose lock is held stays even when its pid is gone.
        let held = std::fs::File::create(&dead_file).unwrap();
        held.lock().unwrap();
        assert_eq!(sweep(&store, "me", &[]).await.unwrap().run_leases, 0);
        assert!(dead_file.exists());
    }

    #[tokio::test]
    async fn a_dead_runs_staging_goes_and_a_live_ones_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let ttl = Duration::from_secs(60);
        let live = Lease::acquire_run(
            &store,
            &Holder::me("live", "x"),
            ttl,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let dead = Lease::acquire_run(
            &store,
            &Holder::me("dead", "x"),
            ttl,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        dead.abandon();
        for run in ["live", "dead", "never-leased", "me"] {
            store
                .put(&format!("_staging/{run}/raw/a/b.zip"), b"x".to_vec())
                .await
                .unwrap();
        }
        let swept = sweep(&store, "me", &[]).await.unwrap();
        assert_eq!(swept.staging_runs, ["dead", "never-leased"]);
        assert_eq!(swept.staging_objects, 2);
        assert_eq!(
            swept.run_leases, 0,
            "the dead run's lease went with its staging"
        );
        assert!(dir.path().join("_staging/live/raw/a/b.zip").exists());
        assert!(dir.path().join("_staging/me/raw/a/b.zip").exists());
        assert!(!dir.path().join("_staging/dead").exists());
        live.release().await;
        assert_eq!(
            sweep(&store, "me", &[]).await.unwrap().staging_runs,
            ["live"]
        );
        clear_staging(&store, "me").await.unwrap();
        assert!(!dir.path().join("_staging").exists());
    }

    #[test]
    fn temp_folders_of_dead_processes_go() {
        let base = tempfile::tempdir().unwrap();
        // A dead process's folder: its lock file is not held.
        let dead = base.path().join("pipeline~r1~999999");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join(".lock"), b"").unwrap();
        std::fs::write(dead.join("x.csv"), b"partial").unwrap();
        // A live one: held by an open, locked file.
        let live = base.path().join("pipeline~r2~1");
        std::fs::create_dir_all(&live).unwrap();
        let held = std::fs::File::create(live.join(".lock")).unwrap();
        held.try_lock().unwrap();
        // Not ours at all.
        std::fs::create_dir_all(base.path().join("other")).unwrap();
        assert_eq!(sweep_temp(base.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(base.path().join("other").exists());
    }
}
