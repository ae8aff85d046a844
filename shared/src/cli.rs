//! The common command-line arguments of every job (architecture.md, "The job contract") and
//! their validation into a [`CommonSpec`] that job libraries take — clap stays at this edge.

use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::paths::{DataType, Dataset, Interval, Market};
use crate::plan::{DateRange, resolve_date, shard_symbols};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Arguments every job takes. Flatten into a job's clap struct with `#[command(flatten)]`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Where outputs, manifests and reports live: a path, file://, s3://bucket/prefix or memory://.
    #[arg(long, env = "PIPELINE_STORE", default_value = "./data")]
    pub store: String,

    /// Market: spot, um (USD-M futures), cm (COIN-M futures) or option.
    #[arg(long, default_value = "um")]
    pub market: String,

    /// Data types, comma-separated, as the archive names them: klines, aggTrades, trades,
    /// fundingRate, metrics, bookTicker, bookDepth, markPriceKlines, indexPriceKlines,
    /// premiumIndexKlines, liquidationSnapshot, BVOLIndex, EOHSummary.
    #[arg(long = "data-type", default_value = "klines", value_delimiter = ',')]
    pub data_types: Vec<String>,

    /// Kline interval for the kline-shaped types (1s … 1d, 3d, 1w, 1mo); others ignore it.
    #[arg(long, default_value = "1m")]
    pub interval: String,

    /// Symbols, comma-separated, or `all` (every symbol in the archive listing, delisted included).
    #[arg(long, value_delimiter = ',', required = true)]
    pub symbols: Vec<String>,

    /// With `--symbols all`: only these contract kinds (perpetual, delivery, spot, option).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub contract: Vec<crate::instruments::Contract>,

    /// With `--symbols all`: only symbols quoted in these assets (USDT, USDC, BTC, …).
    #[arg(long, value_delimiter = ',')]
    pub quote: Vec<String>,

    /// With `--symbols all`: leave out symbols matching these patterns (`*` and `?` wildcards
    /// over the whole symbol, e.g. `*UP*,*DOWN*`).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// With `--symbols all`: only symbols with archive data on at least one day of FIRST..LAST
    /// (`2021-01-01..2021-12-31`), delisted ones included.
    #[arg(long)]
    pub listed_between: Option<String>,

    /// First day, inclusive: YYYY-MM-DD, or relative: today, yesterday, -7d, month-start.
    #[arg(long, allow_hyphen_values = true)]
    pub start: String,

    /// Last day, inclusive (same forms as --start).
    #[arg(long, allow_hyphen_values = true)]
    pub end: String,

    /// Run only shard I of N (0-based), splitting the symbols: `--shard 0/4`.
    #[arg(long, default_value = "0/1")]
    pub shard: String,

    /// Units processed at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,

    /// Redo units even if the manifest has them as done.
    #[arg(long)]
    pub force: bool,

    /// Print the plan and do nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Log format on stderr: pretty (humans) or json (Kubernetes).
    #[arg(
        long,
        value_enum,
        default_value = "pretty",
        env = "PIPELINE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Print the JSON run report on stdout even on a terminal (off a terminal it always is).
    #[arg(long)]
    pub json: bool,

    /// Run id for reports (the runner passes its own so it can find them); generated if absent.
    #[arg(long, env = "PIPELINE_RUN_ID")]
    pub run_id: Option<String>,

    /// Pretend today is this date when resolving relative dates (for reproducible runs).
    #[arg(long, env = "PIPELINE_TODAY")]
    pub today: Option<String>,

    /// Accept a range that ends after today (UTC): by default that is a usage error, since the
    /// archive and the API have nothing there yet.
    #[arg(long)]
    pub allow_future: bool,

    /// When another run holds this job's lease (same store, job, market, data types and
    /// shard), wait for it: forever, or up to DURATION (`90s`, `10m`, `2h`). Without it the run
    /// exits 75 at once, naming the holder.
    #[arg(
        long,
        env = "PIPELINE_WAIT_LOCK",
        num_args = 0..=1,
        default_missing_value = "forever",
        value_name = "DURATION"
    )]
    pub wait_lock: Option<String>,

    /// A lease's time to live on an object store, renewed every third of it: how long a holder
    /// killed without warning keeps others waiting. (A local store's lock ends with its process.)
    #[arg(
        long,
        env = "PIPELINE_LEASE_TTL",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub lease_ttl: String,
}

/// Which symbols a run covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SymbolSelection {
    /// Every symbol the listing has, delisted included.
    All,
    List(Vec<String>),
}

