//! The schema registry: for every dataset, the archive CSV's columns in file order (with the header
//! spellings seen), the normalized schema they map to, and the columns that place, key and sort a
//! row. The archive formats are binance-archive.md §3; the normalized names are architecture.md
//! "Normalized schemas". Parsing lives in `parse.rs`, not here.

use crate::paths::{DataType, Dataset, Market};

/// How an archive cell is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A signed decimal integer (ids, counts).
    I64,
    /// A decimal string; exponents (`0E-8`) and bare integers (`10000`) are accepted.
    F64,
    /// Like `F64`, but a blank cell or `""` is null (never 0).
    OptF64,
    /// `true`/`false`, any case (spot writes `True`/`False`).
    Bool,
    /// Text; `""` is the empty string.
    Str,
    /// The symbol the file's path names, repeated on every row (metrics, BVOLIndex): checked,
    /// not output, since the Hive folder `symbol=` carries it and a reader merging a column with
    /// the folder's key of the same name fails.
    PathSymbol,
    /// An epoch integer whose unit (s, ms, µs, ns) is detected per file and column from its digit
    /// count; normalized to µs.
    Time,
    /// `YYYY-MM-DD HH:MM:SS`, UTC; normalized to µs.
    DateTime,
    /// `YYYY-MM-DD` (EOHSummary `date`): consumed by the derived `time`, not output itself.
    Date,
    /// `00`–`23` (EOHSummary `hour`): consumed by the derived `time`, not output itself.
    Hour,
    /// Read past and dropped: the `ignore` columns, spot's `is_best_match`.
    Skip,
}

impl Kind {
    /// The normalized type, or `None` for columns that are not output as they are.
    pub fn out_kind(self) -> Option<OutKind> {
        match self {
            Kind::I64 => Some(OutKind::I64),
            Kind::F64 => Some(OutKind::F64),
            Kind::OptF64 => Some(OutKind::OptF64),
            Kind::Bool => Some(OutKind::Bool),
            Kind::Str => Some(OutKind::Str),
            Kind::Time | Kind::DateTime => Some(OutKind::TimeUs),
            Kind::Date | Kind::Hour | Kind::Skip | Kind::PathSymbol => None,
        }
    }
}

/// A normalized column's type. A Parquet writer maps these to Int64, Float64, nullable Float64,
/// Boolean, String and Datetime(µs, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutKind {
    I64,
    F64,
    OptF64,
    Bool,
    Str,
    /// Microseconds since the Unix epoch, UTC.
    TimeUs,
}

/// One archive column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The normalized snake_case output name (for `Skip` columns, a descriptive name).
    pub name: &'static str,
    pub kind: Kind,
    /// Header spellings seen in the archive or its docs, compared in lowercase.
    pub headers: &'static [&'static str],
}

/// A column computed from others rather than read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    None,
    /// metrics: `snapshot_time` from `create_time` and the file's labelling (features.md),
    /// appended after the archive's columns.
    MetricsSnapshot,
    /// EOHSummary: `time` = `date` + `hour` hours, output first in place of `date` and `hour`.
    EohTime,
}

/// The name of the metrics derived column.
pub const SNAPSHOT_TIME: &str = "snapshot_time";
/// The name of the EOHSummary derived column.
pub const EOH_TIME: &str = "time";

/// Rows the archive marks invalid, dropped by the parser and counted (binance-archive.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidRule {
    None,
    /// Spot aggTrades invalidated in 2022: price 0, quantity 0, first and last trade id -1.
    SpotAggTradeTombstone,
}

/// One archive CSV format and its normalized schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    /// A short name for messages: `klines`, `aggTrades-spot`, …
    pub name: &'static str,
    /// The archive's columns in file order.
    pub fields: &'static [Field],
    /// With a header, map columns by name (`true`) or by position (`false`: the kline families,
    /// whose header spellings vary, binance-archive.md §3.2).
    pub by_name: bool,
    pub derived: Derived,
    pub invalid: InvalidRule,
    /// The normalized column that places a row on a UTC day.
    pub time_field: &'static str,
    /// The dedup key for `optimize` (binance-archive.md §4.5). Empty: the whole row.
    pub key: &'static [&'static str],
    /// The sort columns.
    pub sort: &'static [&'static str],
}

