//! The pure archive model, no HTTP: which keys exist, the zip and CHECKSUM bytes of each
//! (built lazily from the generator, cached under a byte bound), their metadata (size, MD5
//! ETag, Last-Modified), republishing, the S3 ListObjects v1 page logic, and the simulated clock
//! that decides which files are published yet (the REST side reads the same clock). Serving is
//! `server`; the REST API is `rest`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Cursor, Write};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use shared::paths::{ArchiveFile, Dataset, FileDate, Interval, Market, Period};

use crate::config::SimConfig;
use crate::generator::{Generator, cm_pair};

/// One object's metadata, as the listing and the response headers show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Lowercase MD5 hex of the body (the ETag, unquoted).
    pub md5_hex: String,
    pub last_modified: NaiveDateTime,
}

/// One object with its body.
#[derive(Debug, Clone)]
pub struct Object {
    pub meta: ObjectMeta,
    pub body: Bytes,
}

/// A zip and its CHECKSUM, built together.
#[derive(Debug)]
struct Built {
    zip: Bytes,
    zip_md5: String,
    checksum: Bytes,
    checksum_md5: String,
    last_modified: NaiveDateTime,
}

impl Built {
    fn object(&self, key: &str, checksum: bool) -> Object {
        let (body, md5) = if checksum {
            (&self.checksum, &self.checksum_md5)
        } else {
            (&self.zip, &self.zip_md5)
        };
        Object {
            meta: ObjectMeta {
                key: key.to_string(),
                size: body.len() as u64,
                md5_hex: md5.clone(),
                last_modified: self.last_modified
                    + if checksum {
                        Duration::seconds(1)
                    } else {
                        Duration::zero()
                    },
            },
            body: body.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    map: HashMap<(String, u32), Arc<Built>>,
    order: VecDeque<(String, u32)>,
    bytes: usize,
}

/// A page of a ListObjects v1 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub contents: Vec<ObjectMeta>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix of a truncated page (S3 sends it only with a delimiter).
    pub next_marker: Option<String>,
}

/// The simulated bucket.
#[derive(Debug)]
pub struct Archive {
    generator: Generator,
    keys: BTreeSet<String>,
    versions: Mutex<HashMap<String, u32>>,
    cache: Mutex<Cache>,
    /// Metadata of every object built so far (kept when bodies are evicted).
    meta: Mutex<HashMap<(String, u32), (ObjectMeta, ObjectMeta)>>,
    /// The simulated now; `None` = every file published, the clock at `end + 1 day`.
    clock: Mutex<Option<NaiveDateTime>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// Build a deterministic zip holding one deflated entry with a fixed mtime.
pub fn build_zip(entry_name: &str, content: &[u8]) -> io::Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let mtime = zip::DateTime::from_date_and_time(2020, 1, 1, 0, 0, 0)
        .map_err(|e| io::Error::other(format!("zip mtime: {e}")))?;
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .last_modified_time(mtime)
        .unix_permissions(0o644)
        .large_file(content.len() as u64 >= u32::MAX as u64);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(content.len() / 3 + 256)));
    w.start_file(entry_name, opts).map_err(io::Error::other)?;
    w.write_all(content)?;
    let cur = w.finish().map_err(io::Error::other)?;
    Ok(cur.into_inner())
}

