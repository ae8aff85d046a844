//! Bar specs: which bars (type, parameters, sign mode, source) a dataset holds, the name that
//! spells them in paths (`BarSpec::name`, parsed back by `BarSpec::parse`), and the expansion
//! of a parameter grid from the command line into specs.
//!
//! Grammar of a name (fields in this order, separated by `-`; a key and its value by `_`):
//!
//! ```text
//! tick|volume|dollar                            -th_<threshold>                        -sign_<sign>-src_<source>
//! tick_imbalance|volume_imbalance|dollar_imbalance
//!                 -init_<init>-at_<alpha_ticks>-ai_<alpha_imbalance>-min_<x|none>-max_<x|none>-sign_<sign>-src_<source>
//! ```
//!
//! e.g. `dollar-th_1e6-sign_aggressor-src_aggTrades` or
//! `dollar_imbalance-init_1e6-at_0.1-ai_0.1-min_1e5-max_1e7-sign_aggressor-src_aggTrades`.
//! `<sign>` is `aggressor` or `tick_rule`, `<source>` `aggTrades` or `trades`. Numbers are
//! written in their shortest exact form: Rust's shortest round-trip decimal (`0.1`, `250`,
//! `0.00001`), or the exponent form when that is shorter and needs no minus sign (`1e6`, `2.5e5`),
//! so a name never holds a `-` inside a value and parses back to the very same `f64`s. Every
//! parameter is written, defaults included, and only the canonical spelling parses. There is
//! no `=` in a name: it is a folder above `symbol=S/year=Y/`, and DuckDB would read a `k=v`
//! folder anywhere in the path as a partition column.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use shared::paths::{DataType, Dataset, Market};
use shared::{Error, Result};

/// A bar type of features.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarType {
    Tick,
    Volume,
    Dollar,
    TickImbalance,
    VolumeImbalance,
    DollarImbalance,
}

impl BarType {
    pub const ALL: [BarType; 6] = [
        BarType::Tick,
        BarType::Volume,
        BarType::Dollar,
        BarType::TickImbalance,
        BarType::VolumeImbalance,
        BarType::DollarImbalance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BarType::Tick => "tick",
            BarType::Volume => "volume",
            BarType::Dollar => "dollar",
            BarType::TickImbalance => "tick_imbalance",
            BarType::VolumeImbalance => "volume_imbalance",
            BarType::DollarImbalance => "dollar_imbalance",
        }
    }

    pub fn is_imbalance(self) -> bool {
        matches!(
            self,
            BarType::TickImbalance | BarType::VolumeImbalance | BarType::DollarImbalance
        )
    }
}

impl fmt::Display for BarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BarType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        BarType::ALL
            .into_iter()
            .find(|b| b.name() == s.trim())
            .ok_or_else(|| {
                Error::usage(format!(
                    "unknown bar type `{s}` (expected tick, volume, dollar, tick_imbalance, volume_imbalance or dollar_imbalance)"
                ))
            })
    }
}

/// Where a trade's sign `b` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// `b = -1` if `is_buyer_maker` (the taker sold), else `+1`.
    Aggressor,
    /// `b = sign(p - p_prev)`, the previous `b` when the price did not change, `+1` first.
    TickRule,
}

impl Sign {
    pub fn name(self) -> &'static str {
        match self {
            Sign::Aggressor => "aggressor",
            Sign::TickRule => "tick_rule",
        }
    }
}

impl FromStr for Sign {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "aggressor" => Ok(Sign::Aggressor),
            "tick_rule" => Ok(Sign::TickRule),
            _ => Err(Error::usage(format!(
                "unknown sign `{s}` (expected aggressor or tick_rule)"
            ))),
        }
    }
}

/// Which trades the bars are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Source {
    #[serde(rename = "aggTrades")]
    AggTrades,
    #[serde(rename = "trades")]
    Trades,
}

