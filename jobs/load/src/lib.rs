//! The `load` job: copies the optimized archive datasets into PostgreSQL, one table per dataset
//! (`<schema>.<market>_<dataset>`, e.g. `binance.um_klines_1m`) with typed columns, `symbol` as
//! a column and (`symbol`, the dataset's key) as the primary key. A unit is one optimized month
//! file: in one transaction its (symbol, month) rows are deleted and the file's rows copied in
//! with `COPY … FROM STDIN (FORMAT binary)`, one row group at a time; the manifest records the
//! file's sha256, so a rerun loads nothing, a rewritten month replaces only its rows, and a
//! killed load leaves the table as it was before that unit.

#![forbid(unsafe_code)]

pub mod pg;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use chrono::{Datelike, NaiveDate};
use futures::SinkExt;
use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{ManifestWriter, UnitStatus};
use shared::paths::{Dataset, FileDate};
use shared::{Context, Error, Result};

use pg::{HEADER, TRAILER, Table, Target};

pub const JOB_VERSION: &str = "1";
/// The job whose manifest lists the month files.
pub const UPSTREAM: JobName = JobName::OPTIMIZE;

/// Units loading at once: each holds a connection and a transaction.
const MAX_CONNECTIONS: usize = 4;

/// Bytes of COPY data sent at a time.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// The PostgreSQL schema the tables live in.
    pub schema: String,
    /// Where to connect (shown without its password); `None` with `--optional` and no database
    /// configured.
    #[serde(rename = "database")]
    pub target_shown: Option<String>,
    #[serde(skip)]
    pub target: Option<Target>,
}

#[derive(Serialize)]
pub struct Load {
    #[serde(flatten)]
    spec: Spec,
    /// Tables created or checked by this run, and whether each is natively partitioned.
    #[serde(skip)]
    ready: tokio::sync::Mutex<HashMap<String, bool>>,
}

