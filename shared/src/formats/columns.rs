//! Parsed rows held column by column, one typed `Vec` per normalized output field, in
//! `Format::output_fields()` order. What a Parquet writer consumes; it knows nothing of CSV.

use super::registry::{Format, OutKind};

/// The values of one normalized column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    I64(Vec<i64>),
    F64(Vec<f64>),
    OptF64(Vec<Option<f64>>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    /// Microseconds since the Unix epoch, UTC.
    TimeUs(Vec<i64>),
}

impl ColumnData {
    pub fn new(kind: OutKind) -> ColumnData {
        match kind {
            OutKind::I64 => ColumnData::I64(Vec::new()),
            OutKind::F64 => ColumnData::F64(Vec::new()),
            OutKind::OptF64 => ColumnData::OptF64(Vec::new()),
            OutKind::Bool => ColumnData::Bool(Vec::new()),
            OutKind::Str => ColumnData::Str(Vec::new()),
            OutKind::TimeUs => ColumnData::TimeUs(Vec::new()),
        }
    }

    pub fn kind(&self) -> OutKind {
        match self {
            ColumnData::I64(_) => OutKind::I64,
            ColumnData::F64(_) => OutKind::F64,
            ColumnData::OptF64(_) => OutKind::OptF64,
            ColumnData::Bool(_) => OutKind::Bool,
            ColumnData::Str(_) => OutKind::Str,
            ColumnData::TimeUs(_) => OutKind::TimeUs,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnData::I64(v) | ColumnData::TimeUs(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::OptF64(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
            ColumnData::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The i64 values of an `I64` or `TimeUs` column.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match self {
            ColumnData::I64(v) | ColumnData::TimeUs(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<&[f64]> {
        match self {
            ColumnData::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_opt_f64(&self) -> Option<&[Option<f64>]> {
        match self {
            ColumnData::OptF64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match self {
            ColumnData::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&[String]> {
        match self {
            ColumnData::Str(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn truncate(&mut self, n: usize) {
        match self {
            ColumnData::I64(v) | ColumnData::TimeUs(v) => v.truncate(n),
            ColumnData::F64(v) => v.truncate(n),
            ColumnData::OptF64(v) => v.truncate(n),
            ColumnData::Bool(v) => v.truncate(n),
            ColumnData::Str(v) => v.truncate(n),
        }
    }

    fn clear(&mut self) {
        self.truncate(0);
    }

    fn reserve(&mut self, n: usize) {
        match self {
            ColumnData::I64(v) | ColumnData::TimeUs(v) => v.reserve(n),
            ColumnData::F64(v) => v.reserve(n),
            ColumnData::OptF64(v) => v.reserve(n),
            ColumnData::Bool(v) => v.reserve(n),
            ColumnData::Str(v) => v.reserve(n),
        }
    }

    /// Append `other[range]` (same kind; panics otherwise or when out of range).
    fn extend_range(&mut self, other: &ColumnData, range: std::ops::Range<usize>) {
        match (self, other) {
            (ColumnData::I64(a), ColumnData::I64(b))
            | (ColumnData::TimeUs(a), ColumnData::TimeUs(b)) => a.extend_from_slice(&b[range]),
            (ColumnData::F64(a), ColumnData::F64(b)) => a.extend_from_slice(&b[range]),
            (ColumnData::OptF64(a), ColumnData::OptF64(b)) => a.extend_from_slice(&b[range]),
            (ColumnData::Bool(a), ColumnData::Bool(b)) => a.extend_from_slice(&b[range]),
            (ColumnData::Str(a), ColumnData::Str(b)) => a.extend_from_slice(&b[range]),
            (a, b) => panic!("extending a {:?} column with {:?}", a.kind(), b.kind()),
        }
    }

    fn gather(&self, idx: &[usize]) -> ColumnData {
        fn g<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| v[i].clone()).collect()
        }
        match self {
            ColumnData::I64(v) => ColumnData::I64(g(v, idx)),
            ColumnData::TimeUs(v) => ColumnData::TimeUs(g(v, idx)),
            ColumnData::F64(v) => ColumnData::F64(g(v, idx)),
            ColumnData::OptF64(v) => ColumnData::OptF64(g(v, idx)),
            ColumnData::Bool(v) => ColumnData::Bool(g(v, idx)),
            ColumnData::Str(v) => ColumnData::Str(g(v, idx)),
        }
    }
}

/// Rows of one format, column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub(crate) names: Vec<&'static str>,
    pub(crate) data: Vec<ColumnData>,
    pub(crate) len: usize,
}

impl Columns {
    /// Empty columns for `format`'s normalized schema.
    pub fn new(format: &Format) -> Columns {
        let (names, data) = format
            .output_fields()
            .into_iter()
            .map(|(name, kind)| (name, ColumnData::new(kind)))
            .unzip();
        Columns {
            names,
            data,
            len: 0,
        }
    }

    /// Like `new`, with room for `rows` rows.
    pub fn with_capacity(format: &Format, rows: usize) -> Columns {
        let mut c = Columns::new(format);
        c.reserve(rows);
        c
    }

    pub fn reserve(&mut self, rows: usize) {
        self.data.iter_mut().for_each(|d| d.reserve(rows));
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The column names, in output order.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    pub fn column(&self, name: &str) -> Option<&ColumnData> {
        self.names
            .iter()
            .position(|n| *n == name)
            .map(|i| &self.data[i])
    }

    /// The columns by name, in output order.
    pub fn into_parts(self) -> Vec<(&'static str, ColumnData)> {
        self.names.into_iter().zip(self.data).collect()
    }

    /// A new `Columns` holding the rows at `idx`, in that order (a gather; repeats allowed).
    /// Panics if an index is out of range.
    pub fn take_rows(&self, idx: &[usize]) -> Columns {
        Columns {
            names: self.names.clone(),
            data: self.data.iter().map(|d| d.gather(idx)).collect(),
            len: idx.len(),
        }
    }

    /// Append rows `range` of `other`, which has the same format. Panics if it has not or the
    /// range is out of bounds.
    pub fn extend_from(&mut self, other: &Columns, range: std::ops::Range<usize>) {
        assert_eq!(self.names, other.names, "columns of another format");
        let n = range.len();
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            a.extend_range(b, range.clone());
        }
        self.len += n;
    }

    /// Remove every row, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.iter_mut().for_each(ColumnData::clear);
        self.len = 0;
    }

    /// Drop rows past `n` (a partly parsed or invalid row).
    pub(crate) fn truncate(&mut self, n: usize) {
        self.data.iter_mut().for_each(|d| d.truncate(n));
        self.len = n;
    }
}