impl Format {
    /// The normalized schema, in output order.
    pub fn output_fields(&self) -> Vec<(&'static str, OutKind)> {
        let mut out = Vec::with_capacity(self.fields.len() + 1);
        if self.derived == Derived::EohTime {
            out.push((EOH_TIME, OutKind::TimeUs));
        }
        out.extend(
            self.fields
                .iter()
                .filter_map(|f| f.kind.out_kind().map(|k| (f.name, k))),
        );
        if self.derived == Derived::MetricsSnapshot {
            out.push((SNAPSHOT_TIME, OutKind::TimeUs));
        }
        out
    }

    /// The normalized type of an output column.
    pub fn output_kind(&self, name: &str) -> Option<OutKind> {
        self.output_fields()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| k)
    }

    /// The archive column with this normalized name.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// The format of a dataset's archive files. Kline families share one format.
pub fn format_of(dataset: &Dataset) -> &'static Format {
    use DataType::*;
    match (dataset.data_type, dataset.market) {
        (Klines | MarkPriceKlines | IndexPriceKlines | PremiumIndexKlines, _) => &KLINES,
        (AggTrades, Market::Spot) => &AGG_TRADES_SPOT,
        (AggTrades, _) => &AGG_TRADES_FUTURES,
        (Trades, Market::Spot) => &TRADES_SPOT,
        (Trades, Market::Cm) => &TRADES_CM,
        (Trades, _) => &TRADES_UM,
        (FundingRate, _) => &FUNDING_RATE,
        (Metrics, _) => &METRICS,
        (BookTicker, _) => &BOOK_TICKER,
        (BookDepth, _) => &BOOK_DEPTH,
        (LiquidationSnapshot, _) => &LIQUIDATION_SNAPSHOT,
        (BvolIndex, _) => &BVOL_INDEX,
        (EohSummary, _) => &EOH_SUMMARY,
    }
}

/// Every format in the registry.
pub static ALL_FORMATS: [&Format; 13] = [
    &KLINES,
    &AGG_TRADES_SPOT,
    &AGG_TRADES_FUTURES,
    &TRADES_SPOT,
    &TRADES_UM,
    &TRADES_CM,
    &FUNDING_RATE,
    &METRICS,
    &BOOK_TICKER,
    &BOOK_DEPTH,
    &LIQUIDATION_SNAPSHOT,
    &BVOL_INDEX,
    &EOH_SUMMARY,
];

