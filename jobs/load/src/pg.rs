//! The PostgreSQL side of `load`: connection settings (URL or `PG*` variables, the password kept
//! out of every message), a dataset's table (name, typed columns, key, DDL and the check of an
//! existing table against it), and rows encoded in the binary `COPY` format.

use bytes::{BufMut, BytesMut};
use frames::polars::prelude::*;
use shared::formats::{OutKind, format_of};
use shared::paths::Dataset;
use shared::{Error, Result};

/// Where to connect, how (TLS), and how to name it without the password.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    /// `user@host:port/dbname`: what logs and reports show.
    pub shown: String,
    /// `host:port/dbname`.
    database: String,
    pub tls: crate::tls::Settings,
    connector: Option<crate::tls::Connector>,
}

/// The TLS settings of a connection string, which tokio-postgres' parser does not take in full
/// (`verify-ca`, `verify-full`, `sslrootcert`): the string without them, `sslmode` and
/// `sslrootcert`. Takes URLs (`postgresql://…?sslmode=require`) and `key=value` strings.
fn split_tls(s: &str) -> Result<(String, Option<String>, Option<String>)> {
    let (mut mode, mut root) = (None, None);
    let mut take = |k: &str, v: String| -> Result<bool> {
        match k {
            "sslmode" => mode = Some(v),
            "sslrootcert" => root = Some(v),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(Error::usage(format!(
                    "--database-url: `{k}` (a client certificate) is not supported; use a password"
                )));
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        let Some((base, query)) = s.split_once('?') else {
            return Ok((s.to_string(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(
                k,
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, mode, root))
    } else {
        let mut kept = Vec::new();
        for tok in s.split_whitespace() {
            let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
            if !take(k.trim(), v.trim_matches('\'').to_string())? {
                kept.push(tok);
            }
        }
        Ok((kept.join(" "), mode, root))
    }
}

impl Target {
    /// From `--database-url` (or `DATABASE_URL`), else the standard `PG*` variables
    /// (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`); TLS from the URL's
    /// `sslmode` and `sslrootcert`, else `PGSSLMODE` and `PGSSLROOTCERT` (default `prefer`).
    pub fn resolve(url: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Target> {
        let (mut config, mode, root) = match url {
            Some(u) => {
                let (rest, mode, root) = split_tls(u)?;
                let config = rest.parse::<tokio_postgres::Config>().map_err(|e| {
                    // The parser's message never echoes the URL, so the password stays out.
                    Error::usage(format!("--database-url is not a PostgreSQL URL: {e}"))
                })?;
                (config, mode, root)
            }
            None => {
                let mut c = tokio_postgres::Config::new();
                let host = env("PGHOST").ok_or_else(|| {
                    Error::usage(
                        "no database: pass --database-url (or set DATABASE_URL, or PGHOST and \
                         the other PG* variables)",
                    )
                })?;
                c.host(&host);
                if let Some(p) = env("PGPORT") {
                    let port = p
                        .parse()
                        .map_err(|_| Error::usage(format!("PGPORT `{p}` is not a port")))?;
                    c.port(port);
                }
                if let Some(u) = env("PGUSER") {
                    c.user(&u);
                }
                if let Some(pw) = env("PGPASSWORD") {
                    c.password(pw);
                }
                if let Some(d) = env("PGDATABASE") {
                    c.dbname(&d);
                }
                (c, None, None)
            }
        };
        let mode = match mode.or_else(|| env("PGSSLMODE")) {
            Some(m) => crate::tls::Mode::parse(&m)?,
            None => crate::tls::Mode::Prefer,
        };
        let tls = crate::tls::Settings {
            mode,
            root_cert: root.or_else(|| env("PGSSLROOTCERT")).map(Into::into),
        };
        config.ssl_mode(mode.negotiation());
        // `CREATE … IF NOT EXISTS` of what exists is a NOTICE per unit: not worth a log line.
        let quiet = "-c client_min_messages=warning";
        let options = match config.get_options() {
            Some(o) => format!("{o} {quiet}"),
            None => quiet.to_string(),
        };
        config.options(&options);
        // Built now: an unreadable root certificate is a configuration error before any work.
        let connector = tls.connector()?;
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(s) => s.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let database = format!(
            "{host}:{port}/{}",
            config
                .get_dbname()
                .unwrap_or(config.get_user().unwrap_or("?"))
        );
        let shown = format!("{}@{database}", config.get_user().unwrap_or("?"));
        Ok(Target {
            config,
            shown,
            database,
            tls,
            connector,
        })
    }

    /// The database's identity: `host:port/dbname`, whoever connects.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// A connection, its I/O driven by a task of its own.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        match &self.connector {
            None => self.connect_with(tokio_postgres::NoTls).await,
            Some(tls) => self.connect_with(tls.clone()).await,
        }
    }

    async fn connect_with<T>(&self, tls: T) -> Result<tokio_postgres::Client>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
        T::Stream: Send + 'static,
    {
        let (client, conn) = self
            .config
            .connect(tls)
            .await
            .map_err(|e| self.connect_error(&e))?;
        tokio::spawn(drive(conn));
        Ok(client)
    }

    /// A connection failure, naming the database without its password. A refused password,
    /// an unknown database or a TLS failure (a certificate that does not verify, a server
    /// without TLS under `require`) is a configuration error (exit 2); anything else may pass
    /// (a retry).
    fn connect_error(&self, e: &tokio_postgres::Error) -> Error {
        let shown = &self.shown;
        let code = e.code().map(|c| c.code().to_string());
        let mut text = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        let tls = text.contains("TLS") || text.contains("certificate") || text.contains("SSL");
        match code.as_deref() {
            // invalid_password, invalid_authorization_specification, invalid_catalog_name
            Some("28P01") | Some("28000") | Some("3D000") => {
                Error::usage(format!("database {shown}: {text}"))
            }
            _ if tls => Error::usage(format!(
                "database {shown} (sslmode {:?}): {text}",
                self.tls.mode
            )),
            _ => Error::Transient {
                url: format!("postgresql://{shown}"),
                reason: text,
                retry_after: None,
            },
        }
    }
}

async fn drive<T>(conn: T)
where
    T: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "database connection closed");
    }
}

