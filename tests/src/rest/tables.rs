//! Where REST rows come from: the clean CSV text of one archive file (daily; monthly for
//! fundingRate and the 3d/1w/1M klines), generated once by [`Generator::csv_clean`] and cut into
//! rows keyed by their time in ms, in a small byte-bounded cache; plus the decimal-string
//! arithmetic the unclosed candle needs. Serving the rows as JSON is `rest`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use chrono::NaiveDateTime;
use shared::paths::{ArchiveFile, DataType, Market};

use crate::generator::Generator;

/// Entries and bytes the cache keeps at most (a spot 1s day is about 11 MB of text).
const CACHE_ENTRIES: usize = 96;
const CACHE_BYTES: usize = 256 << 20;

/// One row: its key time (ms) and its line in the text.
#[derive(Debug, Clone, Copy)]
struct RowRef {
    t_ms: i64,
    start: usize,
    end: usize,
}

/// The rows of one file, in file order (ascending time).
#[derive(Debug)]
pub struct Table {
    text: String,
    rows: Vec<RowRef>,
    /// Divisor taking the file's epoch cells to ms (1000 for spot µs files, else 1).
    pub to_ms: i64,
}

impl Table {
    /// Cut a CSV into rows. The header line, when there is one, does not start with a digit.
    fn parse(text: String, time_col: usize, to_ms: i64, datetime: bool) -> Table {
        let mut rows = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            let end = start + line.len();
            let body = line.trim_end_matches(['\n', '\r']);
            if body.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                let cell = body.split(',').nth(time_col).unwrap_or("");
                let t_ms = if datetime {
                    NaiveDateTime::parse_from_str(cell, "%Y-%m-%d %H:%M:%S")
                        .map(|t| t.and_utc().timestamp_millis())
                        .ok()
                } else {
                    cell.parse::<i64>().ok().map(|v| v / to_ms)
                };
                if let Some(t_ms) = t_ms {
                    rows.push(RowRef {
                        t_ms,
                        start,
                        end: start + body.len(),
                    });
                }
            }
            start = end;
        }
        Table { text, rows, to_ms }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The key time of row `i` in ms.
    pub fn time(&self, i: usize) -> i64 {
        self.rows[i].t_ms
    }

    /// The cells of row `i`, as the CSV spells them.
    pub fn cells(&self, i: usize) -> Vec<&str> {
        let r = self.rows[i];
        self.text[r.start..r.end].split(',').collect()
    }

    /// One cell of row `i`.
    pub fn cell(&self, i: usize, col: usize) -> &str {
        let r = self.rows[i];
        self.text[r.start..r.end].split(',').nth(col).unwrap_or("")
    }

    /// The first row whose time is `>= t_ms`.
    pub fn first_at_or_after(&self, t_ms: i64) -> usize {
        self.rows.partition_point(|r| r.t_ms < t_ms)
    }

    fn bytes(&self) -> usize {
        self.text.len() + self.rows.len() * std::mem::size_of::<RowRef>()
    }
}

