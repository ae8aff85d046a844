//! The PostgreSQL side of `load`: connection settings (URL or `PG*` variables, the password kept
//! out of every message), a dataset's table (name, typed columns, key, DDL and the check of an
//! existing table against it), and rows encoded in the binary `COPY` format.

use bytes::{BufMut, BytesMut};
use frames::polars::prelude::*;
use shared::formats::{OutKind, format_of};
use shared::paths::Dataset;
use shared::{Error, Result};

/// Where to connect, and how to name it without the password.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    /// `user@host:port/dbname`: what logs and reports show.
    pub shown: String,
}

impl Target {
    /// From `--database-url` (or `DATABASE_URL`), else the standard `PG*` variables
    /// (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`).
    pub fn resolve(url: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Target> {
        let config = match url {
            Some(u) => u.parse::<tokio_postgres::Config>().map_err(|e| {
                // The parser's message never echoes the URL, so the password stays out.
                Error::usage(format!("--database-url is not a PostgreSQL URL: {e}"))
            })?,
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
                c
            }
        };
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(s) => s.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let shown = format!(
            "{}@{host}:{port}/{}",
            config.get_user().unwrap_or("?"),
            config
                .get_dbname()
                .unwrap_or(config.get_user().unwrap_or("?"))
        );
        Ok(Target { config, shown })
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

/// A column of a table: its name, what the Parquet holds, and its PostgreSQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Col {
    pub name: String,
    pub kind: OutKind,
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

    fn nullable(&self) -> bool {
        matches!(self.kind, OutKind::OptF64 | OutKind::Str)
    }
}

/// How a table is laid out in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Declarative range partitioning by month.
    Native,
    /// A TimescaleDB hypertable, its older chunks compressed.
    Timescale {
        chunk_days: u32,
        compress_after_days: u32,
    },
}

/// A dataset's table: `<schema>.<market>_<dataset>`, `symbol` first, then the dataset's
/// normalized columns; the key is (`symbol`, the dataset's key).
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub cols: Vec<Col>,
    pub key: Vec<String>,
    pub time: String,
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Table {
    pub fn of(schema: &str, ds: &Dataset) -> Table {
        let f = format_of(ds);
        let mut cols = vec![Col {
            name: "symbol".into(),
            kind: OutKind::Str,
        }];
        cols.extend(f.output_fields().into_iter().map(|(n, k)| Col {
            name: n.to_string(),
            kind: k,
        }));
        let mut key = vec!["symbol".to_string()];
        key.extend(f.key.iter().map(|k| k.to_string()));
        Table {
            schema: schema.to_string(),
            name: format!("{}_{}", ds.market.cli_name(), snake(&ds.name())),
            cols,
            key,
            time: f.time_field.to_string(),
        }
    }

    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
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
    /// absent. `Native` partitions the table by month on its time column (a unit adds its
    /// month's partition, [`Table::partition_ddl`]); `Timescale` makes it a hypertable with
    /// chunks of `chunk_days` and compresses chunks older than `compress_after_days`.
    pub fn ddl(&self, layout: Layout) -> Vec<String> {
        let cols: Vec<String> = self
            .cols
            .iter()
            .map(|c| {
                let null = if c.nullable() && c.name != "symbol" {
                    ""
                } else {
                    " NOT NULL"
                };
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
        let partition = match layout {
            Layout::Native => format!(" PARTITION BY RANGE ({})", ident(&self.time)),
            Layout::Timescale { .. } => String::new(),
        };
        let mut out = vec![
            format!("CREATE SCHEMA IF NOT EXISTS {}", ident(&self.schema)),
            format!(
                "CREATE TABLE IF NOT EXISTS {q} ({}{pk}){partition}",
                cols.join(", ")
            ),
        ];
        if let Layout::Timescale {
            chunk_days,
            compress_after_days,
        } = layout
        {
            let lit = q.replace('\'', "''");
            out.push(format!(
                "SELECT create_hypertable('{lit}', '{}', chunk_time_interval => interval '{chunk_days} days', if_not_exists => true)",
                self.time
            ));
            out.push(format!(
                "ALTER TABLE {q} SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol')"
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

    /// The month's partition of a natively partitioned table: `<table>_pYYYYMM`.
    pub fn partition_ddl(&self, from: &str, until: &str, yyyymm: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} PARTITION OF {} FOR VALUES FROM ('{from}') TO ('{until}')",
            ident(&self.schema),
            ident(&format!("{}_p{yyyymm}", self.name)),
            self.qualified()
        )
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

    /// Delete one symbol's rows whose time lies in `[from, until)` (RFC 3339 instants).
    pub fn delete_statement(&self) -> String {
        format!(
            "DELETE FROM {} WHERE {} = $1 AND {} >= $2::text::timestamptz AND {} < $3::text::timestamptz",
            self.qualified(),
            ident("symbol"),
            ident(&self.time),
            ident(&self.time)
        )
    }
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

/// Encode a frame's rows (the table's columns after `symbol`, by name) into `out`.
pub fn encode(table: &Table, symbol: &str, df: &DataFrame, out: &mut BytesMut) -> Result<()> {
    let bad = |c: &str, e: &dyn std::fmt::Display| {
        Error::bad_data(format!("{}.{c}", table.name), e.to_string())
    };
    enum Data<'a> {
        I(&'a Int64Chunked),
        F(&'a Float64Chunked),
        B(&'a BooleanChunked),
        S(&'a StringChunked),
    }
    let mut owned: Vec<Series> = Vec::new();
    for c in &table.cols[1..] {
        let s = df
            .column(&c.name)
            .map_err(|e| bad(&c.name, &e))?
            .as_materialized_series()
            .clone();
        let s = match c.kind {
            OutKind::TimeUs => s.cast(&DataType::Int64).map_err(|e| bad(&c.name, &e))?,
            _ => s,
        };
        owned.push(s);
    }
    let mut data = Vec::with_capacity(owned.len());
    for (c, s) in table.cols[1..].iter().zip(&owned) {
        data.push(match c.kind {
            OutKind::I64 | OutKind::TimeUs => Data::I(s.i64().map_err(|e| bad(&c.name, &e))?),
            OutKind::F64 | OutKind::OptF64 => Data::F(s.f64().map_err(|e| bad(&c.name, &e))?),
            OutKind::Bool => Data::B(s.bool().map_err(|e| bad(&c.name, &e))?),
            OutKind::Str => Data::S(s.str().map_err(|e| bad(&c.name, &e))?),
        });
    }
    let time: Vec<bool> = table.cols[1..]
        .iter()
        .map(|c| c.kind == OutKind::TimeUs)
        .collect();
    let ncols = table.cols.len() as i16;
    out.reserve(df.height() * (2 + 4 + symbol.len() + (table.cols.len() - 1) * 12));
    for row in 0..df.height() {
        out.put_i16(ncols);
        out.put_i32(symbol.len() as i32);
        out.put_slice(symbol.as_bytes());
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
    use shared::paths::{DataType, Interval, Market};

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
        let ds = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap();
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
            &Dataset::new(Market::Um, DataType::AggTrades, None).unwrap(),
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
        let ds = Dataset::new(Market::Um, DataType::FundingRate, None).unwrap();
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
        encode(&t, "BTCUSDT", &df, &mut out).unwrap();
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
}
