//! The streaming CSV parser: archive bytes in any chunking → typed `Columns`, with the archive's
//! quirks handled once (binance-archive.md §3, §4): header sniffing per file, by-name or positional
//! column mapping, LF/CRLF, a missing final newline, blank lines, per-column epoch unit detection,
//! `""` as null, invalidated spot aggTrades, and metrics `snapshot_time` labelling (features.md).
//! Every rejected row becomes `Error::Schema` naming path, line, column and the offending text.
//! It does not unzip, sort or deduplicate.

use chrono::NaiveDate;

use super::cell::{
    TimeUnit, cell_end, parse_bool, parse_date, parse_datetime, parse_f64, parse_hour, parse_i64,
};
use super::columns::{ColumnData, Columns};
use super::registry::{Derived, EOH_TIME, Format, InvalidRule, Kind, SNAPSHOT_TIME};
use crate::error::{Error, Result};
use crate::paths::{ArchiveFile, Market};

/// UM metrics files dated from this day label rows by the start of their 5-minute period
/// (binance-archive.md §3.8, issue #491); earlier UM files by its end. CM always by the start.
pub const METRICS_START_LABEL_FROM: NaiveDate = match NaiveDate::from_ymd_opt(2026, 6, 25) {
    Some(d) => d,
    None => panic!(),
};

const FIVE_MINUTES_US: i64 = 5 * 60 * 1_000_000;
use crate::time::HOUR_US;
const NONE: usize = usize::MAX;
/// How much of an offending cell an error quotes.
const QUOTE_MAX: usize = 40;

/// What a parse saw, for reports and logs.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ParseStats {
    /// Rows appended to the output.
    pub rows: u64,
    /// Rows the archive marks invalid (spot aggTrades tombstones), dropped.
    pub dropped_invalid: u64,
    /// The file's first line was a header.
    pub had_header: bool,
    /// Physical lines read, header and blank lines included.
    pub lines: u64,
    /// The unit detected for each epoch column, in file order (columns seen with a value only).
    pub time_units: Vec<(&'static str, TimeUnit)>,
}

impl ParseStats {
    /// Add the counts of a later part of the same file (see [`Parser::fork`]).
    pub fn absorb(&mut self, later: &ParseStats) {
        self.rows += later.rows;
        self.dropped_invalid += later.dropped_invalid;
        self.lines += later.lines;
        for u in &later.time_units {
            if !self.time_units.iter().any(|(n, _)| *n == u.0) {
                self.time_units.push(*u);
            }
        }
    }
}

/// What to do with one file column.
#[derive(Debug, Clone, Copy)]
struct Action {
    kind: Kind,
    /// The field index in `Format::fields`.
    field: usize,
    /// The output column index, or `NONE`.
    out: usize,
}

/// Why a row was rejected, before it is turned into a message (off the hot path).
#[derive(Debug)]
enum RowErr {
    /// The cell of action `ai` starting at `start` does not parse.
    Value { ai: usize, start: usize },
    /// A time column's digit count disagrees with the unit detected from its first value.
    Unit { ai: usize, start: usize },
    /// The delimiter after the cell of action `ai` is wrong (column count or trailing garbage).
    Delimiter { ai: usize, start: usize },
}

/// Parses one archive CSV file, fed in chunks of any size.
#[derive(Debug, Clone)]
pub struct Parser {
    format: Format,
    path: String,
    /// Output column of each field, `NONE` for fields not output.
    field_out: Vec<usize>,
    /// One per file column, set once the first line decides header or not.
    actions: Vec<Action>,
    decided: bool,
    had_header: bool,
    /// The unit of each `Time` field, by field index, once detected.
    units: Vec<Option<TimeUnit>>,
    /// An incomplete line carried over to the next chunk.
    carry: Vec<u8>,
    line: u64,
    rows: u64,
    dropped: u64,
    /// Added to `create_time` to give `snapshot_time` (metrics).
    snapshot_offset_us: i64,
    derived_out: usize,
    /// Output columns of price, quantity, first and last trade id (spot aggTrades).
    invalid_cols: [usize; 4],
    /// The symbol the file's path names, which a `PathSymbol` cell must repeat.
    symbol: String,
}