impl Source {
    pub fn name(self) -> &'static str {
        self.data_type().name()
    }

    pub fn data_type(self) -> DataType {
        match self {
            Source::AggTrades => DataType::AggTrades,
            Source::Trades => DataType::Trades,
        }
    }

    /// The optimized dataset the bars read.
    pub fn dataset(self, market: Market) -> Result<Dataset> {
        Dataset::new(market, self.data_type(), None)
    }

    /// The (price, quantity, time, is_buyer_maker) columns of the normalized schema.
    pub fn columns(self) -> [&'static str; 4] {
        match self {
            Source::AggTrades => ["price", "quantity", "transact_time", "is_buyer_maker"],
            Source::Trades => ["price", "qty", "time", "is_buyer_maker"],
        }
    }
}

impl FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "aggTrades" => Ok(Source::AggTrades),
            "trades" => Ok(Source::Trades),
            _ => Err(Error::usage(format!(
                "unknown source `{s}` (expected aggTrades or trades)"
            ))),
        }
    }
}

/// The parameters of a bar type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A bar closes when its count, base volume or quote volume reaches `threshold`.
    Standard { threshold: f64 },
    /// A bar closes when `|theta| >= threshold`; the threshold adapts by EWMA (features.md §3).
    Imbalance {
        init_threshold: f64,
        alpha_ticks: f64,
        alpha_imbalance: f64,
        /// `None`: no lower clamp.
        min_threshold: Option<f64>,
        /// `None`: no upper clamp.
        max_threshold: Option<f64>,
    },
}

/// One bar dataset: its type, parameters, sign mode and source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BarSpec {
    pub bar: BarType,
    pub rule: Rule,
    pub sign: Sign,
    pub source: Source,
}

/// A number in a name: shortest exact decimal, or the exponent form when shorter and positive.
pub fn format_number(x: f64) -> String {
    let plain = format!("{x}");
    let exp = format!("{x:e}");
    if !exp.contains('-') && exp.len() < plain.len() {
        exp
    } else {
        plain
    }
}

fn parse_number(s: &str, what: &str) -> Result<f64> {
    let bad = || Error::usage(format!("{what}: `{s}` is not a number"));
    let x: f64 = s.trim().parse().map_err(|_| bad())?;
    if !x.is_finite() {
        return Err(bad());
    }
    Ok(x)
}

fn format_bound(b: Option<f64>) -> String {
    b.map_or_else(|| "none".to_string(), format_number)
}

impl BarSpec {
    /// A standard bar spec (checked).
    pub fn standard(bar: BarType, threshold: f64, sign: Sign, source: Source) -> Result<Self> {
        let s = BarSpec {
            bar,
            rule: Rule::Standard { threshold },
            sign,
            source,
        };
        s.validate()?;
        Ok(s)
    }

    /// Any spec (checked).
    pub fn new(bar: BarType, rule: Rule, sign: Sign, source: Source) -> Result<Self> {
        let s = BarSpec {
            bar,
            rule,
            sign,
            source,
        };
        s.validate()?;
        Ok(s)
    }

