//! Support for the end-to-end tests: locating the real job binaries, running them, and starting
//! moto's S3 server on a free loopback port.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use frames::polars::prelude::{DataFrame, DataType, ParquetReader, SerReader};

/// A job binary (target/<profile>/<name>), brought up to date first when cargo runs the tests:
/// `cargo test` builds no binary of a package without integration tests, and `cargo test -p
/// archive-sim` alone would run a stale one. The build covers every binary of the workspace with
/// the tests' own feature resolution (`cargo build --workspace --bins --tests`), once per test
/// process, so it reuses what `cargo test --workspace` compiled and only links; building one
/// package (`cargo build -p NAME`) resolves Polars' features for that package alone and compiles
/// Polars again for each job.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(name);
    BUILT.call_once(|| {
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut c = Command::new(cargo);
            c.args(["build", "--workspace", "--bins", "--tests", "--quiet"]);
            // The variables cargo sets for a test process are no build settings: inherited, they
            // reach build scripts and make this build's fingerprints differ from the test
            // build's, which then compiles Polars again both ways.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_BIN_EXE_")
                    || matches!(
                        k.as_ref(),
                        "CARGO_MANIFEST_DIR"
                            | "CARGO_MANIFEST_PATH"
                            | "CARGO_CRATE_NAME"
                            | "CARGO_PRIMARY_PACKAGE"
                            | "CARGO_TARGET_TMPDIR"
                            | "CARGO_RUSTC_CURRENT_DIR"
                            | "OUT_DIR"
                    )
                {
                    c.env_remove(k.as_ref());
                }
            }
            if dir.file_name().is_some_and(|n| n == "release") {
                c.arg("--release");
            }
            let status = c.status().expect("cargo runs");
            assert!(
                status.success(),
                "cargo build --workspace --bins --tests failed"
            );
        }
    });
    assert!(
        p.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build -p {name}`) first",
        p.display()
    );
    p
}

/// A command for a job binary with a clean, quiet environment.
pub fn job(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("PIPELINE_STORE")
        .env_remove("PIPELINE_RUN_ID")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// Run a command, returning its output; panics with both streams if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("job binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON report a job printed as the last line of stdout.
/// The `warnings` of a run report, as text.
pub fn warnings(report: &serde_json::Value) -> Vec<String> {
    report["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list in {report}"))
        .iter()
        .map(|w| w.as_str().expect("a warning is text").to_string())
        .collect()
}

/// Run a job binary with `--store STORE ARGS`; asserts exit 0 and returns its report.
pub async fn run_ok(name: &str, store: &Path, args: &[&str]) -> serde_json::Value {
    run_ok_env(name, store, args, &[]).await
}

/// [`run_ok`] with these environment variables set.
pub async fn run_ok_env(
    name: &str,
    store: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> serde_json::Value {
    let mut c = job(name);
    c.args(["--store", store.to_str().unwrap()])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = tokio::process::Command::from(c).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{name} {args:?}:\n{}",
        stderr(&out)
    );
    report(&out)
}

pub fn report(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no report on stdout; stderr:\n{}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("report is not JSON ({e}): {line}"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python with duckdb, pyarrow and polars, and jsonschema, pyyaml and kubernetes-validate
/// (`PIPELINE_TEST_PYTHON`, set by `.ci/run`).
/// `None` with a message where it is not set, unless `CI` is set: CI must run these checks.
pub fn python_with_readers() -> Option<PathBuf> {
    match std::env::var_os("PIPELINE_TEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("PIPELINE_TEST_PYTHON is required under CI (see .ci/run)")
        }
        None => {
            eprintln!(
                "SKIPPED: PIPELINE_TEST_PYTHON not set; point it at a python with the packages .ci/run installs to run the reader and schema checks"
            );
            None
        }
    }
}

/// Every file below `dir` (none if it does not exist), sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// moto's S3 server on loopback, killed on drop.
pub struct Moto {
    child: Option<Child>,
    pub endpoint: String,
}

impl Moto {
    /// Start `moto_server` on a free port. `None` (with a message) where it is not installed,
    /// unless `CI` is set: CI must run the S3 tests.
    pub fn start() -> Option<Moto> {
        if let Ok(ep) = std::env::var("PIPELINE_TEST_S3_ENDPOINT") {
            return Some(Moto {
                child: None,
                endpoint: ep,
            });
        }
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("moto_server is required under CI: {e}");
                }
                eprintln!(
                    "SKIPPED: moto_server not found ({e}); `pip install 'moto[server]'` to run the S3 tests"
                );
                return None;
            }
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on {endpoint}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto {
            child: Some(child),
            endpoint,
        })
    }

    /// Create a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        let port: u16 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    }

    /// A store on this server (as the job binaries open it from the same environment).
    pub fn store(&self, url: &str) -> shared::Store {
        let vars = self
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        shared::Store::open_with(url, &shared::store::S3Env { vars }).expect("S3 store opens")
    }

    /// Environment for a job binary to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// Reading what the jobs wrote.

pub fn read(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn i64s(df: &DataFrame, c: &str) -> Vec<i64> {
    let s = df.column(c).unwrap().cast(&DataType::Int64).unwrap();
    s.i64().unwrap().into_no_null_iter().collect()
}

pub fn f64s(df: &DataFrame, c: &str) -> Vec<Option<f64>> {
    df.column(c).unwrap().f64().unwrap().iter().collect()
}

/// Every row of every Parquet file under `dir` (one dataset), concatenated (files in path order).
pub fn read_all(dir: &Path) -> DataFrame {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut out: Option<DataFrame> = None;
    for f in files {
        let df = read(&f);
        out = Some(match out {
            None => df,
            Some(mut acc) => {
                acc.vstack_mut_owned(df).unwrap();
                acc
            }
        });
    }
    out.expect("files")
}

/// A PostgreSQL server of its own: a cluster initialised in a temp folder, listening on a free
/// loopback port, stopped on drop. The superuser `postgres` has a password over TCP
/// (scram-sha-256), so that a wrong one is refused.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    pub port: u16,
}

pub const PG_PASSWORD: &str = "s3cret-pw";

impl Postgres {
    /// `None` (with a message) where PostgreSQL is not installed, unless `CI` is set: CI must
    /// run the database tests (`.ci/run` installs it).
    pub fn start() -> Option<Postgres> {
        Postgres::start_with(false)
    }

    /// [`Postgres::start`] with TLS on: a test CA (`ca.crt` here, [`Postgres::ca`]) signed the
    /// server's certificate, valid for the name `localhost` only (not for 127.0.0.1); every
    /// connection is logged with whether it used TLS, and every DDL statement.
    pub fn start_tls() -> Option<Postgres> {
        Postgres::start_with(true)
    }

    /// The test CA's certificate of a [`Postgres::start_tls`] server.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn start_with(tls: bool) -> Option<Postgres> {
        let bin = [
            "/usr/lib/postgresql/17/bin",
            "/usr/lib/postgresql/16/bin",
            "/usr/lib/postgresql/15/bin",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("initdb").exists());
        let Some(bin) = bin else {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL (initdb, pg_ctl) is required under CI: .ci/run installs it");
            }
            eprintln!(
                "SKIPPED: PostgreSQL not found; `apt-get install postgresql` to run the load tests"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // initdb and pg_ctl refuse to run as root: as root, the cluster belongs to `postgres`.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let run_as = root.then(|| "postgres".to_string());
        if root {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(st.success(), "chown the cluster folder to postgres");
        }
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PG_PASSWORD).unwrap();
        if tls {
            make_certificates(dir.path());
        }
        if root {
            Command::new("chown")
                .args(["-R", "postgres:postgres", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
        }
        let pg = Postgres {
            port: free_port(),
            dir,
            bin,
            run_as,
        };
        let data = pg.dir.path().join("data");
        let out = pg
            .cmd("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "-E", "UTF8"])
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .args(["--pwfile", pw.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            pg.port,
            pg.dir.path().display()
        );
        if tls {
            let d = pg.dir.path().display();
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key -c log_connections=on -c log_statement=ddl"
            ));
        }
        let log = pg.dir.path().join("log");
        let out = pg
            .cmd("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
            ])
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(pg)
    }

    fn cmd(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        let mut c = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    /// The URL of database `postgres` with the superuser's password.
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A client connection (tokio-postgres) for the test's own queries.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

/// A test CA and a server certificate it signed for `localhost`, with openssl, into `dir`:
/// `ca.crt`, `server.crt`, `server.key` (mode 0600, as PostgreSQL requires).
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl, to make the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]);
    a.extend(["-subj", "/CN=pipeline test CA"]);
    a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    a.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend(["-keyout", "server.key", "-out", "server.csr"]);
    a.extend(["-subj", "/CN=localhost"]);
    openssl(&a);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .cmd("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
