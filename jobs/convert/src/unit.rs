//! Converting one CSV — a staged file, memory-mapped, or a zip's entry inflated into memory (a
//! temp file when large) — on a blocking thread: parse it, route rows to
//! their day partitions (a daily archive is one partition; a monthly archive is split by each
//! row's UTC day and a day is closed once the stream has moved past it), and encode, compress and
//! hash each day's row groups (on the parser's thread for a small file, else on partition-writer
//! threads while parsing goes on). Only
//! when the whole file parsed do partitions appear at their final paths and the unit get
//! recorded: a malformed row fails the unit and leaves what was converted before untouched.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};
use frames::polars::prelude::DataFrame;
use frames::{ParquetBuffer, ParquetOptions, PolarsContext};
use shared::formats::{ColumnData, Columns, Format, Parser, format_of};
use shared::job::{JobName, Stamp};
use shared::manifest::{Output, UnitStatus};
use shared::paths::FileDate;
use shared::{Context, Error, Result};

use crate::{Source, Spec, Unit};

/// What a converted unit produced.
#[derive(Debug, Clone, Default)]
pub struct UnitResult {
    pub rows: u64,
    pub dropped_invalid: u64,
    pub partitions: u64,
    pub bytes: u64,
}

/// A unit's inputs as its manifest entry records them: the staged CSV's or the zip's hash.
pub(crate) fn inputs(from: Source, sha: &str) -> BTreeMap<String, String> {
    [(from.input_key().to_string(), sha.to_string())].into()
}

/// A CSV inflated from a zip is inflated whole into memory up to this size; a larger one (a
/// liquid symbol's month of trades) is streamed into a temp file and parsed memory-mapped like
/// a staged CSV.
const IN_MEMORY_CSV: usize = 256 << 20;

/// CSVs below this size are encoded and written on the parser's thread, larger ones by writer
/// threads while parsing goes on (a month of a symbol's 1m klines is ≈ 6 MiB).
const INLINE_BELOW: u64 = 16 << 20;

pub(crate) async fn convert(
    spec: &Spec,
    ctx: &Context,
    stamp: &Stamp,
    u: Unit,
) -> Result<UnitResult> {
    let key = u.file.key();
    let r = convert_inner(spec, ctx, &u).await;
    match r {
        Ok((outputs, res)) => {
            // Outputs of an earlier conversion of this unit that it no longer produces.
            let now: BTreeSet<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
            for old in &u.previous {
                if !now.contains(old.as_str()) {
                    ctx.store.delete(old).await?;
                }
            }
            let mut entry =
                stamp.entry(key, UnitStatus::Done, inputs(u.from, &u.input_sha), outputs);
            entry.detail = Some(format!(
                "rows={} dropped_invalid={}",
                res.rows, res.dropped_invalid
            ));
            u.writer.record(entry).await?;
            Ok(res)
        }
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(e) => {
            let mut entry = stamp.entry(
                key,
                UnitStatus::Failed,
                inputs(u.from, &u.input_sha),
                vec![],
            );
            entry.detail = Some(e.to_string());
            u.writer.record(entry).await?;
            Err(e)
        }
    }
}

async fn convert_inner(spec: &Spec, ctx: &Context, u: &Unit) -> Result<(Vec<Output>, UnitResult)> {
    let source = match u.from {
        Source::Csv => csv_source(ctx, &u.input_path).await?,
        Source::Raw => Acquired::Zip(
            shared::unzip::LocalZip::open(
                &ctx.store,
                &u.input_path,
                &u.input_sha,
                &shared::hygiene::temp_dir(),
                &ctx.cancel,
            )
            .await?,
        ),
    };
    // This unit's own staging folder: one folder per unit, not one per day (each folder is an
    // inode to create and remove), and a failed unit clears only its own staged days.
    let staging = format!(
        "_staging/{}/{}/{}{}",
        ctx.run_id,
        JobName::CONVERT,
        u.file.dataset.parquet_symbol_dir(&u.file.symbol),
        u.file.date
    );
    let env = Env {
        handle: tokio::runtime::Handle::current(),
        store: ctx.store.clone(),
        opts: ParquetOptions {
            row_group_rows: Some(spec.row_group_rows),
            zstd_level: Some(spec.zstd_level),
            // Daily partitions are re-encoded by `optimize`: no per-row-group choosing here.
            floats: frames::FloatEncoding::Plain,
        },
        row_group_rows: spec.row_group_rows,
        staging: staging.clone(),
        inline_below: INLINE_BELOW,
    };
    let cancel = ctx.cancel.clone();
    let file = u.file.clone();
    let input_path = u.input_path.clone();
    let input_sha = u.input_sha.clone();
    let chunk = spec.read_chunk;
    let threads = spec.threads;
    let limits = spec.limits;
    let store = ctx.store.clone();
    let result = tokio::task::spawn_blocking(move || {
        let input = source.open(&input_path, &input_sha, &limits, &cancel)?;
        let (mut written, res) = convert_file(
            &env,
            &file,
            &input_path,
            input.view(),
            chunk,
            threads,
            &cancel,
        )?;
        // The whole file parsed: a local store's staged partitions move into place here, on
        // this thread (a month's 30 renames through the runtime were 30 hops to its blocking
        // pool); another store's below.
        for w in &mut written {
            if w.at != w.output.path && store.rename_blocking(&w.at, &w.output.path)? {
                w.at.clone_from(&w.output.path);
            }
        }
        Ok((written, res))
    })
    .await
    .map_err(|e| Error::Io {
        context: format!("converting {}", u.input_path),
        source: std::io::Error::other(e.to_string()),
    })?;
    let (written, res) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = delete_prefix(ctx, &staging).await;
            return Err(e);
        }
    };
    // Move the staged partitions not moved yet into place (a daily archive's single partition
    // was written in place, atomically, once the file had parsed).
    let mut outputs = Vec::new();
    for w in written {
        let mut out = w.output;
        if w.at != out.path {
            ctx.store.rename(&w.at, &out.path).await?;
        }
        out.time_span = w.time_span;
        outputs.push(out);
    }
    Ok((outputs, res))
}

