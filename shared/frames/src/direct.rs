//! A direct reader of flat numeric Parquet columns into caller-owned vectors: pages are
//! decompressed into one reused buffer (zstd and LZ4_RAW in one call, other codecs through
//! Polars) and decoded here (PLAIN, dictionary, DELTA_BINARY_PACKED, BYTE_STREAM_SPLIT;
//! definition levels for nulls), with no Arrow arrays or DataFrames in between.
//!
//! Why: `aggregate` and `bars` read hundreds of MB of `f64`/`i64` columns and keep them as plain
//! vectors. Through Polars' reader each value was decompressed into a fresh buffer, decoded into
//! an Arrow array, assembled into a frame and copied once more into the job's vectors; most of
//! that time was page faults on freshly allocated memory (tests/README.md, "Aggregate
//! benchmark"). Here a column chunk costs one decompression into a warm buffer and one decode
//! pass that appends to the destination.
//!
//! Scope: flat columns (no repetition levels) of physical type INT64, DOUBLE or BOOLEAN, which is
//! every column the jobs read this way. Anything else is a typed error naming the file and
//! column, never a silent misread; `tests` below compares every encoding and writer against
//! Polars' own reader.

use polars_buffer::Buffer;
use polars_parquet::parquet::CowBuffer;
use polars_parquet::parquet::compression::{Compression, DecompressionContext};
use polars_parquet::parquet::encoding::Encoding;
use polars_parquet::parquet::metadata::Descriptor;
pub use polars_parquet::parquet::metadata::FileMetadata;
use polars_parquet::parquet::metadata::{ColumnChunkMetadata, RowGroupMetadata};
use polars_parquet::parquet::page::{CompressedPage, Page};
use polars_parquet::parquet::page::{DataPage, DataPageHeader, split_buffer};
use polars_parquet::parquet::read::{
    PageReader, decompress, deserialize_metadata, get_page_iterator,
};
use polars_parquet::parquet::schema::types::PhysicalType;

use crate::{Error, Result};