/// `fundingRate` → `funding_rate`, `klines-1m` → `klines_1m`, `BVOLIndex` → `bvol_index`.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if *c == '-' {
            out.push('_');
            continue;
        }
        if c.is_ascii_uppercase() {
            let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if prev_lower || (prev_upper && next_lower) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

/// A column of a table: its name, what the Parquet holds, its PostgreSQL type and whether it
/// may be NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Col {
    pub name: String,
    pub kind: OutKind,
    pub null: bool,
}

impl Col {
    pub fn pg_type(&self) -> &'static str {
        match self.kind {
            OutKind::I64 => "bigint",
            OutKind::F64 | OutKind::OptF64 => "double precision",
            OutKind::Bool => "boolean",
            OutKind::Str => "text",
            OutKind::TimeUs => "timestamp with time zone",
        }
    }
}

/// How a table is laid out in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Declarative range partitioning on the time column, one partition per unit period.
    Native,
    /// A TimescaleDB hypertable, its older chunks compressed.
    Timescale {
        chunk_days: u32,
        compress_after_days: u32,
    },
}

/// The period one partition of a table spans: the period of its units' files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Archive datasets: one optimized file per symbol-month.
    Month,
    /// Features and bars: one file per symbol-year.
    Year,
    /// A panel: one file, the whole table.
    None,
}

/// How a derived dataset's table is keyed: the unit's constant columns, the key, the time
/// column and the period of a partition.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    pub consts: &'a [&'a str],
    pub key: &'a [&'a str],
    pub time: &'a str,
    pub partitioning: Partitioning,
}

/// A dataset's table: `<schema>.<name>`, the unit's constant columns first (`symbol`, and
/// `spec` for bars), then the file's columns; the key is (the constants, the dataset's key).
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub cols: Vec<Col>,
    /// How many leading columns hold the unit's constants rather than the file's values.
    pub consts: usize,
    pub key: Vec<String>,
    pub time: String,
    pub partitioning: Partitioning,
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// PostgreSQL truncates identifiers longer than this (bytes), which would make two names one.
const MAX_IDENT: usize = 63;