/// A unit's input, local and seekable, before it is opened on the blocking thread.
enum Acquired {
    /// A staged CSV file (in place on a local store, else a temp copy).
    Csv(std::path::PathBuf, Option<tempfile::NamedTempFile>),
    Zip(shared::unzip::LocalZip),
}

/// An opened CSV: a file to map (with the temp file to delete after, if it is one), or bytes
/// in memory.
enum Opened {
    File {
        file: std::fs::File,
        _tmp: Option<tempfile::NamedTempFile>,
    },
    Mem(Vec<u8>),
}

impl Opened {
    fn view(&self) -> Input<'_> {
        match self {
            Opened::File { file, .. } => Input::File(file),
            Opened::Mem(v) => Input::Mem(v),
        }
    }
}

/// A staged CSV as a local file: in place on a local store, copied to a temp file otherwise.
async fn csv_source(ctx: &Context, csv_path: &str) -> Result<Acquired> {
    if let Some(p) = ctx.store.local_path(csv_path) {
        return Ok(Acquired::Csv(p, None));
    }
    let tmp =
        tempfile::NamedTempFile::new_in(shared::hygiene::temp_dir()).map_err(|e| Error::Io {
            context: "creating a temp file".into(),
            source: e,
        })?;
    ctx.store
        .download_to(csv_path, tmp.path())
        .await?
        .ok_or_else(|| missing_csv(csv_path))?;
    Ok(Acquired::Csv(tmp.path().to_path_buf(), Some(tmp)))
}

impl Acquired {
    /// Open the CSV (blocking): a staged file as it is; a zip checked against its recorded
    /// sha256 and its entry inflated within `limits`.
    fn open(
        self,
        path: &str,
        sha: &str,
        limits: &shared::unzip::Limits,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Opened> {
        match self {
            Acquired::Csv(local, tmp) => {
                let f = std::fs::File::open(&local).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => missing_csv(path),
                    _ => Error::Io {
                        context: format!("opening {path}"),
                        source: e,
                    },
                })?;
                Ok(Opened::File { file: f, _tmp: tmp })
            }
            Acquired::Zip(zip) => {
                zip.verify(path, sha)?;
                let io = |e: std::io::Error| Error::Io {
                    context: format!("reading {path}"),
                    source: e,
                };
                let open = || std::fs::File::open(&zip.path).map_err(io);
                let f = open()?;
                let len = f.metadata().map_err(io)?.len();
                let reader =
                    |f| std::io::BufReader::with_capacity(shared::unzip::buffer_for(len), f);
                if let Some(csv) =
                    shared::unzip::inflate_csv(reader(f), path, limits, IN_MEMORY_CSV as u64)?
                {
                    return Ok(Opened::Mem(csv));
                }
                // Too large for memory: streamed into a temp file.
                let f = open()?;
                let mut out =
                    shared::unzip::Spill::new(IN_MEMORY_CSV, 1 << 20, shared::hygiene::temp_dir());
                shared::unzip::extract_csv(reader(f), path, limits, &mut out, false, &|| {
                    cancel.is_cancelled()
                })?;
                match out.finish().map_err(|e| Error::Io {
                    context: format!("inflating {path} into a temp file"),
                    source: e,
                })? {
                    shared::unzip::Inflated::Mem(v) => Ok(Opened::Mem(v)),
                    shared::unzip::Inflated::File(tmp) => {
                        let f = tmp.reopen().map_err(io)?;
                        Ok(Opened::File {
                            file: f,
                            _tmp: Some(tmp),
                        })
                    }
                }
            }
        }
    }
}

