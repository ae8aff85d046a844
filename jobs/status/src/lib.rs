//! What the store holds and how fresh it is, read from the manifests alone (no data file is
//! opened): per (market, dataset, symbol) the first and last day with rows, the last day the
//! archive gave, the last minute REST gave, the staleness against now, the optimized rows and
//! bytes, the latest validation verdict counts, and the optimized months `load` has yet to copy
//! into PostgreSQL; rendered as a table, JSON or a Prometheus textfile-collector file.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use shared::job::JobName;
use shared::manifest::{Manifest, ManifestKey, UnitStatus};
use shared::paths::{Dataset, Market};
use shared::validation::{DayStatus, Verdicts};
use shared::{Result, Store};

/// One symbol of one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct SymbolStatus {
    pub market: String,
    pub dataset: String,
    pub symbol: String,
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
    /// The last day `convert` wrote from the archive.
    pub last_archived_day: Option<NaiveDate>,
    /// The end (exclusive) of what `tail` fetched from REST.
    pub last_rest_minute: Option<DateTime<Utc>>,
    /// The end of the data, whichever source: the archive's last day's end or REST's.
    pub data_until: Option<DateTime<Utc>>,
    /// Seconds from `data_until` to now; `None` without data.
    pub staleness_secs: Option<i64>,
    /// Rows and bytes of the optimized months.
    pub rows: u64,
    pub bytes: u64,
    pub months: u64,
    /// Latest validation verdict per day, counted by status.
    pub verdicts: BTreeMap<DayStatus, u64>,
    /// Optimized months `load` has not copied as they are now (into the database it loaded
    /// last); `None` when `load` never ran for this dataset and symbol.
    pub db_pending_months: Option<u64>,
}

/// One dataset, summed over its symbols.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStatus {
    pub market: String,
    pub dataset: String,
    pub symbols: u64,
    pub rows: u64,
    pub bytes: u64,
    /// The stalest of its symbols.
    pub max_staleness_secs: Option<i64>,
    pub data_until: Option<DateTime<Utc>>,
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema: &'static str,
    pub store: String,
    pub now: DateTime<Utc>,
    pub datasets: Vec<DatasetStatus>,
    pub symbols: Vec<SymbolStatus>,
}

/// What to look at.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub markets: Vec<Market>,
    /// Dataset names (`klines-1m`, `fundingRate`), or all.
    pub datasets: Vec<String>,
    pub symbols: Vec<String>,
}

impl Filter {
    fn market(&self, m: Market) -> bool {
        self.markets.is_empty() || self.markets.contains(&m)
    }
    fn dataset(&self, d: &str) -> bool {
        self.datasets.is_empty()
            || self
                .datasets
                .iter()
                .any(|x| x == d || d.split('-').next() == Some(x))
    }
    fn symbol(&self, s: &str) -> bool {
        self.symbols.is_empty() || self.symbols.iter().any(|x| x == s)
    }
}

/// The scopes (`<market>/<dataset>`) some job has a manifest for.
async fn scopes(store: &Store, filter: &Filter) -> Result<Vec<(Market, Dataset)>> {
    let mut out = Vec::new();
    for job in [JobName::CONVERT, JobName::TAIL] {
        for m in store.list_dirs(&format!("_manifest/{job}/")).await? {
            let Some(market) = m.rsplit('/').next().and_then(Market::from_storage_name) else {
                continue;
            };
            if !filter.market(market) {
                continue;
            }
            for d in store
                .list_dirs(&format!("_manifest/{job}/{}/", market.storage_name()))
                .await?
            {
                let Some(name) = d.rsplit('/').next() else {
                    continue;
                };
                let Ok(ds) = Dataset::parse_name(market, name) else {
                    continue;
                };
                if filter.dataset(&ds.name()) && !out.contains(&(market, ds)) {
                    out.push((market, ds));
                }
            }
        }
    }
    out.sort_by_key(|(_, ds)| ds.scope());
    Ok(out)
}