/// What a Parquet column of a derived dataset becomes; `None` for a type PostgreSQL gets no
/// faithful column for here.
fn kind_of(dtype: &DataType) -> Option<OutKind> {
    Some(match dtype {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => OutKind::I64,
        DataType::Float32 | DataType::Float64 => OutKind::OptF64,
        DataType::Boolean => OutKind::Bool,
        DataType::String => OutKind::Str,
        DataType::Datetime(_, _) => OutKind::TimeUs,
        _ => return None,
    })
}

impl Table {
    /// An archive dataset's table, from the format registry: `<market>_<dataset>`, e.g.
    /// `um_klines_1m`, partitioned by month.
    pub fn of(schema: &str, ds: &Dataset) -> Table {
        let f = format_of(ds);
        let mut cols = vec![Col {
            name: "symbol".into(),
            kind: OutKind::Str,
            null: false,
        }];
        cols.extend(f.output_fields().into_iter().map(|(n, k)| Col {
            name: n.to_string(),
            kind: k,
            null: matches!(k, OutKind::OptF64 | OutKind::Str),
        }));
        let mut key = vec!["symbol".to_string()];
        key.extend(f.key.iter().map(|k| k.to_string()));
        Table {
            schema: schema.to_string(),
            name: Table::archive_name(ds),
            cols,
            consts: 1,
            key,
            time: f.time_field.to_string(),
            partitioning: Partitioning::Month,
        }
    }

    /// An archive dataset's table name: `<market>_<dataset>` in snake case.
    pub fn archive_name(ds: &Dataset) -> String {
        format!("{}_{}", ds.market.cli_name(), snake(&ds.name()))
    }

    /// A derived dataset's table (features, bars, a panel): `shape`'s text constants, then
    /// the columns of the file `file` (its store path, for errors). The key and the time column
    /// are NOT NULL; the other columns may be NULL (a feature undefined for an hour). A column
    /// of a type without a faithful PostgreSQL column is an error naming it.
    pub fn derived(
        schema: &str,
        name: &str,
        shape: &Shape<'_>,
        columns: &[(String, DataType)],
        file: &str,
    ) -> Result<Table> {
        if name.len() > MAX_IDENT {
            return Err(Error::usage(format!(
                "table name `{name}` is longer than PostgreSQL's {MAX_IDENT} bytes"
            )));
        }
        let mut cols: Vec<Col> = shape
            .consts
            .iter()
            .map(|c| Col {
                name: c.to_string(),
                kind: OutKind::Str,
                null: false,
            })
            .collect();
        for (n, dt) in columns {
            if shape.consts.contains(&n.as_str()) {
                return Err(Error::bad_data(
                    file,
                    format!("has a column `{n}`, which the table takes from the file's place"),
                ));
            }
            let kind = kind_of(dt).ok_or_else(|| {
                Error::bad_data(
                    file,
                    format!("column `{n}` is {dt}, which has no PostgreSQL column here"),
                )
            })?;
            let required = shape.key.contains(&n.as_str()) || n == shape.time;
            cols.push(Col {
                name: n.clone(),
                kind,
                null: !required,
            });
        }
        for k in shape.key.iter().chain([&shape.time]) {
            if !cols.iter().any(|c| c.name == *k) {
                return Err(Error::bad_data(file, format!("has no column `{k}`")));
            }
        }
        if cols
            .iter()
            .any(|c| c.name == shape.time && c.kind != OutKind::TimeUs)
        {
            return Err(Error::bad_data(
                file,
                format!("column `{}` is not a timestamp", shape.time),
            ));
        }
        Ok(Table {
            schema: schema.to_string(),
            name: name.to_string(),
            cols,
            consts: shape.consts.len(),
            key: shape.key.iter().map(|k| k.to_string()).collect(),
            time: shape.time.to_string(),
            partitioning: shape.partitioning,
        })
    }

    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// The primary key: (`symbol`, the dataset's key), with the time column added where the key
    /// lacks it — a partitioned table's key must hold its partition column.
    fn primary_key(&self) -> Vec<String> {
        let mut k = self.key.clone();
        if !k.contains(&self.time) {
            k.push(self.time.clone());
        }
        k
    }

