//! The `load` job: copies the store's datasets into PostgreSQL, one table per dataset with
//! typed columns and the dataset's key as the primary key — the optimized archive datasets
//! (`<schema>.<market>_<dataset>`, e.g. `binance.um_klines_1m`), aggregate's features
//! (`um_features_1h`), the bars of every spec (`um_bars`, the spec a column) and build-panel's
//! panels (`panel_<name>`). A unit is one upstream file (a symbol-month, a symbol-year, a
//! panel): in one transaction its rows are deleted and the file's rows copied in with
//! `COPY … FROM STDIN (FORMAT binary)`, one row group at a time; the manifest records the
//! file's sha256, so a rerun loads nothing, a rewritten file replaces only its rows, and a
//! killed load leaves the table as it was before that unit.

#![forbid(unsafe_code)]

pub mod pg;
pub mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use chrono::{Datelike, NaiveDate};
use futures::SinkExt;
use serde::Serialize;
use shared::cli::CommonSpec;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{Entry, ManifestWriter, UnitStatus};
use shared::paths::{Dataset, FileDate, Market};
use shared::{Context, Error, Result};

use pg::{HEADER, Partitioning, TRAILER, Table, Target};

pub const JOB_VERSION: &str = "1";

/// Units loading at once: each holds a connection and a transaction.
const MAX_CONNECTIONS: usize = 4;

/// Bytes of COPY data sent at a time.
const CHUNK: usize = 1 << 20;

/// The manifest scope of build-panel's panels.
const PANEL_SCOPE: &str = "final";

/// Which bar specs to load.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Bars {
    /// Every spec the bars job has recorded for the market.
    All,
    Specs(Vec<String>),
}

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    /// Whether the archive datasets of `--data-type` are loaded (they are unless only derived
    /// datasets were asked for).
    pub archive: bool,
    /// Aggregate's bar lengths to load (`1h`).
    pub features: Vec<String>,
    pub bars: Bars,
    /// Build-panel's panels to load, by name.
    pub panels: Vec<String>,
    /// The PostgreSQL schema the tables live in.
    pub schema: String,
    /// Where to connect; the report shows it without its password (`user@host:port/dbname`).
    /// `None` with `--optional` and no database configured.
    #[serde(rename = "database", serialize_with = "shown")]
    pub target: Option<Target>,
}

fn shown<S: serde::Serializer>(t: &Option<Target>, s: S) -> std::result::Result<S::Ok, S::Error> {
    t.as_ref().map(|t| &t.shown).serialize(s)
}

/// A table settled for this run: created or checked, and whether it is natively partitioned.
struct Ready {
    table: Table,
    partitioned: bool,
}

#[derive(Serialize)]
pub struct Load {
    #[serde(flatten)]
    spec: Spec,
    /// Tables created or checked by this run, by name.
    #[serde(skip)]
    ready: tokio::sync::Mutex<HashMap<String, Arc<Ready>>>,
    /// Connections between units: a unit takes one (or opens one) and gives it back when it
    /// ends well. A small unit (a funding month, a symbol-year of features) costs less than the
    /// connection's handshake, TLS and SCRAM.
    #[serde(skip)]
    idle: Mutex<Vec<tokio_postgres::Client>>,
    /// Partitions this run has made or found, by name ([`Table::partition_name`]).
    #[serde(skip)]
    partitions: Mutex<HashSet<String>>,
}

impl Load {
    pub fn new(spec: Spec) -> Load {
        Load {
            spec,
            ready: tokio::sync::Mutex::new(HashMap::new()),
            idle: Mutex::new(Vec::new()),
            partitions: Mutex::new(HashSet::new()),
        }
    }
}

/// What a unit's file is, which says its table and the rows it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An optimized symbol-month of an archive dataset.
    Archive(Dataset),
    /// A symbol-year of aggregate's features at one bar length.
    Features(String),
    /// A symbol-year of one bar spec's bars.
    Bars(String),
    /// A whole panel.
    Panel(String),
}

impl Source {
    /// The job whose manifest lists the files.
    fn upstream(&self) -> JobName {
        match self {
            Source::Archive(_) => JobName::OPTIMIZE,
            Source::Features(_) => JobName::AGGREGATE,
            Source::Bars(_) => JobName::BARS,
            Source::Panel(_) => JobName::BUILD_PANEL,
        }
    }

