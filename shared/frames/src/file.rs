//! Reading a Parquet file one row group at a time with memory that follows the row group, not
//! the file: each projected column chunk is read with `pread` into its own buffer and decoded,
//! the columns of a row group on parallel threads — into Polars series (polars-parquet's
//! decoder), a whole row group as a DataFrame, or straight into a job's reused buffers
//! ([`crate::direct`]). (Polars' `ParquetReader` memory-maps the whole file, so a month of
//! trades would count in full against RSS; and polars 0.55 has no batched reader.) Also:
//! bringing a store object to a local file.

use std::borrow::Cow;
use std::fs::File;
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::direct::Dest;
use polars::prelude::*;
use polars_buffer::Buffer;
use polars_parquet::read::{
    BasicDecompressor, FileMetadata, PageReader, column_iter_to_arrays, infer_schema, read_metadata,
};
use shared::{Error, Result, Store};

/// A column's reusable buffers for `ParquetFile::decode`.
#[derive(Default)]
pub struct Scratch {
    bytes: Vec<u8>,
    reader: crate::direct::Reader,
}

/// An open Parquet file: its footer and Arrow schema.
pub struct ParquetFile {
    file: File,
    name: String,
    meta: FileMetadata,
    schema: ArrowSchema,
}

fn polars(name: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::bad_data(name, format!("{what}: {e}"))
}

impl ParquetFile {
    /// Open `path`; `name` names it in errors (its store path).
    pub fn open(path: &Path, name: &str) -> Result<ParquetFile> {
        let mut file = File::open(path).map_err(|e| Error::Io {
            context: format!("opening {name}"),
            source: e,
        })?;
        let meta = read_metadata(&mut file).map_err(|e| polars(name, "reading the footer", e))?;
        let schema = infer_schema(&meta).map_err(|e| polars(name, "reading the schema", e))?;
        Ok(ParquetFile {
            file,
            name: name.to_string(),
            meta,
            schema,
        })
    }

    pub fn num_rows(&self) -> usize {
        self.meta.num_rows
    }

    /// The file's columns and their Polars types, in the file's order.
    pub fn columns(&self) -> Vec<(String, DataType)> {
        self.schema
            .iter_values()
            .map(|f| (f.name.to_string(), DataType::from_arrow_field(f)))
            .collect()
    }

    pub fn num_row_groups(&self) -> usize {
        self.meta.row_groups.len()
    }

    /// The largest value of an integer (or timestamp) column in row group `rg`, from the footer's
    /// statistics; `None` when the file has none.
    pub fn max_i64(&self, rg: usize, column: &str) -> Option<i64> {
        use polars_parquet::parquet::statistics::Statistics;
        let md = self.meta.row_groups[rg]
            .columns_under_root_iter(column)?
            .next()?;
        match md.statistics(&self.meta.footer_buf)? {
            Ok(Statistics::Int64(s)) => s.max_value,
            _ => None,
        }
    }

    /// Decode `columns` of row group `rg`, in that order.
    pub fn read(&self, rg: usize, columns: &[&str]) -> Result<Vec<Series>> {
        if !self.worth_threads(rg, columns.len()) {
            return columns.iter().map(|c| self.read_column(rg, c)).collect();
        }
        std::thread::scope(|scope| {
            self.join(
                columns
                    .iter()
                    .map(|c| scope.spawn(move || self.read_column(rg, c)))
                    .collect(),
            )
        })
    }

    /// Every column of row group `rg`, as a DataFrame with the file's schema.
    pub fn read_frame(&self, rg: usize) -> Result<DataFrame> {
        let names: Vec<&str> = self.schema.iter_names().map(|n| n.as_str()).collect();
        let columns: Vec<Column> = self
            .read(rg, &names)?
            .into_iter()
            .map(Column::from)
            .collect();
        let height = self.meta.row_groups[rg].num_rows();
        DataFrame::new(height, columns).map_err(|e| polars(&self.name, "assembling a row group", e))
    }

    /// Append `columns` of row group `rg` to `dests` (in that order), each column on its own
    /// thread: its chunk read with `pread` into that column's reused scratch bytes and decoded
    /// by `frames::direct` (no Arrow arrays, no fresh memory once the scratch has grown).
    pub fn decode(
        &self,
        rg: usize,
        columns: &[&str],
        scratch: &mut [Scratch],
        dests: &mut [Dest<'_>],
    ) -> Result<()> {
        assert!(columns.len() == dests.len() && scratch.len() >= columns.len());
        let md = &self.meta.row_groups[rg];
        let one = |column: &str, sc: &mut Scratch, dest: &mut Dest<'_>| -> Result<()> {
            let chunk = crate::direct::column_chunk(md, &self.name, column)?;
            let range = chunk.byte_range();
            let len = (range.end - range.start) as usize;
            if sc.bytes.len() < len {
                sc.bytes.resize(len, 0);
            }
            self.file
                .read_exact_at(&mut sc.bytes[..len], range.start)
                .map_err(|e| Error::Io {
                    context: format!("{}: row group {rg}, column {column}: reading", self.name),
                    source: e,
                })?;
            let Scratch { bytes, reader } = sc;
            Buffer::with_slice(&bytes[..len], |b| {
                reader.read_chunk(b, chunk, md.num_rows(), &self.name, dest)
            })?;
            Ok(())
        };
        if !self.worth_threads(rg, columns.len()) {
            for ((c, sc), d) in columns.iter().zip(scratch.iter_mut()).zip(dests.iter_mut()) {
                one(c, sc, d)?;
            }
            return Ok(());
        }
        std::thread::scope(|scope| {
            self.join(
                columns
                    .iter()
                    .zip(scratch.iter_mut())
                    .zip(dests.iter_mut())
                    .map(|((c, sc), d)| scope.spawn(move || one(c, sc, d)))
                    .collect(),
            )
        })?;
        Ok(())
    }

