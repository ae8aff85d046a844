//! What an archive symbol is, read from its spelling (base and quote asset, perpetual, delivery
//! with its date, or spot; the margin asset), and the selections a researcher makes of `--symbols
//! all` by it: `--contract`, `--quote`, `--exclude`, `--listed-between`.

use chrono::NaiveDate;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::paths::Market;

/// Quote assets, longest first where one ends another (`FDUSD` before `USD`).
const QUOTES: [&str; 14] = [
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "DAI", "USD", "BTC", "ETH", "BNB", "EUR",
    "TRY", "BRL",
];

/// The kind of contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    Perpetual,
    Delivery,
    Spot,
    Option,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::Perpetual => "perpetual",
            Contract::Delivery => "delivery",
            Contract::Spot => "spot",
            Contract::Option => "option",
        }
    }
}

/// One symbol as its spelling describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instrument {
    pub symbol: String,
    pub base: String,
    /// Empty when no known quote asset ends the pair.
    pub quote: String,
    /// The asset margin and PnL are in: the quote for USD-M, the base for COIN-M; empty for spot.
    pub margin: String,
    pub contract: Contract,
    /// A delivery contract's `_YYMMDD` day.
    pub delivery: Option<NaiveDate>,
}

impl Instrument {
    /// Read `symbol` of `market`: `BTCUSDT` (UM perpetual), `BTCUSDT_250328` (UM delivery),
    /// `BTCUSD_PERP` / `BTCUSD_250328` (CM), `ETHBTC` (spot).
    pub fn parse(market: Market, symbol: &str) -> Instrument {
        let (pair, suffix) = match symbol.split_once('_') {
            Some((p, s)) => (p, Some(s)),
            None => (symbol, None),
        };
        let delivery = suffix.and_then(|s| NaiveDate::parse_from_str(s, "%y%m%d").ok());
        let contract = match market {
            Market::Spot => Contract::Spot,
            Market::Option => Contract::Option,
            _ if delivery.is_some() => Contract::Delivery,
            _ => Contract::Perpetual,
        };
        let (base, quote) = QUOTES
            .iter()
            .find_map(|q| {
                pair.strip_suffix(q)
                    .filter(|b| !b.is_empty())
                    .map(|b| (b.to_string(), q.to_string()))
            })
            .unwrap_or_else(|| (pair.to_string(), String::new()));
        let margin = match market {
            Market::Um => quote.clone(),
            Market::Cm => base.clone(),
            _ => String::new(),
        };
        Instrument {
            symbol: symbol.to_string(),
            base,
            quote,
            margin,
            contract,
            delivery,
        }
    }
}

/// Filters on `--symbols all`. Empty: every symbol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    pub contracts: Vec<Contract>,
    /// Quote assets, upper case.
    pub quotes: Vec<String>,
    /// Patterns with `*` (any run of characters) and `?` (one), matched against the whole symbol.
    pub exclude: Vec<String>,
    /// Symbols with archive data on at least one day of this range.
    pub listed_between: Option<(NaiveDate, NaiveDate)>,
}

impl Selection {
    /// From the flags' values; a bad `--listed-between` or an empty pattern is a usage error.
    pub fn parse(
        contracts: Vec<Contract>,
        quotes: &[String],
        exclude: Vec<String>,
        listed_between: Option<&str>,
    ) -> Result<Selection> {
        if let Some(p) = exclude.iter().find(|p| p.trim().is_empty()) {
            return Err(Error::usage(format!("--exclude `{p}`: an empty pattern")));
        }
        let listed_between = listed_between
            .map(|s| {
                let bad = || {
                    Error::usage(format!(
                        "--listed-between `{s}`: expected FIRST..LAST, two YYYY-MM-DD dates"
                    ))
                };
                let (a, b) = s.split_once("..").ok_or_else(bad)?;
                let a = NaiveDate::parse_from_str(a.trim(), "%Y-%m-%d").map_err(|_| bad())?;
                let b = NaiveDate::parse_from_str(b.trim(), "%Y-%m-%d").map_err(|_| bad())?;
                if b < a {
                    return Err(Error::usage(format!(
                        "--listed-between `{s}`: {b} is before {a}"
                    )));
                }
                Ok((a, b))
            })
            .transpose()?;
        Ok(Selection {
            contracts,
            quotes: quotes.iter().map(|q| q.trim().to_uppercase()).collect(),
            exclude,
            listed_between,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Selection::default()
    }

    /// Whether the symbol's spelling passes the contract, quote and exclude filters.
    pub fn admits_name(&self, market: Market, symbol: &str) -> bool {
        let i = Instrument::parse(market, symbol);
        (self.contracts.is_empty() || self.contracts.contains(&i.contract))
            && (self.quotes.is_empty() || self.quotes.contains(&i.quote))
            && !self.exclude.iter().any(|p| glob(p, symbol))
    }

    /// Whether a symbol whose data spans `first..=last` passes `--listed-between`.
    pub fn admits_span(&self, span: Option<(NaiveDate, NaiveDate)>) -> bool {
        match (self.listed_between, span) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((a, b)), Some((first, last))) => first <= b && last >= a,
        }
    }
}