/// Generated tables, most recently used last.
#[derive(Debug, Default)]
pub struct Tables {
    cache: Mutex<VecDeque<(ArchiveFile, Arc<Table>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tables {
    /// The rows of `file` as generated (no archive defects), or `None` for an unknown symbol or
    /// a type without a generator.
    pub fn get(&self, generator: &Generator, file: &ArchiveFile) -> Option<Arc<Table>> {
        {
            let mut c = lock(&self.cache);
            if let Some(i) = c.iter().position(|(f, _)| f == file) {
                let e = c.remove(i)?;
                let t = e.1.clone();
                c.push_back(e);
                return Some(t);
            }
        }
        let text = generator.csv_clean(file)?;
        let cfg = generator.config();
        let micros =
            file.dataset.market == Market::Spot && file.date.first_day() >= cfg.spot_micros_from;
        let to_ms = if micros { 1000 } else { 1 };
        let (col, datetime) = match file.dataset.data_type {
            DataType::AggTrades => (5, false),
            DataType::Trades => (4, false),
            DataType::Metrics => (0, true),
            _ => (0, false),
        };
        let table = Arc::new(Table::parse(text, col, to_ms, datetime));
        let mut c = lock(&self.cache);
        if !c.iter().any(|(f, _)| f == file) {
            c.push_back((file.clone(), table.clone()));
        }
        let mut bytes: usize = c.iter().map(|(_, t)| t.bytes()).sum();
        while c.len() > 1 && (c.len() > CACHE_ENTRIES || bytes > CACHE_BYTES) {
            if let Some((_, t)) = c.pop_front() {
                bytes -= t.bytes();
            }
        }
        Some(table)
    }
}

/// A decimal string as integer units and a scale: `"-12.340"` → `(-12340, 3)`.
pub fn parse_dec(s: &str) -> Option<(i128, u32)> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 30 {
        return None;
    }
    let mut units: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        units = units.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    Some((if neg { -units } else { units }, frac.len() as u32))
}

/// Units at a scale back to a decimal string with exactly `scale` decimals.
pub fn fmt_dec(units: i128, scale: u32) -> String {
    let mut out = String::new();
    if units < 0 {
        out.push('-');
    }
    let a = units.unsigned_abs();
    let p = 10u128.pow(scale);
    let _ = write!(out, "{}", a / p);
    if scale > 0 {
        let _ = write!(out, ".{:0w$}", a % p, w = scale as usize);
    }
    out
}

/// `s × num / den` (toward zero) in the same decimals; `s` unchanged if it does not parse.
pub fn scale_dec(s: &str, num: i64, den: i64) -> String {
    match parse_dec(s) {
        Some((u, sc)) if den > 0 => fmt_dec(u * num as i128 / den as i128, sc),
        _ => s.to_string(),
    }
}

/// The in-progress candle `elapsed / len` of the way through, from the final candle's cells
/// (`o h l c v` at 1..=5, `quote count tbv tbq` at 7..=10): close moves from open toward the
/// final close, high and low keep their final distance to the body scaled the same way,
/// volumes and count scale too. Same decimals as the final cells; cells that do not parse
/// stay as they are.
pub fn partial_candle(cells: &mut [String], elapsed: i64, len: i64) {
    if cells.len() < 11 || len <= 0 {
        return;
    }
    let (el, len) = (elapsed.clamp(0, len) as i128, len as i128);
    let prices: Option<Vec<(i128, u32)>> = cells[1..=4].iter().map(|c| parse_dec(c)).collect();
    if let Some(p) = prices
        && p.iter().all(|x| x.1 == p[0].1)
    {
        let sc = p[0].1;
        let (o, h, l, c) = (p[0].0, p[1].0, p[2].0, p[3].0);
        let c2 = o + (c - o) * el / len;
        let h2 = o.max(c2) + (h - o.max(c)).max(0) * el / len;
        let l2 = o.min(c2) - (o.min(c) - l).max(0) * el / len;
        cells[2] = fmt_dec(h2, sc);
        cells[3] = fmt_dec(l2, sc);
        cells[4] = fmt_dec(c2, sc);
    }
    for i in [5, 7, 9, 10] {
        cells[i] = scale_dec(&cells[i], el as i64, len as i64);
    }
    if let Ok(n) = cells[8].parse::<i128>() {
        cells[8] = (n * el / len).to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_and_scale() {
        for s in ["0", "12.340", "-0.00012345", "96012.30000000"] {
            let (u, sc) = parse_dec(s).unwrap();
            assert_eq!(fmt_dec(u, sc), s);
        }
        assert_eq!(parse_dec("1e5"), None);
        assert_eq!(scale_dec("10.00", 1, 4), "2.50");
        assert_eq!(scale_dec("0", 1, 4), "0");
    }

    #[test]
    fn a_partial_candle_is_consistent_and_between_open_and_close() {
        let final_cells = [
            "0", "100.0", "110.0", "90.0", "104.0", "8.000", "59999", "800.0000", "40", "4.000",
            "400.0000", "0",
        ];
        let mut c: Vec<String> = final_cells.iter().map(|s| s.to_string()).collect();
        partial_candle(&mut c, 30_000, 60_000);
        assert_eq!(&c[1..=5], ["100.0", "105.0", "95.0", "102.0", "4.000"]);
        assert_eq!(&c[7..=10], ["400.0000", "20", "2.000", "200.0000"]);
        let t = Table::parse("h,x\n1,a\n2,b\n".into(), 0, 1, false);
        assert_eq!((t.len(), t.time(1), t.cells(1)), (2, 2, vec!["2", "b"]));
        assert_eq!(t.first_at_or_after(2), 1);
    }
}