    /// Whether `columns` of row group `rg` hold enough cells to pay for a thread per column (as
    /// the encoder decides): starting threads for a day's small row group cost more than
    /// decoding it (validate started ~4,000 threads per symbol-year, a third of its time in
    /// the kernel).
    fn worth_threads(&self, rg: usize, columns: usize) -> bool {
        columns > 1 && self.meta.row_groups[rg].num_rows() * columns >= 1 << 17
    }

    /// The results of per-column threads, in column order.
    fn join<T>(
        &self,
        handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T>>>,
    ) -> Result<Vec<T>> {
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(polars(&self.name, "decoding", "thread panicked")))
            })
            .collect()
    }

    fn read_column(&self, rg: usize, column: &str) -> Result<Series> {
        let ctx = |what: &str| format!("row group {rg}, column {column}: {what}");
        let md = &self.meta.row_groups[rg];
        let field = self
            .schema
            .get(column)
            .ok_or_else(|| polars(&self.name, &ctx("missing"), "no such column"))?;
        let chunks: Vec<_> = md
            .columns_under_root_iter(column)
            .ok_or_else(|| polars(&self.name, &ctx("missing"), "no column chunk"))?
            .collect();
        let mut pages = Vec::with_capacity(chunks.len());
        let mut types = Vec::with_capacity(chunks.len());
        for c in &chunks {
            let range = c.byte_range();
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            self.file
                .read_exact_at(&mut buf, range.start)
                .map_err(|e| Error::Io {
                    context: format!("{}: {}", self.name, ctx("reading")),
                    source: e,
                })?;
            let reader = PageReader::new(Cursor::new(Buffer::from(buf)), c, Vec::new(), usize::MAX);
            pages.push(BasicDecompressor::new(reader, Vec::new()));
            types.push(&c.descriptor().descriptor.primitive_type);
        }
        let (arrays, _) = column_iter_to_arrays(pages, types, field.clone(), None)
            .map_err(|e| polars(&self.name, &ctx("decoding"), e))?;
        Series::try_from((field, arrays)).map_err(|e| polars(&self.name, &ctx("converting"), e))
    }
}

/// A float column as one slice: borrowed when it is one chunk (the usual case: one array per
/// column chunk), else concatenated.
pub fn f64s<'a>(s: &'a Series, name: &str) -> Result<Cow<'a, [f64]>> {
    let ca = s.f64().map_err(|e| polars(name, s.name().as_str(), e))?;
    if ca.null_count() > 0 {
        return Err(polars(name, s.name().as_str(), "null values"));
    }
    Ok(match ca.cont_slice() {
        Ok(v) => Cow::Borrowed(v),
        Err(_) => Cow::Owned(
            ca.downcast_iter()
                .flat_map(|a| a.values().iter().copied())
                .collect(),
        ),
    })
}

/// An integer or timestamp column as one `i64` slice (borrowed when it is one chunk).
pub fn i64s<'a>(s: &'a Series, name: &str) -> Result<Cow<'a, [i64]>> {
    let ca = match s.dtype() {
        DataType::Datetime(_, _) => s.datetime().map(|d| d.physical()),
        _ => s.i64(),
    }
    .map_err(|e| polars(name, s.name().as_str(), e))?;
    if ca.null_count() > 0 {
        return Err(polars(name, s.name().as_str(), "null values"));
    }
    Ok(match ca.cont_slice() {
        Ok(v) => Cow::Borrowed(v),
        Err(_) => Cow::Owned(
            ca.downcast_iter()
                .flat_map(|a| a.values().iter().copied())
                .collect(),
        ),
    })
}

/// A boolean column as `bool`s.
pub fn bools(s: &Series, name: &str) -> Result<Vec<bool>> {
    let ca = s.bool().map_err(|e| polars(name, s.name().as_str(), e))?;
    if ca.null_count() > 0 {
        return Err(polars(name, s.name().as_str(), "null values"));
    }
    let mut v = Vec::with_capacity(ca.len());
    for arr in ca.downcast_iter() {
        v.extend(arr.values().iter());
    }
    Ok(v)
}

/// An optional float column (nulls as `None`).
pub fn opt_f64s(s: &Series, name: &str) -> Result<Vec<Option<f64>>> {
    let ca = s.f64().map_err(|e| polars(name, s.name().as_str(), e))?;
    Ok(ca.iter().collect())
}