impl Archive {
    pub fn new(config: SimConfig) -> Self {
        let keys = universe(&config);
        let clock = Mutex::new(config.now);
        Archive {
            generator: Generator::new(config),
            keys,
            versions: Mutex::new(HashMap::new()),
            cache: Mutex::new(Cache::default()),
            meta: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// The simulated now (UTC): the configured or set clock, else `end + 1 day, 00:00`.
    pub fn now(&self) -> NaiveDateTime {
        self.clock_setting()
            .unwrap_or_else(|| (self.config().end + Duration::days(1)).and_time(NaiveTime::MIN))
    }

    /// Move the clock (either way). From then on files are visible only once published.
    pub fn set_now(&self, now: NaiveDateTime) {
        *lock(&self.clock) = Some(now);
    }

    /// The clock as configured or set; `None` while every file counts as published.
    pub fn clock_setting(&self) -> Option<NaiveDateTime> {
        *lock(&self.clock)
    }

    /// When a file (zip or CHECKSUM key) is published: its version-0 Last-Modified. `None` for a
    /// key that does not parse. Does not check the key is in the universe.
    pub fn publication_time(&self, key: &str) -> Option<NaiveDateTime> {
        let zip_key = key.strip_suffix(".CHECKSUM").unwrap_or(key);
        let file = ArchiveFile::parse_key(zip_key).ok()?;
        Some(Self::last_modified(&file, zip_key, 0))
    }

    fn visible_at(&self, key: &str, clock: Option<NaiveDateTime>) -> bool {
        match clock {
            None => true,
            Some(now) => self.publication_time(key).is_some_and(|t| t <= now),
        }
    }

    pub fn config(&self) -> &SimConfig {
        self.generator.config()
    }

    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// Whether a key (zip or CHECKSUM, decoded) exists: in the universe and published by now.
    pub fn exists(&self, key: &str) -> bool {
        self.keys.contains(key) && self.visible_at(key, self.clock_setting())
    }

    /// Every published key, in lexical order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let clock = self.clock_setting();
        self.keys
            .iter()
            .filter(move |k| self.visible_at(k, clock))
            .map(String::as_str)
    }

    /// Every published archive file (zip keys parsed).
    pub fn files(&self) -> Vec<ArchiveFile> {
        self.keys()
            .filter(|k| k.ends_with(".zip"))
            .filter_map(|k| ArchiveFile::parse_key(k).ok())
            .collect()
    }

    /// The republish version of a file (0 until [`Archive::republish`]).
    pub fn version(&self, key: &str) -> u32 {
        let zip_key = key.strip_suffix(".CHECKSUM").unwrap_or(key);
        lock(&self.versions).get(zip_key).copied().unwrap_or(0)
    }

    /// Republish a file (zip or CHECKSUM key): its content changes deterministically (one row's
    /// value), its CHECKSUM, ETag and Last-Modified follow. Returns the new version, or `None`
    /// for an unknown key.
    pub fn republish(&self, key: &str) -> Option<u32> {
        let zip_key = key.strip_suffix(".CHECKSUM").unwrap_or(key);
        if !self.exists(zip_key) {
            return None;
        }
        let mut v = lock(&self.versions);
        let e = v.entry(zip_key.to_string()).or_insert(0);
        *e += 1;
        Some(*e)
    }

    /// The CSV inside a zip, at its current version.
    pub fn csv(&self, zip_key: &str) -> Option<String> {
        if !self.exists(zip_key) {
            return None;
        }
        let file = ArchiveFile::parse_key(zip_key).ok()?;
        self.generator.csv(&file, self.version(zip_key))
    }

    fn last_modified(file: &ArchiveFile, zip_key: &str, version: u32) -> NaiveDateTime {
        let publish_day = match file.date {
            FileDate::Day(d) => d + Duration::days(1),
            FileDate::Month { .. } => file.date.last_day() + Duration::days(3),
        };
        let jitter = (md5::Md5::digest(zip_key.as_bytes())[0] as i64) * 13;
        publish_day.and_time(NaiveTime::MIN)
            + Duration::hours(7)
            + Duration::minutes(40)
            + Duration::seconds(jitter)
            + Duration::hours(6 * version as i64)
    }

    fn build(&self, zip_key: &str, version: u32) -> io::Result<Arc<Built>> {
        let cache_key = (zip_key.to_string(), version);
        if let Some(b) = lock(&self.cache).map.get(&cache_key) {
            return Ok(b.clone());
        }
        let file = ArchiveFile::parse_key(zip_key)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let tiny = self.config().tiny_files && file.dataset.data_type.is_kline_family();
        let generated = if tiny {
            tiny_csv(self.config(), &file, version)
        } else {
            self.generator.csv(&file, version)
        };
        let csv = generated.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no generator for {zip_key}"),
            )
        })?;
        let zip_name = file.file_name();
        let csv_name = format!("{}.csv", zip_name.strip_suffix(".zip").unwrap_or(&zip_name));
        let zip = build_zip(&csv_name, csv.as_bytes())?;
        drop(csv);
        let sha = hex::encode(Sha256::digest(&zip));
        let nl = if file.dataset.market == Market::Spot {
            ""
        } else {
            "\n"
        };
        let checksum = format!("{sha}  {zip_name}{nl}").into_bytes();
        let built = Arc::new(Built {
            zip_md5: md5_hex(&zip),
            checksum_md5: md5_hex(&checksum),
            zip: Bytes::from(zip),
            checksum: Bytes::from(checksum),
            last_modified: Self::last_modified(&file, zip_key, version),
        });
        let zm = built.object(zip_key, false).meta;
        let cm = built.object(&format!("{zip_key}.CHECKSUM"), true).meta;
        lock(&self.meta).insert(cache_key.clone(), (zm, cm));
        let size = built.zip.len() + built.checksum.len();
        let cap = self.config().cache_bytes;
        let mut c = lock(&self.cache);
        if !c.map.contains_key(&cache_key) {
            c.map.insert(cache_key.clone(), built.clone());
            c.order.push_back(cache_key);
            c.bytes += size;
            while c.bytes > cap && c.order.len() > 1 {
                if let Some(old) = c.order.pop_front()
                    && let Some(b) = c.map.remove(&old)
                {
                    c.bytes -= b.zip.len() + b.checksum.len();
                }
            }
        }
        Ok(built)
    }

    /// The object at a key (zip or CHECKSUM), built if needed; `Ok(None)` if it does not exist.
    pub fn object(&self, key: &str) -> io::Result<Option<Object>> {
        if !self.exists(key) {
            return Ok(None);
        }
        let (zip_key, checksum) = match key.strip_suffix(".CHECKSUM") {
            Some(z) => (z, true),
            None => (key, false),
        };
        let b = self.build(zip_key, self.version(key))?;
        Ok(Some(b.object(key, checksum)))
    }

    /// A cached object, without building; `None` if absent or not cached.
    pub fn cached_object(&self, key: &str) -> Option<Object> {
        if !self.exists(key) {
            return None;
        }
        let (zip_key, checksum) = match key.strip_suffix(".CHECKSUM") {
            Some(z) => (z, true),
            None => (key, false),
        };
        let ck = (zip_key.to_string(), self.version(key));
        let b = lock(&self.cache).map.get(&ck).cloned()?;
        Some(b.object(key, checksum))
    }

    /// The zip bytes of a file at its current version.
    pub fn zip_bytes(&self, zip_key: &str) -> io::Result<Option<Bytes>> {
        Ok(self.object(zip_key)?.map(|o| o.body))
    }

    /// The CHECKSUM file text of a file (pass the zip or the CHECKSUM key).
    pub fn checksum(&self, key: &str) -> io::Result<Option<String>> {
        let ck = if key.ends_with(".CHECKSUM") {
            key.to_string()
        } else {
            format!("{key}.CHECKSUM")
        };
        Ok(self
            .object(&ck)?
            .map(|o| String::from_utf8_lossy(&o.body).into_owned()))
    }

    /// Metadata of an object (builds it if never built).
    pub fn meta(&self, key: &str) -> io::Result<Option<ObjectMeta>> {
        if !self.exists(key) {
            return Ok(None);
        }
        let (zip_key, checksum) = match key.strip_suffix(".CHECKSUM") {
            Some(z) => (z, true),
            None => (key, false),
        };
        let mk = (zip_key.to_string(), self.version(key));
        if let Some((z, c)) = lock(&self.meta).get(&mk) {
            return Ok(Some(if checksum { c.clone() } else { z.clone() }));
        }
        Ok(self.object(key)?.map(|o| o.meta))
    }

    /// One ListObjects v1 page: keys after `marker` under `prefix`, rolled up at `delimiter`,
    /// at most `max_keys` entries (keys plus common prefixes), in lexical order. Building the
    /// metadata of a page may generate its files (in parallel).
    pub fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        marker: Option<&str>,
        max_keys: usize,
    ) -> io::Result<ListPage> {
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let marker = marker.filter(|m| !m.is_empty());
        let max_keys = max_keys.max(1);
        let mut lower: Bound<String> = match marker {
            Some(m) if m >= prefix => Bound::Excluded(m.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        enum Entry {
            Key(String),
            Prefix(String),
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut truncated = false;
        let clock = self.clock_setting();
        while let Some(key) = self
            .keys
            .range::<String, _>((lower.clone(), Bound::Unbounded))
            .next()
        {
            if !key.starts_with(prefix) {
                break;
            }
            // Unpublished keys are skipped one by one, so a common prefix shows up only when it
            // holds a published key.
            if !self.visible_at(key, clock) {
                lower = Bound::Excluded(key.clone());
                continue;
            }
            let rest = &key[prefix.len()..];
            let entry = match delimiter.and_then(|d| rest.find(d).map(|p| p + d.len())) {
                Some(end) => {
                    let cp = &key[..prefix.len() + end];
                    // Skip past everything under this common prefix.
                    lower = Bound::Excluded(format!("{cp}\u{10FFFF}"));
                    if marker.is_some_and(|m| m.starts_with(cp)) {
                        continue;
                    }
                    Entry::Prefix(cp.to_string())
                }
                None => {
                    lower = Bound::Excluded(key.clone());
                    Entry::Key(key.clone())
                }
            };
            if entries.len() == max_keys {
                truncated = true;
                break;
            }
            entries.push(entry);
        }
        let next_marker = if truncated && delimiter.is_some() {
            entries.last().map(|e| match e {
                Entry::Key(k) | Entry::Prefix(k) => k.clone(),
            })
        } else {
            None
        };
        let keys: Vec<&String> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Key(k) => Some(k),
                Entry::Prefix(_) => None,
            })
            .collect();
        let contents = self.metas_parallel(&keys)?;
        Ok(ListPage {
            contents,
            common_prefixes: entries
                .into_iter()
                .filter_map(|e| match e {
                    Entry::Prefix(p) => Some(p),
                    Entry::Key(_) => None,
                })
                .collect(),
            is_truncated: truncated,
            next_marker,
        })
    }

    fn metas_parallel(&self, keys: &[&String]) -> io::Result<Vec<ObjectMeta>> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(keys.len().max(1));
        if threads <= 1 || keys.len() < 4 {
            return keys
                .iter()
                .map(|k| {
                    self.meta(k)?
                        .ok_or_else(|| io::Error::other(format!("vanished key {k}")))
                })
                .collect();
        }
        let chunk = keys.len().div_ceil(threads);
        let parts: Vec<io::Result<Vec<ObjectMeta>>> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|k| {
                                self.meta(k)?
                                    .ok_or_else(|| io::Error::other(format!("vanished key {k}")))
                            })
                            .collect::<io::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("listing worker panicked")))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(keys.len());
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }
}