impl Load {
    pub fn new(spec: Spec) -> Load {
        Load {
            spec,
            ready: tokio::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// One optimized month file.
pub struct MonthFile {
    pub dataset: Dataset,
    pub symbol: String,
    pub month: FileDate,
    pub path: String,
    pub sha256: String,
    pub writer: Arc<ManifestWriter>,
}

impl MonthFile {
    fn key(&self) -> String {
        format!("{}/{}", self.symbol, self.month)
    }
}

#[derive(Default)]
pub struct Totals {
    rows: u64,
    bytes: u64,
    tables: Mutex<BTreeMap<String, u64>>,
}

impl Job for Load {
    const NAME: JobName = JobName::LOAD;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "months";
    type Unit = MonthFile;
    type Done = (String, u64, u64);
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.spec.common
    }

    /// The schema shapes where rows go: another schema loads everything again.
    fn params_hash(&self) -> String {
        self.spec.schema.clone()
    }

    fn concurrency(&self) -> usize {
        self.spec.common.concurrency.min(MAX_CONNECTIONS)
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<MonthFile>> {
        if self.spec.target.is_none() {
            p.tally.warn(
                "no database configured (--database-url, DATABASE_URL or PGHOST): nothing loaded",
            );
            return Ok(Vec::new());
        }
        let range = self.spec.common.range;
        let mut units = Vec::new();
        for ds in self.spec.common.datasets.clone() {
            let scope = ds.scope();
            let symbols = p.symbols(UPSTREAM, &scope).await?;
            p.load_ahead(&[UPSTREAM], &scope, &symbols);
            for sym in symbols {
                let upstream = p.upstream(UPSTREAM, &scope, &sym).await?;
                let (writer, own) = p.manifest(&scope, &sym).await?;
                for e in upstream.entries().filter(|e| e.status == UnitStatus::Done) {
                    let Some(month) = e
                        .unit
                        .rsplit_once('/')
                        .and_then(|(_, m)| m.parse::<FileDate>().ok())
                    else {
                        continue;
                    };
                    if month.last_day() < range.start || month.first_day() > range.end {
                        continue;
                    }
                    // A month whose rows all belong elsewhere has no file.
                    let Some(out) = e.outputs.first() else {
                        continue;
                    };
                    let sha = &out.sha256;
                    if p.is_current_with(own.get(&e.unit), |prev| {
                        prev.inputs.get("sha256") == Some(sha)
                    }) {
                        continue;
                    }
                    units.push(MonthFile {
                        dataset: ds,
                        symbol: sym.clone(),
                        month,
                        path: out.path.clone(),
                        sha256: out.sha256.clone(),
                        writer: writer.clone(),
                    });
                }
            }
        }
        // Reach the database and settle its tables before any unit: a refused password or a
        // mismatched table stops the run here (exit 2), not once per unit.
        if !units.is_empty() && !self.spec.common.dry_run {
            let client = self.connect(p.ctx).await?;
            let mut seen = HashSet::new();
            for u in &units {
                if seen.insert(u.dataset) {
                    self.ensure(&client, &Table::of(&self.spec.schema, &u.dataset))
                        .await?;
                }
            }
        }
        Ok(units)
    }

    fn unit_key(u: &MonthFile) -> String {
        u.key()
    }

    fn dry_run_line(&self, u: &MonthFile) -> String {
        let t = Table::of(&self.spec.schema, &u.dataset);
        format!("load       {} → {}", u.path, t.qualified())
    }

    async fn execute(
        job: Arc<Self>,
        ctx: Context,
        stamp: Stamp,
        u: MonthFile,
    ) -> Result<Self::Done> {
        let table = Table::of(&job.spec.schema, &u.dataset);
        let (rows, bytes) = job.load_month(&ctx, &table, &u).await?;
        let mut e = stamp.entry(
            u.key(),
            UnitStatus::Done,
            [
                ("sha256".to_string(), u.sha256.clone()),
                (
                    "table".to_string(),
                    format!("{}.{}", table.schema, table.name),
                ),
            ]
            .into(),
            Vec::new(),
        );
        e.detail = Some(format!("rows={rows}"));
        u.writer.record(e).await?;
        Ok((table.name, rows, bytes))
    }

    fn absorb(
        &self,
        t: &mut Totals,
        _key: &str,
        (table, rows, bytes): Self::Done,
    ) -> Finished<MonthFile> {
        t.rows += rows;
        t.bytes += bytes;
        *t.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(table)
            .or_default() += rows;
        Finished::Done
    }

    fn bytes(&self, t: &Totals) -> u64 {
        t.bytes
    }

    async fn finish(&self, ctx: &Context, t: Totals, end: &mut End) -> Result<serde_json::Value> {
        if t.rows > 0 && !ctx.cancel.is_cancelled() {
            self.views(ctx).await?;
        }
        let secs = end.seconds;
        let tables = t.tables.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(serde_json::json!({
            "database": self.spec.target_shown,
            "schema": self.spec.schema,
            "rows": t.rows,
            "rows_by_table": tables,
            "seconds": secs,
            "rows_per_sec": t.rows as f64 / secs,
        }))
    }
}

impl Load {
    async fn connect(&self, ctx: &Context) -> Result<tokio_postgres::Client> {
        let target = self
            .spec
            .target
            .as_ref()
            .ok_or_else(|| Error::usage("no database configured"))?;
        let shown = &target.shown;
        let (client, conn) = tokio::select! {
            r = target.config.connect(tokio_postgres::NoTls) => r.map_err(|e| connect_error(shown, &e))?,
            _ = ctx.cancel.cancelled() => return Err(Error::Interrupted),
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        });
        Ok(client)
    }

    /// The views over the tables this schema holds: `oi_price_1h` once USD-M 1m klines and
    /// metrics are both there.
    async fn views(&self, ctx: &Context) -> Result<()> {
        let client = self.connect(ctx).await?;
        let schema = &self.spec.schema;
        let have = |t: &'static str| {
            let client = &client;
            async move {
                client
                    .query_opt(
                        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                        &[schema, &t],
                    )
                    .await
                    .map(|r| r.is_some())
                    .map_err(|e| sql_error(t, &e))
            }
        };
        if have("um_klines_1m").await? && have("um_metrics").await? {
            client
                .batch_execute(&pg::oi_price_view(schema))
                .await
                .map_err(|e| sql_error("oi_price_1h", &e))?;
        }
        Ok(())
    }

    /// TimescaleDB where the server has it (installed once by this job), else native monthly
    /// partitions. Hypertable chunks: a week for trade-level data, a month otherwise.
    async fn layout(&self, client: &tokio_postgres::Client, table: &Table) -> Result<pg::Layout> {
        let db = |e: tokio_postgres::Error| sql_error("pg_available_extensions", &e);
        let available = client
            .query_opt(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
                &[],
            )
            .await
            .map_err(db)?
            .is_some();
        if !available {
            return Ok(pg::Layout::Native);
        }
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
            .map_err(db)?;
        let trades = table.name.contains("trades");
        Ok(pg::Layout::Timescale {
            chunk_days: if trades { 7 } else { 30 },
            compress_after_days: 30,
        })
    }

    /// Whether `table` is natively partitioned (its months need partitions).
    async fn partitioned(&self, client: &tokio_postgres::Client, table: &Table) -> Result<bool> {
        let row = client
            .query_opt(
                "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(|e| sql_error(&table.qualified(), &e))?;
        Ok(row.is_some())
    }

    /// Create the table on first use, or check the existing one against the dataset, once per
    /// run. Returns whether it is natively partitioned (its months need partitions).
    async fn ensure(&self, client: &tokio_postgres::Client, table: &Table) -> Result<bool> {
        let mut ready = self.ready.lock().await;
        let q = table.qualified();
        if let Some(partitioned) = ready.get(&q) {
            return Ok(*partitioned);
        }
        let db = |e: tokio_postgres::Error| sql_error(&q, &e);
        let existing = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(db)?;
        if existing.is_empty() {
            let layout = self.layout(client, table).await?;
            for stmt in table.ddl(layout) {
                client.batch_execute(&stmt).await.map_err(db)?;
            }
            tracing::info!(table = %q, layout = ?layout, "created");
        } else {
            let cols: Vec<(String, String)> =
                existing.iter().map(|r| (r.get(0), r.get(1))).collect();
            table.check(&cols)?;
        }
        let partitioned = self.partitioned(client, table).await?;
        ready.insert(q, partitioned);
        Ok(partitioned)
    }

    /// Replace one month's rows of one symbol by the file's, in one transaction.
    async fn load_month(&self, ctx: &Context, table: &Table, u: &MonthFile) -> Result<(u64, u64)> {
        let mut client = self.connect(ctx).await?;
        let partitioned = self.ensure(&client, table).await?;
        let local = frames::file::LocalCopy::fetch(&ctx.store, &u.path)
            .await?
            .ok_or_else(|| Error::upstream_missing(&u.path, UPSTREAM))?;
        let q = table.qualified();
        let db = |e: tokio_postgres::Error| sql_error(&q, &e);
        let (from, until) = month_bounds(u.month);
        if partitioned {
            // One creator at a time per table: concurrent `IF NOT EXISTS` can still collide.
            let yyyymm = format!(
                "{:04}{:02}",
                u.month.first_day().year(),
                u.month.first_day().month()
            );
            let tx = client.transaction().await.map_err(db)?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&q])
                .await
                .map_err(db)?;
            tx.batch_execute(&table.partition_ddl(&from, &until, &yyyymm))
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
        }
        let tx = client.transaction().await.map_err(db)?;
        let deleted = tx
            .execute(&table.delete_statement(), &[&u.symbol, &from, &until])
            .await
            .map_err(db)?;
        let sink = tx.copy_in(&table.copy_statement()).await.map_err(db)?;
        futures::pin_mut!(sink);
        let path = local.path().to_path_buf();
        let name = u.path.clone();
        let file =
            tokio::task::spawn_blocking(move || frames::file::ParquetFile::open(&path, &name))
                .await
                .map_err(|e| Error::Internal(format!("{}: {e}", u.path)))??;
        let file = Arc::new(Mutex::new(file));
        let mut buf = BytesMut::with_capacity(CHUNK);
        buf.extend_from_slice(HEADER);
        let mut rows = 0u64;
        let mut bytes = 0u64;
        let groups = file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .num_row_groups();
        for rg in 0..groups {
            if ctx.cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            let (f, t, sym) = (file.clone(), table.clone(), u.symbol.clone());
            let (chunk, n) = tokio::task::spawn_blocking(move || -> Result<(BytesMut, usize)> {
                let df = f.lock().unwrap_or_else(|e| e.into_inner()).read_frame(rg)?;
                let mut out = BytesMut::new();
                pg::encode(&t, &sym, &df, &mut out)?;
                Ok((out, df.height()))
            })
            .await
            .map_err(|e| Error::Internal(format!("{}: {e}", u.path)))??;
            rows += n as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() >= CHUNK {
                let part = buf.split_to(CHUNK).freeze();
                bytes += part.len() as u64;
                sink.send(part).await.map_err(db)?;
            }
        }
        buf.extend_from_slice(TRAILER);
        bytes += buf.len() as u64;
        sink.send(buf.freeze()).await.map_err(db)?;
        let copied = sink.as_mut().finish().await.map_err(db)?;
        if copied != rows {
            return Err(Error::Internal(format!(
                "{q}: COPY took {copied} rows of {}'s {rows}",
                u.path
            )));
        }
        tx.commit().await.map_err(db)?;
        tracing::debug!(table = %q, file = %u.path, rows, deleted, "loaded");
        Ok((rows, bytes))
    }
}