    /// The statements that create the schema, the table and its (`symbol`, time) index when
    /// absent. `Native` partitions the table on its time column by its unit's period (a unit
    /// adds its period's partition, [`Table::partition_ddl`]); `Timescale` makes it a hypertable
    /// with chunks of `chunk_days` and compresses chunks older than `compress_after_days`. A
    /// table whose unit is the whole table (a panel) is a plain table either way.
    pub fn ddl(&self, layout: Layout) -> Vec<String> {
        let cols: Vec<String> = self
            .cols
            .iter()
            .map(|c| {
                let null = if c.null { "" } else { " NOT NULL" };
                format!("{} {}{null}", ident(&c.name), c.pg_type())
            })
            .collect();
        let pk = if self.key.len() > 1 {
            let k: Vec<String> = self.primary_key().iter().map(|k| ident(k)).collect();
            format!(", PRIMARY KEY ({})", k.join(", "))
        } else {
            String::new()
        };
        let q = self.qualified();
        let layout = (self.partitioning != Partitioning::None).then_some(layout);
        let partition = match layout {
            Some(Layout::Native) => format!(" PARTITION BY RANGE ({})", ident(&self.time)),
            _ => String::new(),
        };
        let mut out = vec![
            format!("CREATE SCHEMA IF NOT EXISTS {}", ident(&self.schema)),
            format!(
                "CREATE TABLE IF NOT EXISTS {q} ({}{pk}){partition}",
                cols.join(", ")
            ),
        ];
        if let Some(Layout::Timescale {
            chunk_days,
            compress_after_days,
        }) = layout
        {
            let lit = q.replace('\'', "''");
            let segment = self.cols[..self.consts]
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(",");
            out.push(format!(
                "SELECT create_hypertable('{lit}', '{}', chunk_time_interval => interval '{chunk_days} days', if_not_exists => true)",
                self.time
            ));
            out.push(format!(
                "ALTER TABLE {q} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segment}')"
            ));
            out.push(format!(
                "SELECT add_compression_policy('{lit}', interval '{compress_after_days} days', if_not_exists => true)"
            ));
        }
        out.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {q} ({}, {})",
            ident(&format!("{}_symbol_time", self.name)),
            ident("symbol"),
            ident(&self.time)
        ));
        out
    }

    /// The name of a natively partitioned table's partition: `<table>_p<suffix>` (`_p202412`
    /// for a month, `_p2024` for a year).
    pub fn partition_name(&self, suffix: &str) -> String {
        format!("{}_p{suffix}", self.name)
    }

    /// The partition [`Table::partition_name`] for `[from, until)`.
    pub fn partition_ddl(&self, from: &str, until: &str, suffix: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} PARTITION OF {} FOR VALUES FROM ('{from}') TO ('{until}')",
            ident(&self.schema),
            ident(&self.partition_name(suffix)),
            self.qualified()
        )
    }

    /// The columns as `information_schema.columns` would list them.
    pub fn described(&self) -> Vec<(String, String)> {
        self.cols
            .iter()
            .map(|c| (c.name.clone(), c.pg_type().to_string()))
            .collect()
    }

    /// Compare an existing table's columns (name, `information_schema` type, in order) with
    /// this one's: a missing, extra, renamed or retyped column is an error naming it, never a
    /// silent cast.
    pub fn check(&self, existing: &[(String, String)]) -> Result<()> {
        let t = format!("{}.{}", self.schema, self.name);
        for (i, c) in self.cols.iter().enumerate() {
            match existing.get(i) {
                None => {
                    return Err(Error::usage(format!(
                        "table {t} has no column `{}` ({}): it was created for another schema; \
                         drop it or load into another --schema",
                        c.name,
                        c.pg_type()
                    )));
                }
                Some((name, ty)) if *name != c.name || ty != c.pg_type() => {
                    return Err(Error::usage(format!(
                        "table {t}: column {} is `{name}` {ty}, expected `{}` {}; drop the table \
                         or load into another --schema",
                        i + 1,
                        c.name,
                        c.pg_type()
                    )));
                }
                _ => {}
            }
        }
        if let Some((name, ty)) = existing.get(self.cols.len()) {
            return Err(Error::usage(format!(
                "table {t} has a column `{name}` ({ty}) this dataset does not: drop the table or \
                 load into another --schema"
            )));
        }
        Ok(())
    }

    /// `COPY … FROM STDIN (FORMAT binary)` for every column.
    pub fn copy_statement(&self) -> String {
        let cols: Vec<String> = self.cols.iter().map(|c| ident(&c.name)).collect();
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.qualified(),
            cols.join(", ")
        )
    }
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// Delete a unit's rows from `qualified`: those whose constant columns `consts` equal
/// `$1…$k` and, when `ranged`, whose `time` lies in `[$k+1, $k+2)` (RFC 3339 instants); all
/// rows when there is neither (a panel).
pub fn delete_statement(qualified: &str, consts: &[&str], time: &str, ranged: bool) -> String {
    let mut conds: Vec<String> = consts
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ${}", ident(c), i + 1))
        .collect();
    if ranged {
        let t = ident(time);
        let k = consts.len();
        conds.push(format!("{t} >= ${}::text::timestamptz", k + 1));
        conds.push(format!("{t} < ${}::text::timestamptz", k + 2));
    }
    let mut q = format!("DELETE FROM {qualified}");
    if !conds.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&conds.join(" AND "));
    }
    q
}