/// Where one column's values go; they are appended.
pub enum Dest<'a> {
    /// INT64 (integers and timestamps), no nulls allowed.
    I64(&'a mut Vec<i64>),
    /// DOUBLE, no nulls allowed.
    F64(&'a mut Vec<f64>),
    /// DOUBLE, nulls kept as `None`.
    OptF64(&'a mut Vec<Option<f64>>),
    /// BOOLEAN, no nulls allowed.
    Bool(&'a mut Vec<bool>),
}

impl Dest<'_> {
    /// Room for `n` more values. An empty vector that is too small gets a fresh allocation
    /// instead of growing: `realloc` would copy its whole stale capacity (and fault in the copy).
    pub fn reserve(&mut self, n: usize) {
        fn room<T>(v: &mut Vec<T>, n: usize) {
            if v.is_empty() && v.capacity() < n {
                // The old allocation is freed first, so malloc may reuse it for the new one.
                *v = Vec::new();
                *v = Vec::with_capacity(n);
            } else {
                v.reserve(n);
            }
        }
        match self {
            Dest::I64(v) => room(v, n),
            Dest::F64(v) => room(v, n),
            Dest::OptF64(v) => room(v, n),
            Dest::Bool(v) => room(v, n),
        }
    }

    fn physical(&self) -> PhysicalType {
        match self {
            Dest::I64(_) => PhysicalType::Int64,
            Dest::F64(_) | Dest::OptF64(_) => PhysicalType::Double,
            Dest::Bool(_) => PhysicalType::Boolean,
        }
    }
}

fn bad(path: &str, column: &str, what: impl std::fmt::Display) -> Error {
    Error::Shared(shared::Error::bad_data(
        path,
        format!("column {column}: {what}"),
    ))
}

/// Scratch buffers (and the zstd context) reused across pages, columns and files.
pub struct Reader {
    page: Vec<u8>,
    zstd: DecompressionContext,
    /// Single-shot zstd for data pages: Polars' `decompress` streams every page through the
    /// context's window and copies it out again (a second pass over each page's bytes).
    dctx: Option<zstd::zstd_safe::DCtx<'static>>,
    levels: Vec<u32>,
    indices: Vec<u32>,
    dict_f64: Vec<f64>,
    dict_i64: Vec<i64>,
    dict_bool: Vec<bool>,
    opt: Vec<f64>,
}

/// A column's dictionary, decoded.
#[derive(Clone, Copy, PartialEq)]
enum DictKind {
    None,
    F64,
    I64,
    Bool,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            page: Vec::new(),
            zstd: DecompressionContext::Unset,
            dctx: None,
            levels: Vec::new(),
            indices: Vec::new(),
            dict_f64: Vec::new(),
            dict_i64: Vec::new(),
            dict_bool: Vec::new(),
            opt: Vec::new(),
        }
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Append the columns named in `dests` of the Parquet file `bytes` (every row group, in
    /// order); returns the file's row count. `path` names the file in errors.
    pub fn read_into(
        &mut self,
        bytes: Buffer<u8>,
        path: &str,
        dests: &mut [(&str, Dest<'_>)],
    ) -> Result<usize> {
        let meta = footer(&bytes, path)?;
        for rg in &meta.row_groups {
            for (name, dest) in dests.iter_mut() {
                self.read_column(&bytes, rg, path, name, dest)?;
            }
        }
        Ok(meta.num_rows)
    }

    /// Append column `name` of row group `rg` of the Parquet file `bytes` (whose footer the
    /// caller read with [`footer`]): for callers that spread a file's columns over threads.
    pub fn read_column(
        &mut self,
        bytes: &Buffer<u8>,
        rg: &RowGroupMetadata,
        path: &str,
        name: &str,
        dest: &mut Dest<'_>,
    ) -> Result<()> {
        let chunk = column_chunk(rg, path, name)?;
        let pages = get_page_iterator(
            chunk,
            std::io::Cursor::new(bytes.clone()),
            Vec::new(),
            usize::MAX,
        )
        .map_err(|e| bad(path, name, format!("seeking the column: {e}")))?;
        self.decode_chunk(pages, chunk, rg.num_rows(), path, name, dest)
    }

    /// Append one column chunk of a row group of `rows` rows, from the chunk's own bytes (its
    /// byte range, read by the caller).
    pub fn read_chunk(
        &mut self,
        chunk_bytes: Buffer<u8>,
        chunk: &ColumnChunkMetadata,
        rows: usize,
        path: &str,
        dest: &mut Dest<'_>,
    ) -> Result<()> {
        let name = chunk
            .descriptor()
            .path_in_schema
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let pages = PageReader::new(
            std::io::Cursor::new(chunk_bytes),
            chunk,
            Vec::new(),
            usize::MAX,
        );
        self.decode_chunk(pages, chunk, rows, path, &name, dest)
    }

    fn decode_chunk(
        &mut self,
        pages: PageReader,
        chunk: &ColumnChunkMetadata,
        rows: usize,
        path: &str,
        name: &str,
        dest: &mut Dest<'_>,
    ) -> Result<()> {
        let desc = &chunk.descriptor().descriptor;
        if desc.primitive_type.physical_type != dest.physical() {
            return Err(bad(
                path,
                name,
                format!(
                    "stored as {:?}, read as {:?}",
                    desc.primitive_type.physical_type,
                    dest.physical()
                ),
            ));
        }
        if desc.max_rep_level != 0 || desc.max_def_level > 1 {
            return Err(bad(path, name, "nested columns are not supported"));
        }
        let before = dest_len(dest);
        let compressed = chunk.compression() != Compression::Uncompressed;
        let mut dict = DictKind::None;
        for page in pages {
            let page = page.map_err(|e| bad(path, name, format!("reading a page: {e}")))?;
            let is_dict = matches!(page, CompressedPage::Dict(_));
            let page = match page {
                CompressedPage::Data(p)
                    if matches!(p.compression(), Compression::Zstd | Compression::Lz4Raw)
                        && matches!(p.header(), DataPageHeader::V1(_)) =>
                {
                    self.one_call_page(p, desc)
                        .map_err(|e| bad(path, name, format!("decompressing a page: {e}")))?
                }
                page => decompress(page, &mut self.page, &mut self.zstd)
                    .map_err(|e| bad(path, name, format!("decompressing a page: {e}")))?,
            };
            match page {
                Page::Dict(d) if is_dict && dict == DictKind::None => {
                    dict = self.decode_dict(&d.buffer, d.num_values, dest, path, name)?;
                    if let CowBuffer::Owned(v) = d.buffer {
                        self.page = v;
                    }
                }
                Page::Dict(_) => {
                    return Err(bad(path, name, "a second dictionary page"));
                }
                Page::Data(mut p) => {
                    self.decode_page(&p, dict, dest, path, name)?;
                    // The decompression buffer, back for the next page (an uncompressed page
                    // borrows the file's bytes instead).
                    if compressed {
                        self.page = std::mem::take(p.buffer_mut());
                    }
                }
            }
        }
        let got = dest_len(dest) - before;
        if got != rows {
            return Err(bad(
                path,
                name,
                format!("{got} values in a row group of {rows} rows"),
            ));
        }
        Ok(())
    }

    /// A zstd or LZ4_RAW V1 data page, decompressed in one call into the reused page buffer.
    fn one_call_page(
        &mut self,
        mut p: polars_parquet::parquet::page::CompressedDataPage,
        desc: &Descriptor,
    ) -> std::result::Result<Page, String> {
        let n = p.uncompressed_size();
        let header = p.header().clone();
        let values = p.num_values();
        let mut out = std::mem::take(&mut self.page);
        out.clear();
        out.reserve(n);
        let got = match p.compression() {
            Compression::Lz4Raw => lz4_block(&p.slice_mut()[..], n, &mut out)?,
            _ => {
                let dctx = self.dctx.get_or_insert_with(zstd::zstd_safe::DCtx::create);
                dctx.decompress(&mut out, &p.slice_mut()[..])
                    .map_err(|code| zstd::zstd_safe::get_error_name(code).to_string())?
            }
        };
        if got != n {
            return Err(format!("{got} bytes where the header says {n}"));
        }
        Ok(Page::Data(DataPage::new(
            header,
            CowBuffer::Owned(out),
            desc.clone(),
            values,
        )))
    }

    fn decode_dict(
        &mut self,
        buf: &[u8],
        n: usize,
        dest: &Dest<'_>,
        path: &str,
        name: &str,
    ) -> Result<DictKind> {
        let short = || bad(path, name, "dictionary page shorter than its values");
        Ok(match dest {
            Dest::F64(_) | Dest::OptF64(_) => {
                let b = buf.get(..n * 8).ok_or_else(short)?;
                self.dict_f64.clear();
                self.dict_f64.extend(
                    b.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
                );
                DictKind::F64
            }
            Dest::I64(_) => {
                let b = buf.get(..n * 8).ok_or_else(short)?;
                self.dict_i64.clear();
                self.dict_i64.extend(
                    b.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))),
                );
                DictKind::I64
            }
            Dest::Bool(_) => {
                if buf.len() * 8 < n {
                    return Err(short());
                }
                self.dict_bool.clear();
                self.dict_bool
                    .extend((0..n).map(|i| buf[i / 8] >> (i % 8) & 1 == 1));
                DictKind::Bool
            }
        })
    }

    fn decode_page(
        &mut self,
        page: &DataPage,
        dict: DictKind,
        dest: &mut Dest<'_>,
        path: &str,
        name: &str,
    ) -> Result<()> {
        let err = |what: &str| bad(path, name, what);
        let n = page.num_values();
        let split = split_buffer(page).map_err(|e| bad(path, name, e))?;
        // Definition levels: which of the page's `n` rows have a value.
        let mut present = n;
        let mut has_nulls = false;
        if page.descriptor.max_def_level > 0 && !all_defined(split.def, n) {
            hybrid_rle(split.def, 1, n, &mut self.levels).map_err(err)?;
            present = self.levels.iter().filter(|&&l| l == 1).count();
            has_nulls = present < n;
        }
        if has_nulls && !matches!(dest, Dest::OptF64(_)) {
            return Err(err("has nulls, which this column must not"));
        }
        let values = split.values;
        match page.encoding() {
            Encoding::Plain => match dest {
                Dest::I64(v) => plain8(values, present, v, i64::from_le_bytes).map_err(err)?,
                Dest::F64(v) => plain8(values, present, v, f64::from_le_bytes).map_err(err)?,
                Dest::OptF64(v) => {
                    self.opt.clear();
                    plain8(values, present, &mut self.opt, f64::from_le_bytes).map_err(err)?;
                    spread(&self.levels, has_nulls, &self.opt, v);
                }
                Dest::Bool(v) => {
                    if values.len() * 8 < present {
                        return Err(err("page shorter than its values"));
                    }
                    v.extend((0..present).map(|i| values[i / 8] >> (i % 8) & 1 == 1));
                }
            },
            Encoding::PlainDictionary | Encoding::RleDictionary => {
                let (&bw, rest) = values
                    .split_first()
                    .ok_or_else(|| err("empty dictionary-encoded page"))?;
                hybrid_rle(rest, bw as u32, present, &mut self.indices).map_err(err)?;
                let idx = &self.indices;
                let lookup = |len: usize| -> Result<()> {
                    match idx.iter().max() {
                        Some(&m) if m as usize >= len => Err(err("dictionary index out of range")),
                        _ => Ok(()),
                    }
                };
                match (dest, dict) {
                    (Dest::F64(v), DictKind::F64) => {
                        lookup(self.dict_f64.len())?;
                        v.extend(idx.iter().map(|&i| self.dict_f64[i as usize]));
                    }
                    (Dest::OptF64(v), DictKind::F64) => {
                        lookup(self.dict_f64.len())?;
                        self.opt.clear();
                        self.opt
                            .extend(idx.iter().map(|&i| self.dict_f64[i as usize]));
                        spread(&self.levels, has_nulls, &self.opt, v);
                    }
                    (Dest::I64(v), DictKind::I64) => {
                        lookup(self.dict_i64.len())?;
                        v.extend(idx.iter().map(|&i| self.dict_i64[i as usize]));
                    }
                    (Dest::Bool(v), DictKind::Bool) => {
                        lookup(self.dict_bool.len())?;
                        v.extend(idx.iter().map(|&i| self.dict_bool[i as usize]));
                    }
                    _ => return Err(err("dictionary-encoded page without a dictionary")),
                }
            }
            Encoding::ByteStreamSplit => {
                let streams = values
                    .get(..present * 8)
                    .ok_or_else(|| err("page shorter than its values"))?;
                match dest {
                    Dest::F64(v) => crate::floats::join_bytes(streams, present, v),
                    Dest::OptF64(v) => {
                        self.opt.clear();
                        crate::floats::join_bytes(streams, present, &mut self.opt);
                        spread(&self.levels, has_nulls, &self.opt, v);
                    }
                    _ => return Err(err("BYTE_STREAM_SPLIT on a non-double column")),
                }
            }
            Encoding::DeltaBinaryPacked => match dest {
                Dest::I64(v) => {
                    let before = v.len();
                    delta_binary_packed(values, v).map_err(err)?;
                    if v.len() - before != present {
                        return Err(err("delta-packed page with the wrong number of values"));
                    }
                }
                _ => return Err(err("DELTA_BINARY_PACKED on a non-integer column")),
            },
            other => {
                return Err(bad(
                    path,
                    name,
                    format!("encoding {other:?} is not supported"),
                ));
            }
        }
        Ok(())
    }
}

/// The footer of the Parquet file `bytes`; `path` names it in errors. Parsed where it lies:
/// `read_metadata` would copy the file's last 64 KiB into a fresh buffer first (for a month of
/// minutes, 36 files a symbol-year: 2.3 MB copied and faulted in for footers of ~2 KB).
pub fn footer(bytes: &Buffer<u8>, path: &str) -> Result<FileMetadata> {
    let n = bytes.len();
    if n < 12 || bytes[n - 4..] != *b"PAR1" || bytes[..4] != *b"PAR1" {
        return Err(bad(
            path,
            "-",
            format!("not a Parquet file ({n} bytes, no PAR1 at both ends)"),
        ));
    }
    let len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().expect("4 bytes")) as usize;
    if len > n - 12 {
        return Err(bad(
            path,
            "-",
            format!("footer length {len} does not fit in the file's {n} bytes"),
        ));
    }
    deserialize_metadata(bytes.clone().sliced(n - 8 - len..n - 8))
        .map_err(|e| bad(path, "-", format!("reading the footer: {e}")))
}