    /// Parameter checks of features.md §3.
    pub fn validate(&self) -> Result<()> {
        let positive = |x: f64, what: &str| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(Error::usage(format!(
                    "{what} must be a positive number, got {x}"
                )))
            }
        };
        match (self.bar.is_imbalance(), self.rule) {
            (false, Rule::Standard { threshold }) => positive(threshold, "--threshold"),
            (
                true,
                Rule::Imbalance {
                    init_threshold,
                    alpha_ticks,
                    alpha_imbalance,
                    min_threshold,
                    max_threshold,
                },
            ) => {
                positive(init_threshold, "--init-threshold")?;
                for (a, what) in [
                    (alpha_ticks, "--alpha-ticks"),
                    (alpha_imbalance, "--alpha-imbalance"),
                ] {
                    if !(a > 0.0 && a <= 1.0) {
                        return Err(Error::usage(format!("{what} must be in (0, 1], got {a}")));
                    }
                }
                if let Some(m) = min_threshold {
                    positive(m, "--min-threshold")?;
                }
                if let Some(m) = max_threshold {
                    positive(m, "--max-threshold")?;
                }
                if let (Some(lo), Some(hi)) = (min_threshold, max_threshold)
                    && lo > hi
                {
                    return Err(Error::usage(format!(
                        "--min-threshold {lo} is above --max-threshold {hi}"
                    )));
                }
                Ok(())
            }
            _ => Err(Error::usage(format!(
                "bar type {} does not take these parameters",
                self.bar
            ))),
        }
    }

    /// The dataset name (module docs).
    pub fn name(&self) -> String {
        let params = match self.rule {
            Rule::Standard { threshold } => format!("th_{}", format_number(threshold)),
            Rule::Imbalance {
                init_threshold,
                alpha_ticks,
                alpha_imbalance,
                min_threshold,
                max_threshold,
            } => format!(
                "init_{}-at_{}-ai_{}-min_{}-max_{}",
                format_number(init_threshold),
                format_number(alpha_ticks),
                format_number(alpha_imbalance),
                format_bound(min_threshold),
                format_bound(max_threshold)
            ),
        };
        format!(
            "{}-{params}-sign_{}-src_{}",
            self.bar.name(),
            self.sign.name(),
            self.source.name()
        )
    }

    /// Parse a name made by [`BarSpec::name`]; anything but the canonical spelling is refused.
    pub fn parse(name: &str) -> Result<BarSpec> {
        let bad = |why: &str| Error::bad_name(format!("not a bar spec name `{name}`: {why}"));
        let mut parts = name.split('-');
        let bar: BarType = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| bad("unknown bar type"))?;
        let mut fields = Vec::new();
        for p in parts {
            let (k, v) = p
                .split_once('_')
                .ok_or_else(|| bad("a field without `_`"))?;
            fields.push((k, v));
        }
        let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        let want: &[&str] = if bar.is_imbalance() {
            &["init", "at", "ai", "min", "max", "sign", "src"]
        } else {
            &["th", "sign", "src"]
        };
        if keys != want {
            return Err(bad(&format!("expected the fields {}", want.join(", "))));
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| *v)
                .unwrap_or("")
        };
        let num = |k: &str| parse_number(get(k), k).map_err(|_| bad(&format!("bad {k}")));
        let bound = |k: &str| match get(k) {
            "none" => Ok(None),
            _ => num(k).map(Some),
        };
        let sign: Sign = get("sign").parse().map_err(|_| bad("bad sign"))?;
        let source: Source = get("src").parse().map_err(|_| bad("bad src"))?;
        let spec = if bar.is_imbalance() {
            let rule = Rule::Imbalance {
                init_threshold: num("init")?,
                alpha_ticks: num("at")?,
                alpha_imbalance: num("ai")?,
                min_threshold: bound("min")?,
                max_threshold: bound("max")?,
            };
            BarSpec::new(bar, rule, sign, source)
        } else {
            BarSpec::standard(bar, num("th")?, sign, source)
        }
        .map_err(|e| bad(&e.to_string()))?;
        if spec.name() != name {
            return Err(bad(&format!("not canonical (`{}`)", spec.name())));
        }
        Ok(spec)
    }
}

impl fmt::Display for BarSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A `--min-threshold`/`--max-threshold` value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// `init_threshold / 10` (min) or `init_threshold * 10` (max), features.md §3.
    Default,
    /// `none`: no clamp on that side.
    Disabled,
    Value(f64),
}

impl FromStr for Bound {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "none" => Ok(Bound::Disabled),
            "default" => Ok(Bound::Default),
            x => parse_number(x, "threshold bound").map(Bound::Value),
        }
    }
}

/// The parameter grid of one run, as the command line gives it; [`Grid::specs`] is the
/// cartesian product.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grid {
    pub bars: Vec<BarType>,
    /// Standard bars.
    pub thresholds: Vec<f64>,
    /// Imbalance bars.
    pub init_thresholds: Vec<f64>,
    pub alpha_ticks: Vec<f64>,
    pub alpha_imbalance: Vec<f64>,
    pub min_thresholds: Vec<Bound>,
    pub max_thresholds: Vec<Bound>,
    pub signs: Vec<Sign>,
    pub sources: Vec<Source>,
}

/// Parse a comma-separated list element by element.
pub fn parse_list<T: FromStr<Err = Error>>(items: &[String]) -> Result<Vec<T>> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Parse a comma-separated list of numbers.
pub fn parse_numbers(items: &[String], what: &str) -> Result<Vec<f64>> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_number(s, what))
        .collect()
}

