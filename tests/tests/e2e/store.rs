//! The store conformance suite: what every job assumes of a store (reads of absent objects,
//! conditional puts, atomic rename, listings and folders, large files streamed both ways,
//! idempotent deletes), run against memory, a local folder (a plain path and a `file://` URL)
//! and S3 (moto).

use bytes::Bytes;
use shared::Store;

use crate::common::Moto;

pub async fn conformance(store: &Store) {
    assert_eq!(store.get_opt("a/b.json").await.unwrap(), None);
    store
        .put("a/b.json", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(
        store.get_opt("a/b.json").await.unwrap().unwrap().as_ref(),
        b"1"
    );
    assert_eq!(store.size_opt("a/b.json").await.unwrap(), Some(1));
    assert!(
        store
            .put_if_absent("a/c.json", Bytes::from_static(b"x"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_absent("a/c.json", Bytes::from_static(b"y"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_opt("a/c.json").await.unwrap().unwrap().as_ref(),
        b"x"
    );
    store.rename("a/c.json", "a/d.json").await.unwrap();
    let listed: Vec<String> = store
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(listed, vec!["a/b.json", "a/d.json"]);
    let (sha, size, head) = store.sha256_of("a/b.json").await.unwrap().unwrap();
    assert_eq!(
        (sha.as_str(), size, head.as_slice()),
        (shared::checksum::sha256_hex(b"1").as_str(), 1, &b"1"[..])
    );
    assert!(store.sha256_of("a/none").await.unwrap().is_none());
    store.put("a/x/1", Bytes::from_static(b"1")).await.unwrap();
    store
        .put("a/y/z/2", Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(store.list_dirs("a/").await.unwrap(), vec!["a/x", "a/y"]);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), vec![7u8; 9 << 20]).unwrap();
    assert_eq!(store.put_file("a/big", tmp.path()).await.unwrap(), 9 << 20);
    assert_eq!(store.size_opt("a/big").await.unwrap(), Some(9 << 20));
    let back = tempfile::NamedTempFile::new().unwrap();
    assert_eq!(
        store.download_to("a/big", back.path()).await.unwrap(),
        Some(9 << 20)
    );
    assert_eq!(std::fs::read(back.path()).unwrap(), vec![7u8; 9 << 20]);
    assert_eq!(
        store.download_to("a/none", back.path()).await.unwrap(),
        None
    );
    if let Some(p) = store.local_path("a/big") {
        assert_eq!(std::fs::metadata(p).unwrap().len(), 9 << 20);
    }
    for p in ["a/x/1", "a/y/z/2", "a/big"] {
        store.delete(p).await.unwrap();
    }
    store.delete("a/d.json").await.unwrap();
    store.delete("a/d.json").await.unwrap();
    assert_eq!(store.list("a").await.unwrap().len(), 1);
}

#[tokio::test]
async fn memory() {
    conformance(&Store::open("memory://").unwrap()).await;
}

#[tokio::test]
async fn local_folder_as_a_path_and_a_file_url() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    conformance(&Store::open(plain.to_str().unwrap()).unwrap()).await;
    let url = format!("file://{}", dir.path().join("url").display());
    conformance(&Store::open(&url).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("conformance");
    conformance(&moto.store("s3://conformance/a/prefix")).await;
}

/// A bucket that does not exist is a configuration error (exit 2) naming it, before any work
/// (issue: S3 with a missing bucket exited 1 with a message about the token endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_configuration_error_before_any_work() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let mut c = crate::common::job("convert");
    c.args([
        "--store",
        "s3://no-such-bucket/data",
        "--symbols",
        "BTCUSDT",
        "--start",
        "2024-12-01",
        "--end",
        "2024-12-02",
    ])
    .envs(moto.env());
    let out = tokio::process::Command::from(c).output().await.unwrap();
    let err = crate::common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the bucket `no-such-bucket` does not exist"),
        "{err}"
    );
}