/// The chunk of the flat column `name` in row group `rg`.
pub fn column_chunk<'m>(
    rg: &'m RowGroupMetadata,
    path: &str,
    name: &str,
) -> Result<&'m ColumnChunkMetadata> {
    let mut chunks = rg
        .columns_under_root_iter(name)
        .ok_or_else(|| bad(path, name, "not in the file"))?;
    let chunk = chunks.next().ok_or_else(|| bad(path, name, "no data"))?;
    if chunks.next().is_some() {
        return Err(bad(path, name, "nested columns are not supported"));
    }
    Ok(chunk)
}

/// One LZ4 block of at most `n` bytes decompressed into `out` (cleared first); returns its
/// length. A malformed block leaves `out` empty.
fn lz4_block(src: &[u8], n: usize, out: &mut Vec<u8>) -> std::result::Result<usize, String> {
    let cap = i32::try_from(n).map_err(|_| "an LZ4 page of over 2 GiB".to_string())?;
    out.clear();
    out.resize(n, 0);
    match lz4::block::decompress_to_buffer(src, Some(cap), out) {
        Ok(got) => {
            out.truncate(got);
            Ok(got)
        }
        Err(_) => {
            out.clear();
            Err("a malformed LZ4 block".into())
        }
    }
}

fn dest_len(d: &Dest<'_>) -> usize {
    match d {
        Dest::I64(v) => v.len(),
        Dest::F64(v) => v.len(),
        Dest::OptF64(v) => v.len(),
        Dest::Bool(v) => v.len(),
    }
}

