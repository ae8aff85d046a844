//! The Polars side of the shared library: parsed archive columns to DataFrames with the
//! normalized schema, and Parquet (zstd, statistics, scan-sized row groups) to and from the store.
//! Jobs that need no DataFrame depend on `shared` alone and never build Polars.
//!
//! This crate is the jobs' one Parquet boundary; no job depends on Polars' internal sub-crates.
//! - Reading: a whole file as a DataFrame ([`read_parquet`], [`read_parquet_bytes`],
//!   [`read_parquet_columns`]); a local file row group by row group, into series, DataFrames or
//!   the job's own reused vectors ([`file::ParquetFile`], with [`file::LocalCopy`] to bring a
//!   store object to a local file); and a file held in memory straight into the job's vectors
//!   ([`direct::Reader`]). The direct decoding is pinned against Polars' own reader by a test per
//!   encoding and writer (`direct`'s tests).
//! - Writing: a frame at once ([`write_parquet`], [`parquet_bytes`]), or frame after frame into
//!   one file, encoded in memory ([`ParquetBuffer`]) or streamed to the store ([`ParquetSink`]).

use std::io::Cursor;

use bytes::Bytes;
use polars::prelude::*;
use shared::checksum::sha256_hex;
use shared::formats::{ColumnData, Columns};
use shared::manifest::Output;
use shared::store::Store;

pub use polars;
pub use polars_buffer::Buffer;

pub mod direct;
pub mod file;
mod floats;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Polars {
        context: String,
        #[source]
        source: PolarsError,
    },
    #[error(transparent)]
    Shared(#[from] shared::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Jobs report in `shared::Error`. A Polars failure is almost always an input that does not
/// decode or lacks what its dataset promises, so it is bad data, named by its context (which
/// says the file).
impl From<Error> for shared::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Shared(e) => e,
            Error::Polars { context, source } => {
                shared::Error::bad_data(context, source.to_string())
            }
        }
    }
}

/// Attach context to a Polars result.
pub trait PolarsContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> PolarsContext<T> for PolarsResult<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Polars {
            context: context(),
            source,
        })
    }
}

/// A float column of `values` in which NaN marks null, moved into Polars without a copy: the
/// values become the array's buffer and the NaNs its validity mask (none when there are none).
pub fn nan_null_column(name: &str, values: Vec<f64>) -> Column {
    let validity = values.iter().any(|x| x.is_nan()).then(|| {
        values
            .iter()
            .map(|x| !x.is_nan())
            .collect::<polars_arrow::bitmap::Bitmap>()
    });
    Float64Chunked::from_vec_validity(name.into(), values, validity).into_column()
}

/// The Polars type of a normalized timestamp: µs since the epoch, UTC.
pub fn time_dtype() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
}

/// One parsed column as a Polars column of the normalized type.
pub fn to_column(name: &str, data: ColumnData) -> Result<Column> {
    let name = PlSmallStr::from(name);
    Ok(match data {
        ColumnData::I64(v) => Column::new(name, v),
        ColumnData::F64(v) => Column::new(name, v),
        ColumnData::OptF64(v) => Column::new(name, v),
        ColumnData::Bool(v) => Column::new(name, v),
        ColumnData::Str(v) => Column::new(name, v),
        // Built as Datetime directly: a cast to a zoned type needs Polars' `timezones` feature
        // (chrono-tz) and silently drops the zone without it.
        ColumnData::TimeUs(v) => Int64Chunked::from_vec(name, v)
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_column(),
    })
}

/// Parsed columns as a DataFrame with the normalized schema.
pub fn to_frame(cols: Columns) -> Result<DataFrame> {
    let height = cols.len();
    let columns = cols
        .into_parts()
        .into_iter()
        .map(|(name, data)| to_column(name, data))
        .collect::<Result<Vec<_>>>()?;
    DataFrame::new(height, columns).ctx(|| "assembling a frame".into())
}

/// How Parquet files are written.
#[derive(Debug, Clone, Copy)]
pub struct ParquetOptions {
    /// Rows per row group; `None` writes one row group.
    pub row_group_rows: Option<usize>,
    /// zstd level (1..=22); `None` is zstd's default, 3.
    pub zstd_level: Option<i32>,
    /// How [`ParquetBuffer`] and [`ParquetSink`] encode float columns.
    pub floats: FloatEncoding,
}

/// The page encoding of float columns written by [`ParquetBuffer`] and [`ParquetSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatEncoding {
    /// Per row group, from the values: a dictionary when they repeat (prices on a tick grid,
    /// quantities in lots), else BYTE_STREAM_SPLIT or PLAIN, whichever compresses smaller on a
    /// sample (see `floats.rs`). Every page zstd, like the rest of the file.
    #[default]
    Chosen,
    /// As [`FloatEncoding::Chosen`], and PLAIN pages are written LZ4_RAW where that costs at most
    /// 1.5× zstd's bytes: zstd inflates distinct decimals (kline prices and volumes) at a third of
    /// LZ4's speed (see `floats.rs`). For files read far more often than written: `optimize`'s
    /// months, which every later job reads. Not for a job's own output rewritten at every run
    /// (`aggregate`'s year files), where the LZ4 trial would cost more than the reads it saves.
    ChosenLz4,
    /// Always PLAIN, compressed LZ4_RAW in its fast mode, as are the file's integer, time and
    /// boolean pages (text stays zstd): no choosing pass, for files written once and soon
    /// re-encoded (`convert`'s and `tail`'s daily partitions, which `optimize` merges). zstd on
    /// the float pages was a third of convert's CPU on klines, and inflating them in Polars'
    /// reader (a zstd context per page) a sixth of optimize's; LZ4 costs a fraction of both for
    /// files about a quarter larger. Delta-packed integers hardly compress either way, but a
    /// zstd page of them still cost optimize a fresh context per page of each of 110 k files.
    Plain,
}

