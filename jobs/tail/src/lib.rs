//! The `tail` job: fills each (dataset, symbol) from the REST API, from the first instant the
//! archive does not cover (what `convert` recorded, or what an earlier `tail` run already
//! holds) to `--until` (the server's now by default), closed candles and periods only. Rows go
//! to `parquet/<market>/<dataset>/symbol=S/date=D/part-rest.parquet` with `convert`'s schema,
//! and each day to `tail`'s manifest with the interval it holds: a day filled completely is never
//! fetched again, the current day is extended by each run. One polite client serves the whole
//! process ([`client`], [`budget`]).

#![forbid(unsafe_code)]

pub mod budget;
pub mod client;
pub mod fetch;
pub mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use shared::cli::{CommonSpec, SymbolSelection};
use shared::formats::METRICS_START_LABEL_FROM;
use shared::job::{End, Finished, Job, JobName, Planner, Stamp};
use shared::manifest::{Entry, ManifestWriter, UnitStatus};
use shared::paths::{Dataset, Market, Partition};
use shared::time::{DAY_US, day_of_us, day_start_us};
use shared::{Context, Error, Result};
use tokio::sync::OnceCell;

use crate::client::{ClientStats, RestClient};
use crate::fetch::{FetchSettings, Kind, Window};
use crate::sink::{DaySink, day_key, fmt_us};

/// Bumped whenever a day's bytes or entry change for the same REST rows.
pub const JOB_VERSION: &str = "1";

/// The default REST host of a market (binance-live.md §1–3).
pub fn default_rest_url(market: Market) -> &'static str {
    match market {
        Market::Cm => "https://dapi.binance.com",
        Market::Spot => "https://api.binance.com",
        _ => "https://fapi.binance.com",
    }
}

/// The end of the fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Until {
    /// The server's clock when the run starts.
    Now,
    At(DateTime<Utc>),
}

impl std::str::FromStr for Until {
    type Err = Error;
    fn from_str(s: &str) -> Result<Until> {
        if s.eq_ignore_ascii_case("now") {
            return Ok(Until::Now);
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Until::At(t.with_timezone(&Utc)))
            .map_err(|e| {
                Error::usage(format!(
                    "--until `{s}`: expected `now` or an RFC 3339 instant such as 2025-01-31T12:00:00Z ({e})"
                ))
            })
    }
}

#[derive(Serialize)]
pub struct Spec {
    pub common: CommonSpec,
    pub rest_url: String,
    pub until: Until,
    pub limits: budget::Limits,
    pub max_in_flight: usize,
    pub settings: FetchSettings,
    #[serde(skip)]
    pub client: Arc<RestClient>,
    #[serde(skip)]
    funding_hours: OnceCell<BTreeMap<String, u32>>,
    /// Cancels the client's waits and requests; follows the run's context once planning starts.
    #[serde(skip)]
    cancel: tokio_util::sync::CancellationToken,
}

impl Spec {
    /// Check every dataset can be filled, and build the process's client.
    pub fn new(
        common: CommonSpec,
        rest_url: String,
        until: Until,
        limits: budget::Limits,
        max_in_flight: usize,
        settings: FetchSettings,
    ) -> Result<Spec> {
        let cancel = tokio_util::sync::CancellationToken::new();
        for ds in &common.datasets {
            fetch::kind_of(ds)?;
        }
        let client = Arc::new(RestClient::new(
            &rest_url,
            limits,
            max_in_flight,
            cancel.clone(),
        )?);
        Ok(Spec {
            common,
            rest_url,
            until,
            limits,
            max_in_flight,
            settings,
            client,
            funding_hours: OnceCell::new(),
            cancel,
        })
    }

