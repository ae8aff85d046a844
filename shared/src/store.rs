//! Opening a store from a URL, and the handful of operations jobs need on it. This is the only
//! module that constructs `object_store` backends; everything else holds a [`Store`].
//!
//! URLs: a plain path (`./data`, `/mnt/x`) or `file:///abs/path` for a local folder;
//! `s3://bucket/prefix` for S3 or any S3-compatible server, configured by the standard AWS
//! environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` for MinIO/moto, `AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN` for Kubernetes service accounts, `AWS_ALLOW_HTTP`); `memory://` for tests.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// A store: an object store plus the URL it was opened from (for messages and reports).
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// The folder, when the store is a local one.
    local_root: Option<std::path::PathBuf>,
    /// The run writing through this handle ([`Store::for_run`]): a local store's whole-object
    /// writes are made under `_staging/<run>/` and renamed into place, so a write cut short is
    /// a leftover of a known run, not a partial file beside the data.
    run: Option<Arc<str>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

/// What an S3 store is configured from; read from the environment by [`Store::open`].
/// Kept as data so tests can build it without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct S3Env {
    pub vars: Vec<(String, String)>,
}

impl S3Env {
    pub fn from_process() -> Self {
        S3Env {
            vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect(),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Store {
    /// Open a store from a URL, reading S3 settings from the process environment.
    pub fn open(url: &str) -> Result<Store> {
        Store::open_with(url, &S3Env::from_process())
    }

    /// Open a store from a URL with explicit S3 settings.
    pub fn open_with(url: &str, env: &S3Env) -> Result<Store> {
        let fail = |reason: String| Error::StoreUrl {
            url: url.to_string(),
            reason,
        };
        let mut local_root = None;
        // `s3:/bucket` or `s3:bucket` would otherwise be a local folder named `s3:`: a word and a
        // colon at the start is meant as a URL, and a URL needs its `//`.
        if let Some((scheme, _)) = url.split_once(':')
            && !url.contains("://")
            && !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            let hint = match scheme {
                "s3" => " (write `s3://bucket/prefix`)".to_string(),
                "file" => " (write `file:///absolute/path`, or the path alone)".to_string(),
                "memory" => " (write `memory://`)".to_string(),
                _ => format!(" (for a local folder named so, write `./{url}`)"),
            };
            return Err(fail(format!("`{scheme}:` is not followed by `//`{hint}")));
        }
        let inner: Arc<dyn ObjectStore> = if url == "memory://" || url.starts_with("memory://") {
            Arc::new(InMemory::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, p.trim_matches('/')),
                None => (rest, ""),
            };
            if bucket.is_empty() {
                return Err(fail("no bucket name".into()));
            }
            let mut b = AmazonS3Builder::new().with_bucket_name(bucket);
            for (k, v) in &env.vars {
                if let Ok(key) = k.to_ascii_lowercase().parse() {
                    b = b.with_config(key, v);
                }
            }
            // A plain-http endpoint (moto, MinIO on loopback) needs http allowed explicitly.
            let endpoint = env
                .get("AWS_ENDPOINT_URL")
                .or_else(|| env.get("AWS_ENDPOINT"))
                .or_else(|| env.get("AWS_ENDPOINT_URL_S3"));
            if endpoint.is_some_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            if env.get("AWS_REGION").is_none() && env.get("AWS_DEFAULT_REGION").is_none() {
                b = b.with_region("us-east-1");
            }
            let s3 = b.build().map_err(|e| fail(e.to_string()))?;
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            }
        } else {
            let path = match url.strip_prefix("file://") {
                Some(p) => p.to_string(),
                None if url.contains("://") => {
                    return Err(fail(
                        "unsupported scheme (expected a path, file://, s3:// or memory://)".into(),
                    ));
                }
                None => url.to_string(),
            };
            if path.is_empty() {
                return Err(fail("empty path".into()));
            }
            std::fs::create_dir_all(&path).map_err(|e| fail(e.to_string()))?;
            let abs = std::fs::canonicalize(&path).map_err(|e| fail(e.to_string()))?;
            local_root = Some(abs.clone());
            Arc::new(LocalFileSystem::new_with_prefix(abs).map_err(|e| fail(e.to_string()))?)
        };
        Ok(Store {
            inner,
            url: url.to_string(),
            local_root,
            run: None,
        })
    }