impl Parser {
    /// A parser for one file. `path` is only for messages (e.g. the csv store path); `file`'s
    /// date decides the metrics labelling.
    pub fn new(format: &Format, path: &str, file: &ArchiveFile) -> Parser {
        let outputs = format.output_fields();
        let out_of = |name: &str| outputs.iter().position(|(n, _)| *n == name).unwrap_or(NONE);
        let field_out: Vec<usize> = format
            .fields
            .iter()
            .map(|f| match f.kind.out_kind() {
                Some(_) => out_of(f.name),
                None => NONE,
            })
            .collect();
        let end_labelled =
            file.dataset.market == Market::Um && file.date.first_day() < METRICS_START_LABEL_FROM;
        let derived_out = match format.derived {
            Derived::None => NONE,
            Derived::MetricsSnapshot => out_of(SNAPSHOT_TIME),
            Derived::EohTime => out_of(EOH_TIME),
        };
        let invalid_cols = match format.invalid {
            InvalidRule::None => [NONE; 4],
            InvalidRule::SpotAggTradeTombstone => [
                out_of("price"),
                out_of("quantity"),
                out_of("first_trade_id"),
                out_of("last_trade_id"),
            ],
        };
        Parser {
            format: format.clone(),
            path: path.to_string(),
            field_out,
            actions: Vec::new(),
            decided: false,
            had_header: false,
            units: vec![None; format.fields.len()],
            carry: Vec::new(),
            line: 0,
            rows: 0,
            dropped: 0,
            snapshot_offset_us: if end_labelled { 0 } else { FIVE_MINUTES_US },
            derived_out,
            invalid_cols,
            symbol: file.symbol.clone(),
        }
    }