/// The CSV's bytes as the parser reads them.
#[derive(Clone, Copy)]
enum Input<'a> {
    File(&'a std::fs::File),
    Mem(&'a [u8]),
}

/// A window of an [`Input`].
enum View<'a> {
    Map(memmap2::Mmap),
    Mem(&'a [u8]),
}

impl std::ops::Deref for View<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            View::Map(m) => m,
            View::Mem(b) => b,
        }
    }
}

impl<'a> Input<'a> {
    fn len(&self) -> std::io::Result<u64> {
        match self {
            Input::File(f) => Ok(f.metadata()?.len()),
            Input::Mem(b) => Ok(b.len() as u64),
        }
    }

    /// Bytes `start..end`.
    fn view(&self, start: u64, end: u64) -> std::io::Result<View<'a>> {
        match *self {
            Input::File(f) => {
                // SAFETY: the CSV is a staged or temp file this job only reads; were something
                // to truncate it meanwhile, reading the mapping could fault.
                let map = unsafe {
                    memmap2::MmapOptions::new()
                        .offset(start)
                        .len((end - start) as usize)
                        .map(f)
                }?;
                let _ = map.advise(memmap2::Advice::Sequential);
                Ok(View::Map(map))
            }
            Input::Mem(b) => Ok(View::Mem(&b[start as usize..end as usize])),
        }
    }
}

fn missing_csv(path: &str) -> Error {
    Error::UpstreamMissing {
        path: path.to_string(),
        upstream: format!("{} --force", JobName::EXTRACT),
    }
}

async fn delete_prefix(ctx: &Context, prefix: &str) -> Result<()> {
    for (p, _) in ctx.store.list(prefix).await? {
        ctx.store.delete(&p).await?;
    }
    Ok(())
}

/// What the blocking half needs from the job.
struct Env {
    handle: tokio::runtime::Handle,
    store: shared::Store,
    opts: ParquetOptions,
    row_group_rows: usize,
    staging: String,
    /// CSVs smaller than this are written on the parser's thread.
    inline_below: u64,
}

/// One partition written: where it is now (`at`), and its output with the final path.
struct Written {
    day: NaiveDate,
    at: String,
    output: Output,
    time_span: Option<[i64; 2]>,
}

/// Work for a partition writer. A day's messages all go to the same writer, in order.
enum Msg {
    /// Append a row group.
    Rows(NaiveDate, DataFrame),
    /// The day is complete: finish its file and put it at `at`.
    Close {
        day: NaiveDate,
        at: String,
        final_path: String,
        time_span: Option<[i64; 2]>,
    },
}

/// The blocking half: parse on this thread in `chunk`-sized slices of the CSV, route rows to
/// their days, and encode, compress and hash their row groups: on this thread for a CSV under
/// `env.inline_below`, else on partition-writer threads (a day always to the same one) while
/// parsing goes on, a monthly archive's days in parallel.
fn convert_file(
    env: &Env,
    file: &shared::paths::ArchiveFile,
    csv_path: &str,
    f: Input<'_>,
    chunk: usize,
    threads: usize,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(Vec<Written>, UnitResult)> {
    let format = format_of(&file.dataset);
    let empty = frames::to_frame(Columns::new(format)).map_err(Error::from)?;
    let schema = empty.schema().as_ref().clone();
    let parse_threads = threads.max(1);
    let len = f.len().map_err(|e| Error::Io {
        context: format!("reading {csv_path}"),
        source: e,
    })?;
    // A small file is written on this thread: a writer thread per unit, and a wake-up per
    // message, cost more than its encoding (a day of metrics is 288 rows; a month of funding,
    // 90). The job converts files `--concurrency` at a time on every core anyway.
    let writers = if len < env.inline_below {
        0
    } else {
        match file.date {
            FileDate::Day(_) => 1,
            FileDate::Month { .. } => threads.max(1),
        }
    };
    std::thread::scope(|scope| {
        let mut txs = Vec::with_capacity(writers);
        let mut joins = Vec::with_capacity(writers);
        for _ in 0..writers {
            // Two row groups in flight per writer bound memory; the parser waits beyond that.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(2);
            txs.push(tx);
            let schema = &schema;
            joins.push(scope.spawn(move || write_partitions(env, schema, rx)));
        }
        let sink = if writers == 0 {
            Sink::Inline(PartitionWriter::new(env, &schema))
        } else {
            Sink::Threads(txs)
        };
        let mut router = Router {
            file,
            csv_path,
            format,
            env,
            sink,
            open: BTreeMap::new(),
            closed: BTreeMap::new(),
            late: BTreeMap::new(),
            rows: 0,
        };
        let parsed = router
            .parse(f, chunk, parse_threads, cancel)
            .and_then(|stats| router.finish().map(|()| stats));
        let late = std::mem::take(&mut router.late);
        let closed = std::mem::take(&mut router.closed);
        let rows = router.rows;
        let mut written = match router.sink {
            Sink::Inline(w) => w.done,
            // Closing the channels lets the writers finish and return.
            Sink::Threads(txs) => {
                drop(txs);
                Vec::new()
            }
        };
        let mut writer_err = None;
        for j in joins {
            match j.join() {
                Ok(Ok(w)) => written.extend(w),
                Ok(Err(e)) => writer_err = writer_err.or(Some(e)),
                Err(_) => {
                    writer_err = writer_err.or(Some(Error::internal(format!(
                        "{csv_path}: a partition writer panicked"
                    ))))
                }
            }
        }
        // A writer's failure is the cause of the parser's failed send: report it first.
        if let Some(e) = writer_err {
            return Err(e);
        }
        let stats = parsed?;
        written.sort_by_key(|w| w.day);
        debug_assert_eq!(written.len(), closed.len());
        for (day, rows_late) in late {
            merge_late(env, format.time_field, &mut written, day, rows_late)?;
        }
        let res = UnitResult {
            rows,
            dropped_invalid: stats.dropped_invalid,
            partitions: written.len() as u64,
            bytes: written.iter().map(|w| w.output.size).sum(),
        };
        Ok((written, res))
    })
}

/// What writes a unit's partitions: one in-memory Parquet file per open day, finished and
/// put into the store when its day closes. Runs on its own thread, or inline on the parser's.
struct PartitionWriter<'a> {
    env: &'a Env,
    schema: &'a frames::polars::prelude::Schema,
    open: BTreeMap<NaiveDate, ParquetBuffer>,
    done: Vec<Written>,
}