/// `n` little-endian 8-byte values: on a little-endian machine one copy of their bytes (they may
/// lie at any alignment in the page), elsewhere converted one by one with `f`.
#[inline]
fn plain8<T: bytemuck::Pod>(
    b: &[u8],
    n: usize,
    out: &mut Vec<T>,
    f: impl Fn([u8; 8]) -> T,
) -> Result<(), &'static str> {
    let b = b.get(..n * 8).ok_or("page shorter than its values")?;
    if cfg!(target_endian = "little") && std::mem::size_of::<T>() == 8 {
        out.reserve(n);
        let len = out.len();
        // SAFETY: room for `n` more values is reserved; `b` holds exactly `n * 8` bytes, outside
        // `out`'s allocation; `T` is plain data of 8 bytes, so any bytes are a valid value, and
        // these are its little-endian encoding, which is its layout on this machine.
        unsafe {
            std::ptr::copy_nonoverlapping(
                b.as_ptr(),
                out.as_mut_ptr().add(len).cast::<u8>(),
                n * 8,
            );
            out.set_len(len + n);
        }
    } else {
        out.extend(b.chunks_exact(8).map(|c| f(c.try_into().expect("8 bytes"))));
    }
    Ok(())
}

/// The present values `vals` spread over the rows by their definition levels.
fn spread(levels: &[u32], has_nulls: bool, vals: &[f64], out: &mut Vec<Option<f64>>) {
    if !has_nulls {
        out.extend(vals.iter().map(|&v| Some(v)));
        return;
    }
    let mut it = vals.iter();
    out.extend(
        levels
            .iter()
            .map(|&l| if l == 1 { it.next().copied() } else { None }),
    );
}

fn uleb(b: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

fn zigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Bits `[bit, bit + w)` of `b`, LSB first; `w <= 64`. Bytes past the end read as zeros.
#[inline]
fn bits(b: &[u8], bit: usize, w: u32) -> u64 {
    if w == 0 {
        return 0;
    }
    let start = bit / 8;
    // Away from the end of the buffer: one unaligned 16-byte load.
    if let Some(w16) = b.get(start..start + 16) {
        let v = u128::from_le_bytes(w16.try_into().expect("16 bytes")) >> (bit % 8);
        return (v as u64) & (u64::MAX >> (64 - w));
    }
    if start >= b.len() {
        return 0;
    }
    let mut word = [0u8; 16];
    let take = b.len().saturating_sub(start).min(16);
    word[..take].copy_from_slice(&b[start..start + take]);
    let v = u128::from_le_bytes(word) >> (bit % 8);
    (v as u64) & (u64::MAX >> (64 - w))
}

/// The RLE / bit-packed hybrid encoding (levels, dictionary indices): `n` values of `bw` bits.
fn hybrid_rle(mut b: &[u8], bw: u32, n: usize, out: &mut Vec<u32>) -> Result<(), &'static str> {
    out.clear();
    if bw > 32 {
        return Err("bit width over 32");
    }
    let width_bytes = bw.div_ceil(8) as usize;
    while out.len() < n {
        let header = uleb(&mut b)?;
        let left = n - out.len();
        if header & 1 == 0 {
            let count = (header >> 1) as usize;
            let raw = b.get(..width_bytes).ok_or("truncated RLE run")?;
            let mut v = 0u32;
            for (i, &x) in raw.iter().enumerate() {
                v |= (x as u32) << (8 * i);
            }
            b = &b[width_bytes..];
            if count == 0 {
                return Err("empty RLE run");
            }
            out.extend(std::iter::repeat_n(v, count.min(left)));
        } else {
            let groups = (header >> 1) as usize;
            let bytes = groups * bw as usize;
            let packed = &b[..bytes.min(b.len())];
            let count = (groups * 8).min(left);
            if groups == 0 {
                return Err("empty bit-packed run");
            }
            out.extend((0..count).map(|i| bits(packed, i * bw as usize, bw) as u32));
            b = &b[bytes.min(b.len())..];
        }
    }
    Ok(())
}