impl FloatEncoding {
    /// How `optimize` encodes its months' floats: [`FloatEncoding::ChosenLz4`], or
    /// [`FloatEncoding::Chosen`] with `--smallest-floats`.
    pub fn optimized_months(smallest_floats: bool) -> FloatEncoding {
        if smallest_floats {
            FloatEncoding::Chosen
        } else {
            FloatEncoding::ChosenLz4
        }
    }
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            // ~1M rows is 50-100 MB uncompressed for these schemas: large enough for scans,
            // small enough that readers can skip row groups by their statistics.
            row_group_rows: Some(1 << 20),
            zstd_level: None,
            floats: FloatEncoding::Chosen,
        }
    }
}

/// The zstd level of `opts`, checked (`None`: zstd's default).
fn zstd_level(opts: &ParquetOptions) -> Result<Option<polars_parquet::write::ZstdLevel>> {
    opts.zstd_level
        .map(polars_parquet::write::ZstdLevel::try_new)
        .transpose()
        .ctx(|| format!("zstd level {:?}", opts.zstd_level))
}

fn writer<W: std::io::Write>(w: W, opts: &ParquetOptions) -> Result<ParquetWriter<W>> {
    let level = zstd_level(opts)?;
    Ok(ParquetWriter::new(w)
        .with_compression(ParquetCompression::Zstd(level))
        // min/max/null counts: what readers prune row groups by. The distinct-count estimate
        // of `full()` cost ~6% of convert's CPU (tests/README.md) and no reader here uses it.
        .with_statistics(StatisticsOptions::default())
        .with_row_group_size(opts.row_group_rows))
}

/// Encode a frame as Parquet bytes.
pub fn parquet_bytes(df: &mut DataFrame, opts: &ParquetOptions) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    writer(&mut buf, opts)?
        .finish(df)
        .ctx(|| "encoding Parquet".into())?;
    Ok(buf)
}

/// Write a frame to `path` atomically; returns the manifest output (size, sha256, rows).
pub async fn write_parquet(
    store: &Store,
    path: &str,
    df: &mut DataFrame,
    opts: &ParquetOptions,
) -> Result<Output> {
    let rows = df.height() as u64;
    let bytes = parquet_bytes(df, opts).map_err(|e| with_path(e, path))?;
    let out = Output {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        rows: Some(rows),
        time_span: None,
    };
    store.put(path, Bytes::from(bytes)).await?;
    Ok(out)
}

fn with_path(e: Error, path: &str) -> Error {
    match e {
        Error::Polars { context, source } => Error::Polars {
            context: format!("{path}: {context}"),
            source,
        },
        e => e,
    }
}

/// Min and max of a frame's time column, in µs (what a manifest output's `time_span` records);
/// `None` without rows or without that column.
pub fn time_span(df: &DataFrame, time_field: &str) -> Option<[i64; 2]> {
    let c = df.column(time_field).ok()?.cast(&DataType::Int64).ok()?;
    let ca = c.i64().ok()?;
    Some([ca.min()?, ca.max()?])
}

/// Decode Parquet bytes.
pub fn read_parquet_bytes(bytes: Bytes, path: &str) -> Result<DataFrame> {
    ParquetReader::new(Cursor::new(bytes))
        .finish()
        .ctx(|| format!("reading Parquet {path}"))
}

/// Read a Parquet object whole; `None` when it does not exist. A local store reads the file in
/// place.
pub async fn read_parquet(store: &Store, path: &str) -> Result<Option<DataFrame>> {
    read_parquet_projected(store, path, None).await
}

/// Read only `columns` of a Parquet object (in that order); `None` when it does not exist.
/// Skipping the columns a job does not use skips their decompression too.
pub async fn read_parquet_columns(
    store: &Store,
    path: &str,
    columns: &[&str],
) -> Result<Option<DataFrame>> {
    let cols = columns.iter().map(|c| c.to_string()).collect();
    read_parquet_projected(store, path, Some(cols)).await
}

/// Files up to this size are decoded on the calling thread. Polars otherwise decodes a row
/// group's columns on its thread pool, which for a day partition of a few KiB costs more in
/// waking and parking threads than the decoding itself (`optimize` reads 110 k of them for 100
/// symbol-years), and a job already runs units on every core.
const SERIAL_DECODE_BYTES: u64 = 8 << 20;

fn read_with<R: polars::io::mmap::MmapBytesReader>(
    r: ParquetReader<R>,
    len: u64,
    columns: Option<Vec<String>>,
    p: &str,
) -> Result<DataFrame> {
    let r = if len <= SERIAL_DECODE_BYTES {
        r.read_parallel(ParallelStrategy::None)
    } else {
        r
    };
    r.with_columns(columns)
        .finish()
        .ctx(|| format!("reading Parquet {p}"))
}

/// Local files up to this size are read into memory whole. Polars maps a file (twice: for its
/// footer, then for its pages), and mapping and unmapping a day partition of a few KiB cost more
/// than reading it, the unmap with a TLB flush on every core.
const SMALL_FILE_BYTES: u64 = 1 << 20;