    /// The server's clock (ms): `/time` of the market's host.
    async fn server_now(&self) -> Result<i64> {
        let path = match self.common.market {
            Market::Cm => "/dapi/v1/time",
            Market::Spot => "/api/v3/time",
            _ => "/fapi/v1/time",
        };
        let body = self
            .client
            .get(path, &[], budget::Cost::weight(1), "")
            .await?;
        body.get("serverTime")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| {
                Error::bad_data(
                    format!("{}{path}", self.client.base()),
                    format!("no serverTime in {body}"),
                )
            })
    }

    async fn funding_hours(&self, market: Market) -> Result<&BTreeMap<String, u32>> {
        self.funding_hours
            .get_or_try_init(|| fetch::funding_info(&self.client, market))
            .await
    }
}

/// One (dataset, symbol) to fill over `window`.
pub struct Unit {
    pub dataset: Dataset,
    pub symbol: String,
    pub kind: Kind,
    pub window: Window,
    /// The part of the wanted interval REST no longer serves.
    pub unavailable: Option<(i64, i64, String)>,
    prev: BTreeMap<NaiveDate, Entry>,
    writer: Arc<ManifestWriter>,
}

/// What a unit did.
pub struct UnitDone {
    rows: u64,
    days: u64,
    bytes: u64,
    until_us: i64,
    unavailable: Option<(i64, i64, String)>,
}

#[derive(Default)]
pub struct Totals {
    rows: u64,
    days: u64,
    bytes: u64,
    unavailable: Vec<serde_json::Value>,
    holds: Vec<serde_json::Value>,
}

fn unavailable_json(unit: &str, u: &(i64, i64, String)) -> serde_json::Value {
    serde_json::json!({
        "unit": unit,
        "from": fmt_us(u.0 * 1000),
        "until": fmt_us(u.1 * 1000),
        "reason": u.2,
    })
}

/// The instant (µs, exclusive) up to which `convert` has archive rows of a symbol: the end of
/// the last day it wrote a daily or monthly partition for.
fn archive_until_us(convert: &shared::manifest::Manifest) -> Option<i64> {
    convert
        .entries()
        .filter(|e| e.status == UnitStatus::Done)
        .flat_map(|e| e.outputs.iter())
        .filter_map(|o| match Partition::parse(&o.path) {
            Ok(Partition::Day { date, source, .. }) if source.is_archive() => Some(date),
            _ => None,
        })
        .max()
        .map(|d| day_start_us(d) + DAY_US)
}

impl Job for Spec {
    const NAME: JobName = JobName::TAIL;
    const VERSION: &'static str = JOB_VERSION;
    const UNITS: &'static str = "symbol-datasets";
    type Unit = Unit;
    type Done = UnitDone;
    type Totals = Totals;

    fn common(&self) -> &CommonSpec {
        &self.common
    }

    fn params_hash(&self) -> String {
        shared::manifest::params_hash(&self.settings.metrics_time_offset_ms)
    }