/// The seed's hourly open-interest-vs-price view over the USD-M tables of `schema`: per symbol
/// and UTC hour, the last 1m close and the quote volume, beside the hour's last open-interest
/// snapshot. A plain view: always as current as the tables, nothing to refresh.
pub fn oi_price_view(schema: &str) -> String {
    let s = ident(schema);
    format!(
        "CREATE OR REPLACE VIEW {s}.\"oi_price_1h\" AS \
         WITH px AS ( \
           SELECT symbol, date_trunc('hour', open_time) AS hour, \
                  (array_agg(close ORDER BY open_time DESC))[1] AS close, \
                  sum(quote_volume) AS quote_volume \
           FROM {s}.\"um_klines_1m\" GROUP BY 1, 2), \
         oi AS ( \
           SELECT symbol, date_trunc('hour', snapshot_time) AS hour, \
                  (array_agg(sum_open_interest ORDER BY snapshot_time DESC))[1] AS open_interest, \
                  (array_agg(sum_open_interest_value ORDER BY snapshot_time DESC))[1] \
                    AS open_interest_value \
           FROM {s}.\"um_metrics\" GROUP BY 1, 2) \
         SELECT px.symbol, px.hour, px.close, px.quote_volume, oi.open_interest, \
                oi.open_interest_value \
         FROM px LEFT JOIN oi USING (symbol, hour)"
    )
}

/// The binary COPY header (signature, flags, header extension length).
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary COPY trailer (a field count of -1).
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// A file's column as the encoder reads it: integers as `i64`, floats as `f64`, text as
/// strings, and times as microseconds from the Unix epoch whatever the file's unit.
fn normalized(s: Series, kind: OutKind) -> PolarsResult<Series> {
    match (kind, s.dtype().clone()) {
        (OutKind::TimeUs, DataType::Datetime(unit, _)) => {
            let raw = s.to_physical_repr().into_owned();
            Ok(match unit {
                TimeUnit::Microseconds => raw,
                TimeUnit::Milliseconds => &raw * 1000i64,
                // PostgreSQL keeps microseconds.
                TimeUnit::Nanoseconds => &raw / 1000i64,
            })
        }
        (OutKind::I64 | OutKind::TimeUs, _) => s.cast(&DataType::Int64),
        (OutKind::F64 | OutKind::OptF64, _) => s.cast(&DataType::Float64),
        (OutKind::Str, _) => s.cast(&DataType::String),
        (OutKind::Bool, _) => Ok(s),
    }
}