/// Read the status of everything `filter` selects.
pub async fn collect(
    store: &Store,
    store_url: &str,
    filter: &Filter,
    now: DateTime<Utc>,
) -> Result<Status> {
    let mut symbols = Vec::new();
    let mut datasets = Vec::new();
    for (market, ds) in scopes(store, filter).await? {
        let scope = ds.scope();
        let mut names = shared::manifest::manifest_symbols(store, JobName::CONVERT, &scope).await?;
        for s in shared::manifest::manifest_symbols(store, JobName::TAIL, &scope).await? {
            if !names.contains(&s) {
                names.push(s);
            }
        }
        names.retain(|s| filter.symbol(s));
        names.sort();
        if names.is_empty() {
            continue;
        }
        let verdicts = Verdicts::load(store, &ds).await?;
        let mut sum = DatasetStatus {
            market: market.storage_name().into(),
            dataset: ds.name(),
            symbols: 0,
            rows: 0,
            bytes: 0,
            max_staleness_secs: None,
            data_until: None,
        };
        for sym in names {
            let reach = shared::manifest::reach(store, &scope, &sym).await?;
            let optimized =
                Manifest::load(store, &ManifestKey::new(JobName::OPTIMIZE, &scope, &sym)).await?;
            let (mut rows, mut bytes, mut months) = (0, 0, 0);
            for e in optimized.entries().filter(|e| e.status == UnitStatus::Done) {
                for o in &e.outputs {
                    rows += o.rows.unwrap_or(0);
                    bytes += o.size;
                    months += 1;
                }
            }
            let loaded =
                Manifest::load(store, &ManifestKey::new(JobName::LOAD, &scope, &sym)).await?;
            let db_pending_months = loaded.entries().next().is_some().then(|| {
                optimized
                    .entries()
                    .filter(|e| e.status == UnitStatus::Done)
                    .filter_map(|e| Some((e, e.outputs.first()?)))
                    .filter(|(e, o)| {
                        loaded.get(&e.unit).and_then(|l| l.inputs.get("sha256")) != Some(&o.sha256)
                    })
                    .count() as u64
            });
            let until = reach.until_us().and_then(DateTime::from_timestamp_micros);
            let staleness = until.map(|u| (now - u).num_seconds());
            let s = SymbolStatus {
                market: market.storage_name().into(),
                dataset: ds.name(),
                symbol: sym.clone(),
                first_day: reach.first_day,
                last_day: reach.last_day,
                last_archived_day: reach
                    .archive_until_us
                    .map(|u| shared::time::day_of_us(u - 1)),
                last_rest_minute: reach
                    .rest_until_us
                    .and_then(DateTime::from_timestamp_micros),
                data_until: until,
                staleness_secs: staleness,
                rows,
                bytes,
                months,
                verdicts: verdicts.counts(&sym),
                db_pending_months,
            };
            sum.symbols += 1;
            sum.rows += rows;
            sum.bytes += bytes;
            sum.max_staleness_secs = match (sum.max_staleness_secs, staleness) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            sum.data_until = match (sum.data_until, until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            symbols.push(s);
        }
        datasets.push(sum);
    }
    Ok(Status {
        schema: "status/1",
        store: store_url.to_string(),
        now,
        datasets,
        symbols,
    })
}

impl Status {
    /// The symbols staler than `max_secs` (or without any data).
    pub fn stale(&self, max_secs: i64) -> Vec<&SymbolStatus> {
        self.symbols
            .iter()
            .filter(|s| s.staleness_secs.is_none_or(|x| x > max_secs))
            .collect()
    }

    /// A table for a terminal.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 10]> = vec![[
            "dataset".into(),
            "symbol".into(),
            "first".into(),
            "last".into(),
            "archived to".into(),
            "REST to".into(),
            "stale".into(),
            "rows".into(),
            "verdicts".into(),
            "to load".into(),
        ]];
        let day = |d: Option<NaiveDate>| d.map_or("-".into(), |d| d.to_string());
        for s in &self.symbols {
            rows.push([
                format!("{}/{}", s.market, s.dataset),
                s.symbol.clone(),
                day(s.first_day),
                day(s.last_day),
                day(s.last_archived_day),
                s.last_rest_minute
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                s.staleness_secs.map_or("-".into(), human),
                s.rows.to_string(),
                s.verdicts
                    .iter()
                    .map(|(k, v)| format!("{}={v}", k.as_str()))
                    .collect::<Vec<_>>()
                    .join(" "),
                s.db_pending_months.map_or("-".into(), |n| n.to_string()),
            ]);
        }
        let mut widths = [0usize; 10];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        if self.symbols.is_empty() {
            out.push_str("(no dataset recorded in this store)\n");
        }
        out
    }

    /// A Prometheus textfile-collector file: staleness, rows and bytes per dataset and symbol.
    pub fn prometheus(&self) -> String {
        let mut o = String::new();
        let labels = |s: &SymbolStatus| {
            format!(
                "market=\"{}\",dataset=\"{}\",symbol=\"{}\"",
                esc(&s.market),
                esc(&s.dataset),
                esc(&s.symbol)
            )
        };
        type Gauge = (&'static str, &'static str, fn(&SymbolStatus) -> Option<f64>);
        let metrics: [Gauge; 5] = [
            (
                "pipeline_staleness_seconds",
                "Seconds from the end of the data the store holds to now.",
                |s| s.staleness_secs.map(|v| v as f64),
            ),
            (
                "pipeline_data_until_timestamp_seconds",
                "Unix time at which the data the store holds ends.",
                |s| s.data_until.map(|t| t.timestamp() as f64),
            ),
            ("pipeline_rows", "Rows in the optimized months.", |s| {
                Some(s.rows as f64)
            }),
            ("pipeline_bytes", "Bytes of the optimized months.", |s| {
                Some(s.bytes as f64)
            }),
            (
                "pipeline_load_pending_months",
                "Optimized months load has not copied into PostgreSQL as they are now.",
                |s| s.db_pending_months.map(|v| v as f64),
            ),
        ];
        for (name, help, f) in metrics {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in &self.symbols {
                if let Some(v) = f(s) {
                    let _ = writeln!(o, "{name}{{{}}} {v}", labels(s));
                }
            }
        }
        let _ = writeln!(
            o,
            "# HELP pipeline_status_generated_timestamp_seconds When this file was written.\n# TYPE pipeline_status_generated_timestamp_seconds gauge\npipeline_status_generated_timestamp_seconds {}",
            self.now.timestamp()
        );
        o
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `2h13m`, `3d4h`, `45s`.
pub fn human(secs: i64) -> String {
    let neg = secs < 0;
    let s = secs.unsigned_abs();
    let out = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    };
    if neg { format!("-{out}") } else { out }
}

/// `90s`, `30m`, `2h`, `3d` → seconds.
pub fn parse_duration(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}`: give a unit (s, m, h or d), e.g. 2h"))?;
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number then s, m, h or d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (s, m, h or d)")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("3d"), Ok(259_200));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2w").unwrap_err().contains("2w"));
        assert_eq!(human(7980), "2h13m");
        assert_eq!(human(45), "45s");
        assert_eq!(human(90_000), "1d1h");
    }
}