/// Read a local file; `None` when it does not exist.
fn read_local(
    local: &std::path::Path,
    columns: Option<Vec<String>>,
    p: &str,
) -> Result<Option<DataFrame>> {
    let io = |e: std::io::Error| {
        Error::Shared(shared::Error::Io {
            context: format!("opening {p}"),
            source: e,
        })
    };
    match std::fs::File::open(local) {
        Ok(mut f) => {
            let len = f.metadata().map_err(io)?.len();
            if len > SMALL_FILE_BYTES {
                return read_with(ParquetReader::new(f), len, columns, p).map(Some);
            }
            let mut bytes = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut f, &mut bytes).map_err(io)?;
            let cursor = std::io::Cursor::new(bytes);
            read_with(ParquetReader::new(cursor), len, columns, p).map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// [`read_parquet`] from a blocking thread: a local store's file is read on this thread (no
/// hop to the runtime's blocking pool and back per file), anything else through `handle`.
pub fn read_parquet_blocking(
    handle: &tokio::runtime::Handle,
    store: &Store,
    path: &str,
) -> Result<Option<DataFrame>> {
    match store.local_path(path) {
        Some(local) => read_local(&local, None, path),
        None => handle.block_on(read_parquet(store, path)),
    }
}

/// `read_parquet` with an optional projection.
async fn read_parquet_projected(
    store: &Store,
    path: &str,
    columns: Option<Vec<String>>,
) -> Result<Option<DataFrame>> {
    if let Some(local) = store.local_path(path) {
        let p = path.to_string();
        return tokio::task::spawn_blocking(move || read_local(&local, columns, &p))
            .await
            .map_err(|e| {
                Error::Shared(shared::Error::Io {
                    context: format!("reading {path}"),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
    }
    match store.get_opt(path).await? {
        None => Ok(None),
        Some(b) => {
            let len = b.len() as u64;
            read_with(ParquetReader::new(Cursor::new(b)), len, columns, path).map(Some)
        }
    }
}

/// A Parquet file built in memory one row group at a time, hashed as its bytes are produced:
/// for outputs whose compressed size fits in memory while their rows do not have to.
///
/// Pages are encoded here rather than by Polars' writer, for two reasons measured on `convert`
/// (tests/README.md): integer and timestamp columns (ids, epoch times: near-monotone) are
/// written DELTA_BINARY_PACKED, which leaves zstd a fraction of the bytes that PLAIN does, and
/// float columns skip the dictionary attempt (a cardinality estimate over every value that
/// ends in PLAIN for prices and quantities anyway). Every Parquet reader used here (Polars,
/// PyArrow, DuckDB) reads both encodings.
pub struct ParquetBuffer {
    sink: SharedBuf,
    writer: polars::io::parquet::write::BatchedWriter<SharedBuf>,
    pages: PageEncoder,
    rows: u64,
}

use polars_parquet::write as pq;

/// The bytes written so far, shared with the writer that fills them (Polars' batched writer
/// does not hand its sink back). They are hashed once finished: by [`ParquetBuffer::finish`]
/// in place, by [`ParquetBuffer::finish_to`] on another thread while the store writes them.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Room for `n` more bytes: a row group's pages are copied in at once instead of growing the
    /// buffer by doubling (each doubling copies, and faults in, what came before).
    fn reserve(&self, n: usize) {
        if let Ok(mut g) = self.0.lock() {
            g.reserve(n);
        }
    }
}

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut g = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        g.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Our page encoding (see [`ParquetBuffer`]): per column its Parquet type and encoding, and the
/// page options; row groups go to a Polars batched writer as pages we compressed.
struct PageEncoder {
    columns: Vec<(polars_parquet::write::ParquetType, ColumnEncoding)>,
    options: pq::WriteOptions,
}

/// A column's encoding: fixed by its type, or chosen per row group (floats).
#[derive(Clone, Copy)]
enum ColumnEncoding {
    Fixed(pq::Encoding),
    /// Per row group ([`floats::choose`]); `lz4`: PLAIN pages may be LZ4.
    ChosenFloat {
        lz4: bool,
    },
    /// Pages in LZ4 ([`FloatEncoding::Plain`]'s files).
    Lz4(pq::Encoding),
}

impl PageEncoder {
    fn new<W: std::io::Write>(
        writer: &mut polars::io::parquet::write::BatchedWriter<W>,
        schema: &Schema,
        opts: &ParquetOptions,
    ) -> Result<PageEncoder> {
        let fields = writer.parquet_schema().fields().to_vec();
        let columns = fields
            .into_iter()
            .zip(schema.iter_values())
            .map(|(t, dtype)| {
                // Files written to be re-encoded soon: numbers and flags in fast LZ4 (see
                // `FloatEncoding::Plain`), text in zstd, whose dictionaries it shrinks well.
                let fixed = |e| match opts.floats {
                    FloatEncoding::Plain => ColumnEncoding::Lz4(e),
                    _ => ColumnEncoding::Fixed(e),
                };
                let enc = match dtype {
                    DataType::Int64 | DataType::Datetime(_, _) => {
                        fixed(pq::Encoding::DeltaBinaryPacked)
                    }
                    DataType::Float64 if opts.floats != FloatEncoding::Plain => {
                        ColumnEncoding::ChosenFloat {
                            lz4: opts.floats == FloatEncoding::ChosenLz4,
                        }
                    }
                    DataType::Float64 => fixed(pq::Encoding::Plain),
                    DataType::Boolean => fixed(pq::Encoding::Plain),
                    _ => ColumnEncoding::Fixed(pq::Encoding::RleDictionary),
                };
                (t, enc)
            })
            .collect();
        let level = zstd_level(opts)?;
        Ok(PageEncoder {
            columns,
            options: pq::WriteOptions {
                statistics: StatisticsOptions::default(),
                version: pq::Version::V1,
                compression: pq::CompressionOptions::Zstd(level),
                data_page_size: None,
            },
        })
    }

    /// One column's pages, compressed.
    fn column(
        &self,
        array: &ArrayRef,
        (ptype, enc): &(polars_parquet::write::ParquetType, ColumnEncoding),
    ) -> Result<Vec<Vec<pq::CompressedPage>>> {
        let what = || format!("encoding column {}", ptype.name());
        let mut split = false;
        let mut codec = PageCodec::File(self.options.compression);
        let dict;
        let (array, enc) = match enc {
            ColumnEncoding::Fixed(e) => (array, *e),
            ColumnEncoding::Lz4(e) => {
                codec = PageCodec::Lz4;
                (array, *e)
            }
            ColumnEncoding::ChosenFloat { lz4 } => {
                let values = array
                    .as_any()
                    .downcast_ref::<polars_arrow::array::PrimitiveArray<f64>>()
                    .ok_or_else(|| {
                        Error::Shared(shared::Error::internal(format!(
                            "{}: a Float64 column that is not an f64 array",
                            what()
                        )))
                    })?;
                match floats::choose(values, *lz4) {
                    floats::Choice::Dictionary(d) => {
                        dict = d.boxed();
                        (&dict, pq::Encoding::RleDictionary)
                    }
                    floats::Choice::Split => {
                        split = true;
                        (array, pq::Encoding::Plain)
                    }
                    floats::Choice::Plain => (array, pq::Encoding::Plain),
                    floats::Choice::PlainLz4 => {
                        codec = PageCodec::Lz4;
                        (array, pq::Encoding::Plain)
                    }
                }
            }
        };
        let mut out = Vec::new();
        for column in pq::array_to_columns(array, ptype.clone(), self.options, &[enc]).ctx(what)? {
            let mut compressed = Vec::new();
            for page in column {
                let mut page = page.ctx(what)?;
                if split {
                    page = split_page(page).ctx(what)?;
                }
                compressed.push(
                    compress_page(page, codec)
                        .ctx(|| format!("compressing column {}", ptype.name()))?,
                );
            }
            out.push(compressed);
        }
        Ok(out)
    }

    /// Write `df` as one row group per chunk; returns the rows written. The columns of a large
    /// row group are encoded and compressed on parallel threads.
    fn write<W: std::io::Write>(
        &self,
        writer: &mut polars::io::parquet::write::BatchedWriter<W>,
        df: &DataFrame,
        reserve: &dyn Fn(usize),
    ) -> Result<u64> {
        let mut rows = 0u64;
        for batch in df.iter_chunks(CompatLevel::newest(), false) {
            if batch.is_empty() {
                continue;
            }
            let arrays = batch.columns();
            // Enough cells to pay for threads: the columns shared out over the cores.
            let threads = if batch.len() * arrays.len() >= 1 << 17 {
                cores().min(arrays.len())
            } else {
                1
            };
            let per_column = par_map(
                arrays.iter().zip(&self.columns).collect(),
                threads,
                |(a, c)| self.column(a, c),
            );
            let mut pages = Vec::with_capacity(self.columns.len());
            for c in per_column {
                pages.extend(c?);
            }
            // The data pages' bytes (headers and dictionaries are small next to them).
            reserve(
                pages
                    .iter()
                    .flatten()
                    .map(|p| match p {
                        pq::CompressedPage::Data(d) => d.compressed_size() + 64,
                        pq::CompressedPage::Dict(_) => 0,
                    })
                    .sum(),
            );
            writer
                .write_row_group(batch.len() as u64, &pages)
                .ctx(|| "writing a row group".into())?;
            rows += batch.len() as u64;
        }
        Ok(rows)
    }
}

thread_local! {
    /// This thread's zstd contexts, one per level used (pages', the float trial's).
    static ZSTD: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `src` compressed at zstd `level` with this thread's context for that level, made on first
/// use: a fresh context per call costs more than compressing a small page or sample.
pub(crate) fn zstd_compress(level: i32, src: &[u8]) -> std::io::Result<Vec<u8>> {
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        let i = match z.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                z.push((level, zstd::bulk::Compressor::new(level)?));
                z.len() - 1
            }
        };
        z[i].1.compress(src)
    })
}

/// `src` as one LZ4 block (the LZ4_RAW codec) in LZ4's fast mode. Its higher levels write
/// 5–12% fewer bytes of the simulator's decimal kline columns (level 2) at half the speed or
/// less (130–260 MB/s; level 3: 40–80 MB/s), which made them a quarter to a third of
/// `optimize`'s CPU; every level's output inflates at the same speed.
pub(crate) fn lz4_compress(src: &[u8]) -> std::io::Result<Vec<u8>> {
    lz4::block::compress(src, Some(lz4::block::CompressionMode::DEFAULT), false)
}

/// How one column chunk's pages are compressed: with the file's codec, LZ4 for the float
/// pages [`floats::choose`] gave it and every page of a [`FloatEncoding::Plain`] file but text.
#[derive(Clone, Copy)]
enum PageCodec {
    File(pq::CompressionOptions),
    Lz4,
}

/// A page compressed with this thread's zstd context ([`zstd_compress`]), or as one LZ4 block:
/// Polars' `compress` makes a context for every page and zeroes an output buffer of the bound's
/// size first, which for a small page costs more than compressing it. The same level and codec,
/// the same bytes (zstd's output does not depend on the context's history). Other codecs, and
/// pages other than V1 data pages and dictionaries, go through Polars.
fn compress_page(page: pq::Page, codec: PageCodec) -> PolarsResult<pq::CompressedPage> {
    use polars_parquet::parquet::CowBuffer;
    use polars_parquet::parquet::compression::Compression;
    use polars_parquet::parquet::page::{CompressedDataPage, CompressedDictPage, DataPageHeader};
    let lz4 = (pq::CompressionOptions::Lz4Raw, Compression::Lz4Raw);
    let (options, compression) = match codec {
        PageCodec::File(o @ pq::CompressionOptions::Zstd(_)) => (o, Compression::Zstd),
        PageCodec::File(o) => return Ok(pq::compress(page, Vec::new(), o)?),
        PageCodec::Lz4 => lz4,
    };
    let compress = |src: &[u8]| -> PolarsResult<Vec<u8>> {
        match codec {
            PageCodec::File(pq::CompressionOptions::Zstd(level)) => {
                let level = level.map(|v| v.compression_level()).unwrap_or_default();
                zstd_compress(level, src).map_err(|e| polars_err!(ComputeError: "zstd: {e}"))
            }
            _ => lz4_compress(src).map_err(|e| polars_err!(ComputeError: "lz4: {e}")),
        }
    };
    match page {
        pq::Page::Data(p) => {
            if !matches!(p.header(), DataPageHeader::V1(_)) {
                return Ok(pq::compress(pq::Page::Data(p), Vec::new(), options)?);
            }
            let out = compress(p.buffer())?;
            let rows = p
                .num_rows()
                .ok_or_else(|| polars_err!(ComputeError: "a data page without its row count"))?;
            Ok(pq::CompressedPage::Data(CompressedDataPage::new(
                p.header().clone(),
                CowBuffer::Owned(out),
                compression,
                p.buffer().len(),
                p.descriptor.clone(),
                rows,
            )))
        }
        pq::Page::Dict(d) => {
            let out = compress(&d.buffer)?;
            Ok(pq::CompressedPage::Dict(CompressedDictPage::new(
                CowBuffer::Owned(out),
                compression,
                d.buffer.len(),
                d.num_values,
                d.is_sorted,
            )))
        }
    }
}

/// `f` over `items` on up to `threads` threads (this one included), the results in the items'
/// order. Each thread takes the next item as it finishes one, so items of very different costs
/// still share the work evenly; an item is dropped as soon as `f` is done with it.
pub fn par_map<T: Send, U: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let work = || {
        let mut done = Vec::new();
        loop {
            let next = queue.lock().expect("not poisoned").next();
            let Some((i, item)) = next else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut done: Vec<(usize, U)> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut done = work();
        for h in others {
            done.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, u)| u).collect()
}

/// The cores this process may use, asked once (`available_parallelism` reads cgroup files on
/// Linux: a small file's write, or a job's unit, must not pay for that).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A PLAIN float data page re-encoded BYTE_STREAM_SPLIT: the values after the definition levels
/// transposed into byte streams, the header's encoding changed; statistics stay as they are.
fn split_page(page: pq::Page) -> PolarsResult<pq::Page> {
    use polars_parquet::parquet::page::{DataPage, DataPageHeader, FormatEncoding};
    let pq::Page::Data(p) = page else {
        return Ok(page);
    };
    let DataPageHeader::V1(mut header) = p.header().clone() else {
        polars_bail!(ComputeError: "byte-stream-split pages are written as V1 pages");
    };
    let buf = p.buffer();
    // V1: optional columns start with their RLE definition levels, length-prefixed (a written
    // page's descriptor leaves `max_def_level` at 0; the field's repetition tells).
    let optional = p.descriptor.primitive_type.field_info.repetition
        == polars_parquet::parquet::schema::Repetition::Optional;
    let levels = if optional {
        let len = buf
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .filter(|len| 4 + len <= buf.len());
        match len {
            Some(len) => 4 + len,
            None => polars_bail!(ComputeError: "a float page shorter than its definition levels"),
        }
    } else {
        0
    };
    if (buf.len() - levels) % 8 != 0 {
        polars_bail!(ComputeError: "a PLAIN double page of {} bytes", buf.len() - levels);
    }
    let mut out = vec![0u8; buf.len()];
    out[..levels].copy_from_slice(&buf[..levels]);
    floats::split_bytes(&buf[levels..], &mut out[levels..]);
    header.encoding = FormatEncoding::BYTE_STREAM_SPLIT;
    let rows = p.num_rows().unwrap_or(header.num_values as usize);
    Ok(pq::Page::Data(DataPage::new(
        DataPageHeader::V1(header),
        polars_parquet::parquet::CowBuffer::Owned(out),
        p.descriptor.clone(),
        rows,
    )))
}

impl ParquetBuffer {
    /// Start a file with `schema`.
    pub fn new(schema: &Schema, opts: &ParquetOptions) -> Result<ParquetBuffer> {
        let sink = SharedBuf::default();
        let mut writer = writer(sink.clone(), opts)?
            .batched(schema)
            .ctx(|| "starting a Parquet file".into())?;
        let pages = PageEncoder::new(&mut writer, schema, opts)?;
        Ok(ParquetBuffer {
            sink,
            writer,
            pages,
            rows: 0,
        })
    }

    /// Append `df` as one row group per chunk (one chunk per column, as `to_frame` builds it).
    pub fn write(&mut self, df: &DataFrame) -> Result<()> {
        let sink = &self.sink;
        self.rows += self
            .pages
            .write(&mut self.writer, df, &|n| sink.reserve(n))?;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The finished file's bytes.
    fn bytes(self, path: &str) -> Result<(Bytes, u64)> {
        self.writer
            .finish()
            .ctx(|| format!("finishing Parquet {path}"))?;
        drop(self.writer);
        let bytes = std::sync::Arc::try_unwrap(self.sink.0)
            .ok()
            .and_then(|m| m.into_inner().ok())
            .ok_or_else(|| {
                Error::Shared(shared::Error::internal(format!(
                    "{path}: writer still held"
                )))
            })?;
        Ok((Bytes::from(bytes), self.rows))
    }

    /// Finish the file: its bytes and the manifest output for `path` (not yet written there).
    pub fn finish(self, path: &str) -> Result<(Bytes, Output)> {
        let (bytes, rows) = self.bytes(path)?;
        let out = output(path, &bytes, sha256_hex(&bytes), rows);
        Ok((bytes, out))
    }

    /// Finish the file and put it at `path` in `store`, hashing it on a thread of its own
    /// meanwhile (the hash is not on the path to the store); the manifest output.
    pub async fn finish_to(self, store: &Store, path: &str) -> Result<Output> {
        let (bytes, rows) = self.bytes(path)?;
        let hashing = {
            let bytes = bytes.clone();
            tokio::task::spawn_blocking(move || sha256_hex(&bytes))
        };
        store.put(path, bytes.clone()).await?;
        let sha = hashing
            .await
            .map_err(|e| Error::Shared(shared::Error::internal(format!("{path}: hashing: {e}"))))?;
        Ok(output(path, &bytes, sha, rows))
    }
}

fn output(path: &str, bytes: &[u8], sha256: String, rows: u64) -> Output {
    Output {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256,
        rows: Some(rows),
        time_span: None,
    }
}

/// Streams row groups of one Parquet file into a local temp file, then uploads it atomically:
/// for outputs too large to encode in memory at once.
pub struct ParquetSink {
    tmp: tempfile_path::TempPath,
    // Buffered: the writer emits its thrift metadata field by field, a write call each.
    writer: polars::io::parquet::write::BatchedWriter<std::io::BufWriter<std::fs::File>>,
    pages: PageEncoder,
    rows: u64,
}

mod tempfile_path {
    //! A temp file path removed on drop (no extra dependency).
    use std::path::{Path, PathBuf};

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        /// A new, empty file in `dir`, removed on drop.
        pub fn create(dir: &Path) -> std::io::Result<(TempPath, std::fs::File)> {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            TempPath::create_at(dir, now)
        }

        /// [`TempPath::create`] at time `now`. The name is the process id, a counter of this
        /// process's temp files and the time (against a reused process id): the time alone
        /// gave two sinks made in the same clock tick by two units one name, and one's drop
        /// removed the other's file. `create_new` never truncates a file that is not ours (nor
        /// is one removed when the creation fails).
        fn create_at(dir: &Path, now: u128) -> std::io::Result<(TempPath, std::fs::File)> {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!(".frames-{}-{n}-{now:x}.parquet.tmp", std::process::id());
            let path = dir.join(name);
            let file = std::fs::File::create_new(&path)?;
            Ok((TempPath(path), file))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn temp_files_made_in_one_clock_tick_are_each_their_own() {
            let dir = std::env::temp_dir();
            let (a, _) = TempPath::create_at(&dir, 42).unwrap();
            let (b, _) = TempPath::create_at(&dir, 42).unwrap();
            assert_ne!(a.0, b.0);
            // Dropping one removes its file and leaves the other in place.
            let (a_path, b_path) = (a.0.clone(), b.0.clone());
            drop(a);
            assert!(!a_path.exists());
            assert!(b_path.exists());
            drop(b);
            assert!(!b_path.exists());
        }
    }
}

impl ParquetSink {
    /// Start a file with `schema`.
    pub fn new(schema: &Schema, opts: &ParquetOptions) -> Result<ParquetSink> {
        let dir = shared::hygiene::temp_dir();
        let (tmp, file) = tempfile_path::TempPath::create(&dir).map_err(|e| {
            Error::Shared(shared::Error::Io {
                context: format!("creating a temp file in {}", dir.display()),
                source: e,
            })
        })?;
        let mut writer = writer(std::io::BufWriter::with_capacity(1 << 20, file), opts)?
            .batched(schema)
            .ctx(|| "starting a Parquet file".into())?;
        let pages = PageEncoder::new(&mut writer, schema, opts)?;
        Ok(ParquetSink {
            tmp,
            writer,
            pages,
            rows: 0,
        })
    }

    /// Append `df` as one row group per chunk, with [`ParquetBuffer`]'s page encoding.
    pub fn write(&mut self, df: &DataFrame) -> Result<()> {
        self.rows += self.pages.write(&mut self.writer, df, &|_| {})?;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Finish the file and put it at `path`; returns the manifest output.
    pub async fn finish(self, store: &Store, path: &str) -> Result<Output> {
        self.writer
            .finish()
            .ctx(|| format!("finishing Parquet {path}"))?;
        let tmp = self.tmp;
        let (sha, size) = {
            let p = tmp.0.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
                use std::io::Read;
                let mut f = std::fs::File::open(&p)?;
                let mut h = shared::checksum::Hasher::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut size = 0u64;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    size += n as u64;
                }
                Ok((h.finish_hex(), size))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| {
                Error::Shared(shared::Error::Io {
                    context: format!("hashing {}", tmp.0.display()),
                    source: e,
                })
            })?
        };
        store.put_file(path, &tmp.0).await?;
        Ok(Output {
            path: path.to_string(),
            size,
            sha256: sha,
            rows: Some(self.rows),
            time_span: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::formats::format_of;
    use shared::paths::{DataType as Dt, Dataset, Market};

    #[test]
    fn the_parallel_map_keeps_the_items_order_whatever_their_cost() {
        // Items of very different costs, more and fewer than the threads, and one thread.
        for n in [0usize, 1, 2, 3, 17] {
            for threads in [1, 2, 4] {
                let items: Vec<usize> = (0..n).collect();
                let got = par_map(items, threads, |i| {
                    let spin: u64 = (0..(i as u64 % 5) * 10_000).sum();
                    (i, spin)
                });
                assert_eq!(
                    got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                    (0..n).collect::<Vec<_>>()
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn frames_keep_the_normalized_types_through_parquet() {
        let ds = Dataset::new(Market::Um, Dt::FundingRate, None).unwrap();
        let format = format_of(&ds);
        let file = shared::paths::ArchiveFile::new(
            ds,
            "BTCUSDT",
            shared::paths::FileDate::Month {
                year: 2020,
                month: 1,
            },
        );
        let mut cols = Columns::new(format);
        let mut p = shared::formats::Parser::new(format, "t.csv", &file);
        p.feed(
            b"calc_time,funding_interval_hours,last_funding_rate\n1577836800000,8,0.00010000\n",
            &mut cols,
        )
        .unwrap();
        p.finish(&mut cols).unwrap();
        let mut df = to_frame(cols).unwrap();
        assert_eq!(df.column("calc_time").unwrap().dtype(), &time_dtype());
        let store = Store::open("memory://").unwrap();
        let out = write_parquet(&store, "x/p.parquet", &mut df, &ParquetOptions::default())
            .await
            .unwrap();
        assert_eq!(out.rows, Some(1));
        let back = read_parquet(&store, "x/p.parquet").await.unwrap().unwrap();
        assert_eq!(back.schema(), df.schema());
        assert_eq!(
            back.column("calc_time")
                .unwrap()
                .cast(&DataType::Int64)
                .unwrap()
                .i64()
                .unwrap()
                .get(0),
            Some(1_577_836_800_000_000)
        );
        assert!(
            read_parquet(&store, "x/none.parquet")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn nan_marked_floats_move_in_as_nulls_and_come_back_from_parquet_as_nulls() {
        let values = vec![1.5, f64::NAN, -0.0, f64::NAN, 2.0];
        let ptr = values.as_ptr();
        let c = nan_null_column("x", values);
        let ca = c.f64().unwrap();
        // The vector became the array's buffer.
        assert_eq!(ca.downcast_iter().next().unwrap().values().as_ptr(), ptr);
        let want = vec![Some(1.5), None, Some(-0.0), None, Some(2.0)];
        assert_eq!(ca.iter().collect::<Vec<_>>(), want);
        assert_eq!(ca.null_count(), 2);
        // No NaN: no mask at all.
        let c = nan_null_column("y", vec![0.0, 3.0]);
        assert!(
            c.f64()
                .unwrap()
                .downcast_iter()
                .all(|a| a.validity().is_none())
        );
        // Written and read back: nulls, not NaN values.
        let mut df = DataFrame::new(
            5,
            vec![nan_null_column(
                "x",
                vec![1.5, f64::NAN, -0.0, f64::NAN, 2.0],
            )],
        )
        .unwrap();
        let bytes = parquet_bytes(&mut df, &ParquetOptions::default()).unwrap();
        let back = read_parquet_bytes(bytes.into(), "t.parquet").unwrap();
        let got: Vec<Option<f64>> = back.column("x").unwrap().f64().unwrap().iter().collect();
        assert_eq!(got, want);
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;
    use shared::formats::{OutKind, Parser, format_of};
    use shared::paths::{ArchiveFile, Interval};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/binance");

    /// The archive file a fixture was cut from, from its folder and name.
    fn fixture_file(market_dir: &str, name: &str) -> ArchiveFile {
        let market = match market_dir {
            "spot" => "spot",
            "um" => "futures/um",
            "cm" => "futures/cm",
            _ => "option",
        };
        let stem = name.strip_suffix(".csv").unwrap();
        let mut it = stem.splitn(3, '-');
        let (sym, middle, date) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let period = if date.len() == 7 { "monthly" } else { "daily" };
        let key = if middle.parse::<Interval>().is_ok() {
            format!("data/{market}/{period}/klines/{sym}/{middle}/{stem}.zip")
        } else {
            format!("data/{market}/{period}/{middle}/{sym}/{stem}.zip")
        };
        ArchiveFile::parse_key(&key).unwrap()
    }

    #[test]
    fn pages_compress_to_the_bytes_polars_gives() {
        // Doubles (with nulls) and timestamps, at the default level and at 1; the thread's
        // context is reused from one page to the next, which must not change a byte.
        let values: Vec<Option<f64>> = (0..20_000)
            .map(|i| (i % 7 != 0).then(|| (i as f64).sin() * 1e3))
            .collect();
        let times: Vec<i64> = (0..20_000)
            .map(|i| 1_700_000_000_000_000 + i * 60_000_000)
            .collect();
        let df = DataFrame::new(
            values.len(),
            vec![
                Column::new("x".into(), values.as_slice()),
                Column::new("t".into(), times.as_slice()),
            ],
        )
        .unwrap();
        for level in [None, Some(1)] {
            let buf = ParquetBuffer::new(
                df.schema(),
                &ParquetOptions {
                    zstd_level: level,
                    ..ParquetOptions::default()
                },
            )
            .unwrap();
            let enc = &buf.pages;
            let batch = df.iter_chunks(CompatLevel::newest(), false).next().unwrap();
            for (array, (ptype, _)) in batch.columns().iter().zip(&enc.columns) {
                for encoding in [pq::Encoding::Plain, pq::Encoding::DeltaBinaryPacked] {
                    if encoding == pq::Encoding::DeltaBinaryPacked && ptype.name() == "x" {
                        continue;
                    }
                    let pages = || {
                        pq::array_to_columns(array, ptype.clone(), enc.options, &[encoding])
                            .unwrap()
                            .into_iter()
                            .flatten()
                            .map(|p| p.unwrap())
                            .collect::<Vec<_>>()
                    };
                    for (a, b) in pages().into_iter().zip(pages()) {
                        let ours =
                            compress_page(a, PageCodec::File(enc.options.compression)).unwrap();
                        let theirs = pq::compress(b, Vec::new(), enc.options.compression).unwrap();
                        match (ours, theirs) {
                            (pq::CompressedPage::Data(mut o), pq::CompressedPage::Data(mut t)) => {
                                assert_eq!(o.uncompressed_size(), t.uncompressed_size());
                                assert_eq!(&**o.slice_mut(), &**t.slice_mut(), "{level:?}");
                            }
                            _ => panic!("data pages expected"),
                        }
                    }
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_fixture_round_trips_through_parquet_with_normalized_types() {
        let store = Store::open("memory://").unwrap();
        let mut seen = 0;
        for market_dir in ["spot", "um", "cm", "option"] {
            let Ok(dir) = std::fs::read_dir(format!("{FIXTURES}/{market_dir}")) else {
                continue;
            };
            for e in dir {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                if !name.ends_with(".csv") {
                    continue;
                }
                let file = fixture_file(market_dir, &name);
                let format = format_of(&file.dataset);
                let mut cols = Columns::new(format);
                let mut p = Parser::new(format, &name, &file);
                p.feed(&std::fs::read(&path).unwrap(), &mut cols).unwrap();
                p.finish(&mut cols).unwrap();
                let rows = cols.len();
                assert!(rows > 0, "{name}");
                let mut df = to_frame(cols).unwrap();
                for (col, kind) in format.output_fields() {
                    let want = match kind {
                        OutKind::I64 => DataType::Int64,
                        OutKind::F64 | OutKind::OptF64 => DataType::Float64,
                        OutKind::Bool => DataType::Boolean,
                        OutKind::Str => DataType::String,
                        OutKind::TimeUs => time_dtype(),
                    };
                    assert_eq!(df.column(col).unwrap().dtype(), &want, "{name}: {col}");
                }
                let p = format!("t/{name}.parquet");
                write_parquet(&store, &p, &mut df, &ParquetOptions::default())
                    .await
                    .unwrap();
                let back = read_parquet(&store, &p).await.unwrap().unwrap();
                assert!(
                    back.equals_missing(&df),
                    "{name}: the Parquet round trip changed the frame"
                );
                // The same rows through ParquetBuffer's own page encoding (delta-packed
                // integers), in row groups of 7 rows.
                let buffer = || {
                    let mut buf = ParquetBuffer::new(
                        df.schema(),
                        &ParquetOptions {
                            zstd_level: Some(1),
                            ..ParquetOptions::default()
                        },
                    )
                    .unwrap();
                    let mut off = 0;
                    while off < df.height() {
                        let mut part = df.slice(off as i64, 7);
                        part.rechunk_mut();
                        buf.write(&part).unwrap();
                        off += 7;
                    }
                    buf
                };
                let (bytes, out) = buffer().finish("x").unwrap();
                assert_eq!(out.rows, Some(rows as u64));
                assert_eq!(out.sha256, sha256_hex(&bytes));
                // Put while hashing: the same bytes in the store, the same output.
                let put = buffer().finish_to(&store, "t/y").await.unwrap();
                let stored = store.get_opt("t/y").await.unwrap().unwrap();
                assert_eq!(stored, bytes, "{name}");
                assert_eq!(
                    (put.sha256.as_str(), put.size),
                    (out.sha256.as_str(), out.size)
                );
                assert_eq!((put.path.as_str(), put.rows), ("t/y", out.rows));
                let back = read_parquet_bytes(bytes, "x").unwrap();
                assert!(
                    back.equals_missing(&df),
                    "{name}: ParquetBuffer changed the frame"
                );
                assert_eq!(back.height(), rows);
                seen += 1;
            }
        }
        assert_eq!(seen, 15, "every CSV fixture");
    }
}