/// A kline file of [`SimConfig::tiny_files`]: one candle a day, opening at 00:00, on the days of
/// its period the symbol trades (a monthly file's days, so that a monthly file is complete);
/// the version shifts the prices, so a republished file has other bytes.
fn tiny_csv(cfg: &SimConfig, file: &ArchiveFile, version: u32) -> Option<String> {
    let spec = cfg
        .symbols
        .iter()
        .find(|s| s.market == file.dataset.market && s.symbol == file.symbol)?;
    let mut out = String::new();
    for day in file.date.days() {
        if !spec.is_listed_on(day) || day < cfg.start || day > cfg.end {
            continue;
        }
        let open_ms = day.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
        let close_ms = open_ms + 59_999;
        let p = spec.base_price + version as f64;
        out.push_str(&format!(
            "{open_ms},{p},{p},{p},{p},1,{close_ms},{p},1,0,0,0\n"
        ));
    }
    Some(out)
}

/// Every key of the archive: zips and CHECKSUMs, minus the configured missing ones.
fn universe(cfg: &SimConfig) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let missing: std::collections::HashSet<&str> = cfg.missing.iter().map(String::as_str).collect();
    for spec in &cfg.symbols {
        let market = spec.market;
        let first = cfg.start.max(spec.listed);
        let last = match spec.delisted {
            Some(d) => cfg.end.min(d),
            None => cfg.end,
        };
        if first > last {
            continue;
        }
        let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
        let mut months: Vec<FileDate> = Vec::new();
        let mut d = NaiveDate::from_ymd_opt(cfg.start.year(), cfg.start.month(), 1);
        while let Some(m0) = d {
            let m = FileDate::month_of(m0);
            if m.first_day() > cfg.end {
                break;
            }
            if m.first_day() >= cfg.start
                && m.last_day() <= cfg.end
                && m.first_day() <= last
                && m.last_day() >= first
            {
                months.push(m);
            }
            d = m.last_day().succ_opt();
        }
        for dt in spec.data_types() {
            let symbol = if market == Market::Cm && dt == shared::paths::DataType::IndexPriceKlines
            {
                cm_pair(&spec.symbol).to_string()
            } else {
                spec.symbol.clone()
            };
            for &period in dt.periods(market) {
                let intervals: Vec<Option<Interval>> = if dt.is_kline_family() {
                    Interval::ALL
                        .into_iter()
                        .filter(|i| cfg.intervals.as_ref().is_none_or(|v| v.contains(i)))
                        .filter(|i| *i != Interval::S1 || market == Market::Spot)
                        .filter(|i| period == Period::Monthly || i.has_daily_files())
                        .map(Some)
                        .collect()
                } else {
                    vec![None]
                };
                for iv in intervals {
                    let Ok(ds) = Dataset::new(market, dt, iv) else {
                        continue;
                    };
                    let dates: Vec<FileDate> = match period {
                        Period::Daily => days.iter().map(|d| FileDate::Day(*d)).collect(),
                        Period::Monthly => months.clone(),
                    };
                    for date in dates {
                        let f = ArchiveFile::new(ds, symbol.clone(), date);
                        let key = f.key();
                        if missing.contains(key.as_str()) {
                            continue;
                        }
                        let ck = f.checksum_key();
                        if !missing.contains(ck.as_str()) {
                            keys.insert(ck);
                        }
                        keys.insert(key);
                    }
                }
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SymbolSpec;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn small() -> SimConfig {
        let mut c = SimConfig::demo().with_range(d("2024-12-28"), d("2025-01-03"));
        c.trades_per_minute = (1, 3);
        c
    }

    #[test]
    fn zips_are_deterministic_and_checksums_follow_the_market_rule() {
        let a = Archive::new(small());
        let b = Archive::new(small());
        let spot = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-02.zip";
        let um = "data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-02.zip";
        for key in [spot, um] {
            let za = a.zip_bytes(key).unwrap().unwrap();
            assert_eq!(za, b.zip_bytes(key).unwrap().unwrap());
            let mut z = zip::ZipArchive::new(Cursor::new(za.to_vec())).unwrap();
            assert_eq!(z.len(), 1);
            let name = key.rsplit('/').next().unwrap().replace(".zip", ".csv");
            assert_eq!(z.by_index(0).unwrap().name().unwrap(), name);
            let ck = a.checksum(key).unwrap().unwrap();
            let sha = hex::encode(Sha256::digest(&za));
            let zip_name = key.rsplit('/').next().unwrap();
            let want = if key == spot {
                format!("{sha}  {zip_name}")
            } else {
                format!("{sha}  {zip_name}\n")
            };
            assert_eq!(ck, want);
        }
    }

    #[test]
    fn republish_changes_bytes_checksum_and_last_modified() {
        let a = Archive::new(small());
        let key = "data/futures/um/daily/trades/ETHUSDT/ETHUSDT-trades-2025-01-01.zip";
        let z0 = a.object(key).unwrap().unwrap();
        let c0 = a.checksum(key).unwrap().unwrap();
        assert_eq!(a.republish(key), Some(1));
        let z1 = a.object(key).unwrap().unwrap();
        assert_ne!(z0.body, z1.body);
        assert_ne!(z0.meta.md5_hex, z1.meta.md5_hex);
        assert!(z1.meta.last_modified > z0.meta.last_modified);
        assert_ne!(c0, a.checksum(key).unwrap().unwrap());
        assert_eq!(a.republish("data/nope.zip"), None);
    }

    #[test]
    fn universe_follows_listing_dates_and_missing_keys() {
        let mut c = SimConfig::demo();
        c.missing = vec![
            "data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-05.zip".into(),
            "data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-06.zip.CHECKSUM".into(),
        ];
        let a = Archive::new(c);
        assert!(!a.exists("data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-05.zip"));
        assert!(!a.exists("data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-05.zip.CHECKSUM"));
        assert!(a.exists("data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-06.zip"));
        assert!(!a.exists("data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-06.zip.CHECKSUM"));
        // Late listing (SOLUSDT 2024-12-10), early delisting (FTTUSDT after 2025-01-15).
        let sol = "data/futures/um/daily/klines/SOLUSDT/1m/SOLUSDT-1m-";
        assert!(!a.exists(&format!("{sol}2024-12-09.zip")));
        assert!(a.exists(&format!("{sol}2024-12-10.zip")));
        let ftt = "data/futures/um/daily/klines/FTTUSDT/1m/FTTUSDT-1m-";
        assert!(a.exists(&format!("{ftt}2025-01-15.zip")));
        assert!(!a.exists(&format!("{ftt}2025-01-16.zip")));
        // Monthly: SOLUSDT's partial December has only its listed days.
        let m = "data/futures/um/monthly/klines/SOLUSDT/1d/SOLUSDT-1d-2024-12.zip";
        assert!(a.exists(m));
        let csv = a.csv(m).unwrap();
        assert_eq!(csv.lines().count(), 1 + 22);
        assert!(a.exists("data/futures/um/monthly/klines/FTTUSDT/1w/FTTUSDT-1w-2025-01.zip"));
        assert!(!a.exists("data/futures/um/daily/klines/BTCUSDT/1s/BTCUSDT-1s-2024-12-01.zip"));
        assert!(!a.exists("data/spot/daily/klines/BTCUSDT/1w/BTCUSDT-1w-2024-12-01.zip"));
        assert!(
            a.exists("data/futures/cm/daily/indexPriceKlines/BTCUSD/1m/BTCUSD-1m-2024-12-01.zip")
        );
        assert!(!a.exists("data/futures/um/daily/liquidationSnapshot/BTCUSDT/BTCUSDT-liquidationSnapshot-2024-12-01.zip"));
    }

    #[test]
    fn monthly_file_can_miss_a_day() {
        let mut c = small().with_range(d("2024-12-01"), d("2024-12-31"));
        let key = "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-12.zip";
        c.monthly_missing_day = vec![(key.into(), d("2024-12-15"))];
        let a = Archive::new(c);
        let csv = a.csv(key).unwrap();
        assert_eq!(csv.lines().count(), 30 * 24);
        assert!(
            !csv.contains("\n1734220800000,"),
            "2024-12-15 00:00 must be absent"
        );
    }

    #[test]
    fn listing_pages_and_rolls_up_prefixes() {
        let mut c = small();
        c.symbols.push(SymbolSpec::new(
            Market::Um,
            "币安人生USDT",
            d("2024-12-01"),
            0.5,
        ));
        let a = Archive::new(c);
        let p = "data/futures/um/daily/klines/";
        let page = a.list(p, Some("/"), None, 1000).unwrap();
        let names: Vec<&str> = page.common_prefixes.iter().map(|s| &s[p.len()..]).collect();
        assert_eq!(
            names,
            [
                "BTCUSDT/",
                "ETHUSDT/",
                "FTTUSDT/",
                "SOLUSDT/",
                "币安人生USDT/"
            ]
        );
        assert!(page.contents.is_empty() && !page.is_truncated);
        // Page through with max_keys 2 and NextMarker.
        let mut marker = None;
        let mut seen = Vec::new();
        loop {
            let page = a.list(p, Some("/"), marker.as_deref(), 2).unwrap();
            assert!(page.common_prefixes.len() <= 2);
            seen.extend(page.common_prefixes.clone());
            if !page.is_truncated {
                break;
            }
            marker = page.next_marker.clone();
            assert!(marker.is_some());
        }
        assert_eq!(seen.len(), 5);
        // Files in a folder, lexical order, zip then CHECKSUM.
        let f = "data/futures/um/daily/klines/FTTUSDT/1d/";
        let page = a.list(f, Some("/"), None, 3).unwrap();
        assert_eq!(page.contents.len(), 3);
        assert!(page.contents[0].key.ends_with("FTTUSDT-1d-2024-12-28.zip"));
        assert!(
            page.contents[1]
                .key
                .ends_with("FTTUSDT-1d-2024-12-28.zip.CHECKSUM")
        );
        assert_eq!(
            page.contents[1].size,
            64 + 2 + "FTTUSDT-1d-2024-12-28.zip".len() as u64 + 1
        );
        assert!(page.is_truncated);
        let rest = a
            .list(f, Some("/"), page.next_marker.as_deref(), 1000)
            .unwrap();
        assert_eq!(rest.contents.len() + 3, 14);
        assert_eq!(
            page.contents[0].md5_hex,
            md5_hex(&a.zip_bytes(&page.contents[0].key).unwrap().unwrap())
        );
        // Without a delimiter: no NextMarker, keys only.
        let flat = a
            .list("data/futures/um/daily/klines/FTTUSDT/", None, None, 5)
            .unwrap();
        assert!(flat.is_truncated && flat.next_marker.is_none() && flat.common_prefixes.is_empty());
    }
}