impl<'a> PartitionWriter<'a> {
    fn new(env: &'a Env, schema: &'a frames::polars::prelude::Schema) -> Self {
        PartitionWriter {
            env,
            schema,
            open: BTreeMap::new(),
            done: Vec::new(),
        }
    }

    fn handle(&mut self, msg: Msg) -> Result<()> {
        let (env, schema) = (self.env, self.schema);
        match msg {
            Msg::Rows(day, df) => {
                let buf = match self.open.entry(day) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(ParquetBuffer::new(schema, &env.opts).map_err(Error::from)?)
                    }
                };
                buf.write(&df).map_err(Error::from)?;
            }
            Msg::Close {
                day,
                at,
                final_path,
                time_span,
            } => {
                let buf = match self.open.remove(&day) {
                    Some(b) => b,
                    None => ParquetBuffer::new(schema, &env.opts).map_err(Error::from)?,
                };
                let (bytes, mut output) = buf.finish(&at).map_err(Error::from)?;
                // A writer may block: a local store is written here, without a hop to the
                // runtime's blocking pool and back for each of a month's 30 partitions.
                if !env.store.put_blocking(&at, &bytes)? {
                    env.handle.block_on(env.store.put(&at, bytes))?;
                }
                output.path = final_path;
                self.done.push(Written {
                    day,
                    at,
                    output,
                    time_span,
                });
            }
        }
        Ok(())
    }
}

/// A partition writer thread.
fn write_partitions(
    env: &Env,
    schema: &frames::polars::prelude::Schema,
    rx: std::sync::mpsc::Receiver<Msg>,
) -> Result<Vec<Written>> {
    let mut w = PartitionWriter::new(env, schema);
    for msg in rx {
        w.handle(msg)?;
    }
    Ok(w.done)
}

/// Rows of one day not yet handed to its writer.
struct OpenDay {
    cols: Columns,
    span: Option<[i64; 2]>,
}

/// Where the parser's messages go.
enum Sink<'a> {
    /// Writer threads, a day always to the same one.
    Threads(Vec<std::sync::mpsc::SyncSender<Msg>>),
    /// This thread.
    Inline(PartitionWriter<'a>),
}

/// The parser side: routes rows to days and feeds the writers.
struct Router<'a> {
    file: &'a shared::paths::ArchiveFile,
    csv_path: &'a str,
    format: &'static shared::formats::Format,
    env: &'a Env,
    sink: Sink<'a>,
    open: BTreeMap<NaiveDate, OpenDay>,
    /// Days whose file is finished → their time span.
    closed: BTreeMap<NaiveDate, Option<[i64; 2]>>,
    /// Rows that arrived for a day after it was closed (never seen in the archive, handled).
    late: BTreeMap<NaiveDate, Columns>,
    rows: u64,
}