/// `*` and `?` wildcards over the whole string (case-sensitive, as symbols are).
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn spellings_say_what_a_symbol_is() {
        let i = Instrument::parse(Market::Um, "BTCUSDT_250328");
        assert_eq!(i.contract, Contract::Delivery);
        assert_eq!(i.delivery, Some(d("2025-03-28")));
        assert_eq!(
            (i.base.as_str(), i.quote.as_str(), i.margin.as_str()),
            ("BTC", "USDT", "USDT")
        );
        let i = Instrument::parse(Market::Um, "1000PEPEUSDC");
        assert_eq!((i.base.as_str(), i.quote.as_str()), ("1000PEPE", "USDC"));
        assert_eq!(i.contract, Contract::Perpetual);
        let i = Instrument::parse(Market::Cm, "ETHUSD_PERP");
        assert_eq!(i.contract, Contract::Perpetual);
        assert_eq!(
            (i.base.as_str(), i.quote.as_str(), i.margin.as_str()),
            ("ETH", "USD", "ETH")
        );
        let i = Instrument::parse(Market::Spot, "BTCFDUSD");
        assert_eq!((i.base.as_str(), i.quote.as_str()), ("BTC", "FDUSD"));
        assert_eq!(i.contract, Contract::Spot);
        let i = Instrument::parse(Market::Spot, "USDCUSDT");
        assert_eq!((i.base.as_str(), i.quote.as_str()), ("USDC", "USDT"));
        // UTF-8 names keep their base.
        let i = Instrument::parse(Market::Um, "币安人生USDT");
        assert_eq!((i.base.as_str(), i.quote.as_str()), ("币安人生", "USDT"));
    }

    #[test]
    fn selections_filter_by_contract_quote_pattern_and_span() {
        let s = Selection::parse(
            vec![Contract::Perpetual],
            &["usdt".into()],
            vec!["*UP*".into(), "USDC?SDT".into()],
            Some("2024-11-01..2024-11-30"),
        )
        .unwrap();
        assert!(s.admits_name(Market::Um, "BTCUSDT"));
        assert!(!s.admits_name(Market::Um, "BTCUSDT_241227"));
        assert!(!s.admits_name(Market::Um, "BTCUSDC"));
        assert!(!s.admits_name(Market::Um, "BTCUPUSDT"));
        assert!(!s.admits_name(Market::Um, "USDCUSDT"));
        assert!(s.admits_span(Some((d("2024-11-30"), d("2025-01-31")))));
        assert!(!s.admits_span(Some((d("2024-12-01"), d("2025-01-31")))));
        assert!(!s.admits_span(Some((d("2020-01-01"), d("2024-10-31")))));
        assert!(!s.admits_span(None));
        assert!(Selection::default().admits_span(None));
        for bad in ["2024-11-01", "2024-11-01..x", "2024-12-01..2024-11-01"] {
            assert!(
                Selection::parse(vec![], &[], vec![], Some(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(Selection::parse(vec![], &[], vec![" ".into()], None).is_err());
    }

    #[test]
    fn globs_match_the_whole_symbol() {
        assert!(glob("*USDT", "BTCUSDT"));
        assert!(!glob("*USDT", "BTCUSDT_250328"));
        assert!(glob("BTC*_??????", "BTCUSDT_250328"));
        assert!(glob("*", ""));
        assert!(!glob("BTC", "BTCUSDT"));
    }
}