const fn f(name: &'static str, kind: Kind, headers: &'static [&'static str]) -> Field {
    Field {
        name,
        kind,
        headers,
    }
}

use Kind::*;

/// klines, markPriceKlines, indexPriceKlines, premiumIndexKlines: 12 columns (§3.1, §3.2).
pub static KLINES: Format = Format {
    name: "klines",
    fields: &[
        f("open_time", Time, &["open_time", "open time"]),
        f("open", F64, &["open"]),
        f("high", F64, &["high"]),
        f("low", F64, &["low"]),
        f("close", F64, &["close"]),
        f("volume", F64, &["volume"]),
        f("close_time", Time, &["close_time", "close time"]),
        f(
            "quote_volume",
            F64,
            &["quote_volume", "quote asset volume", "base asset volume"],
        ),
        f("trades", I64, &["count", "number of trades", "trades"]),
        f(
            "taker_buy_volume",
            F64,
            &["taker_buy_volume", "taker buy base asset volume"],
        ),
        f(
            "taker_buy_quote_volume",
            F64,
            &["taker_buy_quote_volume", "taker buy quote asset volume"],
        ),
        f("ignore", Skip, &["ignore"]),
    ],
    by_name: false,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "open_time",
    key: &["open_time"],
    sort: &["open_time"],
};

static AGG_TRADE_FIELDS: [Field; 8] = [
    f(
        "agg_trade_id",
        I64,
        &["agg_trade_id", "aggregate tradeid", "aggtradeid"],
    ),
    f("price", F64, &["price"]),
    f("quantity", F64, &["quantity", "qty"]),
    f(
        "first_trade_id",
        I64,
        &["first_trade_id", "first tradeid", "firsttradeid"],
    ),
    f(
        "last_trade_id",
        I64,
        &["last_trade_id", "last tradeid", "lasttradeid"],
    ),
    f(
        "transact_time",
        Time,
        &["transact_time", "timestamp", "time"],
    ),
    f(
        "is_buyer_maker",
        Bool,
        &["is_buyer_maker", "isbuyermaker", "was the buyer the maker"],
    ),
    f(
        "is_best_match",
        Skip,
        &[
            "is_best_match",
            "isbestmatch",
            "was the trade the best price match",
        ],
    ),
];

/// Spot aggTrades: 8 columns, the last (`isBestMatch`) dropped (§3.3).
pub static AGG_TRADES_SPOT: Format = Format {
    name: "aggTrades-spot",
    fields: &AGG_TRADE_FIELDS,
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::SpotAggTradeTombstone,
    time_field: "transact_time",
    key: &["agg_trade_id"],
    sort: &["transact_time", "agg_trade_id"],
};

/// UM and CM aggTrades: 7 columns (§3.3).
pub static AGG_TRADES_FUTURES: Format = Format {
    name: "aggTrades",
    fields: AGG_TRADE_FIELDS.split_at(7).0,
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "transact_time",
    key: &["agg_trade_id"],
    sort: &["transact_time", "agg_trade_id"],
};

const TRADE_ID: Field = f("id", I64, &["id", "trade id", "tradeid"]);
const TRADE_PRICE: Field = f("price", F64, &["price"]);
const TRADE_QTY: Field = f("qty", F64, &["qty", "quantity"]);
const TRADE_TIME: Field = f("time", Time, &["time", "timestamp"]);
const TRADE_IS_BUYER_MAKER: Field = f(
    "is_buyer_maker",
    Bool,
    &["is_buyer_maker", "isbuyermaker", "was the buyer the maker"],
);

/// Spot trades: 7 columns, the last (`isBestMatch`) dropped (§3.4).
pub static TRADES_SPOT: Format = Format {
    name: "trades-spot",
    fields: &[
        TRADE_ID,
        TRADE_PRICE,
        TRADE_QTY,
        f("quote_qty", F64, &["quote_qty", "quoteqty"]),
        TRADE_TIME,
        TRADE_IS_BUYER_MAKER,
        f(
            "is_best_match",
            Skip,
            &[
                "is_best_match",
                "isbestmatch",
                "was the trade the best price match",
            ],
        ),
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "time",
    key: &["id"],
    sort: &["time", "id"],
};

/// UM trades: the 4th column is the quote quantity (§3.4).
pub static TRADES_UM: Format = Format {
    name: "trades-um",
    fields: &[
        TRADE_ID,
        TRADE_PRICE,
        TRADE_QTY,
        f("quote_qty", F64, &["quote_qty", "quoteqty"]),
        TRADE_TIME,
        TRADE_IS_BUYER_MAKER,
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "time",
    key: &["id"],
    sort: &["time", "id"],
};

/// CM trades: the 4th column is the base quantity; `qty` is in contracts (§3.4).
pub static TRADES_CM: Format = Format {
    name: "trades-cm",
    fields: &[
        TRADE_ID,
        TRADE_PRICE,
        TRADE_QTY,
        f("base_qty", F64, &["base_qty", "baseqty"]),
        TRADE_TIME,
        TRADE_IS_BUYER_MAKER,
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "time",
    key: &["id"],
    sort: &["time", "id"],
};

/// fundingRate, monthly only (§3.7).
pub static FUNDING_RATE: Format = Format {
    name: "fundingRate",
    fields: &[
        f("calc_time", Time, &["calc_time"]),
        f("funding_interval_hours", I64, &["funding_interval_hours"]),
        f("last_funding_rate", F64, &["last_funding_rate"]),
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "calc_time",
    key: &["calc_time"],
    sort: &["calc_time"],
};

/// metrics (§3.8), plus the derived `snapshot_time` (features.md). Dedup and sort use
/// `snapshot_time`: around the 2026-06-25 labelling change, `create_time` order is not time order.
pub static METRICS: Format = Format {
    name: "metrics",
    fields: &[
        f("create_time", DateTime, &["create_time"]),
        f("symbol", PathSymbol, &["symbol"]),
        f("sum_open_interest", F64, &["sum_open_interest"]),
        f("sum_open_interest_value", F64, &["sum_open_interest_value"]),
        f(
            "count_toptrader_long_short_ratio",
            OptF64,
            &["count_toptrader_long_short_ratio"],
        ),
        f(
            "sum_toptrader_long_short_ratio",
            OptF64,
            &["sum_toptrader_long_short_ratio"],
        ),
        f(
            "count_long_short_ratio",
            OptF64,
            &["count_long_short_ratio"],
        ),
        f(
            "sum_taker_long_short_vol_ratio",
            OptF64,
            &["sum_taker_long_short_vol_ratio"],
        ),
    ],
    by_name: true,
    derived: Derived::MetricsSnapshot,
    invalid: InvalidRule::None,
    time_field: "create_time",
    key: &[SNAPSHOT_TIME],
    sort: &[SNAPSHOT_TIME],
};

/// bookTicker (§3.5): ordered by `transaction_time`, the matching-engine time.
pub static BOOK_TICKER: Format = Format {
    name: "bookTicker",
    fields: &[
        f("update_id", I64, &["update_id"]),
        f("best_bid_price", F64, &["best_bid_price"]),
        f("best_bid_qty", F64, &["best_bid_qty"]),
        f("best_ask_price", F64, &["best_ask_price"]),
        f("best_ask_qty", F64, &["best_ask_qty"]),
        f("transaction_time", Time, &["transaction_time"]),
        f("event_time", Time, &["event_time"]),
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "transaction_time",
    key: &["update_id"],
    sort: &["transaction_time", "update_id"],
};

/// bookDepth (§3.6).
pub static BOOK_DEPTH: Format = Format {
    name: "bookDepth",
    fields: &[
        f("timestamp", DateTime, &["timestamp"]),
        f("percentage", F64, &["percentage"]),
        f("depth", F64, &["depth"]),
        f("notional", F64, &["notional"]),
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "timestamp",
    key: &["timestamp", "percentage"],
    sort: &["timestamp", "percentage"],
};

/// liquidationSnapshot (§3.9): every row appears twice, so the key is the whole row.
pub static LIQUIDATION_SNAPSHOT: Format = Format {
    name: "liquidationSnapshot",
    fields: &[
        f("time", Time, &["time"]),
        f("side", Str, &["side"]),
        f("order_type", Str, &["order_type"]),
        f("time_in_force", Str, &["time_in_force"]),
        f("original_quantity", F64, &["original_quantity"]),
        f("price", F64, &["price"]),
        f("average_price", F64, &["average_price"]),
        f("order_status", Str, &["order_status"]),
        f("last_fill_quantity", F64, &["last_fill_quantity"]),
        f(
            "accumulated_fill_quantity",
            F64,
            &["accumulated_fill_quantity"],
        ),
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "time",
    key: &[],
    sort: &["time"],
};

/// BVOLIndex (§3.10).
pub static BVOL_INDEX: Format = Format {
    name: "BVOLIndex",
    fields: &[
        f("calc_time", Time, &["calc_time"]),
        f("symbol", PathSymbol, &["symbol"]),
        f("base_asset", Str, &["base_asset"]),
        f("quote_asset", Str, &["quote_asset"]),
        f("index_value", F64, &["index_value"]),
    ],
    by_name: true,
    derived: Derived::None,
    invalid: InvalidRule::None,
    time_field: "calc_time",
    key: &["calc_time"],
    sort: &["calc_time"],
};

/// EOHSummary (§3.11): `date` + `hour` become the derived `time`; the archive's `symbol` (an
/// option contract, `BTC-231229-34000-C`) is output as `contract`, since the folder `symbol=`
/// names the underlying; `strike` is text (`231229-34000`). The IV and open-interest columns are `""` in real rows, hence nullable.
pub static EOH_SUMMARY: Format = Format {
    name: "EOHSummary",
    fields: &[
        f("date", Date, &["date"]),
        f("hour", Hour, &["hour"]),
        f("contract", Str, &["symbol"]),
        f("underlying", Str, &["underlying"]),
        f("type", Str, &["type"]),
        f("strike", Str, &["strike"]),
        f("open", F64, &["open"]),
        f("high", F64, &["high"]),
        f("low", F64, &["low"]),
        f("close", F64, &["close"]),
        f("volume_contracts", F64, &["volume_contracts"]),
        f("volume_usdt", F64, &["volume_usdt"]),
        f("best_bid_price", F64, &["best_bid_price"]),
        f("best_ask_price", F64, &["best_ask_price"]),
        f("best_bid_qty", F64, &["best_bid_qty"]),
        f("best_ask_qty", F64, &["best_ask_qty"]),
        f("best_buy_iv", OptF64, &["best_buy_iv"]),
        f("best_sell_iv", OptF64, &["best_sell_iv"]),
        f("mark_price", F64, &["mark_price"]),
        f("mark_iv", OptF64, &["mark_iv"]),
        f("delta", F64, &["delta"]),
        f("gamma", F64, &["gamma"]),
        f("vega", F64, &["vega"]),
        f("theta", F64, &["theta"]),
        f(
            "openinterest_contracts",
            OptF64,
            &["openinterest_contracts"],
        ),
        f("openinterest_usdt", OptF64, &["openinterest_usdt"]),
    ],
    by_name: true,
    derived: Derived::EohTime,
    invalid: InvalidRule::None,
    time_field: EOH_TIME,
    key: &[EOH_TIME, "contract"],
    sort: &[EOH_TIME, "contract"],
};