impl Router<'_> {
    /// Parse the file in windows of `chunk` bytes cut at line boundaries: the first on this
    /// thread (it decides header and time units), the rest on `threads` parser threads, whose
    /// results are routed in file order, so outputs do not depend on thread timing.
    fn parse(
        &mut self,
        f: Input<'_>,
        chunk: usize,
        threads: usize,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<shared::formats::ParseStats> {
        let len = f.len().map_err(|e| Error::Io {
            context: format!("reading {}", self.csv_path),
            source: e,
        })?;
        // Page-aligned window starts.
        let window = (chunk.max(1 << 16) >> 16 << 16) as u64;
        let windows = len.div_ceil(window).max(1);
        let mut parser = Parser::new(self.format, self.csv_path, self.file);
        let first = parse_window(self.csv_path, self.format, f, &mut parser, 0, window, len)?;
        let mut stats = parser.stats();
        self.route(&first)?;
        drop(first);
        if windows == 1 {
            return Ok(stats);
        }
        let base = parser.fork();
        let (csv_path, format) = (self.csv_path, self.format);
        // Tickets bound the windows parsed ahead of routing: memory stays at a few windows.
        let ahead = (2 * threads).max(2) as u64;
        let (ticket_tx, ticket_rx) = std::sync::mpsc::channel::<u64>();
        let ticket_rx = std::sync::Mutex::new(ticket_rx);
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            for i in 1..windows.min(1 + ahead) {
                let _ = ticket_tx.send(i);
            }
            let mut next_ticket = windows.min(1 + ahead);
            for _ in 0..threads.max(1) {
                let (ticket_rx, done_tx, base) = (&ticket_rx, done_tx.clone(), &base);
                scope.spawn(move || {
                    loop {
                        let Ok(i) = ticket_rx.lock().map(|rx| rx.recv()) else {
                            return;
                        };
                        let Ok(i) = i else { return };
                        let r = if cancel.is_cancelled() {
                            Err(Error::Interrupted)
                        } else {
                            let mut p = base.fork();
                            parse_window(csv_path, format, f, &mut p, i * window, window, len)
                                .map(|cols| (cols, p.stats()))
                        };
                        if done_tx.send((i, r)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            let mut pending = BTreeMap::new();
            let mut next = 1u64;
            let result = (|| -> Result<()> {
                while next < windows {
                    let (i, r) = done_rx.recv().map_err(|_| {
                        Error::internal(format!("{csv_path}: a parser thread stopped"))
                    })?;
                    pending.insert(i, r);
                    while let Some(r) = pending.remove(&next) {
                        let (cols, part) = r.map_err(|e| shift_line(e, stats.lines))?;
                        stats.absorb(&part);
                        self.route(&cols)?;
                        next += 1;
                        if next_ticket < windows {
                            let _ = ticket_tx.send(next_ticket);
                            next_ticket += 1;
                        }
                    }
                }
                Ok(())
            })();
            // Stop the parser threads (no more tickets), then let the scope join them.
            drop(ticket_tx);
            result
        })?;
        Ok(stats)
    }

    /// After the whole file: every day of a monthly archive's month gets a partition (empty
    /// when it had no rows, so `optimize` can tell "the monthly file lacks this day" from "no
    /// monthly file"), and every open day is closed.
    fn finish(&mut self) -> Result<()> {
        for day in self.file.date.days() {
            if !self.open.contains_key(&day) && !self.closed.contains_key(&day) {
                self.open.insert(
                    day,
                    OpenDay {
                        cols: Columns::new(self.format),
                        span: None,
                    },
                );
            }
        }
        self.close_before(None)
    }

    /// Send parsed rows to their days, then close the days the stream has left behind.
    fn route(&mut self, cols: &Columns) -> Result<()> {
        if cols.is_empty() {
            return Ok(());
        }
        self.rows += cols.len() as u64;
        let times = match cols.column(self.format.time_field) {
            Some(ColumnData::TimeUs(v)) => v,
            _ => {
                return Err(Error::internal(format!(
                    "{}: no time column `{}`",
                    self.csv_path, self.format.time_field
                )));
            }
        };
        match self.file.date {
            // A daily archive is one partition, whatever its rows' times.
            FileDate::Day(d) => self.append(d, cols, 0..cols.len(), times)?,
            FileDate::Month { .. } => {
                // Rows outside the month (never seen, but possible) are kept, clamped to its
                // first or last day; `optimize` files rows by their own time. Rows come in
                // runs of one day: route each run as a slice.
                let (first, last) = (self.file.date.first_day(), self.file.date.last_day());
                let day_at = |t: i64| day_of_us(t).clamp(first, last);
                let mut start = 0;
                let mut day = day_at(times[0]);
                let mut run_end_us = day_end_us(times[0]);
                let mut run_start_us = run_end_us - DAY_US;
                for (i, &t) in times.iter().enumerate().skip(1) {
                    if t >= run_start_us && t < run_end_us {
                        continue;
                    }
                    let d = day_at(t);
                    run_end_us = day_end_us(t);
                    run_start_us = run_end_us - DAY_US;
                    if d != day {
                        self.append(day, cols, start..i, times)?;
                        start = i;
                        day = d;
                    }
                }
                self.append(day, cols, start..times.len(), times)?;
                let newest = *self.open.keys().next_back().expect("rows were routed");
                // Monthly files are day-ordered up to small disorder: a day two behind the
                // newest is complete.
                self.close_before(newest.pred_opt().and_then(|d| d.pred_opt()))?;
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        day: NaiveDate,
        cols: &Columns,
        range: std::ops::Range<usize>,
        times: &[i64],
    ) -> Result<()> {
        if self.closed.contains_key(&day) {
            self.late
                .entry(day)
                .or_insert_with(|| Columns::new(self.format))
                .extend_from(cols, range);
            return Ok(());
        }
        let format = self.format;
        let open = self.open.entry(day).or_insert_with(|| OpenDay {
            cols: Columns::new(format),
            span: None,
        });
        let (lo, hi) = times[range.clone()]
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        if lo <= hi {
            open.span = Some(match open.span {
                Some([a, b]) => [a.min(lo), b.max(hi)],
                None => [lo, hi],
            });
        }
        open.cols.extend_from(cols, range);
        if open.cols.len() >= self.env.row_group_rows {
            let full = std::mem::replace(&mut open.cols, Columns::new(format));
            self.send_rows(day, full)?;
        }
        Ok(())
    }

    fn send(&mut self, day: NaiveDate, msg: Msg) -> Result<()> {
        match &mut self.sink {
            Sink::Inline(w) => w.handle(msg),
            // A closed channel means its writer failed; the caller reports the writer's error.
            Sink::Threads(txs) => txs[day.num_days_from_ce() as usize % txs.len()]
                .send(msg)
                .map_err(|_| {
                    Error::internal(format!("{}: a partition writer stopped", self.csv_path))
                }),
        }
    }

    fn send_rows(&mut self, day: NaiveDate, cols: Columns) -> Result<()> {
        let df = frames::to_frame(cols).map_err(Error::from)?;
        self.send(day, Msg::Rows(day, df))
    }

    /// Finish every open day strictly before `cutoff` (all when `None`).
    fn close_before(&mut self, cutoff: Option<NaiveDate>) -> Result<()> {
        let days: Vec<NaiveDate> = self
            .open
            .keys()
            .copied()
            .filter(|d| cutoff.is_none_or(|c| *d < c))
            .collect();
        for day in days {
            let open = self.open.remove(&day).expect("listed");
            if !open.cols.is_empty() {
                self.send_rows(day, open.cols)?;
            }
            let final_path =
                self.file
                    .dataset
                    .parquet_partition(&self.file.symbol, day, self.file.period());
            // A daily archive's one partition is closed only after the whole file parsed, so
            // it is written in place; a month's days are staged until the month parsed.
            let at = match self.file.date {
                FileDate::Day(_) => final_path.clone(),
                FileDate::Month { .. } => format!("{}/{day}.parquet", self.env.staging),
            };
            self.send(
                day,
                Msg::Close {
                    day,
                    at,
                    final_path,
                    time_span: open.span,
                },
            )?;
            self.closed.insert(day, open.span);
        }
        Ok(())
    }
}

/// Parse the lines that start in `[start, start + window)` of the file (the first window from
/// the file's first byte, the others from their first line start), reading past the window's
/// end to finish its last line; the file's last line may lack a newline.
fn parse_window(
    csv_path: &str,
    format: &Format,
    f: Input<'_>,
    parser: &mut Parser,
    start: u64,
    window: u64,
    len: u64,
) -> Result<Columns> {
    let io = |e: std::io::Error| Error::Io {
        context: format!("reading {csv_path}"),
        source: e,
    };
    let mut cols = Columns::new(format);
    if len == 0 {
        return Ok(cols);
    }
    let end = (start + window).min(len);
    // Map one page before the window (to see whether a line starts at its first byte) and
    // some bytes after it (to finish its last line), more if that line is longer.
    let map_start = start.saturating_sub(4096);
    let mut over = 1u64 << 16;
    loop {
        let map_end = (end + over).min(len);
        let map = f.view(map_start, map_end).map_err(io)?;
        let at = |pos: u64| (pos - map_start) as usize;
        // The first line starting at or after `pos`, if the mapping shows it.
        let line_start = |pos: u64| -> Option<usize> {
            if pos == 0 {
                return Some(0);
            }
            if pos >= len {
                return Some(at(len));
            }
            map[at(pos) - 1..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| at(pos) - 1 + i + 1)
        };
        let whole = map_end == len;
        let (s, e) = match (line_start(start), line_start(end)) {
            // No line starts at or after `start`: the window holds the tail of a line that
            // the window where it starts parses.
            (None, _) if whole => return Ok(cols),
            (Some(s), None) if whole => (s, at(len)),
            (Some(s), Some(e)) => (s, e),
            _ => {
                over *= 4;
                continue;
            }
        };
        if s < e {
            parser.feed(&map[s..e], &mut cols)?;
        }
        if e == at(len) {
            parser.finish(&mut cols)?;
        }
        return Ok(cols);
    }
}

/// An error from a forked parser counts lines from its window: make it count from the file's
/// first line.
fn shift_line(e: Error, lines_before: u64) -> Error {
    match e {
        Error::Schema {
            path,
            line,
            column,
            reason,
        } => Error::Schema {
            path,
            line: line + lines_before,
            column,
            reason,
        },
        e => e,
    }
}

/// Late rows for a day already written: read the partition back, append, rewrite.
fn merge_late(
    env: &Env,
    time_field: &str,
    written: &mut [Written],
    day: NaiveDate,
    late: Columns,
) -> Result<()> {
    let w = written
        .iter_mut()
        .find(|w| w.day == day)
        .ok_or_else(|| Error::internal(format!("late rows for {day}, which was never written")))?;
    let mut prev = frames::read_parquet_blocking(&env.handle, &env.store, &w.at)
        .map_err(Error::from)?
        .ok_or_else(|| Error::internal(format!("staged partition {} vanished", w.at)))?;
    let df = frames::to_frame(late).map_err(Error::from)?;
    prev.vstack_mut_owned(df)
        .ctx(|| format!("merging late rows of {day}"))
        .map_err(Error::from)?;
    prev.rechunk_mut();
    let final_path = w.output.path.clone();
    let mut out = env
        .handle
        .block_on(frames::write_parquet(
            &env.store, &w.at, &mut prev, &env.opts,
        ))
        .map_err(Error::from)?;
    out.path = final_path;
    w.output = out;
    w.time_span = frames::time_span(&prev, time_field);
    Ok(())
}

/// The end (exclusive) of the UTC day holding `t`, in µs.
fn day_end_us(t: i64) -> i64 {
    (t.div_euclid(DAY_US) + 1) * DAY_US
}

use shared::time::DAY_US;
pub use shared::time::day_of_us;

#[cfg(test)]
mod tests {
    use super::*;
    use shared::paths::{ArchiveFile, DataType, Dataset, Market};

    /// Converts `csv` as `file` on a local store with `writers` writer threads (0: on the
    /// parser's thread) and small row groups, so that days span several row groups and writers.
    fn run_local(
        file: &ArchiveFile,
        csv: &str,
        writers: usize,
    ) -> (tempfile::TempDir, Result<(Vec<Written>, UnitResult)>) {
        let dir = tempfile::tempdir().unwrap();
        let store = shared::Store::open(dir.path().to_str().unwrap()).unwrap();
        let csv_path = dir.path().join("in.csv");
        std::fs::write(&csv_path, csv).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let env = Env {
            handle: rt.handle().clone(),
            store,
            opts: ParquetOptions {
                row_group_rows: Some(2),
                zstd_level: Some(1),
                floats: frames::FloatEncoding::Plain,
            },
            row_group_rows: 2,
            staging: "_staging/t/convert".into(),
            inline_below: if writers == 0 { u64::MAX } else { 0 },
        };
        let f = std::fs::File::open(&csv_path).unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let r = convert_file(
            &env,
            file,
            "in.csv",
            Input::File(&f),
            1 << 16,
            writers.max(1),
            &cancel,
        );
        (dir, r)
    }

    fn agg_month() -> ArchiveFile {
        let ds = Dataset::new(Market::Um, DataType::AggTrades, None).unwrap();
        ArchiveFile::new(
            ds,
            "BTCUSDT",
            FileDate::Month {
                year: 2024,
                month: 2,
            },
        )
    }

    fn agg_row(id: i64, ms: i64) -> String {
        format!("{id},100.5,0.25,{id},{id},{ms},true\n")
    }

    #[test]
    fn a_month_splits_into_every_day_including_late_rows_and_empty_days() {
        // 2024-02-01, 02-01, 02-02, 02-05 ×3, then a late row for 02-01 (four days behind,
        // after 02-01 was closed and written).
        let d = |day: i64, h: i64| 1_706_745_600_000 + (day - 1) * 86_400_000 + h * 3_600_000;
        let mut csv = String::from(
            "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n",
        );
        for (id, ms) in [
            (1, d(1, 0)),
            (2, d(1, 23)),
            (3, d(2, 5)),
            (4, d(5, 1)),
            (5, d(5, 2)),
            (6, d(5, 3)),
            (7, d(1, 12)),
        ] {
            csv.push_str(&agg_row(id, ms));
        }
        let file = agg_month();
        for writers in [0, 1, 2, 3] {
            let (dir, r) = run_local(&file, &csv, writers);
            let (written, res) = r.unwrap();
            assert_eq!(res.rows, 7);
            assert_eq!(
                written.len(),
                29,
                "every day of February 2024 gets a partition"
            );
            let rows: Vec<u64> = written.iter().map(|w| w.output.rows.unwrap()).collect();
            assert_eq!(&rows[..6], &[3, 1, 0, 0, 3, 0], "writers={writers}");
            assert_eq!(rows.iter().sum::<u64>(), 7);
            let first = &written[0];
            assert_eq!(first.time_span, Some([d(1, 0) * 1000, d(1, 23) * 1000]));
            assert!(first.at.starts_with("_staging/t/convert/"));
            assert_eq!(
                first.output.path,
                "parquet/futures-um/aggTrades/symbol=BTCUSDT/date=2024-02-01/part-monthly.parquet"
            );
            // What was written is what the output says, and holds the late row.
            let bytes = std::fs::read(dir.path().join(&first.at)).unwrap();
            assert_eq!(first.output.size, bytes.len() as u64);
            assert_eq!(first.output.sha256, shared::checksum::sha256_hex(&bytes));
            let df = frames::read_parquet_bytes(bytes.into(), &first.at).unwrap();
            let ids: Vec<i64> = df
                .column("agg_trade_id")
                .unwrap()
                .i64()
                .unwrap()
                .into_no_null_iter()
                .collect();
            assert_eq!(ids, vec![1, 2, 7]);
            let fifth = frames::read_parquet_bytes(
                std::fs::read(dir.path().join(&written[4].at))
                    .unwrap()
                    .into(),
                "",
            )
            .unwrap();
            assert_eq!(fifth.height(), 3);
        }
    }

    /// 20,000 rows over February 2024 (≈1 MB: 16 windows of 64 KiB), the header first.
    fn big_month_csv() -> String {
        let mut csv = String::from(
            "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n",
        );
        for i in 0..20_000i64 {
            csv.push_str(&agg_row(i, 1_706_745_600_000 + i * 125_000));
        }
        csv
    }

    #[test]
    fn windows_parsed_in_parallel_give_the_same_files_as_one_thread() {
        let file = agg_month();
        let csv = big_month_csv();
        let outputs = |threads: usize| {
            let (_dir, r) = run_local(&file, &csv, threads);
            let (written, res) = r.unwrap();
            assert_eq!(res.rows, 20_000, "threads={threads}");
            written
                .into_iter()
                .map(|w| (w.output.path, w.output.sha256, w.output.rows, w.time_span))
                .collect::<Vec<_>>()
        };
        let one = outputs(1);
        assert_eq!(one.len(), 29);
        assert_eq!(one.iter().map(|o| o.2.unwrap()).sum::<u64>(), 20_000);
        assert_eq!(outputs(3), one, "same bytes whatever the threads");
        assert_eq!(outputs(0), one, "same bytes written on the parser's thread");
    }

    #[test]
    fn a_bad_row_in_a_later_window_names_its_line_in_the_file() {
        let file = agg_month();
        let mut csv = big_month_csv();
        // Break the row on line 15,001 (the header is line 1).
        let start = csv.match_indices('\n').nth(14_999).unwrap().0 + 1;
        csv.replace_range(start..start + 1, "x");
        for threads in [0, 1, 2] {
            let (_dir, r) = run_local(&file, &csv, threads);
            let e = r.err().expect("fails").to_string();
            assert!(e.contains("in.csv:15001: column agg_trade_id"), "{e}");
        }
    }

    #[test]
    fn a_daily_file_is_written_in_place_and_a_bad_row_writes_nothing() {
        let ds = Dataset::new(Market::Um, DataType::AggTrades, None).unwrap();
        let day = NaiveDate::from_ymd_opt(2024, 2, 3).unwrap();
        let file = ArchiveFile::new(ds, "BTCUSDT", FileDate::Day(day));
        let t = 1_706_918_400_000;
        let good: String = (0..5).map(|i| agg_row(i, t + i)).collect();
        let (dir, r) = run_local(&file, &good, 2);
        let (written, res) = r.unwrap();
        assert_eq!((res.rows, written.len()), (5, 1));
        assert_eq!(written[0].at, written[0].output.path);
        assert!(dir.path().join(&written[0].at).exists());

        let bad = format!("{good}9,abc,1,9,9,{t},true\n");
        let (dir, r) = run_local(&file, &bad, 2);
        let e = r.err().expect("a malformed row fails the file").to_string();
        assert!(e.contains("in.csv:6: column price"), "{e}");
        let mut files = Vec::new();
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        assert_eq!(files, vec![dir.path().join("in.csv")], "nothing written");
    }

    #[test]
    fn days_of_timestamps() {
        assert_eq!(day_of_us(0), NaiveDate::from_ymd_opt(1970, 1, 1).unwrap());
        assert_eq!(
            day_of_us(-1),
            NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()
        );
        // 2026-09-15 00:00:00 and 23:59:59.999999 UTC.
        let d = NaiveDate::from_ymd_opt(2026, 9, 15).unwrap();
        assert_eq!(day_of_us(1_789_430_400_000_000), d);
        assert_eq!(day_of_us(1_789_516_799_999_999), d);
        assert_eq!(
            day_of_us(1_789_516_800_000_000),
            NaiveDate::from_ymd_opt(2026, 9, 16).unwrap()
        );
    }
}