/// The validated common arguments.
#[derive(Debug, Clone, Serialize)]
pub struct CommonSpec {
    pub store: String,
    pub market: Market,
    pub datasets: Vec<Dataset>,
    pub symbols: SymbolSelection,
    /// Filters on `--symbols all`.
    pub select: crate::instruments::Selection,
    pub range: DateRange,
    pub shard: (usize, usize),
    pub concurrency: usize,
    pub force: bool,
    pub dry_run: bool,
    pub log_format: LogFormat,
    pub run_id: Option<String>,
    /// How the run takes its lease (`--wait-lock`, `--lease-ttl`).
    #[serde(skip)]
    pub lease: crate::lease::Policy,
}

impl CommonSpec {
    /// Keep this shard's symbols of a resolved list.
    pub fn shard_of(&self, symbols: &[String]) -> Vec<String> {
        shard_symbols(symbols, self.shard.0, self.shard.1)
    }
}

/// Parse `I/N`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::usage(format!("--shard `{s}`: expected I/N with 0 <= I < N"));
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Validate a symbol name: the archive's symbols are upper-case letters, digits and `_`, but UM
/// has listed non-ASCII names too, so only separators and control characters are refused.
pub fn validate_symbol(s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "/\\?#%&=*".contains(c))
    {
        return Err(Error::usage(format!("bad symbol `{s}`")));
    }
    Ok(s.to_uppercase())
}

/// A URL flag (`--source`, `--listing-url`) must be http(s) with a host: a malformed one is a
/// usage error here, not a network failure retried later.
pub fn check_http_url(flag: &str, url: &str) -> Result<()> {
    url::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .map(|_| ())
        .ok_or_else(|| {
            Error::usage(format!(
                "{flag} `{url}` is not an http(s) URL with a host (e.g. https://data.binance.vision)"
            ))
        })
}

/// Up to `n` names of `listed` closest to `wanted`, for "did you mean" messages: names that
/// extend or shorten it first (`BTC` → `BTCUSDT`), then by edit distance, then alphabetically.
pub fn closest_names(wanted: &str, listed: &[String], n: usize) -> Vec<String> {
    let mut ranked: Vec<(bool, usize, &String)> = listed
        .iter()
        .map(|l| {
            let related = l.starts_with(wanted) || wanted.starts_with(l.as_str());
            (!related, edit_distance(wanted, l), l)
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .take(n)
        .map(|(_, _, l)| l.clone())
        .collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(up + 1).min(row[j] + 1);
            diag = up;
        }
    }
    row[b.len()]
}

/// How a job binary shows its end: the log format, and whether the JSON report goes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputOptions {
    pub log_format: LogFormat,
    /// `--json`: the report on stdout even when stdout is a terminal.
    pub json: bool,
}

/// The datasets `--data-type` names (each once, in the order given), the kline-shaped ones at
/// `interval`.
pub fn datasets(market: Market, data_types: &[String], interval: &str) -> Result<Vec<Dataset>> {
    let interval: Interval = interval.parse()?;
    let mut out = Vec::new();
    for dt in data_types {
        let dt: DataType = dt.trim().parse()?;
        let ds = Dataset::new(market, dt, dt.is_kline_family().then_some(interval))?;
        if !out.contains(&ds) {
            out.push(ds);
        }
    }
    Ok(out)
}

impl CommonArgs {
    /// The output options, read before the rest is validated (a usage error is logged in them).
    pub fn output(&self) -> OutputOptions {
        OutputOptions {
            log_format: self.log_format,
            json: self.json,
        }
    }