/// `[first day 00:00, next month 00:00)` of a month, as RFC 3339.
fn month_bounds(m: FileDate) -> (String, String) {
    let first = m.first_day();
    let next = m.last_day().succ_opt().unwrap_or(NaiveDate::MAX);
    (format!("{first}T00:00:00Z"), format!("{next}T00:00:00Z"))
}

/// A connection failure, naming the database without its password. A refused password or an
/// unknown database is a configuration error (exit 2); anything else may pass (a retry).
fn connect_error(shown: &str, e: &tokio_postgres::Error) -> Error {
    let code = e.code().map(|c| c.code().to_string());
    let text = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    match code.as_deref() {
        // invalid_password, invalid_authorization_specification, invalid_catalog_name
        Some("28P01") | Some("28000") | Some("3D000") => {
            Error::usage(format!("database {shown}: {text}"))
        }
        _ => Error::Transient {
            url: format!("postgresql://{shown}"),
            reason: text,
            retry_after: None,
        },
    }
}

/// A statement's failure, naming the table.
fn sql_error(table: &str, e: &tokio_postgres::Error) -> Error {
    let text = e
        .as_db_error()
        .map(|d| format!("{} ({})", d.message(), d.code().code()))
        .unwrap_or_else(|| e.to_string());
    Error::Internal(format!("{table}: {text}"))
}