/// A store object as a local file: the file itself on a local store, else a temp copy
/// (removed on drop).
pub enum LocalCopy {
    InPlace(PathBuf),
    Temp(tempfile::NamedTempFile),
}

impl LocalCopy {
    pub fn path(&self) -> &Path {
        match self {
            LocalCopy::InPlace(p) => p,
            LocalCopy::Temp(t) => t.path(),
        }
    }

    /// `None` when the object does not exist.
    pub async fn fetch(store: &Store, path: &str) -> Result<Option<LocalCopy>> {
        if let Some(p) = store.local_path(path) {
            return Ok(p.exists().then_some(LocalCopy::InPlace(p)));
        }
        let tmp = tempfile::NamedTempFile::new_in(shared::hygiene::temp_dir()).map_err(|e| {
            Error::Io {
                context: "creating a temp file".into(),
                source: e,
            }
        })?;
        Ok(store
            .download_to(path, tmp.path())
            .await?
            .map(|_| LocalCopy::Temp(tmp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParquetOptions, to_column};
    use shared::formats::ColumnData;

    #[tokio::test(flavor = "multi_thread")]
    async fn row_groups_read_back_with_their_types() {
        let n = 10_000usize;
        let cols = vec![
            to_column(
                "price",
                ColumnData::F64((0..n).map(|i| i as f64 * 0.5).collect()),
            )
            .unwrap(),
            to_column(
                "transact_time",
                ColumnData::TimeUs((0..n as i64).map(|i| 1_700_000_000_000_000 + i).collect()),
            )
            .unwrap(),
            to_column(
                "is_buyer_maker",
                ColumnData::Bool((0..n).map(|i| i % 3 == 0).collect()),
            )
            .unwrap(),
            to_column(
                "vwap",
                ColumnData::OptF64((0..n).map(|i| (i % 2 == 0).then_some(i as f64)).collect()),
            )
            .unwrap(),
        ];
        let mut df = DataFrame::new(n, cols).unwrap();
        let store = Store::open("memory://").unwrap();
        let opts = ParquetOptions {
            row_group_rows: Some(4096),
            ..ParquetOptions::default()
        };
        crate::write_parquet(&store, "x.parquet", &mut df, &opts)
            .await
            .unwrap();
        let local = LocalCopy::fetch(&store, "x.parquet")
            .await
            .unwrap()
            .unwrap();
        assert!(LocalCopy::fetch(&store, "none").await.unwrap().is_none());
        let f = ParquetFile::open(local.path(), "x.parquet").unwrap();
        assert_eq!(f.num_rows(), n);
        assert!(f.num_row_groups() >= 2, "{}", f.num_row_groups());
        let mut off = 0;
        for rg in 0..f.num_row_groups() {
            let s = f
                .read(rg, &["transact_time", "price", "is_buyer_maker", "vwap"])
                .unwrap();
            let t = i64s(&s[0], "x").unwrap();
            let p = f64s(&s[1], "x").unwrap();
            let b = bools(&s[2], "x").unwrap();
            let w = opt_f64s(&s[3], "x").unwrap();
            for i in 0..t.len() {
                let j = off + i;
                assert_eq!(t[i], 1_700_000_000_000_000 + j as i64);
                assert_eq!(p[i], j as f64 * 0.5);
                assert_eq!(b[i], j % 3 == 0);
                assert_eq!(w[i], (j % 2 == 0).then_some(j as f64));
            }
            off += t.len();
        }
        assert_eq!(off, n);
        // The direct decoder, appending row group after row group with reused scratch.
        let mut scratch: [Scratch; 4] = Default::default();
        let (mut t, mut p, mut b, mut w) = (vec![], vec![], vec![], vec![]);
        for rg in 0..f.num_row_groups() {
            f.decode(
                rg,
                &["transact_time", "price", "is_buyer_maker", "vwap"],
                &mut scratch,
                &mut [
                    Dest::I64(&mut t),
                    Dest::F64(&mut p),
                    Dest::Bool(&mut b),
                    Dest::OptF64(&mut w),
                ],
            )
            .unwrap();
        }
        assert_eq!(
            t,
            (0..n as i64)
                .map(|i| 1_700_000_000_000_000 + i)
                .collect::<Vec<_>>()
        );
        assert_eq!(p, (0..n).map(|i| i as f64 * 0.5).collect::<Vec<_>>());
        assert_eq!(b, (0..n).map(|i| i % 3 == 0).collect::<Vec<_>>());
        assert_eq!(
            w,
            (0..n)
                .map(|i| (i % 2 == 0).then_some(i as f64))
                .collect::<Vec<_>>()
        );
        let e = f
            .decode(0, &["price"], &mut scratch, &mut [Dest::I64(&mut t)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.parquet: column price: stored as Double"),
            "{e}"
        );
        assert!(f.read(0, &["nope"]).is_err());
        assert_eq!(
            f.max_i64(0, "transact_time"),
            Some(1_700_000_000_000_000 + f.read(0, &["price"]).unwrap()[0].len() as i64 - 1)
        );
        assert_eq!(f.max_i64(0, "price"), None);
    }
}