    async fn plan(&self, p: &mut Planner<'_>) -> Result<Vec<Unit>> {
        let (run, client) = (p.ctx.cancel.clone(), self.cancel.clone());
        tokio::spawn(async move {
            run.cancelled().await;
            client.cancel();
        });
        let server_now = self.server_now().await?;
        let mut until = match self.until {
            Until::Now => server_now,
            Until::At(t) => t.timestamp_millis().min(server_now),
        };
        let end_of_range = day_start_us(self.common.range.end) / 1000 + DAY_US / 1000;
        until = until.min(end_of_range);
        let start_ms = day_start_us(self.common.range.start) / 1000;
        let mut units = Vec::new();
        for ds in &self.common.datasets {
            let kind = fetch::kind_of(ds)?;
            let scope = ds.scope();
            let symbols = match &self.common.symbols {
                SymbolSelection::List(v) => v.clone(),
                SymbolSelection::All => {
                    let mut all =
                        shared::manifest::manifest_symbols(&p.ctx.store, JobName::CONVERT, &scope)
                            .await?;
                    for s in shared::manifest::manifest_symbols(&p.ctx.store, JobName::TAIL, &scope)
                        .await?
                    {
                        if !all.contains(&s) {
                            all.push(s);
                        }
                    }
                    all.sort();
                    if all.is_empty() {
                        p.tally.warn(format!(
                            "{scope}: neither `convert` nor `tail` has recorded a symbol; name them with --symbols"
                        ));
                    }
                    all
                }
            };
            let end_labelled = day_of_us(until * 1000) < METRICS_START_LABEL_FROM;
            let closed = fetch::closed_until(kind, until, end_labelled);
            let symbols = self.common.shard_of(&symbols);
            p.load_ahead(&[JobName::CONVERT], &scope, &symbols);
            for sym in symbols {
                let convert = p.upstream(JobName::CONVERT, &scope, &sym).await?;
                // An end-labelled metrics file of day D ends with the row stamped D+1 00:00.
                let archive_until = archive_until_us(&convert).map(|u| {
                    let end_labelled_metrics =
                        kind == Kind::Metrics && day_of_us(u - 1) < METRICS_START_LABEL_FROM;
                    u / 1000 + i64::from(end_labelled_metrics)
                });
                let (writer, mine) = p.manifest(&scope, &sym).await?;
                let mut from = start_ms.max(archive_until.unwrap_or(i64::MIN));
                // Skip the days an earlier run filled; continue a day it filled in part.
                if !self.common.force {
                    loop {
                        let day = day_of_us(from * 1000);
                        let day_end = (day_start_us(day) + DAY_US) / 1000;
                        let Some(r) = mine.get(&day_key(day)).and_then(|e| {
                            (e.status == UnitStatus::Done && e.job_version == JOB_VERSION)
                                .then_some(e.rest)
                                .flatten()
                        }) else {
                            break;
                        };
                        let held = r.until_us / 1000;
                        if r.from_us / 1000 > from || held <= from {
                            break;
                        }
                        from = held;
                        if held < day_end || from >= closed {
                            break;
                        }
                    }
                }
                let mut unavailable = None;
                if let Some((oldest, why)) =
                    fetch::oldest_served(kind, ds.market, &self.settings, server_now)
                    && from < oldest
                {
                    let to = oldest.min(closed);
                    if from < to {
                        unavailable = Some((from, to, why));
                    }
                    from = from.max(to);
                }
                let key = format!("{scope}/{sym}");
                if from >= closed {
                    let line = match &unavailable {
                        Some(u) => format!(
                            "{key}: nothing REST serves to fill ({} from {} to {})",
                            u.2,
                            fmt_us(u.0 * 1000),
                            fmt_us(u.1 * 1000)
                        ),
                        None => format!("{key}: up to date until {}", fmt_us(closed * 1000)),
                    };
                    if let Some(u) = &unavailable {
                        p.tally.warn(format!("{key}: {}", line_of(u)));
                    }
                    p.skip(line);
                    continue;
                }
                let prev: BTreeMap<NaiveDate, Entry> = mine
                    .entries()
                    .filter(|e| e.rest.is_some())
                    .filter_map(|e| {
                        let d = NaiveDate::parse_from_str(&e.unit, "%Y-%m-%d").ok()?;
                        (d >= day_of_us(from * 1000)).then(|| (d, e.clone()))
                    })
                    .collect();
                units.push(Unit {
                    dataset: *ds,
                    symbol: sym,
                    kind,
                    window: Window {
                        from_ms: from,
                        until_ms: closed,
                        server_now_ms: server_now,
                    },
                    unavailable,
                    prev,
                    writer: writer.clone(),
                });
            }
        }
        Ok(units)
    }

    fn unit_key(u: &Unit) -> String {
        format!("{}/{}", u.dataset.scope(), u.symbol)
    }