/// Whether definition levels `b` (bit width 1) open with one RLE run of 1s over all `n` rows: the
/// usual page, whose levels need not be expanded and counted.
fn all_defined(mut b: &[u8], n: usize) -> bool {
    uleb(&mut b).is_ok_and(|h| h & 1 == 0 && (h >> 1) as usize >= n && b.first() == Some(&1))
}

/// DELTA_BINARY_PACKED integers, appended to `out`.
fn delta_binary_packed(mut b: &[u8], out: &mut Vec<i64>) -> Result<(), &'static str> {
    let block = uleb(&mut b)? as usize;
    let minis = uleb(&mut b)? as usize;
    let total = uleb(&mut b)? as usize;
    let mut last = zigzag(uleb(&mut b)?);
    if total == 0 {
        return Ok(());
    }
    if minis == 0 || !block.is_multiple_of(minis) || !(block / minis).is_multiple_of(32) {
        return Err("malformed delta block header");
    }
    let per_mini = block / minis;
    out.reserve(total);
    out.push(last);
    let mut left = total - 1;
    while left > 0 {
        let min_delta = zigzag(uleb(&mut b)?);
        let widths = b.get(..minis).ok_or("truncated delta block")?;
        b = &b[minis..];
        for &w in widths {
            if left == 0 {
                break;
            }
            if w > 64 {
                return Err("delta bit width over 64");
            }
            let bytes = per_mini * w as usize / 8;
            let packed = &b[..bytes.min(b.len())];
            let take = per_mini.min(left);
            // Summed in a local and written straight into the room reserved above (`take` is at
            // most the values left of `total`): summed through a closure capturing `last`, the
            // running value went through memory, one store-to-load wait per value.
            let len = out.len();
            let room = &mut out.spare_capacity_mut()[..take];
            if w == 0 {
                // Constant steps (timestamps a minute apart): no bits to read.
                for slot in room.iter_mut() {
                    last = last.wrapping_add(min_delta);
                    slot.write(last);
                }
            } else {
                for (i, slot) in room.iter_mut().enumerate() {
                    let d = bits(packed, i * w as usize, w as u32);
                    last = last.wrapping_add(min_delta).wrapping_add(d as i64);
                    slot.write(last);
                }
            }
            // SAFETY: the `take` values after `len` were all written just above.
            unsafe { out.set_len(len + take) };
            left -= take;
            b = &b[bytes.min(b.len())..];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floats::samples;
    use crate::{ParquetBuffer, ParquetOptions, parquet_bytes};
    use polars::prelude::*;
    use polars_parquet::parquet::read::read_metadata;

    #[test]
    fn footers_are_parsed_in_place_or_refused_naming_the_file() {
        let mut df = frame(5000, true);
        let bytes = Buffer::from(parquet_bytes(&mut df, &ParquetOptions::default()).unwrap());
        let want = read_metadata(&mut std::io::Cursor::new(bytes.clone())).unwrap();
        let got = footer(&bytes, "x.parquet").unwrap();
        assert_eq!(got.num_rows, want.num_rows);
        assert_eq!(got.row_groups.len(), want.row_groups.len());
        assert_eq!(
            format!("{:?}", got.schema_descr),
            format!("{:?}", want.schema_descr)
        );
        // Truncated, with a length past the start, and not Parquet at all.
        let n = bytes.len();
        let cut = Buffer::from(bytes[n / 2..].to_vec());
        let mut long = bytes.to_vec();
        long[n - 8..n - 4].copy_from_slice(&(n as u32).to_le_bytes());
        let long = Buffer::from(long);
        let text = Buffer::from(b"open_time,open\n1,2\n".to_vec());
        for (b, what) in [
            (&cut, "no PAR1 at both ends"),
            (&long, "does not fit"),
            (&text, "not a Parquet file"),
        ] {
            let e = footer(b, "m/part-0.parquet").unwrap_err().to_string();
            assert!(e.starts_with("m/part-0.parquet: "), "{e}");
            assert!(e.contains(what), "{e}");
        }
    }

    fn frame(n: usize, nulls: bool) -> DataFrame {
        let t: Vec<i64> = (0..n as i64)
            .map(|i| 1_700_000_000_000_000 + i * 60_000_000)
            .collect();
        // Few distinct values and many.
        let few: Vec<f64> = (0..n).map(|i| (i % 7) as f64 * 0.1).collect();
        let many: Vec<f64> = (0..n).map(|i| (i as f64).sqrt() * 1.5 - 3.0).collect();
        let opt: Vec<Option<f64>> = (0..n)
            .map(|i| (!nulls || i % 5 != 3).then_some(i as f64 / 3.0))
            .collect();
        // Nine distinct integers (Polars dictionary-encodes them), with negative deltas.
        let ids: Vec<i64> = (0..n as i64).map(|i| (i % 9) * 1000 - 4000).collect();
        let flags: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
        DataFrame::new(
            n,
            vec![
                Int64Chunked::from_vec("t".into(), t)
                    .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                    .into_column(),
                Column::new("few".into(), few),
                Column::new("many".into(), many),
                Column::new("opt".into(), opt),
                Column::new("ids".into(), ids),
                Column::new("flags".into(), flags),
            ],
        )
        .unwrap()
    }

    type Cols = (
        Vec<i64>,
        Vec<f64>,
        Vec<f64>,
        Vec<Option<f64>>,
        Vec<i64>,
        Vec<bool>,
    );

    fn read_all(bytes: Vec<u8>) -> Cols {
        let (mut t, mut few, mut many, mut opt, mut ids, mut flags) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut r = Reader::new();
        r.read_into(
            Buffer::from(bytes),
            "x.parquet",
            &mut [
                ("t", Dest::I64(&mut t)),
                ("few", Dest::F64(&mut few)),
                ("many", Dest::F64(&mut many)),
                ("opt", Dest::OptF64(&mut opt)),
                ("ids", Dest::I64(&mut ids)),
                ("flags", Dest::Bool(&mut flags)),
            ],
        )
        .unwrap();
        (t, few, many, opt, ids, flags)
    }

    fn expect(df: &DataFrame, got: &Cols) {
        let t: Vec<i64> = df
            .column("t")
            .unwrap()
            .datetime()
            .unwrap()
            .physical()
            .into_no_null_iter()
            .collect();
        assert_eq!(got.0, t);
        let f =
            |c: &str| -> Vec<Option<f64>> { df.column(c).unwrap().f64().unwrap().iter().collect() };
        assert_eq!(got.1.iter().map(|&v| Some(v)).collect::<Vec<_>>(), f("few"));
        assert_eq!(
            got.2.iter().map(|&v| Some(v)).collect::<Vec<_>>(),
            f("many")
        );
        assert_eq!(got.3, f("opt"));
        let ids: Vec<i64> = df
            .column("ids")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(got.4, ids);
        let flags: Vec<bool> = df
            .column("flags")
            .unwrap()
            .bool()
            .unwrap()
            .iter()
            .map(|v| v.unwrap())
            .collect();
        assert_eq!(got.5, flags);
    }

    #[test]
    fn polars_writer_plain_dictionary_nulls_and_row_groups() {
        for (n, rg, nulls) in [
            (1, None, false),
            (1000, None, true),
            (300_000, Some(70_000), true),
            (5000, Some(64), false),
        ] {
            let mut df = frame(n, nulls);
            let bytes = parquet_bytes(
                &mut df,
                &ParquetOptions {
                    row_group_rows: rg,
                    zstd_level: Some(1),
                    ..ParquetOptions::default()
                },
            )
            .unwrap();
            // The writer chose a dictionary for the low-cardinality integers.
            let meta = read_metadata(&mut std::io::Cursor::new(bytes.clone())).unwrap();
            let ids = meta.row_groups[0]
                .columns_under_root_iter("ids")
                .unwrap()
                .next()
                .unwrap();
            assert!(ids.dictionary_page_offset().is_some(), "{n}");
            // Same values as Polars' own reader of the same bytes.
            let polars_df = crate::read_parquet_bytes(bytes.clone().into(), "x").unwrap();
            assert_eq!(polars_df, df);
            expect(&df, &read_all(bytes));
        }
    }

    /// The codec of column `name` in the first row group.
    fn codec(bytes: &[u8], name: &str) -> Compression {
        let meta = read_metadata(&mut std::io::Cursor::new(bytes)).unwrap();
        column_chunk(&meta.row_groups[0], "x", name)
            .unwrap()
            .compression()
    }

    /// The encodings of the data pages of column `name` in the first row group.
    fn encodings(bytes: &[u8], name: &str) -> Vec<Encoding> {
        let meta = read_metadata(&mut std::io::Cursor::new(bytes)).unwrap();
        let chunk = column_chunk(&meta.row_groups[0], "x", name).unwrap();
        let r = chunk.byte_range();
        let chunk_bytes = Buffer::from(bytes[r.start as usize..r.end as usize].to_vec());
        PageReader::new(
            std::io::Cursor::new(chunk_bytes),
            chunk,
            Vec::new(),
            usize::MAX,
        )
        .filter_map(|p| match p.unwrap() {
            CompressedPage::Data(d) => Some(d.header().encoding().try_into().unwrap()),
            CompressedPage::Dict(_) => None,
        })
        .collect()
    }

    #[test]
    fn own_page_encoding_delta_packed_split_and_dictionary_floats() {
        use crate::FloatEncoding;
        for floats in [
            FloatEncoding::Chosen,
            FloatEncoding::ChosenLz4,
            FloatEncoding::Plain,
        ] {
            for n in [1usize, 2, 127, 128, 129, 10_000, 200_001] {
                let mut df = frame(n, true);
                // Kline closes on a 0.01 tick, a random walk: distinct decimals, PLAIN's case.
                let decimals = samples::tick_walk(n, 0x2545_f491_4f6c_dd1d ^ n as u64);
                df.with_column(Column::new("decimals".into(), decimals.clone()))
                    .unwrap();
                // Full-precision noise: the column byte streams suit.
                let noisy = samples::noise(n, 0x9e37_79b9_7f4a_7c15 ^ n as u64, 42_000.0, 1.0);
                df.with_column(Column::new("noisy".into(), noisy.clone()))
                    .unwrap();
                // The same with nulls: split pages hold only the present values.
                let noisy_opt: Vec<Option<f64>> = noisy
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i % 5 != 2).then_some(*v))
                    .collect();
                df.with_column(Column::new("noisy_opt".into(), noisy_opt.clone()))
                    .unwrap();
                let opts = ParquetOptions {
                    floats,
                    ..ParquetOptions::default()
                };
                let mut buf = ParquetBuffer::new(df.schema(), &opts).unwrap();
                buf.write(&df).unwrap();
                let (bytes, _) = buf.finish("x").unwrap();
                expect(&df, &read_all(bytes.to_vec()));
                // Polars reads every encoding chosen, bit for bit.
                assert_eq!(crate::read_parquet_bytes(bytes.clone(), "x").unwrap(), df);
                // And our reader, column by column (split, PLAIN zstd or LZ4, dictionary).
                for (col, want) in [("noisy", &noisy), ("decimals", &decimals)] {
                    let mut got = vec![];
                    Reader::new()
                        .read_into(
                            Buffer::from(bytes.to_vec()),
                            "x",
                            &mut [(col, Dest::F64(&mut got))],
                        )
                        .unwrap();
                    assert_eq!(got.len(), n, "{col}");
                    assert!(
                        got.iter()
                            .zip(want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{col} {n}"
                    );
                }
                let mut got_opt = vec![];
                Reader::new()
                    .read_into(
                        Buffer::from(bytes.to_vec()),
                        "x",
                        &mut [("noisy_opt", Dest::OptF64(&mut got_opt))],
                    )
                    .unwrap();
                assert_eq!(got_opt.len(), n);
                assert!(got_opt.iter().zip(&noisy_opt).all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
                    (None, None) => true,
                    _ => false,
                }));
                let has = |col: &str, e: Encoding| encodings(&bytes, col).contains(&e);
                let cols = ["few", "many", "opt", "noisy", "noisy_opt", "decimals"];
                match floats {
                    FloatEncoding::Plain => {
                        for col in cols {
                            assert!(has(col, Encoding::Plain), "{col} {n}");
                            assert!(!has(col, Encoding::ByteStreamSplit), "{col} {n}");
                            assert_eq!(codec(&bytes, col), Compression::Lz4Raw, "{col} {n}");
                        }
                        // Integers, times and flags too: no zstd page in a daily file.
                        for col in ["t", "ids", "flags"] {
                            assert_eq!(codec(&bytes, col), Compression::Lz4Raw, "{col} {n}");
                        }
                    }
                    FloatEncoding::Chosen | FloatEncoding::ChosenLz4 if n >= 10_000 => {
                        // 7 distinct values; 20% nulls and distinct values; noise.
                        assert!(has("few", Encoding::RleDictionary), "{n}");
                        assert!(!has("opt", Encoding::RleDictionary), "{n}");
                        assert!(has("noisy", Encoding::ByteStreamSplit), "{n}");
                        assert!(has("noisy_opt", Encoding::ByteStreamSplit), "{n}");
                        // Distinct decimals: PLAIN, LZ4 only when asked for.
                        assert!(has("decimals", Encoding::Plain), "{n}");
                        let lz4 = floats == FloatEncoding::ChosenLz4;
                        for col in cols {
                            let want = if lz4 && col == "decimals" {
                                Compression::Lz4Raw
                            } else {
                                Compression::Zstd
                            };
                            assert_eq!(codec(&bytes, col), want, "{col} {n}");
                        }
                    }
                    FloatEncoding::Chosen | FloatEncoding::ChosenLz4 => {}
                }
            }
        }
    }

    #[test]
    fn wrong_type_missing_column_and_nulls_are_errors_that_name_the_column() {
        let mut df = frame(100, true);
        let bytes = parquet_bytes(&mut df, &ParquetOptions::default()).unwrap();
        let mut r = Reader::new();
        let (mut a, mut b) = (vec![], vec![]);
        let e = r
            .read_into(
                Buffer::from(bytes.clone()),
                "f.parquet",
                &mut [("many", Dest::I64(&mut a))],
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.parquet: column many: stored as Double"),
            "{e}"
        );
        let e = r
            .read_into(
                Buffer::from(bytes.clone()),
                "f.parquet",
                &mut [("nope", Dest::F64(&mut b))],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("column nope: not in the file"), "{e}");
        let e = r
            .read_into(
                Buffer::from(bytes),
                "f.parquet",
                &mut [("opt", Dest::F64(&mut b))],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("column opt: has nulls"), "{e}");
        let e = r
            .read_into(
                Buffer::from(vec![1u8, 2, 3]),
                "g.parquet",
                &mut [("opt", Dest::F64(&mut b))],
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("g.parquet"), "{e}");
    }

    #[test]
    fn lz4_blocks_inflate_in_one_call_or_are_refused() {
        let plain: Vec<u8> = (0..50_000u32)
            .flat_map(|i| ((i / 3) as f64 * 0.01).to_le_bytes())
            .collect();
        let block = crate::lz4_compress(&plain).unwrap();
        assert!(block.len() < plain.len() / 2);
        let mut out = Vec::with_capacity(plain.len());
        assert_eq!(lz4_block(&block, plain.len(), &mut out), Ok(plain.len()));
        assert_eq!(out, plain);
        // Cut short, or more bytes in it than the header allows: refused, nothing written past
        // the room given.
        for (src, n) in [
            (&block[..block.len() / 2], plain.len()),
            (&block[..], plain.len() - 1),
            (&[0xF0u8][..], 100),
        ] {
            let mut out = Vec::with_capacity(n);
            assert_eq!(
                lz4_block(src, n, &mut out),
                Err("a malformed LZ4 block".to_string())
            );
            assert!(out.is_empty());
        }
        // The empty page.
        let empty = crate::lz4_compress(&[]).unwrap();
        let mut out = Vec::new();
        assert_eq!(lz4_block(&empty, 0, &mut out), Ok(0));
    }

    #[test]
    fn pages_without_nulls_are_known_by_their_first_run() {
        // 100 rows: a run of 100 ones (header 200 = uleb [0xC8, 0x01], value 1).
        let run = |count: u64, v: u8| {
            let mut b = vec![];
            let mut h = count << 1;
            loop {
                let byte = (h & 0x7f) as u8;
                h >>= 7;
                b.push(if h > 0 { byte | 0x80 } else { byte });
                if h == 0 {
                    break;
                }
            }
            b.push(v);
            b
        };
        assert!(all_defined(&run(100, 1), 100));
        assert!(all_defined(&run(101, 1), 100));
        assert!(!all_defined(&run(99, 1), 100));
        assert!(!all_defined(&run(100, 0), 100));
        // A bit-packed group, a truncated header, nothing: expanded the long way.
        assert!(!all_defined(&[0x03, 0xff], 8));
        assert!(!all_defined(&[0x80], 1));
        assert!(!all_defined(&[], 1));
        let mut levels = vec![];
        hybrid_rle(&run(100, 1), 1, 100, &mut levels).unwrap();
        assert!(levels.iter().all(|&l| l == 1) && levels.len() == 100);
    }

    #[test]
    fn hybrid_and_delta_edge_cases() {
        // Bit-packed run of 3-bit values 0..8, then an RLE run of five 5s.
        let mut out = Vec::new();
        hybrid_rle(
            &[0b11, 0b10001000, 0b11000110, 0b11111010, 10, 5],
            3,
            13,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, vec![0, 1, 2, 3, 4, 5, 6, 7, 5, 5, 5, 5, 5]);
        assert!(hybrid_rle(&[0b11], 3, 8, &mut out).is_ok()); // padding reads as zeros
        assert!(hybrid_rle(&[], 1, 1, &mut out).is_err());
        assert_eq!(zigzag(1), -1);
        assert_eq!(zigzag(4), 2);
        assert!(delta_binary_packed(&[128, 1, 0, 5, 0], &mut vec![]).is_err());
    }

    /// DELTA_BINARY_PACKED as the format defines it (block of `block` values in `minis`
    /// miniblocks, widths per miniblock, LSB-first bits), for the decoder to be checked against.
    fn delta_encode(vals: &[i64], block: usize, minis: usize) -> Vec<u8> {
        fn uleb(mut v: u64, out: &mut Vec<u8>) {
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        let zz = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        uleb(block as u64, &mut out);
        uleb(minis as u64, &mut out);
        uleb(vals.len() as u64, &mut out);
        uleb(zz(vals.first().copied().unwrap_or(0)), &mut out);
        let deltas: Vec<i64> = vals.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        let per_mini = block / minis;
        for blk in deltas.chunks(block) {
            let min = *blk.iter().min().expect("a block has deltas");
            uleb(zz(min), &mut out);
            let rel: Vec<u64> = blk.iter().map(|d| d.wrapping_sub(min) as u64).collect();
            let widths: Vec<u8> = (0..minis)
                .map(|m| {
                    let part = rel.get(m * per_mini..).unwrap_or(&[]);
                    let max = part.iter().take(per_mini).max().copied().unwrap_or(0);
                    (64 - max.leading_zeros()) as u8
                })
                .collect();
            out.extend_from_slice(&widths);
            for (m, &w) in widths.iter().enumerate() {
                let Some(part) = rel.get(m * per_mini..).filter(|p| !p.is_empty()) else {
                    break; // Miniblocks past the last value are not written.
                };
                let mut bits = vec![0u8; per_mini * w as usize / 8];
                for (i, &v) in part.iter().take(per_mini).enumerate() {
                    for b in 0..w as usize {
                        if v >> b & 1 == 1 {
                            let at = i * w as usize + b;
                            bits[at / 8] |= 1 << (at % 8);
                        }
                    }
                }
                out.extend_from_slice(&bits);
            }
        }
        out
    }

    #[test]
    fn delta_packed_decodes_any_width_and_miniblock_size() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || samples::next(&mut x);
        // Minute timestamps (width 0), trade counts (small widths, negative deltas), values
        // spanning the whole i64 range (width 64, wrapping deltas), and a mix of runs.
        let minutes: Vec<i64> = (0..1000)
            .map(|i| 1_700_000_000_000_000 + i * 60_000_000)
            .collect();
        let trades: Vec<i64> = (0..1000).map(|_| (rand() % 5000) as i64).collect();
        let wide: Vec<i64> = (0..300).map(|_| rand() as i64).collect();
        let mixed: Vec<i64> = (0..777)
            .map(|i| {
                if i / 100 % 2 == 0 {
                    i * 7
                } else {
                    (rand() % (1 << 40)) as i64
                }
            })
            .collect();
        for vals in [&minutes, &trades, &wide, &mixed] {
            for n in [0, 1, 2, 33, 64, 65, 129, 256, 257, vals.len()] {
                let vals = &vals[..n];
                // Miniblocks of 32, 64, 128 and 256 values (Polars writes 256-value blocks).
                for (block, minis) in [(128, 4), (256, 4), (256, 2), (256, 1)] {
                    let enc = delta_encode(vals, block, minis);
                    let mut got = vec![-1];
                    delta_binary_packed(&enc, &mut got).unwrap();
                    assert_eq!(&got[1..], vals, "n {n}, block {block}/{minis}");
                }
            }
        }
    }
}