    /// Parse the next chunk. A line may span chunks; complete rows are appended to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Columns) -> Result<()> {
        if !self.carry.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                None => {
                    self.carry.extend_from_slice(bytes);
                    return Ok(());
                }
                Some(nl) => {
                    self.carry.extend_from_slice(&bytes[..=nl]);
                    bytes = &bytes[nl + 1..];
                    let line = std::mem::take(&mut self.carry);
                    let r = self.parse_lines(&line, out);
                    self.carry = line;
                    self.carry.clear();
                    r?;
                }
            }
        }
        match bytes.iter().rposition(|&b| b == b'\n') {
            None => self.carry.extend_from_slice(bytes),
            Some(nl) => {
                self.parse_lines(&bytes[..=nl], out)?;
                self.carry.extend_from_slice(&bytes[nl + 1..]);
            }
        }
        Ok(())
    }

    /// Parse a last line that had no trailing newline.
    pub fn finish(&mut self, out: &mut Columns) -> Result<()> {
        if self.carry.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.carry);
        self.parse_lines(&line, out)
    }

    /// A parser for a later part of the same file, starting at a line boundary, that keeps
    /// this one's decisions (header or not, each time column's unit): parts of a file can then
    /// be parsed in parallel once its beginning has been. Its line numbers (in errors and
    /// stats) count from the part's first line; add the lines before it.
    pub fn fork(&self) -> Parser {
        Parser {
            carry: Vec::new(),
            line: 0,
            rows: 0,
            dropped: 0,
            ..self.clone()
        }
    }

    pub fn stats(&self) -> ParseStats {
        ParseStats {
            rows: self.rows,
            dropped_invalid: self.dropped,
            had_header: self.had_header,
            lines: self.line,
            time_units: self
                .units
                .iter()
                .enumerate()
                .filter_map(|(i, u)| u.map(|u| (self.format.fields[i].name, u)))
                .collect(),
        }
    }

    /// Parse whole lines; `buf` ends in `\n`, or is the file's last line.
    fn parse_lines(&mut self, buf: &[u8], out: &mut Columns) -> Result<()> {
        let len = buf.len();
        let mut pos = 0;
        while pos < len {
            self.line += 1;
            match buf[pos] {
                b'\n' => {
                    pos += 1;
                    continue;
                }
                b'\r' if pos + 1 == len || buf[pos + 1] == b'\n' => {
                    pos += 2;
                    continue;
                }
                _ => {}
            }
            if !self.decided {
                let end = line_end(buf, pos);
                if self.decide(&buf[pos..end])? {
                    pos = end + 1;
                    continue;
                }
            }
            let row = out.len;
            match self.parse_row(buf, pos, out) {
                Ok(next) => {
                    pos = next;
                    out.len += 1;
                    if self.invalid_cols[0] != NONE && self.is_tombstone(out) {
                        out.truncate(row);
                        self.dropped += 1;
                    } else {
                        self.rows += 1;
                    }
                }
                Err(e) => {
                    out.truncate(row);
                    return Err(self.row_error(buf, pos, e));
                }
            }
        }
        Ok(())
    }

    /// Parse one row starting at `pos`; returns the index after its line end.
    #[inline]
    fn parse_row(
        &mut self,
        buf: &[u8],
        mut pos: usize,
        out: &mut Columns,
    ) -> std::result::Result<usize, RowErr> {
        let len = buf.len();
        let n = self.actions.len();
        let mut datetime = 0i64;
        let mut date = 0i64;
        let mut hour = 0i64;
        let actions = &self.actions;
        let units = &mut self.units;
        for (ai, a) in actions.iter().enumerate() {
            let start = pos;
            let bad = || RowErr::Value { ai, start };
            let end = match a.kind {
                Kind::I64 => {
                    let (v, e, _) = parse_i64(buf, pos).ok_or_else(bad)?;
                    push_i64(out, a.out, v);
                    e
                }
                Kind::F64 => {
                    let (v, e) = parse_f64(buf, pos).ok_or_else(bad)?;
                    push_f64(out, a.out, v);
                    e
                }
                Kind::OptF64 => {
                    let (v, e) = if pos == len || is_delim(buf[pos]) {
                        (None, pos)
                    } else if buf[pos..].starts_with(b"\"\"")
                        && (pos + 2 == len || is_delim(buf[pos + 2]))
                    {
                        (None, pos + 2)
                    } else {
                        let (v, e) = parse_f64(buf, pos).ok_or_else(bad)?;
                        (Some(v), e)
                    };
                    push_opt_f64(out, a.out, v);
                    e
                }
                Kind::Bool => {
                    let (v, e) = parse_bool(buf, pos).ok_or_else(bad)?;
                    push_bool(out, a.out, v);
                    e
                }
                Kind::Str => {
                    let e = cell_end(buf, pos);
                    let mut cell = &buf[pos..e];
                    if cell.len() >= 2 && cell[0] == b'"' && cell[cell.len() - 1] == b'"' {
                        cell = &cell[1..cell.len() - 1];
                    }
                    let s = std::str::from_utf8(cell).map_err(|_| bad())?;
                    push_str(out, a.out, s);
                    e
                }
                Kind::PathSymbol => {
                    let e = cell_end(buf, pos);
                    let mut cell = &buf[pos..e];
                    if cell.len() >= 2 && cell[0] == b'"' && cell[cell.len() - 1] == b'"' {
                        cell = &cell[1..cell.len() - 1];
                    }
                    if cell != self.symbol.as_bytes() {
                        return Err(bad());
                    }
                    e
                }
                Kind::Time => {
                    let (v, e, digits) = parse_i64(buf, pos).ok_or_else(bad)?;
                    if v < 0 {
                        return Err(bad());
                    }
                    let unit = match units[a.field] {
                        Some(u) if u.digits() == digits => u,
                        Some(_) => return Err(RowErr::Unit { ai, start }),
                        None => {
                            let u =
                                TimeUnit::from_digits(digits).ok_or(RowErr::Unit { ai, start })?;
                            units[a.field] = Some(u);
                            u
                        }
                    };
                    push_i64(out, a.out, unit.to_micros(v));
                    e
                }
                Kind::DateTime => {
                    let (v, e) = parse_datetime(buf, pos).ok_or_else(bad)?;
                    datetime = v;
                    push_i64(out, a.out, v);
                    e
                }
                Kind::Date => {
                    let (v, e) = parse_date(buf, pos).ok_or_else(bad)?;
                    date = v;
                    e
                }
                Kind::Hour => {
                    let (v, e) = parse_hour(buf, pos).ok_or_else(bad)?;
                    hour = v;
                    e
                }
                Kind::Skip => cell_end(buf, pos),
            };
            if ai + 1 < n {
                if end < len && buf[end] == b',' {
                    pos = end + 1;
                    continue;
                }
            } else if end == len {
                pos = end;
                break;
            } else if buf[end] == b'\n' {
                pos = end + 1;
                break;
            } else if buf[end] == b'\r' && (end + 1 == len || buf[end + 1] == b'\n') {
                pos = (end + 2).min(len);
                break;
            }
            return Err(RowErr::Delimiter { ai, start });
        }
        match self.format.derived {
            Derived::None => {}
            Derived::MetricsSnapshot => {
                push_i64(out, self.derived_out, datetime + self.snapshot_offset_us)
            }
            Derived::EohTime => push_i64(out, self.derived_out, date + hour * HOUR_US),
        }
        Ok(pos)
    }

    /// The last row is a spot aggTrades tombstone: p = 0, q = 0, f = l = -1 (§3.3).
    fn is_tombstone(&self, out: &Columns) -> bool {
        let [p, q, f, l] = self.invalid_cols;
        let last_f = |i: usize| out.data[i].as_f64().and_then(|v| v.last().copied());
        let last_i = |i: usize| out.data[i].as_i64().and_then(|v| v.last().copied());
        last_f(p) == Some(0.0)
            && last_f(q) == Some(0.0)
            && last_i(f) == Some(-1)
            && last_i(l) == Some(-1)
    }

    /// Decide from the first non-blank line whether the file has a header, and set the column
    /// mapping. Returns whether the line was a header.
    fn decide(&mut self, line: &[u8]) -> Result<bool> {
        self.decided = true;
        let line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let fields = self.format.fields;
        let positional: Vec<Action> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| Action {
                kind: f.kind,
                field: i,
                out: self.field_out[i],
            })
            .collect();
        let numeric = match line {
            [b'-' | b'+', d, ..] | [d, ..] => d.is_ascii_digit(),
            [] => false,
        };
        if numeric {
            self.actions = positional;
            return Ok(false);
        }
        self.had_header = true;
        let cells: Vec<String> = String::from_utf8_lossy(line)
            .split(',')
            .map(|c| c.trim().trim_matches('"').trim().to_ascii_lowercase())
            .collect();
        if !self.format.by_name {
            if cells.len() != fields.len() {
                return Err(self.schema(
                    "header",
                    format!(
                        "header has {} columns, {} expects {}: {}",
                        cells.len(),
                        self.format.name,
                        fields.len(),
                        quote(line)
                    ),
                ));
            }
            self.actions = positional;
            return Ok(true);
        }
        let mut actions = Vec::with_capacity(cells.len());
        let mut unknown = Vec::new();
        let mut seen = vec![false; fields.len()];
        for cell in &cells {
            let found = fields
                .iter()
                .position(|f| f.name == cell || f.headers.contains(&cell.as_str()));
            match found {
                None => unknown.push(cell.clone()),
                Some(i) if seen[i] => {
                    return Err(self.schema(
                        fields[i].name,
                        format!("header names column {:?} twice", cell),
                    ));
                }
                Some(i) => {
                    seen[i] = true;
                    actions.push(positional[i]);
                }
            }
        }
        if !unknown.is_empty() {
            let expected: Vec<&str> = fields.iter().map(|f| f.name).collect();
            return Err(self.schema(
                &unknown.join(","),
                format!(
                    "unknown header column(s) {:?} for {} (expected {})",
                    unknown,
                    self.format.name,
                    expected.join(",")
                ),
            ));
        }
        let missing: Vec<&str> = fields
            .iter()
            .zip(&seen)
            .filter(|(f, seen)| !**seen && f.kind != Kind::Skip)
            .map(|(f, _)| f.name)
            .collect();
        if !missing.is_empty() {
            return Err(self.schema(
                &missing.join(","),
                format!(
                    "header lacks required column(s) {:?} for {}: {}",
                    missing,
                    self.format.name,
                    quote(line)
                ),
            ));
        }
        self.actions = actions;
        Ok(true)
    }

    fn schema(&self, column: &str, reason: String) -> Error {
        Error::Schema {
            path: self.path.clone(),
            line: self.line,
            column: column.to_string(),
            reason,
        }
    }

    /// Turn a rejected row into a message: the column count if that is wrong, else the cell.
    #[cold]
    fn row_error(&self, buf: &[u8], row_start: usize, e: RowErr) -> Error {
        let end = line_end(buf, row_start);
        let line = &buf[row_start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let found = line.iter().filter(|&&b| b == b',').count() + 1;
        let expected = self.actions.len();
        let name = |ai: usize| self.format.fields[self.actions[ai].field].name;
        if found != expected {
            let column = name(found.min(expected) - 1 + usize::from(found < expected));
            return self.schema(
                column,
                format!(
                    "expected {expected} columns, found {found}: {}",
                    quote(line)
                ),
            );
        }
        let (ai, start) = match e {
            RowErr::Value { ai, start }
            | RowErr::Unit { ai, start }
            | RowErr::Delimiter { ai, start } => (ai, start),
        };
        let cell = &buf[start..cell_end(buf, start)];
        let kind = self.actions[ai].kind;
        let reason = match e {
            RowErr::Unit { .. } => {
                let digits = cell.iter().filter(|b| b.is_ascii_digit()).count();
                match self.units[self.actions[ai].field] {
                    Some(u) => format!(
                        "epoch {} has {digits} digits, but this column is in {} ({} digits) \
                         from its first value",
                        quote(cell),
                        u.as_str(),
                        u.digits()
                    ),
                    None => format!(
                        "epoch {} has {digits} digits; expected 10 (s), 13 (ms), 16 (µs) or \
                         19 (ns)",
                        quote(cell)
                    ),
                }
            }
            _ if kind == Kind::PathSymbol => format!(
                "symbol {} is not {:?}, the symbol this file's path names",
                quote(cell),
                self.symbol
            ),
            _ => format!("cannot parse {} as {}", quote(cell), kind_name(kind)),
        };
        self.schema(name(ai), reason)
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::I64 => "an integer",
        Kind::F64 => "a decimal",
        Kind::OptF64 => "a decimal or blank",
        Kind::Bool => "a boolean",
        Kind::Str => "UTF-8 text",
        Kind::PathSymbol => "the file's symbol",
        Kind::Time => "an epoch time",
        Kind::DateTime => "a `YYYY-MM-DD HH:MM:SS` datetime",
        Kind::Date => "a `YYYY-MM-DD` date",
        Kind::Hour => "an hour 00-23",
        Kind::Skip => "anything",
    }
}