    fn dry_run_line(&self, u: &Unit) -> String {
        let (requests, weight, what) = fetch::estimate(u.kind, u.dataset.market, &u.window);
        format!(
            "tail {} {}: {} .. {} — {requests} request(s), weight {weight} ({what})",
            u.dataset.scope(),
            u.symbol,
            fmt_us(u.window.from_ms * 1000),
            fmt_us(u.window.until_ms * 1000),
        )
    }

    async fn dry_run(&self, _ctx: &Context, units: &[Unit]) -> Result<serde_json::Value> {
        let (mut requests, mut weight) = (0, 0);
        for u in units {
            let (r, w, _) = fetch::estimate(u.kind, u.dataset.market, &u.window);
            requests += r;
            weight += w;
        }
        println!(
            "tail would make at least {requests} request(s) of weight {weight} in all (limit {} per minute)",
            self.limits.weight_per_minute
        );
        Ok(serde_json::json!({"requests_at_least": requests, "weight_at_least": weight}))
    }

    async fn execute(job: Arc<Self>, ctx: Context, stamp: Stamp, u: Unit) -> Result<UnitDone> {
        let empty = BTreeMap::new();
        let hours = match u.kind {
            Kind::Funding => job.funding_hours(u.dataset.market).await?,
            _ => &empty,
        };
        let mut sink = DaySink::new(
            ctx.store.clone(),
            u.dataset,
            &u.symbol,
            stamp,
            u.writer.clone(),
            u.prev,
            u.window.from_ms,
            u.window.until_ms,
            ctx.clock.now(),
        );
        fetch::fetch(
            &job.client,
            &job.settings,
            hours,
            &u.dataset,
            &u.symbol,
            u.kind,
            u.window,
            &mut sink,
        )
        .await?;
        let w = sink.finish().await?;
        Ok(UnitDone {
            rows: w.rows,
            days: w.days,
            bytes: w.bytes,
            until_us: w.until_us,
            unavailable: u.unavailable,
        })
    }

    fn absorb(&self, t: &mut Totals, key: &str, d: UnitDone) -> Finished<Unit> {
        t.rows += d.rows;
        t.days += d.days;
        t.bytes += d.bytes;
        if let Some(u) = &d.unavailable {
            tracing::warn!(unit = %key, "{}", line_of(u));
            t.unavailable.push(unavailable_json(key, u));
        }
        t.holds
            .push(serde_json::json!({"unit": key, "rows": d.rows, "until": fmt_us(d.until_us)}));
        Finished::Done
    }

    fn bytes(&self, t: &Totals) -> u64 {
        t.bytes
    }

    async fn finish(&self, _ctx: &Context, t: Totals, end: &mut End) -> Result<serde_json::Value> {
        let stats: ClientStats = self.client.stats();
        let banned = self.client.banned().map(
            |(until, reason)| serde_json::json!({"until": until.to_rfc3339(), "reason": reason}),
        );
        if let Some(b) = &banned {
            end.tally.warn(format!(
                "the REST host banned this IP until {}: {}",
                b["until"], b["reason"]
            ));
        }
        Ok(serde_json::json!({
            "rest_url": self.rest_url,
            "rows": t.rows,
            "days_written": t.days,
            "requests": stats.requests,
            "weight": stats.weight,
            "requests_by_endpoint": stats.by_endpoint,
            "retries": stats.retries,
            "http_429": stats.http_429,
            "http_418": stats.http_418,
            "waited_for_budget_ms": stats.waited_ms,
            "peak_used_weight": stats.peak_used_weight,
            "limits": self.limits,
            "unavailable": t.unavailable,
            "holds": t.holds,
            "banned": banned,
            "seconds": end.seconds,
        }))
    }

    fn concurrency(&self) -> usize {
        self.common.concurrency
    }
}

fn line_of(u: &(i64, i64, String)) -> String {
    format!(
        "{} to {}: {} (the archive will have it)",
        fmt_us(u.0 * 1000),
        fmt_us(u.1 * 1000),
        u.2
    )
}
