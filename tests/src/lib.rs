//! `archive-sim`: a synthetic data.binance.vision for tests — the same URL layout, zips with
//! `.CHECKSUM`s, the S3 ListObjects v1 listing, the real files' format quirks, and fault
//! injection — plus Binance's public REST market-data API served from the same generator, a
//! simulated clock with the archive's publication lag, and the deterministic generator tests
//! compare parsed values against.
//!
//! # Public API
//!
//! * [`SimConfig`] (serde, every field defaulted from [`SimConfig::demo`]): `seed`, coverage
//!   `start..=end`, `symbols: Vec<SymbolSpec>`, `page_size`, `trades_per_minute`,
//!   `futures_header_from`, `spot_micros_from`, `um_metrics_start_labels_from`, `missing`
//!   (keys absent from bucket and listing), `monthly_missing_day`, `maintenance` (exchange-wide
//!   trading halts), `truncated` (files whose rows stop early), `duplicated_rows`, `broken_ohlc`,
//!   `faults`, `cache_bytes`, `now` (the simulated clock; `None` = every file published, now
//!   = `end + 1 day`), `rest: RestLimits`.
//! * [`RestLimits`]: `futures_weight_per_minute` (2400, fapi + dapi + futures/data),
//!   `spot_weight_per_minute` (6000), `funding_per_5min` (500), `futures_data_per_5min` (1000),
//!   `ban_after_429` (5), `ban_secs` (120). [`config::parse_instant`] /
//!   [`config::format_instant`] read and write the clock's RFC 3339.
//! * [`SymbolSpec`]: market, symbol, `listed`, `delisted`, `base_price`, optional precisions,
//!   `funding_intervals` change points, optional `data_types` restriction.
//! * [`FaultRule`] `{ key_contains, exact, target: FaultTarget::{Zip, Checksum, Both}, kind:
//!   FaultKind }` with kinds `NotFound`, `ServerError{first_n}`, `TooManyRequests{first_n,
//!   retry_after_secs}`, `Truncated{first_n}`, `Reset{first_n}`, `WrongChecksum{first_n:
//!   Option}`, `CorruptBody{first_n}`, `SlowBody{bytes_per_sec}`, `Banned{first_n,
//!   retry_after_secs}`; counts are per key (a REST request's key is its path, e.g.
//!   `fapi/v1/klines`).
//! * [`Archive`]: the pure model — `exists(key)`, `object(key)`, `zip_bytes(key)`,
//!   `checksum(key)`, `csv(key)`, `meta(key)`, `list(prefix, delimiter, marker, max_keys)`,
//!   `republish(key)`, `files()`, `keys()`, `generator()`; the clock: `now()`, `set_now(t)`,
//!   `clock_setting()`, `publication_time(key)`. With a clock set, a file exists only once its
//!   version-0 Last-Modified (next day 07:40 + jitter; monthly: last day + 3 days) is `<= now`.
//! * [`generator::Generator`]: typed rows per file — `klines`, `trades`, `agg_trades`, `funding`,
//!   `metrics`, `book_depth`, `book_ticker`, `liquidations`, `bvol` — `csv(file, version)`, and
//!   `csv_clean(file)` (no archive defects: what REST serves). Typed epoch times are µs.
//! * [`SimServer::start`]`(config, port) -> io::Result<SimHandle>`; [`SimHandle`]:
//!   `base_url()`, `url_of(key)`, `archive()`, `requests()`, `count(pred)`, `count_path(s)`,
//!   `clear_log()`, `republish(key)`, `set_faults(..)`, `add_fault(..)`, `now()`, `set_now(t)`,
//!   `rest_weight_used()`, `rest_requests()`, `shutdown().await`. [`RequestRecord`] carries the
//!   REST `weight` charged (0 for archive objects).
//!
//! # HTTP surface
//!
//! `GET|HEAD /data/...` (percent-encoded keys, also under `/data.binance.vision/data/...`)
//! serves zips and CHECKSUMs with `Content-Length`, `ETag` (quoted MD5) and `Last-Modified`;
//! unknown keys answer 404 `NoSuchKey`. `GET /?prefix=&delimiter=&marker=&max-keys=
//! [&encoding-type=url]` (also `/data.binance.vision?...`) answers the ListObjects v1 XML.
//! `GET /_sim/log` returns the request log as JSON; `GET /_sim/republish?key=K` republishes;
//! `GET /_sim/clock` answers the simulated now (`2025-01-31T12:00:00Z`), `?now=<RFC 3339>` sets it.
//!
//! The REST API ([`rest`]), as Binance spells it, JSON with `X-MBX-USED-WEIGHT-1M` on every
//! answer: `fapi/v1/{klines, markPriceKlines, indexPriceKlines, premiumIndexKlines, aggTrades,
//! fundingRate, fundingInfo, premiumIndex, exchangeInfo, time, ping}`, the same under `dapi/v1/`,
//! `api/v3/{klines, aggTrades, exchangeInfo, time, ping}`, and `futures/data/{openInterestHist,
//! topLongShortAccountRatio, topLongShortPositionRatio, globalLongShortAccountRatio,
//! takerlongshortRatio}`. Rows are the archive CSV's strings, up to the simulated now (the
//! candle containing now unclosed); weights, the two 5-minute buckets, 429 and the 418 ban follow
//! binance-live.md §4 on the wall clock.

#![forbid(unsafe_code)]

pub mod archive;
pub mod config;
pub mod generator;
pub mod listing;
pub mod rest;
pub mod server;

pub use archive::{Archive, ListPage, Object, ObjectMeta};
pub use config::{FaultKind, FaultRule, FaultTarget, RestLimits, SimConfig, SymbolSpec};
pub use server::{RequestRecord, SimHandle, SimServer};