    /// The upstream manifest's scope.
    fn upstream_scope(&self, market: Market) -> String {
        match self {
            Source::Archive(ds) => ds.scope(),
            Source::Features(freq) => format!("{}/{freq}", market.storage_name()),
            Source::Bars(spec) => format!("{}/{spec}", market.storage_name()),
            Source::Panel(_) => PANEL_SCOPE.to_string(),
        }
    }

    /// This job's manifest scope for the source's units.
    fn scope(&self, market: Market) -> String {
        match self {
            Source::Archive(ds) => ds.scope(),
            Source::Features(freq) => format!("{}/features-{freq}", market.storage_name()),
            Source::Bars(spec) => format!("{}/bars-{spec}", market.storage_name()),
            Source::Panel(_) => PANEL_SCOPE.to_string(),
        }
    }

    /// The table's leading columns that hold the unit's constants.
    fn const_names(&self) -> &'static [&'static str] {
        match self {
            Source::Bars(_) => &["symbol", "spec"],
            Source::Panel(_) => &[],
            _ => &["symbol"],
        }
    }

    /// The column a unit's period is a range of.
    fn time_column(&self) -> String {
        match self {
            Source::Archive(ds) => shared::formats::format_of(ds).time_field.to_string(),
            Source::Bars(_) => "close_time".into(),
            _ => "open_time".into(),
        }
    }

    /// The table's name in the schema.
    fn table_name(&self, market: Market) -> String {
        let clean = |s: &str| -> String {
            pg::snake(s)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        match self {
            Source::Archive(ds) => Table::archive_name(ds),
            Source::Features(freq) => format!("{}_features_{}", market.cli_name(), clean(freq)),
            Source::Bars(_) => format!("{}_bars", market.cli_name()),
            Source::Panel(name) => format!("panel_{}", clean(name)),
        }
    }
}

/// One upstream file to load (or, when the upstream recorded none, a unit whose rows are only
/// deleted: a period whose rows all belong elsewhere now).
pub struct FileUnit {
    pub source: Source,
    /// The symbol, or the panel's name: the slot of this job's manifest.
    pub symbol: String,
    /// The manifest entry's unit: `SYMBOL/YYYY-MM`, `SYMBOL/YYYY` or the panel's name.
    pub key: String,
    /// The period the file holds, `[from, until)` as RFC 3339 instants, and its partition's
    /// suffix; `None` for a panel (its file is the whole table).
    pub period: Option<Period>,
    pub path: Option<String>,
    pub sha256: String,
    /// This job's manifest scope.
    pub scope: String,
    pub table: String,
    pub writer: Arc<ManifestWriter>,
}

#[derive(Debug, Clone)]
pub struct Period {
    pub from: String,
    pub until: String,
    pub suffix: String,
}

impl Period {
    fn month(m: FileDate) -> Period {
        let first = m.first_day();
        let next = m.last_day().succ_opt().unwrap_or(NaiveDate::MAX);
        Period {
            from: format!("{first}T00:00:00Z"),
            until: format!("{next}T00:00:00Z"),
            suffix: format!("{:04}{:02}", first.year(), first.month()),
        }
    }

    fn year(y: i32) -> Period {
        Period {
            from: format!("{y:04}-01-01T00:00:00Z"),
            until: format!("{:04}-01-01T00:00:00Z", y + 1),
            suffix: format!("{y:04}"),
        }
    }
}

impl FileUnit {
    /// The unit's constant columns: the symbol, and the spec for bars; none for a panel.
    fn consts(&self) -> Vec<&str> {
        match &self.source {
            Source::Bars(spec) => vec![self.symbol.as_str(), spec.as_str()],
            Source::Panel(_) => Vec::new(),
            _ => vec![self.symbol.as_str()],
        }
    }
}

#[derive(Default)]
pub struct Totals {
    rows: u64,
    bytes: u64,
    tables: BTreeMap<String, u64>,
}