    /// Validate everything; `today` resolves relative dates unless `--today` overrides it.
    pub fn into_spec(self, today: NaiveDate) -> Result<CommonSpec> {
        let today = match &self.today {
            Some(t) => crate::plan::parse_date(t)?,
            None => today,
        };
        let market: Market = self.market.parse()?;
        let datasets = datasets(market, &self.data_types, &self.interval)?;
        if datasets.is_empty() {
            return Err(Error::usage("--data-type is empty"));
        }
        let symbols = if self.symbols.len() == 1 && self.symbols[0].eq_ignore_ascii_case("all") {
            SymbolSelection::All
        } else {
            let mut v = self
                .symbols
                .iter()
                .map(|s| validate_symbol(s))
                .collect::<Result<Vec<_>>>()?;
            v.sort();
            v.dedup();
            SymbolSelection::List(v)
        };
        let select = crate::instruments::Selection::parse(
            self.contract.clone(),
            &self.quote,
            self.exclude.clone(),
            self.listed_between.as_deref(),
        )?;
        if !select.is_empty() && symbols != SymbolSelection::All {
            return Err(Error::usage(
                "--contract, --quote, --exclude and --listed-between select from `--symbols all`; \
                 a list of symbols is taken as it is",
            ));
        }
        let range = DateRange::new(
            resolve_date(&self.start, today)?,
            resolve_date(&self.end, today)?,
        )?;
        if range.end > today && !self.allow_future {
            return Err(Error::usage(format!(
                "--end {} is after today ({today}, UTC): nothing is published there yet; \
                 pass --allow-future to plan it anyway",
                range.end
            )));
        }
        if self.concurrency == 0 {
            return Err(Error::usage("--concurrency must be at least 1"));
        }
        if let Some(id) = &self.run_id
            && (id.is_empty()
                || id.len() > 200
                || id.starts_with('.')
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(Error::usage(format!(
                "--run-id `{id}`: a run id names folders in the store; use letters, digits, `-`, `_` and `.`"
            )));
        }
        let wait = match &self.wait_lock {
            None => crate::lease::Wait::No,
            Some(w) => crate::lease::Wait::parse(w)?,
        };
        let ttl = crate::lease::parse_duration(&self.lease_ttl)
            .filter(|d| *d >= std::time::Duration::from_millis(300))
            .ok_or_else(|| {
                Error::usage(format!(
                    "--lease-ttl `{}`: expected a duration of at least 300ms, such as 60s or 5m",
                    self.lease_ttl
                ))
            })?;
        Ok(CommonSpec {
            store: self.store,
            market,
            datasets,
            symbols,
            select,
            range,
            shard: parse_shard(&self.shard)?,
            concurrency: self.concurrency,
            force: self.force,
            dry_run: self.dry_run,
            log_format: self.log_format,
            run_id: self.run_id,
            lease: crate::lease::Policy { wait, ttl },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names_prefer_extensions_then_edit_distance() {
        let listed: Vec<String> = ["BNBUSDT", "BTCDOMUSDT", "BTCUSDT", "ETCUSDT", "ETHUSDT"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            closest_names("BTC", &listed, 3),
            ["BTCUSDT", "BTCDOMUSDT", "ETCUSDT"]
        );
        assert_eq!(closest_names("ETHUSTD", &listed, 1), ["ETHUSDT"]);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert!(closest_names("X", &[], 5).is_empty());
    }
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn spec(args: &[&str]) -> Result<CommonSpec> {
        let mut v = vec!["job"];
        v.extend_from_slice(args);
        let today = NaiveDate::from_ymd_opt(2024, 3, 10).unwrap();
        Cli::try_parse_from(v).unwrap().common.into_spec(today)
    }

    #[test]
    fn a_range_after_today_is_a_usage_error_unless_allowed() {
        let base = ["--symbols", "BTCUSDT", "--start", "2024-03-01"];
        let e = spec(&[&base[..], &["--end", "2027-03-01"]].concat()).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        assert!(
            e.to_string().contains("2027-03-01") && e.to_string().contains("--allow-future"),
            "{e}"
        );
        assert!(spec(&[&base[..], &["--end", "today"]].concat()).is_ok());
        assert!(spec(&[&base[..], &["--end", "2027-03-01", "--allow-future"]].concat()).is_ok());
    }

    #[test]
    fn parses_the_common_arguments() {
        let s = spec(&[
            "--market",
            "spot",
            "--data-type",
            "klines,aggTrades",
            "--interval",
            "1h",
            "--symbols",
            "btcusdt,ETHUSDT,BTCUSDT",
            "--start",
            "-7d",
            "--end",
            "yesterday",
            "--shard",
            "1/3",
        ])
        .unwrap();
        assert_eq!(s.market, Market::Spot);
        assert_eq!(s.datasets.len(), 2);
        assert_eq!(s.datasets[0].name(), "klines-1h");
        assert_eq!(s.datasets[1].name(), "aggTrades");
        assert_eq!(
            s.symbols,
            SymbolSelection::List(vec!["BTCUSDT".into(), "ETHUSDT".into()])
        );
        assert_eq!(s.range.start.to_string(), "2024-03-03");
        assert_eq!(s.range.end.to_string(), "2024-03-09");
        assert_eq!(s.shard, (1, 3));
    }

    #[test]
    fn rejects_bad_arguments_as_usage_errors() {
        let base = [
            "--symbols",
            "X",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
        ];
        for extra in [
            &["--market", "mars"][..],
            &["--data-type", "candles"],
            &["--market", "spot", "--data-type", "fundingRate"],
            &["--interval", "7m"],
            &["--shard", "3/3"],
            &["--concurrency", "0"],
        ] {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            let e = spec(&a).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{extra:?}: {e}");
        }
        assert!(
            spec(&[
                "--symbols",
                "X",
                "--start",
                "2024-01-03",
                "--end",
                "2024-01-02"
            ])
            .is_err()
        );
        assert!(
            spec(&[
                "--symbols",
                "A/B",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-02"
            ])
            .is_err()
        );
    }

    #[test]
    fn all_symbols_and_today_override() {
        let s = spec(&[
            "--symbols",
            "all",
            "--start",
            "yesterday",
            "--end",
            "yesterday",
            "--today",
            "2020-01-01",
        ])
        .unwrap();
        assert_eq!(s.symbols, SymbolSelection::All);
        assert_eq!(s.range.start.to_string(), "2019-12-31");
    }
}