    /// This store, written by the run `run_id` (see the `run` field).
    pub fn for_run(&self, run_id: &str) -> Store {
        Store {
            run: Some(run_id.into()),
            ..self.clone()
        }
    }

    /// The local file of `path` when the store is local, written by a run, and `path` lies in
    /// that run's own staging folder (`_staging/<run id>/…`).
    fn own_staging(&self, path: &str) -> Option<std::path::PathBuf> {
        let run = self.run.as_deref()?;
        let rest = path
            .strip_prefix(crate::hygiene::STAGING)?
            .strip_prefix('/')?;
        rest.strip_prefix(run)?.strip_prefix('/')?;
        self.local_path(path)
    }

    /// A fresh local file under this run's staging folder, with its folder made, when the store
    /// is local and written by a run.
    fn local_stage(&self) -> Result<Option<std::path::PathBuf>> {
        let (Some(root), Some(run)) = (&self.local_root, &self.run) else {
            return Ok(None);
        };
        let dir = root.join(crate::hygiene::STAGING).join(&**run).join(".w");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
        Ok(Some(dir.join(format!("{:016x}", fastrand::u64(..)))))
    }

    /// A local store's write of `path`, on the calling thread (which may block): `Ok(None)`
    /// when the store is not local or not written by a run. In this run's own staging folder
    /// the file is written where it goes (nothing reads it but the run, after the write
    /// returned, and a dead run's is swept); elsewhere it is staged and [`Store::place`]d,
    /// replacing what is there (`replace`) or only if nothing is (`Some(false)` then).
    fn put_local(&self, path: &str, bytes: &PutPayload, replace: bool) -> Result<Option<bool>> {
        fn write(file: &std::path::Path, bytes: &PutPayload) -> Result<()> {
            use std::io::Write;
            let io = |e: std::io::Error| Error::Io {
                context: format!("writing {}", file.display()),
                source: e,
            };
            let mut f = std::fs::File::create(file).map_err(io)?;
            for chunk in bytes.iter() {
                f.write_all(chunk).map_err(io)?;
            }
            Ok(())
        }
        if let Some(target) = self.own_staging(path).filter(|_| replace) {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                    context: format!("creating {}", dir.display()),
                    source: e,
                })?;
            }
            return write(&target, bytes).map(|()| Some(true));
        }
        let Some(staged) = self.local_stage()? else {
            return Ok(None);
        };
        let r = write(&staged, bytes).and_then(|()| self.place(&staged, path, replace));
        if r.is_err() {
            let _ = std::fs::remove_file(&staged);
        }
        r.map(Some)
    }

    /// Whether writes go through a local staging folder ([`Store::put_local`]): the store is
    /// local and written by a run.
    fn writes_staged(&self) -> bool {
        self.local_root.is_some() && self.run.is_some()
    }

    /// [`Store::put`] on the calling thread when the store is local (`Ok(false)`: it is not,
    /// use `put`). For code already on a blocking thread that writes many small files: `put`
    /// is a hop to the blocking pool and back per file, whose wake-ups cost more than writing
    /// a daily partition of a few KiB.
    pub fn put_blocking(&self, path: &str, bytes: &Bytes) -> Result<bool> {
        if !self.writes_staged() {
            return Ok(false);
        }
        Ok(self
            .put_local(path, &PutPayload::from(bytes.clone()), true)?
            .is_some())
    }

    /// [`Store::rename`] on the calling thread when the store is local (`Ok(false)`: it is not,
    /// use `rename`). For code already on a blocking thread that moves many small files, such as
    /// a month's 30 staged partitions: `rename` is a hop to the blocking pool and back per file.
    pub fn rename_blocking(&self, from: &str, to: &str) -> Result<bool> {
        let (Some(src), Some(dst)) = (self.local_path(from), self.local_path(to)) else {
            return Ok(false);
        };
        let io = |e: std::io::Error| Error::Io {
            context: format!("moving {} to {}", src.display(), dst.display()),
            source: e,
        };
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::rename(&src, &dst).map_err(io)?;
        Ok(true)
    }

    /// [`Store::put_local`] on the blocking pool: one hop for the whole write (tokio's file
    /// operations would each be one).
    async fn put_local_async(
        &self,
        path: &str,
        bytes: PutPayload,
        replace: bool,
    ) -> Result<Option<bool>> {
        if !self.writes_staged() {
            return Ok(None);
        }
        let (store, owned) = (self.clone(), path.to_string());
        tokio::task::spawn_blocking(move || store.put_local(&owned, &bytes, replace))
            .await
            .map_err(|e| Error::Io {
                context: format!("writing {path}"),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// Move a staged local file to `path` in the store: replacing what is there (`replace`) or
    /// only if nothing is (`Ok(false)` then, and the staged file is removed).
    fn place(&self, staged: &std::path::Path, path: &str, replace: bool) -> Result<bool> {
        let target = self.local_path(path).expect("a local store");
        let io = |e: std::io::Error| Error::Io {
            context: format!("writing {}", target.display()),
            source: e,
        };
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if replace {
            std::fs::rename(staged, &target).map_err(io)?;
            return Ok(true);
        }
        // A hard link fails if the target exists: an atomic create-if-absent.
        let made = match std::fs::hard_link(staged, &target) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io(e)),
        };
        let _ = std::fs::remove_file(staged);
        Ok(made)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying object store, for I/O this module does not wrap (e.g. Polars readers).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Whole-object read. `Ok(None)` when it does not exist.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Bytes>> {
        match self.inner.get(&Path::from(path)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| Error::store(path, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(path, e)),
        }
    }

    /// Stream an object through sha256 without holding it: `(sha256 hex, size, first bytes)`,
    /// `None` when it does not exist. `head` bytes (up to 8) are returned for magic-number checks.
    pub async fn sha256_of(&self, path: &str) -> Result<Option<(String, u64, Vec<u8>)>> {
        let r = match self.inner.get(&Path::from(path)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(path, e)),
        };
        let mut stream = r.into_stream();
        let mut h = crate::checksum::Hasher::new();
        let mut size = 0u64;
        let mut head = Vec::with_capacity(8);
        while let Some(chunk) = stream.try_next().await.map_err(|e| Error::store(path, e))? {
            if head.len() < 8 {
                let take = (8 - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            h.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some((h.finish_hex(), size, head)))
    }

    /// Stream an object into a local file (for readers that need a file: zip, large CSVs on S3)
    /// without holding it in memory. Returns its size; `Ok(None)` when it does not exist.
    pub async fn download_to(&self, path: &str, file: &std::path::Path) -> Result<Option<u64>> {
        use tokio::io::AsyncWriteExt;
        let r = match self.inner.get(&Path::from(path)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(path, e)),
        };
        let io = |e: std::io::Error| Error::Io {
            context: format!("writing {}", file.display()),
            source: e,
        };
        let mut out = tokio::fs::File::create(file).await.map_err(io)?;
        let mut stream = r.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| Error::store(path, e))? {
            out.write_all(&chunk).await.map_err(io)?;
            size += chunk.len() as u64;
        }
        out.flush().await.map_err(io)?;
        Ok(Some(size))
    }

    /// Size of an object, `None` when it does not exist.
    pub async fn size_opt(&self, path: &str) -> Result<Option<u64>> {
        match self.inner.head(&Path::from(path)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(path, e)),
        }
    }

    /// Atomic whole-object write: readers see the old object or the new one, never a part.
    pub async fn put(&self, path: &str, bytes: impl Into<PutPayload>) -> Result<()> {
        let bytes: PutPayload = bytes.into();
        if self
            .put_local_async(path, bytes.clone(), true)
            .await?
            .is_some()
        {
            return Ok(());
        }
        self.inner
            .put(&Path::from(path), bytes)
            .await
            .map(|_| ())
            .map_err(|e| Error::store(path, e))
    }

    /// Create an object only if it does not exist. `Ok(false)` when it already exists.
    pub async fn put_if_absent(&self, path: &str, bytes: impl Into<PutPayload>) -> Result<bool> {
        let bytes: PutPayload = bytes.into();
        if let Some(made) = self.put_local_async(path, bytes.clone(), false).await? {
            return Ok(made);
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.inner.put_opts(&Path::from(path), bytes, opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(Error::store(path, e)),
        }
    }

    /// Move an object (atomic on a local folder; copy-then-delete on S3, where the target still
    /// appears whole).
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner
            .rename(&Path::from(from), &Path::from(to))
            .await
            .map_err(|e| Error::store(from, e))
    }

    /// Delete an object; a missing one is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.inner.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(path, e)),
        }
    }

    /// Every object under a prefix (recursive), as (path, size), sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let p = Path::from(prefix.trim_end_matches('/'));
        let mut out: Vec<(String, u64)> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix, e))?;
        out.sort();
        Ok(out)
    }

    /// The immediate "sub-folders" of a prefix (S3 common prefixes), as full paths without the
    /// trailing `/`, sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let p = Path::from(prefix.trim_end_matches('/'));
        let r = self
            .inner
            .list_with_delimiter(Some(&p))
            .await
            .map_err(|e| Error::store(prefix, e))?;
        let mut out: Vec<String> = r.common_prefixes.iter().map(|p| p.to_string()).collect();
        out.sort();
        Ok(out)
    }

    /// Check a remote store answers before any work: a bucket that does not exist and
    /// credentials that are missing or refused are configuration errors (exit 2) that name what
    /// to set, not failures found unit by unit. A local or in-memory store needs no check; a
    /// network error stays what it is.
    pub async fn probe(&self, url: &str) -> Result<()> {
        if self.local_path("").is_some() || url.starts_with("memory://") {
            return Ok(());
        }
        let Err(e) = self.inner.list_with_delimiter(None).await else {
            return Ok(());
        };
        let text = format!("{e} {:?}", e);
        let bucket = url
            .strip_prefix("s3://")
            .and_then(|r| r.split('/').next())
            .unwrap_or(url);
        let reason = if text.contains("NoSuchBucket") {
            format!("the bucket `{bucket}` does not exist (or is in another account or region)")
        } else if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "AccessDenied",
        ]
        .iter()
        .any(|k| text.contains(k))
        {
            format!(
                "S3 refused the credentials for `{bucket}`: check AWS_ACCESS_KEY_ID / \
                 AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the role (IRSA) and its policy"
            )
        } else if text.contains("api/token") || text.to_lowercase().contains("credential") {
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
             AWS_PROFILE, or run where a role is available (IRSA, an instance profile)"
                .to_string()
        } else {
            return Err(Error::store("", e));
        };
        Err(Error::StoreUrl {
            url: url.to_string(),
            reason,
        })
    }

    /// Where an object lives on the local file system, when the store is a local folder: lets
    /// readers that need `Seek` (zip) open it in place instead of copying it.
    pub fn local_path(&self, path: &str) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|root| root.join(path))
    }

    /// Upload a local file to `path` (streamed in parts; atomic: the object appears whole). A
    /// local store on the file's file system takes it as a hard link, not a copy (a CSV month
    /// is hundreds of MB): the caller must not change the file afterwards, only remove it.
    pub async fn put_file(&self, path: &str, file: &std::path::Path) -> Result<u64> {
        use tokio::io::AsyncReadExt;
        if let Some(staged) = self.local_stage()? {
            let linked = std::fs::hard_link(file, &staged)
                .and_then(|()| std::fs::metadata(&staged))
                .map(|m| m.len());
            let copied = match linked {
                Ok(n) => Ok(n),
                // Another file system, or one without hard links.
                Err(_) => {
                    let _ = std::fs::remove_file(&staged);
                    tokio::fs::copy(file, &staged).await
                }
            };
            let r = copied
                .map_err(|e| Error::Io {
                    context: format!("copying {} to {}", file.display(), staged.display()),
                    source: e,
                })
                .and_then(|n| self.place(&staged, path, true).map(|_| n));
            if r.is_err() {
                let _ = std::fs::remove_file(&staged);
            }
            return r;
        }
        let mut f = tokio::fs::File::open(file).await.map_err(|e| Error::Io {
            context: format!("opening {}", file.display()),
            source: e,
        })?;
        let upload = self.upload(path).await?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        let mut total = 0u64;
        loop {
            let mut buf = vec![0u8; 4 << 20];
            let n = f.read(&mut buf).await.map_err(|e| Error::Io {
                context: format!("reading {}", file.display()),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            total += n as u64;
            w.wait_for_capacity(2)
                .await
                .map_err(|e| Error::store(path, e))?;
            w.put(Bytes::from(buf));
        }
        w.finish().await.map_err(|e| Error::store(path, e))?;
        Ok(total)
    }

    /// Start a multipart upload to `path`; the object appears only on `complete`.
    pub async fn upload(&self, path: &str) -> Result<Box<dyn object_store::MultipartUpload>> {
        self.inner
            .put_multipart(&Path::from(path))
            .await
            .map_err(|e| Error::store(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_usage_errors() {
        for url in [
            "gs://x",
            "ftp://x",
            "s3://",
            "",
            "s3:/bucket",
            "s3:bucket",
            "file:/tmp/x",
            "memory:",
            "data:2024",
        ] {
            let e = Store::open_with(url, &S3Env::default()).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{url}: {e}");
            assert!(e.to_string().contains(url), "{url}: {e}");
        }
        let e = Store::open_with("s3:/bucket", &S3Env::default()).unwrap_err();
        assert!(e.to_string().contains("s3://bucket/prefix"), "{e}");
        // No folder was made for any of them (relative to the test's working directory).
        for made in ["s3:", "s3:bucket", "file:", "memory:", "data:2024"] {
            assert!(!std::path::Path::new(made).exists(), "{made}");
        }
    }

    #[tokio::test]
    async fn a_blocking_rename_moves_a_local_file_into_new_folders_and_leaves_other_stores() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        store
            .put("_staging/r/a.parquet", b"day".to_vec())
            .await
            .unwrap();
        let to = "parquet/x/symbol=S/date=2024-01-02/part-monthly.parquet";
        assert!(store.rename_blocking("_staging/r/a.parquet", to).unwrap());
        assert_eq!(store.get_opt(to).await.unwrap().unwrap().as_ref(), b"day");
        assert_eq!(store.get_opt("_staging/r/a.parquet").await.unwrap(), None);
        // A missing source is an error naming it, not a silent no-op.
        let e = store.rename_blocking("_staging/r/gone", to).unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
        // A store that is not a folder is left to the async rename.
        let mem = Store::open("memory://").unwrap();
        mem.put("a", b"x".to_vec()).await.unwrap();
        assert!(!mem.rename_blocking("a", "b").unwrap());
        assert!(mem.get_opt("a").await.unwrap().is_some());
    }

    /// A run's local writes pass through its staging folder: nothing else appears beside the
    /// data, create-if-absent holds, and the staging folder is empty afterwards.
    #[tokio::test]
    async fn local_writes_of_a_run_are_staged_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap())
            .unwrap()
            .for_run("r1");
        store.put("a/b.json", b"1".to_vec()).await.unwrap();
        store.put("a/b.json", b"2".to_vec()).await.unwrap();
        assert!(
            store
                .put_if_absent("a/c.json", b"x".to_vec())
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_if_absent("a/c.json", b"y".to_vec())
                .await
                .unwrap()
        );
        let src = dir.path().join("src.bin");
        std::fs::write(&src, vec![7u8; 100_000]).unwrap();
        assert_eq!(store.put_file("a/d.bin", &src).await.unwrap(), 100_000);
        assert_eq!(std::fs::read(dir.path().join("a/b.json")).unwrap(), b"2");
        assert_eq!(std::fs::read(dir.path().join("a/c.json")).unwrap(), b"x");
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["b.json", "c.json", "d.bin"]);
        let staged: Vec<_> = std::fs::read_dir(dir.path().join("_staging/r1/.w"))
            .unwrap()
            .collect();
        assert!(staged.is_empty(), "{staged:?}");
        // The run's own staging folder is written in place; another run's is not its own.
        store
            .put("_staging/r1/convert/x/2024-01-02.parquet", b"s".to_vec())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("_staging/r1/convert/x/2024-01-02.parquet")).unwrap(),
            b"s"
        );
        let r1 = dir.path().join("_staging/r1");
        assert!(
            store
                .own_staging("_staging/r1/a")
                .is_some_and(|p| p == r1.join("a"))
        );
        assert!(store.own_staging("_staging/r10/a").is_none());
        assert!(store.own_staging("_staging/r2/a").is_none());
        assert!(store.own_staging("a/_staging/r1/a").is_none());
        let staged: Vec<_> = std::fs::read_dir(dir.path().join("_staging/r1/.w"))
            .unwrap()
            .collect();
        assert!(staged.is_empty(), "{staged:?}");
    }

    /// `put_blocking` writes a run's local store on the calling thread, as `put` would (replacing,
    /// in place in the run's own staging folder); any other store is left to `put`.
    #[test]
    fn blocking_puts_write_a_local_run_store_and_decline_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path().to_str().unwrap()).unwrap();
        let store = local.for_run("r1");
        let b = |v: &'static [u8]| Bytes::from_static(v);
        assert!(
            store
                .put_blocking("p/date=1/part.parquet", &b(b"1"))
                .unwrap()
        );
        assert!(
            store
                .put_blocking("p/date=1/part.parquet", &b(b"22"))
                .unwrap()
        );
        assert_eq!(
            std::fs::read(dir.path().join("p/date=1/part.parquet")).unwrap(),
            b"22"
        );
        assert!(
            store
                .put_blocking("_staging/r1/convert/d.parquet", &b(b"s"))
                .unwrap()
        );
        assert_eq!(
            std::fs::read(dir.path().join("_staging/r1/convert/d.parquet")).unwrap(),
            b"s"
        );
        let staged: Vec<_> = std::fs::read_dir(dir.path().join("_staging/r1/.w"))
            .unwrap()
            .collect();
        assert!(staged.is_empty(), "{staged:?}");
        // Without a run (no staging folder to write through) and off the local disk: `put`.
        assert!(!local.put_blocking("q.json", &b(b"x")).unwrap());
        assert!(!dir.path().join("q.json").exists());
        let memory = Store::open("memory://").unwrap().for_run("r1");
        assert!(!memory.put_blocking("q.json", &b(b"x")).unwrap());
    }

    #[test]
    fn s3_url_builds_from_env() {
        let env = S3Env {
            vars: vec![
                ("AWS_ACCESS_KEY_ID".into(), "k".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
                ("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()),
            ],
        };
        Store::open_with("s3://bucket/some/prefix", &env).unwrap();
    }
}
