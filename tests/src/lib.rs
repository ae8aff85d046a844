//! `archive-sim`: a synthetic data.binance.vision for tests — the same URL layout, zips with
//! `.CHECKSUM`s, the S3 ListObjects v1 listing, the real files' format quirks, and fault
//! injection — plus the deterministic generator tests compare parsed values against.
//!
//! # Public API
//!
//! * [`SimConfig`] (serde, every field defaulted from [`SimConfig::demo`]): `seed`, coverage
//!   `start..=end`, `symbols: Vec<SymbolSpec>`, `page_size`, `trades_per_minute`,
//!   `futures_header_from`, `spot_micros_from`, `um_metrics_start_labels_from`, `missing`
//!   (keys absent from bucket and listing), `monthly_missing_day`, `maintenance` (exchange-wide
//!   trading halts), `truncated` (files whose rows stop early), `duplicated_rows`, `broken_ohlc`,
//!   `faults`, `cache_bytes`.
//! * [`SymbolSpec`]: market, symbol, `listed`, `delisted`, `base_price`, optional precisions,
//!   `funding_intervals` change points, optional `data_types` restriction.
//! * [`FaultRule`] `{ key_contains, exact, target: FaultTarget::{Zip, Checksum, Both}, kind:
//!   FaultKind }` with kinds `NotFound`, `ServerError{first_n}`, `TooManyRequests{first_n,
//!   retry_after_secs}`, `Truncated{first_n}`, `Reset{first_n}`, `WrongChecksum{first_n:
//!   Option}`, `CorruptBody{first_n}`, `SlowBody{bytes_per_sec}`; counts are per key.
//! * [`Archive`]: the pure model — `exists(key)`, `object(key)`, `zip_bytes(key)`,
//!   `checksum(key)`, `csv(key)`, `meta(key)`, `list(prefix, delimiter, marker, max_keys)`,
//!   `republish(key)`, `files()`, `generator()`.
//! * [`generator::Generator`]: typed rows per file — `klines`, `trades`, `agg_trades`, `funding`,
//!   `metrics`, `book_depth`, `book_ticker`, `liquidations`, `bvol` — and `csv(file, version)`.
//!   Typed epoch times are µs.
//! * [`SimServer::start`]`(config, port) -> io::Result<SimHandle>`; [`SimHandle`]:
//!   `base_url()`, `url_of(key)`, `archive()`, `requests()`, `count(pred)`, `count_path(s)`,
//!   `clear_log()`, `republish(key)`, `set_faults(..)`, `add_fault(..)`, `shutdown().await`.
//!
//! # HTTP surface
//!
//! `GET|HEAD /data/...` (percent-encoded keys, also under `/data.binance.vision/data/...`)
//! serves zips and CHECKSUMs with `Content-Length`, `ETag` (quoted MD5) and `Last-Modified`;
//! unknown keys answer 404 `NoSuchKey`. `GET /?prefix=&delimiter=&marker=&max-keys=
//! [&encoding-type=url]` (also `/data.binance.vision?...`) answers the ListObjects v1 XML.
//! `GET /_sim/log` returns the request log as JSON; `GET /_sim/republish?key=K` republishes.

#![forbid(unsafe_code)]

pub mod archive;
pub mod config;
pub mod generator;
pub mod listing;
pub mod server;

pub use archive::{Archive, ListPage, Object, ObjectMeta};
pub use config::{FaultKind, FaultRule, FaultTarget, SimConfig, SymbolSpec};
pub use server::{RequestRecord, SimHandle, SimServer};