impl Job for Load {
    const NAME: JobName = JobName::LOAD;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "files";
    type Unit = FileUnit;
    type Done = (String, u64, u64);
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.spec.common
    }

    /// Where rows go: the database (host, port and name, not the user) and the schema. Another
    /// database or schema loads everything again — a manifest says what one database holds.
    fn params_hash(&self) -> String {
        let database = self.spec.target.as_ref().map(pg::Target::database);
        shared::manifest::params_hash(&(&self.spec.schema, database))
    }

    fn concurrency(&self) -> usize {
        self.spec.common.concurrency.min(MAX_CONNECTIONS)
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<FileUnit>> {
        if self.spec.target.is_none() {
            p.tally.warn(
                "no database configured (--database-url, DATABASE_URL or PGHOST): nothing loaded",
            );
            return Ok(Vec::new());
        }
        let mut units = Vec::new();
        for source in self.sources(p).await? {
            self.plan_source(p, &source, &mut units).await?;
        }
        // Reach the database and settle its tables before any unit: a refused password or a
        // mismatched table stops the run here (exit 2), not once per unit.
        if !units.is_empty() && !self.spec.common.dry_run {
            let client = self.client(p.ctx).await?;
            // Per table, a unit with a file if it has one: a derived table takes its columns
            // from a file.
            let mut first: BTreeMap<&str, &FileUnit> = BTreeMap::new();
            for u in &units {
                let slot = first.entry(u.table.as_str()).or_insert(u);
                if slot.path.is_none() && u.path.is_some() {
                    *slot = u;
                }
            }
            for u in first.into_values() {
                if let Some(table) = self.table_of(p.ctx, u).await? {
                    self.ensure(&client, table).await?;
                }
            }
            self.give_back(client);
        }
        Ok(units)
    }

    fn unit_key(u: &FileUnit) -> String {
        format!("{}/{}", u.scope, u.key)
    }

    fn dry_run_line(&self, u: &FileUnit) -> String {
        let from = u.path.as_deref().unwrap_or("(no file: rows deleted)");
        format!("load       {from} → {}.{}", self.spec.schema, u.table)
    }

    async fn execute(
        job: Arc<Self>,
        ctx: Context,
        stamp: Stamp,
        u: FileUnit,
    ) -> Result<Self::Done> {
        let (rows, bytes) = job.load_file(&ctx, &u).await?;
        let mut e = stamp.entry(
            u.key.clone(),
            UnitStatus::Done,
            [
                ("sha256".to_string(), u.sha256.clone()),
                (
                    "table".to_string(),
                    format!("{}.{}", job.spec.schema, u.table),
                ),
            ]
            .into(),
            Vec::new(),
        );
        e.detail = Some(format!("rows={rows}"));
        u.writer.record(e).await?;
        Ok((u.table, rows, bytes))
    }

    fn absorb(
        &self,
        t: &mut Totals,
        _key: &str,
        (table, rows, bytes): Self::Done,
    ) -> Finished<FileUnit> {
        t.rows += rows;
        t.bytes += bytes;
        *t.tables.entry(table).or_default() += rows;
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
        Ok(serde_json::json!({
            "database": self.spec.target.as_ref().map(|t| &t.shown),
            "schema": self.spec.schema,
            "rows": t.rows,
            "rows_by_table": t.tables,
            "seconds": secs,
            "rows_per_sec": t.rows as f64 / secs,
        }))
    }
}

impl Load {
    /// What this run loads: the archive datasets, the features at each bar length, the bar
    /// specs (`all`: every spec bars recorded for the market) and the panels — a panel in the
    /// first shard only, since it is one unit.
    async fn sources(&self, p: &mut Planner<'_>) -> Result<Vec<Source>> {
        let spec = &self.spec;
        let market = spec.common.market;
        let mut out = Vec::new();
        if spec.archive {
            out.extend(spec.common.datasets.iter().map(|d| Source::Archive(*d)));
        }
        out.extend(spec.features.iter().cloned().map(Source::Features));
        let recorded = if spec.bars == Bars::Specs(Vec::new()) {
            Vec::new()
        } else {
            shared::manifest::manifest_symbols(&p.ctx.store, JobName::BARS, market.storage_name())
                .await?
        };
        match &spec.bars {
            Bars::All if recorded.is_empty() => p.tally.warn(format!(
                "--bars all: the bars job has recorded no spec for {} in this store",
                market.cli_name()
            )),
            Bars::All => out.extend(recorded.into_iter().map(Source::Bars)),
            Bars::Specs(specs) => {
                for s in specs {
                    if !recorded.contains(s) {
                        p.tally.warn(format!(
                            "--bars {s}: the bars job has recorded no such spec for {} (recorded: {})",
                            market.cli_name(),
                            if recorded.is_empty() { "none".to_string() } else { recorded.join(", ") }
                        ));
                    } else {
                        out.push(Source::Bars(s.clone()));
                    }
                }
            }
        }
        if spec.common.shard.0 == 0 {
            out.extend(spec.panels.iter().cloned().map(Source::Panel));
        }
        Ok(out)
    }