impl Grid {
    /// Every spec of the grid, each once, in a stable order. Parameters given for bar types
    /// that are not requested are refused rather than ignored.
    pub fn specs(&self) -> Result<Vec<BarSpec>> {
        if self.bars.is_empty() {
            return Err(Error::usage("--bar is empty"));
        }
        let any_std = self.bars.iter().any(|b| !b.is_imbalance());
        let any_imb = self.bars.iter().any(|b| b.is_imbalance());
        if any_std && self.thresholds.is_empty() {
            return Err(Error::usage(
                "tick, volume and dollar bars need --threshold",
            ));
        }
        if !any_std && !self.thresholds.is_empty() {
            return Err(Error::usage(
                "--threshold applies to tick, volume and dollar bars only (imbalance bars take --init-threshold)",
            ));
        }
        if any_imb && self.init_thresholds.is_empty() {
            return Err(Error::usage("imbalance bars need --init-threshold"));
        }
        if !any_imb && !self.init_thresholds.is_empty() {
            return Err(Error::usage(
                "--init-threshold applies to imbalance bars only (the others take --threshold)",
            ));
        }
        for (v, what) in [
            (self.alpha_ticks.len(), "--alpha-ticks"),
            (self.alpha_imbalance.len(), "--alpha-imbalance"),
            (self.min_thresholds.len(), "--min-threshold"),
            (self.max_thresholds.len(), "--max-threshold"),
            (self.signs.len(), "--sign"),
            (self.sources.len(), "--source"),
        ] {
            if v == 0 {
                return Err(Error::usage(format!("{what} is empty")));
            }
        }
        let mut out: Vec<BarSpec> = Vec::new();
        let mut push = |s: BarSpec| {
            if !out.iter().any(|o| o.name() == s.name()) {
                out.push(s);
            }
        };
        for &source in &self.sources {
            for &sign in &self.signs {
                for &bar in &self.bars {
                    if !bar.is_imbalance() {
                        for &th in &self.thresholds {
                            push(BarSpec::standard(bar, th, sign, source)?);
                        }
                        continue;
                    }
                    for &init in &self.init_thresholds {
                        for &at in &self.alpha_ticks {
                            for &ai in &self.alpha_imbalance {
                                for &lo in &self.min_thresholds {
                                    for &hi in &self.max_thresholds {
                                        let lo = match lo {
                                            Bound::Default => Some(init / 10.0),
                                            Bound::Disabled => None,
                                            Bound::Value(x) => Some(x),
                                        };
                                        let hi = match hi {
                                            Bound::Default => Some(init * 10.0),
                                            Bound::Disabled => None,
                                            Bound::Value(x) => Some(x),
                                        };
                                        let rule = Rule::Imbalance {
                                            init_threshold: init,
                                            alpha_ticks: at,
                                            alpha_imbalance: ai,
                                            min_threshold: lo,
                                            max_threshold: hi,
                                        };
                                        push(BarSpec::new(bar, rule, sign, source)?);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short_and_exact() {
        for (x, s) in [
            (1e6, "1e6"),
            (1e5, "1e5"),
            (2.5e5, "2.5e5"),
            (250.0, "250"),
            (10.0, "10"),
            (0.1, "0.1"),
            (1e-5, "0.00001"),
            (0.3 / 10.0, "0.03"),
            (1234567.0, "1234567"),
            (1.5, "1.5"),
        ] {
            assert_eq!(format_number(x), s, "{x}");
            assert_eq!(s.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{s}");
        }
        // Awkward values still round-trip exactly and never contain '-'.
        for x in [0.1 + 0.2, 1.0 / 3.0, 123456.789e-12, 9.87654321e21] {
            let s = format_number(x);
            assert!(!s.contains('-'), "{s}");
            assert_eq!(s.parse::<f64>().unwrap().to_bits(), x.to_bits());
        }
    }

    fn imb(
        bar: BarType,
        [init, at, ai]: [f64; 3],
        lo: Option<f64>,
        hi: Option<f64>,
        sign: Sign,
        source: Source,
    ) -> BarSpec {
        let rule = Rule::Imbalance {
            init_threshold: init,
            alpha_ticks: at,
            alpha_imbalance: ai,
            min_threshold: lo,
            max_threshold: hi,
        };
        BarSpec::new(bar, rule, sign, source).unwrap()
    }

    #[test]
    fn names_round_trip() {
        let specs = [
            BarSpec::standard(BarType::Dollar, 1e6, Sign::Aggressor, Source::AggTrades).unwrap(),
            BarSpec::standard(BarType::Tick, 100.0, Sign::TickRule, Source::Trades).unwrap(),
            imb(
                BarType::DollarImbalance,
                [1e6, 0.1, 0.1],
                Some(1e5),
                Some(1e7),
                Sign::Aggressor,
                Source::AggTrades,
            ),
            imb(
                BarType::TickImbalance,
                [50.0, 0.05, 1.0],
                None,
                Some(0.1 + 0.2),
                Sign::TickRule,
                Source::Trades,
            ),
        ];
        let names = [
            "dollar-th_1e6-sign_aggressor-src_aggTrades",
            "tick-th_100-sign_tick_rule-src_trades",
            "dollar_imbalance-init_1e6-at_0.1-ai_0.1-min_1e5-max_1e7-sign_aggressor-src_aggTrades",
            "tick_imbalance-init_50-at_0.05-ai_1-min_none-max_0.30000000000000004-sign_tick_rule-src_trades",
        ];
        for (s, n) in specs.iter().zip(names) {
            assert_eq!(s.name(), n);
            assert_eq!(BarSpec::parse(n).unwrap(), *s);
            shared::paths::BarsKey::new(Market::Um, n, "BTCUSDT").unwrap();
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for n in [
            "",
            "dollar",
            "dollar-th_1000000-sign_aggressor-src_aggTrades", // not canonical (1e6)
            "dollar-th_1e6-src_aggTrades-sign_aggressor",     // field order
            "dollar-th_0-sign_aggressor-src_aggTrades",
            "dollar-th_1e6-sign_buyer-src_aggTrades",
            "dollar-init_1e6-sign_aggressor-src_aggTrades",
            "dollar_imbalance-init_1e6-at_0-ai_0.1-min_1e5-max_1e7-sign_aggressor-src_aggTrades",
            "dollar_imbalance-init_1e6-at_0.1-ai_1.5-min_1e5-max_1e7-sign_aggressor-src_aggTrades",
            "dollar_imbalance-init_1e6-at_0.1-ai_0.1-min_1e7-max_1e5-sign_aggressor-src_aggTrades",
        ] {
            assert!(BarSpec::parse(n).is_err(), "{n}");
        }
    }

    fn grid() -> Grid {
        Grid {
            bars: vec![BarType::Dollar, BarType::DollarImbalance],
            thresholds: vec![1e6, 2e6],
            init_thresholds: vec![1e6],
            alpha_ticks: vec![0.1, 0.2],
            alpha_imbalance: vec![0.1],
            min_thresholds: vec![Bound::Default, Bound::Disabled],
            max_thresholds: vec![Bound::Default],
            signs: vec![Sign::Aggressor],
            sources: vec![Source::AggTrades],
        }
    }

    #[test]
    fn the_grid_is_the_cartesian_product() {
        let names: Vec<String> = grid().specs().unwrap().iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "dollar-th_1e6-sign_aggressor-src_aggTrades",
                "dollar-th_2e6-sign_aggressor-src_aggTrades",
                "dollar_imbalance-init_1e6-at_0.1-ai_0.1-min_1e5-max_1e7-sign_aggressor-src_aggTrades",
                "dollar_imbalance-init_1e6-at_0.1-ai_0.1-min_none-max_1e7-sign_aggressor-src_aggTrades",
                "dollar_imbalance-init_1e6-at_0.2-ai_0.1-min_1e5-max_1e7-sign_aggressor-src_aggTrades",
                "dollar_imbalance-init_1e6-at_0.2-ai_0.1-min_none-max_1e7-sign_aggressor-src_aggTrades",
            ]
        );
        let mut g = grid();
        g.bars = vec![BarType::Tick];
        assert!(
            g.specs().is_err(),
            "--init-threshold without imbalance bars"
        );
        let mut g = grid();
        g.thresholds.clear();
        assert!(g.specs().is_err(), "standard bars without --threshold");
        let mut g = grid();
        g.min_thresholds = vec![Bound::Value(2e7)];
        assert!(g.specs().is_err(), "min above max");
    }
}