/// Encode a frame's rows into `out`: the table's constant columns from `consts` (the unit's
/// symbol, a bar spec), the others from the frame's columns of the same names.
pub fn encode(table: &Table, consts: &[&str], df: &DataFrame, out: &mut BytesMut) -> Result<()> {
    let bad = |c: &str, e: &dyn std::fmt::Display| {
        Error::bad_data(format!("{}.{c}", table.name), e.to_string())
    };
    enum Data<'a> {
        I(&'a Int64Chunked),
        F(&'a Float64Chunked),
        B(&'a BooleanChunked),
        S(&'a StringChunked),
    }
    if consts.len() != table.consts {
        return Err(Error::Internal(format!(
            "{}: {} constant columns given for {}",
            table.name,
            consts.len(),
            table.consts
        )));
    }
    let file_cols = &table.cols[table.consts..];
    let mut owned: Vec<Series> = Vec::new();
    for c in file_cols {
        let s = df
            .column(&c.name)
            .map_err(|e| bad(&c.name, &e))?
            .as_materialized_series()
            .clone();
        owned.push(normalized(s, c.kind).map_err(|e| bad(&c.name, &e))?);
    }
    let mut data = Vec::with_capacity(owned.len());
    for (c, s) in file_cols.iter().zip(&owned) {
        data.push(match c.kind {
            OutKind::I64 | OutKind::TimeUs => Data::I(s.i64().map_err(|e| bad(&c.name, &e))?),
            OutKind::F64 | OutKind::OptF64 => Data::F(s.f64().map_err(|e| bad(&c.name, &e))?),
            OutKind::Bool => Data::B(s.bool().map_err(|e| bad(&c.name, &e))?),
            OutKind::Str => Data::S(s.str().map_err(|e| bad(&c.name, &e))?),
        });
    }
    let time: Vec<bool> = file_cols
        .iter()
        .map(|c| c.kind == OutKind::TimeUs)
        .collect();
    let ncols = table.cols.len() as i16;
    let const_len: usize = consts.iter().map(|c| 4 + c.len()).sum();
    out.reserve(df.height() * (2 + const_len + file_cols.len() * 12));
    for row in 0..df.height() {
        out.put_i16(ncols);
        for c in consts {
            out.put_i32(c.len() as i32);
            out.put_slice(c.as_bytes());
        }
        for (d, is_time) in data.iter().zip(&time) {
            match d {
                Data::I(ca) => match ca.get(row) {
                    Some(v) => {
                        out.put_i32(8);
                        out.put_i64(if *is_time { v - PG_EPOCH_US } else { v });
                    }
                    None => out.put_i32(-1),
                },
                Data::F(ca) => match ca.get(row) {
                    Some(v) => {
                        out.put_i32(8);
                        out.put_f64(v);
                    }
                    None => out.put_i32(-1),
                },
                Data::B(ca) => match ca.get(row) {
                    Some(v) => {
                        out.put_i32(1);
                        out.put_u8(v as u8);
                    }
                    None => out.put_i32(-1),
                },
                Data::S(ca) => match ca.get(row) {
                    Some(v) => {
                        out.put_i32(v.len() as i32);
                        out.put_slice(v.as_bytes());
                    }
                    None => out.put_i32(-1),
                },
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::paths::{DataType as ArchiveType, Interval, Market};

    #[test]
    fn names_are_snake_case() {
        assert_eq!(snake("fundingRate"), "funding_rate");
        assert_eq!(snake("klines-1m"), "klines_1m");
        assert_eq!(snake("aggTrades"), "agg_trades");
        assert_eq!(snake("BVOLIndex"), "bvol_index");
        assert_eq!(snake("EOHSummary"), "eoh_summary");
        assert_eq!(snake("markPriceKlines-1h"), "mark_price_klines_1h");
    }

    #[test]
    fn tables_follow_the_registry_and_refuse_a_mismatch_by_column() {
        let ds = Dataset::new(Market::Um, ArchiveType::Klines, Some(Interval::M1)).unwrap();
        let t = Table::of("binance", &ds);
        assert_eq!(t.qualified(), "\"binance\".\"um_klines_1m\"");
        assert_eq!(t.key, vec!["symbol", "open_time"]);
        let ddl = t.ddl(Layout::Native);
        assert!(ddl[1].contains("\"open_time\" timestamp with time zone NOT NULL"));
        assert!(ddl[1].contains("PRIMARY KEY (\"symbol\", \"open_time\")"));
        assert!(ddl[1].ends_with("PARTITION BY RANGE (\"open_time\")"));
        // A key without the time column gets it: a partitioned table's key holds it.
        let agg = Table::of(
            "b",
            &Dataset::new(Market::Um, ArchiveType::AggTrades, None).unwrap(),
        );
        assert!(
            agg.ddl(Layout::Native)[1]
                .contains("PRIMARY KEY (\"symbol\", \"agg_trade_id\", \"transact_time\")")
        );
        let ts = t.ddl(Layout::Timescale {
            chunk_days: 7,
            compress_after_days: 30,
        });
        assert!(ts.iter().any(|q| q.contains("create_hypertable")), "{ts:?}");
        assert!(!ts[1].contains("PARTITION BY"));
        let mut existing: Vec<(String, String)> = t
            .cols
            .iter()
            .map(|c| (c.name.clone(), c.pg_type().to_string()))
            .collect();
        t.check(&existing).unwrap();
        existing[2].1 = "numeric".into();
        let e = t.check(&existing).unwrap_err().to_string();
        assert!(e.contains("`open`") && e.contains("numeric"), "{e}");
        existing[2].1 = "double precision".into();
        existing.truncate(3);
        let e = t.check(&existing).unwrap_err().to_string();
        assert!(e.contains("has no column"), "{e}");
    }

    #[test]
    fn rows_encode_in_the_binary_copy_format() {
        let ds = Dataset::new(Market::Um, ArchiveType::FundingRate, None).unwrap();
        let t = Table::of("s", &ds);
        let names: Vec<&str> = t.cols[1..].iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["calc_time", "funding_interval_hours", "last_funding_rate"]
        );
        let df = df!(
            "calc_time" => [PG_EPOCH_US + 1],
            "funding_interval_hours" => [8i64],
            "last_funding_rate" => [0.0001f64],
        )
        .unwrap();
        let mut out = BytesMut::new();
        encode(&t, &["BTCUSDT"], &df, &mut out).unwrap();
        let mut want = Vec::new();
        want.extend(4i16.to_be_bytes());
        want.extend(7i32.to_be_bytes());
        want.extend(b"BTCUSDT");
        want.extend(8i32.to_be_bytes());
        want.extend(1i64.to_be_bytes());
        want.extend(8i32.to_be_bytes());
        want.extend(8i64.to_be_bytes());
        want.extend(8i32.to_be_bytes());
        want.extend(0.0001f64.to_be_bytes());
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn derived_tables_take_the_files_columns_and_refuse_what_has_no_column() {
        let cols = vec![
            ("bar".to_string(), DataType::Int64),
            (
                "close_time".to_string(),
                DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)),
            ),
            ("vwap".to_string(), DataType::Float32),
            ("ticks".to_string(), DataType::UInt32),
            ("filled".to_string(), DataType::Boolean),
        ];
        let shape = Shape {
            consts: &["symbol", "spec"],
            key: &["symbol", "spec", "bar"],
            time: "close_time",
            partitioning: Partitioning::Year,
        };
        let t = Table::derived("b", "um_bars", &shape, &cols, "bars/x.parquet").unwrap();
        let types: Vec<(&str, &str, bool)> = t
            .cols
            .iter()
            .map(|c| (c.name.as_str(), c.pg_type(), c.null))
            .collect();
        assert_eq!(
            types,
            vec![
                ("symbol", "text", false),
                ("spec", "text", false),
                ("bar", "bigint", false),
                ("close_time", "timestamp with time zone", false),
                ("vwap", "double precision", true),
                ("ticks", "bigint", true),
                ("filled", "boolean", true),
            ]
        );
        let ddl = t.ddl(Layout::Native);
        assert!(
            ddl[1].contains("PRIMARY KEY (\"symbol\", \"spec\", \"bar\", \"close_time\")"),
            "{ddl:?}"
        );
        assert_eq!(
            t.partition_ddl("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2024"),
            "CREATE TABLE IF NOT EXISTS \"b\".\"um_bars_p2024\" PARTITION OF \"b\".\"um_bars\" \
             FOR VALUES FROM ('2024-01-01T00:00:00Z') TO ('2025-01-01T00:00:00Z')"
        );
        // A panel is one plain table: no partitions, no hypertable.
        let panel = Shape {
            consts: &[],
            key: &["symbol", "open_time"],
            time: "open_time",
            partitioning: Partitioning::None,
        };
        let pcols = vec![
            ("symbol".to_string(), DataType::String),
            (
                "open_time".to_string(),
                DataType::Datetime(TimeUnit::Microseconds, None),
            ),
        ];
        let p = Table::derived("b", "panel_x", &panel, &pcols, "final/x/panel.parquet").unwrap();
        let ts = p.ddl(Layout::Timescale {
            chunk_days: 1,
            compress_after_days: 1,
        });
        assert!(
            !ts.iter()
                .any(|q| q.contains("hypertable") || q.contains("PARTITION"))
        );

        let mut bad = cols.clone();
        bad.push((
            "tags".to_string(),
            DataType::List(Box::new(DataType::String)),
        ));
        let e = Table::derived("b", "um_bars", &shape, &bad, "bars/x.parquet")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bars/x.parquet") && e.contains("`tags`"), "{e}");
        let e = Table::derived("b", "um_bars", &shape, &cols[1..], "bars/x.parquet")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column `bar`"), "{e}");
        let e = Table::derived("b", &"x".repeat(64), &shape, &cols, "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("63"), "{e}");
    }

    #[test]
    fn a_units_delete_names_its_constants_and_period() {
        assert_eq!(
            delete_statement("\"b\".\"um_bars\"", &["symbol", "spec"], "close_time", true),
            "DELETE FROM \"b\".\"um_bars\" WHERE \"symbol\" = $1 AND \"spec\" = $2 AND \
             \"close_time\" >= $3::text::timestamptz AND \"close_time\" < $4::text::timestamptz"
        );
        assert_eq!(
            delete_statement("\"b\".\"panel_x\"", &[], "open_time", false),
            "DELETE FROM \"b\".\"panel_x\""
        );
    }

    #[test]
    fn times_in_any_unit_encode_as_microseconds() {
        let shape = Shape {
            consts: &[],
            key: &["symbol", "t"],
            time: "t",
            partitioning: Partitioning::None,
        };
        for (unit, raw) in [
            (TimeUnit::Milliseconds, 1_000i64),
            (TimeUnit::Microseconds, 1_000_000),
            (TimeUnit::Nanoseconds, 1_000_000_000),
        ] {
            let df = df!("symbol" => ["A"], "t" => [raw]).unwrap();
            let df = df
                .lazy()
                .with_column(col("t").cast(DataType::Datetime(unit, None)))
                .collect()
                .unwrap();
            let cols: Vec<(String, DataType)> = df
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), c.dtype().clone()))
                .collect();
            let t = Table::derived("s", "p", &shape, &cols, "f").unwrap();
            let mut out = BytesMut::new();
            encode(&t, &[], &df, &mut out).unwrap();
            // count, "A", then the time: 8 bytes after its length.
            let at = 2 + 4 + 1 + 4;
            let v = i64::from_be_bytes(out[at..at + 8].try_into().unwrap());
            assert_eq!(v, 1_000_000 - PG_EPOCH_US, "{unit:?}");
        }
    }

    #[test]
    fn tls_settings_come_out_of_the_url_and_the_password_never_shows() {
        let (rest, mode, root) = split_tls(
            "postgresql://u:pw@db:5433/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u:pw@db:5433/x?application_name=a");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, _) = split_tls("host=db user=u sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), mode.as_deref()),
            ("host=db user=u", Some("require"))
        );
        assert!(split_tls("postgresql://h/x?sslcert=/c.pem").is_err());

        let none = |_: &str| None;
        let t = Target::resolve(Some("postgresql://u:pw@db:5433/x?sslmode=require"), none).unwrap();
        assert_eq!(t.tls.mode, crate::tls::Mode::Require);
        assert_eq!(t.shown, "u@db:5433/x");
        let t = Target::resolve(Some("postgresql://u:pw@db/x"), |k: &str| {
            (k == "PGSSLMODE").then(|| "disable".to_string())
        })
        .unwrap();
        assert_eq!(t.tls.mode, crate::tls::Mode::Disable);
        let e = Target::resolve(Some("postgresql://u:pw@db/x?sslmode=sometimes"), none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes") && !e.contains("pw@"), "{e}");
        let e = Target::resolve(
            Some("postgresql://u:pw@db/x?sslmode=verify-full&sslrootcert=/no/such.pem"),
            none,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/no/such.pem") && !e.contains("pw@"), "{e}");
    }
}