    /// The units of one source: the upstream's done files that this job has not loaded as they
    /// are now.
    async fn plan_source(
        &self,
        p: &mut Planner<'_>,
        source: &Source,
        units: &mut Vec<FileUnit>,
    ) -> Result<()> {
        let market = self.spec.common.market;
        let up_scope = source.upstream_scope(market);
        let scope = source.scope(market);
        let table = source.table_name(market);
        let upstream_job = source.upstream();
        if let Source::Panel(name) = source {
            let m = p.upstream(upstream_job, &up_scope, name).await?;
            let out = m
                .get(name)
                .filter(|e| e.status == UnitStatus::Done)
                .and_then(|e| {
                    e.outputs
                        .iter()
                        .find(|o| o.path.ends_with("/panel.parquet"))
                });
            let Some(out) = out else {
                p.tally.warn(format!(
                    "--panel {name}: build-panel has no finished panel of that name in this store"
                ));
                p.tally.miss(format!("panel {name}"));
                return Ok(());
            };
            let (writer, own) = p.manifest(&scope, name).await?;
            if p.is_current_with(own.get(name), |prev| {
                prev.inputs.get("sha256") == Some(&out.sha256)
            }) {
                return Ok(());
            }
            units.push(FileUnit {
                source: source.clone(),
                symbol: name.clone(),
                key: name.clone(),
                period: None,
                path: Some(out.path.clone()),
                sha256: out.sha256.clone(),
                scope,
                table,
                writer,
            });
            return Ok(());
        }
        let symbols = p.symbols(upstream_job, &up_scope).await?;
        if up_scope == scope {
            p.load_ahead(&[upstream_job], &scope, &symbols);
        }
        for sym in symbols {
            let upstream = p.upstream(upstream_job, &up_scope, &sym).await?;
            let (writer, own) = p.manifest(&scope, &sym).await?;
            for e in upstream.entries().filter(|e| e.status == UnitStatus::Done) {
                let Some(period) = self.period_of(source, e) else {
                    continue;
                };
                let out = e.outputs.first();
                let sha = out.map(|o| o.sha256.clone()).unwrap_or_default();
                let previous = own.get(&e.unit);
                // No file now and nothing loaded before: nothing to replace.
                if out.is_none() && previous.is_none() {
                    continue;
                }
                if p.is_current_with(previous, |prev| prev.inputs.get("sha256") == Some(&sha)) {
                    continue;
                }
                units.push(FileUnit {
                    source: source.clone(),
                    symbol: sym.clone(),
                    key: e.unit.clone(),
                    period: Some(period),
                    path: out.map(|o| o.path.clone()),
                    sha256: sha,
                    scope: scope.clone(),
                    table: table.clone(),
                    writer: writer.clone(),
                });
            }
        }
        Ok(())
    }

    /// The period an upstream entry (`SYMBOL/YYYY-MM`, `SYMBOL/YYYY`) holds, if it lies in the
    /// run's range.
    fn period_of(&self, source: &Source, e: &Entry) -> Option<Period> {
        let range = self.spec.common.range;
        let (_, when) = e.unit.rsplit_once('/')?;
        match source {
            Source::Archive(_) => {
                let month = when.parse::<FileDate>().ok()?;
                (month.last_day() >= range.start && month.first_day() <= range.end)
                    .then(|| Period::month(month))
            }
            _ => {
                let year = when.parse::<i32>().ok()?;
                (range.start.year() <= year && year <= range.end.year()).then(|| Period::year(year))
            }
        }
    }

    /// A unit's table: the registry's for an archive dataset; for a derived one, its file's
    /// columns (`None` without a file).
    async fn table_of(&self, ctx: &Context, u: &FileUnit) -> Result<Option<Table>> {
        if let Source::Archive(ds) = &u.source {
            return Ok(Some(Table::of(&self.spec.schema, ds)));
        }
        let Some(path) = &u.path else {
            return Ok(None);
        };
        let local = frames::file::LocalCopy::fetch(&ctx.store, path)
            .await?
            .ok_or_else(|| Error::upstream_missing(path, u.source.upstream()))?;
        let file = frames::file::ParquetFile::open(local.path(), path)?;
        self.table_for(u, &file.columns(), path).map(Some)
    }