/// The offending text, quoted and truncated.
fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.chars().count() > QUOTE_MAX {
        let cut: String = s.chars().take(QUOTE_MAX).collect();
        format!("{cut:?}…")
    } else {
        format!("{s:?}")
    }
}

#[inline]
fn is_delim(b: u8) -> bool {
    matches!(b, b',' | b'\n' | b'\r')
}

/// The index of the `\n` ending the line at `pos`, or `buf.len()`.
fn line_end(buf: &[u8], pos: usize) -> usize {
    buf[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(buf.len(), |i| pos + i)
}

#[inline]
fn push_i64(out: &mut Columns, i: usize, v: i64) {
    match &mut out.data[i] {
        ColumnData::I64(c) | ColumnData::TimeUs(c) => c.push(v),
        _ => unreachable!("output column {i} is not integer"),
    }
}

#[inline]
fn push_f64(out: &mut Columns, i: usize, v: f64) {
    match &mut out.data[i] {
        ColumnData::F64(c) => c.push(v),
        _ => unreachable!("output column {i} is not F64"),
    }
}

#[inline]
fn push_opt_f64(out: &mut Columns, i: usize, v: Option<f64>) {
    match &mut out.data[i] {
        ColumnData::OptF64(c) => c.push(v),
        _ => unreachable!("output column {i} is not OptF64"),
    }
}

#[inline]
fn push_bool(out: &mut Columns, i: usize, v: bool) {
    match &mut out.data[i] {
        ColumnData::Bool(c) => c.push(v),
        _ => unreachable!("output column {i} is not Bool"),
    }
}

#[inline]
fn push_str(out: &mut Columns, i: usize, v: &str) {
    match &mut out.data[i] {
        ColumnData::Str(c) => c.push(v.to_string()),
        _ => unreachable!("output column {i} is not Str"),
    }
}