    /// The table a unit's file goes to: the registry's for an archive dataset, else the one
    /// its file's columns make.
    fn table_for(
        &self,
        u: &FileUnit,
        columns: &[(String, frames::polars::prelude::DataType)],
        path: &str,
    ) -> Result<Table> {
        let schema = &self.spec.schema;
        if let Source::Archive(ds) = &u.source {
            return Ok(Table::of(schema, ds));
        }
        let time = u.source.time_column();
        let (key, partitioning) = match &u.source {
            Source::Bars(_) => (&["symbol", "spec", "bar"][..], Partitioning::Year),
            Source::Panel(_) => (&["symbol", "open_time"][..], Partitioning::None),
            _ => (&["symbol", "open_time"][..], Partitioning::Year),
        };
        let shape = pg::Shape {
            consts: u.source.const_names(),
            key,
            time: &time,
            partitioning,
        };
        Table::derived(schema, &u.table, &shape, columns, path)
    }

    /// Whether this run made (or found) the partition already: the units of a month after the
    /// first skip its DDL transaction.
    fn partition_made(&self, name: &str) -> bool {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// An idle connection of this run, else a new one.
    async fn client(&self, ctx: &Context) -> Result<tokio_postgres::Client> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => return self.connect(ctx).await,
            }
        }
    }

    /// A connection whose work ended well, for the next unit.
    fn give_back(&self, client: tokio_postgres::Client) {
        if !client.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(client);
        }
    }

    async fn connect(&self, ctx: &Context) -> Result<tokio_postgres::Client> {
        let target = self
            .spec
            .target
            .as_ref()
            .ok_or_else(|| Error::usage("no database configured"))?;
        tokio::select! {
            r = target.connect() => r,
            _ = ctx.cancel.cancelled() => Err(Error::Interrupted),
        }
    }

    /// The views over the tables this schema holds: `oi_price_1h` once USD-M 1m klines and
    /// metrics are both there.
    async fn views(&self, ctx: &Context) -> Result<()> {
        let client = self.client(ctx).await?;
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

    /// TimescaleDB where the server has it (installed once by this job), else native
    /// partitions. Hypertable chunks: a week for trade-level data, a month for the other archive
    /// datasets, half a year for the hourly features and the bars.
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
        let chunk_days = match table.partitioning {
            Partitioning::Month if table.name.contains("trades") => 7,
            Partitioning::Month => 30,
            _ => 180,
        };
        Ok(pg::Layout::Timescale {
            chunk_days,
            compress_after_days: 30,
        })
    }

    /// Whether `table` is natively partitioned (its periods need partitions).
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
    /// run.
    async fn ensure(&self, client: &tokio_postgres::Client, table: Table) -> Result<Arc<Ready>> {
        let mut ready = self.ready.lock().await;
        if let Some(r) = ready.get(&table.name) {
            return Ok(r.clone());
        }
        let q = table.qualified();
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
            let layout = self.layout(client, &table).await?;
            for stmt in table.ddl(layout) {
                client.batch_execute(&stmt).await.map_err(db)?;
            }
            tracing::info!(table = %q, layout = ?layout, "created");
        } else {
            let cols: Vec<(String, String)> =
                existing.iter().map(|r| (r.get(0), r.get(1))).collect();
            table.check(&cols)?;
        }
        let partitioned = self.partitioned(client, &table).await?;
        let r = Arc::new(Ready { table, partitioned });
        ready.insert(r.table.name.clone(), r.clone());
        Ok(r)
    }

    /// Replace one unit's rows by its file's, in one transaction, on a connection of the
    /// run's (given back if the unit ends well; one that failed mid-transaction is closed).
    async fn load_file(&self, ctx: &Context, u: &FileUnit) -> Result<(u64, u64)> {
        let mut client = self.client(ctx).await?;
        let done = match &u.path {
            None => self.delete_only(&mut client, u).await,
            Some(path) => self.copy_file(ctx, &mut client, u, path).await,
        };
        if done.is_ok() {
            self.give_back(client);
        }
        done
    }

    async fn copy_file(
        &self,
        ctx: &Context,
        client: &mut tokio_postgres::Client,
        u: &FileUnit,
        path: &str,
    ) -> Result<(u64, u64)> {
        let local = frames::file::LocalCopy::fetch(&ctx.store, path)
            .await?
            .ok_or_else(|| Error::upstream_missing(path, u.source.upstream()))?;
        let (lpath, name) = (local.path().to_path_buf(), path.to_string());
        let file =
            tokio::task::spawn_blocking(move || frames::file::ParquetFile::open(&lpath, &name))
                .await
                .map_err(|e| Error::Internal(format!("{path}: {e}")))??;
        let file_table = self.table_for(u, &file.columns(), path)?;
        let ready = self.ready.lock().await.get(&u.table).cloned();
        let table = match ready {
            Some(r) => r,
            None => self.ensure(client, file_table.clone()).await?,
        };
        // A derived file is checked against its table: a column added, dropped or retyped
        // upstream is refused by name, never cast.
        if !matches!(u.source, Source::Archive(_)) {
            file_table
                .check(&table.table.described())
                .map_err(|e| Error::usage(format!("{path} does not match its table: {e}")))?;
        }
        let t = &table.table;
        let q = t.qualified();
        let db = |e: tokio_postgres::Error| sql_error(&q, &e);
        let partition = u
            .period
            .as_ref()
            .filter(|_| table.partitioned)
            .filter(|p| !self.partition_made(&t.partition_name(&p.suffix)));
        if let Some(period) = partition {
            // One creator at a time per table: concurrent `IF NOT EXISTS` can still collide.
            let tx = client.transaction().await.map_err(db)?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&q])
                .await
                .map_err(db)?;
            tx.batch_execute(&t.partition_ddl(&period.from, &period.until, &period.suffix))
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            self.partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(t.partition_name(&period.suffix));
        }
        let tx = client.transaction().await.map_err(db)?;
        let deleted = delete(&tx, &q, u).await.map_err(db)?;
        let sink = tx.copy_in(&t.copy_statement()).await.map_err(db)?;
        futures::pin_mut!(sink);
        let file = Arc::new(Mutex::new(file));
        let mut buf = BytesMut::with_capacity(CHUNK);
        buf.extend_from_slice(HEADER);
        let mut rows = 0u64;
        let mut bytes = 0u64;
        let groups = file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .num_row_groups();
        let consts: Vec<String> = u.consts().into_iter().map(str::to_string).collect();
        for rg in 0..groups {
            if ctx.cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            let (f, tb, consts) = (file.clone(), table.clone(), consts.clone());
            let (chunk, n) = tokio::task::spawn_blocking(move || -> Result<(BytesMut, usize)> {
                let df = f.lock().unwrap_or_else(|e| e.into_inner()).read_frame(rg)?;
                let mut out = BytesMut::new();
                let consts: Vec<&str> = consts.iter().map(String::as_str).collect();
                pg::encode(&tb.table, &consts, &df, &mut out)?;
                Ok((out, df.height()))
            })
            .await
            .map_err(|e| Error::Internal(format!("{path}: {e}")))??;
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
                "{q}: COPY took {copied} rows of {path}'s {rows}"
            )));
        }
        tx.commit().await.map_err(db)?;
        tracing::debug!(table = %q, file = %path, rows, deleted, "loaded");
        Ok((rows, bytes))
    }

    /// A unit whose upstream recorded no file now: its period's rows are deleted (a table
    /// never created holds none).
    async fn delete_only(
        &self,
        client: &mut tokio_postgres::Client,
        u: &FileUnit,
    ) -> Result<(u64, u64)> {
        let exists = client
            .query_opt(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                &[&self.spec.schema, &u.table],
            )
            .await
            .map_err(|e| sql_error(&u.table, &e))?
            .is_some();
        if !exists {
            return Ok((0, 0));
        }
        let q = pg::qualified(&self.spec.schema, &u.table);
        let db = |e: tokio_postgres::Error| sql_error(&q, &e);
        let tx = client.transaction().await.map_err(db)?;
        let deleted = delete(&tx, &q, u).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::info!(table = %q, unit = %u.key, deleted, "no file upstream: rows deleted");
        Ok((0, 0))
    }
}

/// Delete a unit's rows: those of its constants (symbol, spec) in its period; all of a panel's.
async fn delete(
    tx: &tokio_postgres::Transaction<'_>,
    qualified: &str,
    u: &FileUnit,
) -> std::result::Result<u64, tokio_postgres::Error> {
    use tokio_postgres::types::ToSql;
    let stmt = pg::delete_statement(
        qualified,
        u.source.const_names(),
        &u.source.time_column(),
        u.period.is_some(),
    );
    let consts = u.consts();
    let mut params: Vec<&(dyn ToSql + Sync)> =
        consts.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    if let Some(p) = &u.period {
        params.push(&p.from);
        params.push(&p.until);
    }
    tx.execute(&stmt, &params).await
}

/// A statement's failure, naming the table.
fn sql_error(table: &str, e: &tokio_postgres::Error) -> Error {
    let text = e
        .as_db_error()
        .map(|d| format!("{} ({})", d.message(), d.code().code()))
        .unwrap_or_else(|| e.to_string());
    Error::Internal(format!("{table}: {text}"))
}
