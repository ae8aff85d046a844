//! Opening archive zips safely, for `extract` (which stages the CSV) and `convert --from raw`
//! (which parses it unstaged): the zip as a local file checked against the download manifest's
//! sha256 ([`LocalZip`]); the entry checks (how many entries, which one is the CSV, names that
//! could escape a target folder, declared sizes and ratio); the streaming inflate that enforces
//! the same limits on the bytes actually produced (a header can lie), reads the entry to its end
//! so the zip crate verifies the CRC, and counts lines (and hashes) as it goes; and where the CSV
//! goes ([`Spill`]: memory, or a temp file when large). The inflate is synchronous: jobs run it in
//! `spawn_blocking`.

use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::checksum::Hasher;
use crate::report::human_bytes;
use crate::{Error, Result, Store};

/// The ratio limit applies only past this many bytes: a tiny file cannot be a bomb, and a short
/// header-only CSV may compress unusually well.
pub const RATIO_FLOOR: u64 = 1 << 20;

/// What an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Limits {
    /// Entries the zip must hold (the archive's zips hold exactly one CSV).
    pub expect_entries: usize,
    /// Largest uncompressed entry accepted, in bytes.
    pub max_uncompressed: u64,
    /// Largest uncompressed/compressed ratio accepted (past [`RATIO_FLOOR`]).
    pub max_ratio: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            expect_entries: 1,
            max_uncompressed: 64 << 30,
            max_ratio: 200.0,
        }
    }
}

impl Limits {
    /// The header's claim, checked before inflating anything.
    pub fn check_declared(&self, name: &str, size: u64, compressed: u64) -> Result<(), String> {
        if size > self.max_uncompressed {
            return Err(format!(
                "zip bomb refused: entry `{name}` declares {} uncompressed, above the limit of {} (--max-uncompressed-gib)",
                human_bytes(size),
                human_bytes(self.max_uncompressed)
            ));
        }
        self.check_ratio(name, size, compressed, "declares")
    }

    /// The bytes actually produced so far, checked while streaming.
    pub fn check_produced(&self, name: &str, produced: u64, compressed: u64) -> Result<(), String> {
        if produced > self.max_uncompressed {
            return Err(format!(
                "zip bomb refused: entry `{name}` inflates past the limit of {} (--max-uncompressed-gib)",
                human_bytes(self.max_uncompressed)
            ));
        }
        self.check_ratio(name, produced, compressed, "inflates to")
    }

    fn check_ratio(
        &self,
        name: &str,
        size: u64,
        compressed: u64,
        verb: &str,
    ) -> Result<(), String> {
        if size <= RATIO_FLOOR {
            return Ok(());
        }
        let ratio = size as f64 / compressed.max(1) as f64;
        if ratio > self.max_ratio {
            return Err(format!(
                "zip bomb refused: entry `{name}` {verb} {} from {} compressed (ratio {ratio:.0}, above --max-ratio {})",
                human_bytes(size),
                human_bytes(compressed),
                self.max_ratio
            ));
        }
        Ok(())
    }
}

/// Refuse entry names that could land outside a target folder if anyone unpacked them by name:
/// `..` components, absolute paths, backslashes (Windows separators), drive letters and other
/// colons, NUL, and directories. We never write by the entry's name, but such a name means the
/// zip was not made by the archive.
pub fn check_entry_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "an empty name"
    } else if name.contains('\0') {
        "a NUL byte"
    } else if name.contains('\\') {
        "a backslash"
    } else if name.starts_with('/') {
        "an absolute path"
    } else if name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.as_bytes()[1] == b':'
    {
        "a drive letter"
    } else if name.contains(':') {
        "a colon"
    } else if name.split('/').any(|c| c == "..") {
        "a `..` component that escapes the target"
    } else if name.ends_with('/') {
        "a directory name"
    } else {
        return Ok(());
    };
    Err(format!(
        "unsafe entry name `{}`: {why}",
        name.escape_debug()
    ))
}

/// Whether an entry is the CSV.
pub fn is_csv_name(name: &str) -> bool {
    name.len() > 4 && name[name.len() - 4..].eq_ignore_ascii_case(".csv")
}

/// What the CSV turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvStats {
    /// The entry's name inside the zip.
    pub entry: String,
    pub size: u64,
    pub sha256: String,
    /// Lines, counting a last line without a newline.
    pub rows: u64,
    pub compressed: u64,
}

/// An error that names the archive and says what is wrong with it.
pub fn refused(archive: &str, reason: impl Into<String>) -> Error {
    Error::Io {
        context: format!("refusing {archive}"),
        source: io::Error::new(io::ErrorKind::InvalidData, reason.into()),
    }
}

/// Check a zip and stream its CSV entry into `out`. `archive` names the zip in every error;
/// `cancelled` is polled between reads so an interrupted run stops promptly. The CSV's sha256 and
/// lines are counted when `hash` (a staged CSV's fingerprint); otherwise [`CsvStats::sha256`] is
/// empty and [`CsvStats::rows`] 0.
pub fn extract_csv<R: Read + Seek, W: Write>(
    zip: R,
    archive: &str,
    limits: &Limits,
    out: &mut W,
    hash: bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<CsvStats> {
    let (
        mut z,
        CsvEntry {
            index,
            name,
            declared,
            compressed,
        },
    ) = csv_entry(zip, archive, limits)?;
    let mut entry = z
        .by_index(index)
        .map_err(|e| refused(archive, format!("entry `{name}` cannot be opened: {e}")))?;

    let mut hasher = Hasher::new();
    // Sized by the entry's declared size (plus one, so a read past it is seen), at most
    // 256 KiB: a daily CSV of a few KiB gets a buffer of its size.
    let mut buf = vec![0u8; (declared.min(256 << 10) as usize + 1).max(4 << 10)];
    let (mut size, mut newlines, mut last) = (0u64, 0u64, b'\n');
    loop {
        if cancelled() {
            return Err(Error::Interrupted);
        }
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(refused(archive, read_failure(&name, &e))),
        };
        size += n as u64;
        limits
            .check_produced(&name, size, compressed)
            .map_err(|r| refused(archive, r))?;
        let chunk = &buf[..n];
        if hash {
            hasher.update(chunk);
            newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        last = chunk[n - 1];
        out.write_all(chunk).map_err(|e| Error::Io {
            context: format!("writing the CSV of {archive}"),
            source: e,
        })?;
    }
    if size != declared {
        return Err(refused(
            archive,
            format!("entry `{name}` inflates to {size} bytes but declares {declared}"),
        ));
    }
    out.flush().map_err(|e| Error::Io {
        context: format!("writing the CSV of {archive}"),
        source: e,
    })?;
    let rows = if hash {
        newlines + u64::from(size > 0 && last != b'\n')
    } else {
        0
    };
    Ok(CsvStats {
        entry: name,
        size,
        sha256: if hash {
            hasher.finish_hex()
        } else {
            String::new()
        },
        rows,
        compressed,
    })
}

/// A zip's one CSV entry, its header checked: not encrypted, and the size it declares within
/// the limits.
struct CsvEntry {
    index: usize,
    name: String,
    declared: u64,
    compressed: u64,
}

/// Open the zip, check its entries and find its one CSV.
fn csv_entry<R: Read + Seek>(
    zip: R,
    archive: &str,
    limits: &Limits,
) -> Result<(::zip::ZipArchive<R>, CsvEntry)> {
    let mut z = ::zip::ZipArchive::new(zip)
        .map_err(|e| refused(archive, format!("not a readable zip: {e}")))?;
    let mut names = Vec::with_capacity(z.len());
    for i in 0..z.len() {
        let f = z
            .by_index_raw(i)
            .map_err(|e| refused(archive, format!("entry {i} is unreadable: {e}")))?;
        let name = f
            .name()
            .map_err(|e| refused(archive, format!("entry {i} has a bad name: {e}")))?
            .into_owned();
        check_entry_name(&name).map_err(|r| refused(archive, r))?;
        if f.enclosed_name().is_none() {
            return Err(refused(
                archive,
                format!("unsafe entry name `{}`", name.escape_debug()),
            ));
        }
        names.push(name);
    }
    if names.len() != limits.expect_entries {
        return Err(refused(
            archive,
            format!(
                "holds {} entries, expected {} ({})",
                names.len(),
                limits.expect_entries,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
    let csvs: Vec<usize> = (0..names.len())
        .filter(|&i| is_csv_name(&names[i]))
        .collect();
    let index = match csvs.as_slice() {
        [i] => *i,
        [] => {
            return Err(refused(
                archive,
                format!("no `.csv` entry ({})", names.join(", ")),
            ));
        }
        _ => {
            return Err(refused(
                archive,
                format!("more than one `.csv` entry ({})", names.join(", ")),
            ));
        }
    };
    let name = names[index].clone();
    let entry = z
        .by_index_raw(index)
        .map_err(|e| refused(archive, format!("entry `{name}` cannot be opened: {e}")))?;
    if entry.encrypted() {
        return Err(refused(archive, format!("entry `{name}` is encrypted")));
    }
    let (declared, compressed) = (entry.size(), entry.compressed_size());
    limits
        .check_declared(&name, declared, compressed)
        .map_err(|r| refused(archive, r))?;
    drop(entry);
    let entry = CsvEntry {
        index,
        name,
        declared,
        compressed,
    };
    Ok((z, entry))
}

/// Check a zip as [`extract_csv`] does and, when its CSV entry is deflated (or stored) and
/// declares at most `max_bytes`, inflate it into memory whole with libdeflate (twice the speed
/// of the streaming inflate here) and check its CRC. `None` when the entry is larger or
/// compressed otherwise: the caller streams it with [`extract_csv`].
pub fn inflate_csv<R: Read + Seek>(
    zip: R,
    archive: &str,
    limits: &Limits,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>> {
    let (
        mut z,
        CsvEntry {
            index,
            name,
            declared,
            compressed,
        },
    ) = csv_entry(zip, archive, limits)?;
    if declared > max_bytes {
        return Ok(None);
    }
    let mut entry = z
        .by_index_raw(index)
        .map_err(|e| refused(archive, format!("entry `{name}` cannot be opened: {e}")))?;
    let method = entry.compression();
    let deflated = method == ::zip::CompressionMethod::Deflated;
    if !(deflated || method == ::zip::CompressionMethod::Stored) {
        return Ok(None);
    }
    let corrupt = |what: String| {
        refused(
            archive,
            format!(
                "{what}: the zip is corrupt (`download --verify` over its days downloads it again)"
            ),
        )
    };
    let mut raw = Vec::with_capacity(compressed as usize);
    entry
        .read_to_end(&mut raw)
        .map_err(|e| corrupt(format!("entry `{name}` cannot be read: {e}")))?;
    let out = if deflated {
        let mut out = vec![0u8; declared as usize];
        match libdeflater::Decompressor::new().deflate_decompress(&raw, &mut out) {
            Ok(n) if n as u64 == declared => out,
            Ok(n) => {
                return Err(refused(
                    archive,
                    format!("entry `{name}` inflates to {n} bytes but declares {declared}"),
                ));
            }
            // A damaged deflate stream does this as well as a forged header: not called a bomb.
            Err(libdeflater::DecompressionError::InsufficientSpace) => {
                return Err(refused(
                    archive,
                    format!(
                        "entry `{name}` inflates past its declared size: the zip is corrupt or forged (`download --verify` over its days downloads it again)"
                    ),
                ));
            }
            Err(e) => return Err(corrupt(format!("entry `{name}` does not inflate: {e}"))),
        }
    } else if raw.len() as u64 == declared {
        raw
    } else {
        return Err(refused(
            archive,
            format!(
                "entry `{name}` is stored as {} bytes but declares {declared}",
                raw.len()
            ),
        ));
    };
    if libdeflater::crc32(&out) != entry.crc32() {
        return Err(refused(
            archive,
            format!(
                "CRC mismatch in entry `{name}`: the zip is corrupt (`download --verify` over its days downloads it again)"
            ),
        ));
    }
    Ok(Some(out))
}

/// Say what a read error from the zip crate means.
fn read_failure(name: &str, e: &io::Error) -> String {
    let msg = e.to_string();
    if msg.contains("Invalid checksum") {
        format!(
            "CRC mismatch in entry `{name}`: the zip is corrupt (`download --verify` over its days downloads it again)"
        )
    } else if msg.contains("larger than its declared") {
        // A damaged deflate stream does this as well as a forged header: not called a bomb.
        format!(
            "entry `{name}` inflates past its declared size: the zip is corrupt or forged (`download --verify` over its days downloads it again)"
        )
    } else {
        format!(
            "entry `{name}` does not inflate: {msg}: the zip is corrupt (`download --verify` over its days downloads it again)"
        )
    }
}

/// The zip limits as command-line flags, shared by every job that opens archive zips.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Entries each zip must hold; exactly one of them must be the `.csv`.
    #[arg(long, default_value_t = 1)]
    pub expect_entries: usize,

    /// Refuse an entry larger than this many GiB uncompressed (declared or actually inflated).
    #[arg(long, default_value_t = 64.0)]
    pub max_uncompressed_gib: f64,

    /// Refuse an entry whose uncompressed/compressed ratio exceeds this (entries over 1 MiB).
    #[arg(long, default_value_t = 200.0)]
    pub max_ratio: f64,
}

impl LimitArgs {
    /// The limits, or a usage error naming the flag that is out of range.
    pub fn limits(&self) -> Result<Limits> {
        if self.expect_entries == 0 {
            return Err(Error::usage("--expect-entries must be at least 1"));
        }
        if !(self.max_uncompressed_gib.is_finite() && self.max_uncompressed_gib > 0.0) {
            return Err(Error::usage(
                "--max-uncompressed-gib must be a positive number",
            ));
        }
        if !(self.max_ratio.is_finite() && self.max_ratio >= 1.0) {
            return Err(Error::usage("--max-ratio must be at least 1"));
        }
        Ok(Limits {
            expect_entries: self.expect_entries,
            max_uncompressed: (self.max_uncompressed_gib * (1u64 << 30) as f64) as u64,
            max_ratio: self.max_ratio,
        })
    }
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// A read buffer for a file of `len` bytes: the file's size up to 1 MiB. Most archive files
/// are daily zips of a few KiB, and a buffer of the largest file's size, allocated and zeroed
/// for each of them, was a tenth of extract's CPU on daily data.
pub fn buffer_for(len: u64) -> usize {
    (len.max(1) as usize).min(1 << 20) + 1
}

/// The download manifest records a zip the store does not hold.
pub fn absent(raw: &str) -> Error {
    Error::Io {
        context: format!("reading {raw}"),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            "the download manifest records this zip but the store does not hold it: run download again",
        ),
    }
}

fn mismatch(raw: &str, want: &str, got: &str) -> Error {
    Error::ChecksumMismatch {
        path: format!(
            "{raw} (the stored zip changed since download verified it; `download --verify` over its days downloads it again)"
        ),
        expected: want.to_string(),
        actual: got.to_string(),
    }
}

/// Hash a local zip and compare it with the download manifest's fingerprint, so no manifest
/// records an output as coming from a zip it did not come from.
pub fn verify_local(path: &Path, raw: &str, want: &str) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => absent(raw),
        _ => io_err(format!("opening {}", path.display()))(e),
    })?;
    let len = f
        .metadata()
        .map_err(io_err(format!("reading {}", path.display())))?
        .len();
    let mut h = Hasher::new();
    let mut buf = vec![0u8; buffer_for(len)];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = h.finish_hex();
    if got != want {
        return Err(mismatch(raw, want, &got));
    }
    Ok(())
}

/// A zip as a seekable local file: the store's own file on a local store (not yet hashed:
/// [`LocalZip::verify`] does that off the async threads), or a temp copy of a remote object,
/// hashed while it streamed in.
pub struct LocalZip {
    pub path: PathBuf,
    verified: bool,
    _tmp: Option<tempfile::NamedTempFile>,
}

impl LocalZip {
    /// Open `raw`, the zip whose sha256 the download manifest recorded as `want`.
    pub async fn open(
        store: &Store,
        raw: &str,
        want: &str,
        tmp_dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<LocalZip> {
        // A local zip is not looked at here (each look would be a hop to the blocking pool):
        // `verify` opens it, and names a missing one.
        if let Some(path) = store.local_path(raw) {
            return Ok(LocalZip {
                path,
                verified: false,
                _tmp: None,
            });
        }
        let tmp = fetch_to_temp(store, raw, want, tmp_dir, cancel).await?;
        Ok(LocalZip {
            path: tmp.path().to_path_buf(),
            verified: true,
            _tmp: Some(tmp),
        })
    }

    /// Check the zip is the one recorded (blocking: it reads the whole file once).
    pub fn verify(&self, raw: &str, want: &str) -> Result<()> {
        if self.verified {
            return Ok(());
        }
        verify_local(&self.path, raw, want)
    }
}

/// Stream a zip from a remote store into a temp file (never into memory: they reach GBs),
/// hashing it on the way and comparing with the recorded fingerprint.
async fn fetch_to_temp(
    store: &Store,
    raw: &str,
    want: &str,
    tmp_dir: &Path,
    cancel: &CancellationToken,
) -> Result<tempfile::NamedTempFile> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::Builder::new()
        .prefix(".zip-")
        .suffix(".zip")
        .tempfile_in(tmp_dir)
        .map_err(io_err(format!(
            "creating a temp file in {}",
            tmp_dir.display()
        )))?;
    let get = store
        .object_store()
        .get(&object_store::path::Path::from(raw))
        .await;
    let r = match get {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Err(absent(raw)),
        Err(e) => return Err(Error::store(raw, e)),
    };
    let mut file = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(io_err(format!("opening {}", tmp.path().display())))?,
    );
    let mut h = Hasher::new();
    let mut stream = r.into_stream();
    while let Some(chunk) = stream.try_next().await.map_err(|e| Error::store(raw, e))? {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        h.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(io_err(format!("writing {}", tmp.path().display())))?;
    }
    file.flush()
        .await
        .map_err(io_err(format!("writing {}", tmp.path().display())))?;
    let got = h.finish_hex();
    if got != want {
        return Err(mismatch(raw, want, &got));
    }
    Ok(tmp)
}

/// Where an inflated CSV went: memory while it is small, a temp file once it outgrows
/// `limit` (a month of a liquid symbol's trades inflates to gigabytes).
pub struct Spill {
    state: SpillState,
    limit: usize,
    dir: PathBuf,
}

enum SpillState {
    Mem(Vec<u8>),
    File(io::BufWriter<std::fs::File>, tempfile::NamedTempFile),
}

/// The finished CSV of a [`Spill`].
pub enum Inflated {
    Mem(Vec<u8>),
    File(tempfile::NamedTempFile),
}

impl Spill {
    /// Hold up to `limit` bytes in memory (`capacity` reserved), spill past it into `dir`.
    pub fn new(limit: usize, capacity: usize, dir: PathBuf) -> Spill {
        Spill {
            state: SpillState::Mem(Vec::with_capacity(capacity.min(limit))),
            limit,
            dir,
        }
    }

    pub fn finish(self) -> io::Result<Inflated> {
        match self.state {
            SpillState::Mem(v) => Ok(Inflated::Mem(v)),
            SpillState::File(w, tmp) => {
                w.into_inner().map_err(|e| e.into_error())?;
                Ok(Inflated::File(tmp))
            }
        }
    }
}

impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let SpillState::Mem(v) = &mut self.state {
            if v.len() + buf.len() <= self.limit {
                v.extend_from_slice(buf);
                return Ok(buf.len());
            }
            let tmp = tempfile::Builder::new()
                .prefix(".csv-")
                .suffix(".csv")
                .tempfile_in(&self.dir)?;
            let mut w = io::BufWriter::with_capacity(1 << 20, tmp.reopen()?);
            w.write_all(v)?;
            self.state = SpillState::File(w, tmp);
        }
        match &mut self.state {
            SpillState::File(w, _) => w.write(buf),
            SpillState::Mem(_) => unreachable!("spilled above"),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            SpillState::Mem(_) => Ok(()),
            SpillState::File(w, _) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn zip_of(entries: &[(&str, &[u8])], method: ::zip::CompressionMethod) -> Vec<u8> {
        let mut w = ::zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = ::zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, body) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn deflated(entries: &[(&str, &[u8])]) -> Vec<u8> {
        zip_of(entries, ::zip::CompressionMethod::Deflated)
    }

    fn run(zip: Vec<u8>, limits: &Limits) -> Result<(CsvStats, Vec<u8>)> {
        let mut out = Vec::new();
        let s = extract_csv(
            Cursor::new(zip),
            "raw/x.zip",
            limits,
            &mut out,
            true,
            &|| false,
        )?;
        Ok((s, out))
    }

    fn err(zip: Vec<u8>, limits: &Limits) -> String {
        run(zip, limits).unwrap_err().to_string()
    }

    #[test]
    fn safe_and_unsafe_names() {
        for ok in [
            "BTCUSDT-1m-2024-01-01.csv",
            "a/b.csv",
            "./a.csv",
            "x..y.csv",
        ] {
            assert_eq!(check_entry_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("../evil.csv", "`..`"),
            ("a/../../evil.csv", "`..`"),
            ("..", "`..`"),
            ("/etc/evil.csv", "absolute"),
            ("a\\..\\evil.csv", "backslash"),
            ("C:/evil.csv", "drive letter"),
            ("c:evil.csv", "drive letter"),
            ("a.csv:stream", "colon"),
            ("dir/", "directory"),
            ("", "empty"),
            ("a\0.csv", "NUL"),
        ] {
            let e = check_entry_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(is_csv_name("A.CSV") && is_csv_name("x.csv"));
        assert!(!is_csv_name(".csv") && !is_csv_name("x.csv.zip") && !is_csv_name("x.txt"));
    }

    #[test]
    fn declared_limits() {
        let l = Limits {
            expect_entries: 1,
            max_uncompressed: 10 << 20,
            max_ratio: 200.0,
        };
        assert!(l.check_declared("a", 5 << 20, 1 << 20).is_ok());
        // Tiny files are never bombs, whatever their ratio.
        assert!(l.check_declared("a", RATIO_FLOOR, 1).is_ok());
        let e = l.check_declared("a", 11 << 20, 10 << 20).unwrap_err();
        assert!(e.contains("zip bomb") && e.contains("10.0 MiB"), "{e}");
        let e = l.check_declared("a", 4 << 20, 1 << 10).unwrap_err();
        assert!(e.contains("ratio 4096") && e.contains("--max-ratio"), "{e}");
        assert!(l.check_declared("a", 2 << 20, 0).is_err());
        // The streaming check applies the same limits to what is produced.
        assert!(l.check_produced("a", 4 << 20, 1 << 20).is_ok());
        assert!(l.check_produced("a", (10 << 20) + 1, 1 << 30).is_err());
        assert!(l.check_produced("a", 300 << 12, 1 << 12).is_err());
    }

    #[test]
    fn extracts_hashes_and_counts_lines() {
        let body = b"h1,h2\n1,2\n3,4";
        let (s, out) = run(deflated(&[("BTCUSDT-x.csv", body)]), &Limits::default()).unwrap();
        assert_eq!(out, body);
        assert_eq!(s.entry, "BTCUSDT-x.csv");
        assert_eq!((s.size, s.rows), (body.len() as u64, 3));
        assert_eq!(s.sha256, crate::checksum::sha256_hex(body));
        let (s, _) = run(deflated(&[("e.csv", b"a\nb\n")]), &Limits::default()).unwrap();
        assert_eq!(s.rows, 2);
        let (s, _) = run(deflated(&[("e.csv", b"")]), &Limits::default()).unwrap();
        assert_eq!((s.size, s.rows), (0, 0));
    }

    #[test]
    fn entry_count_and_csv_name_are_checked() {
        let l = Limits::default();
        let e = err(deflated(&[("a.csv", b"1"), ("b.csv", b"2")]), &l);
        assert!(
            e.contains("raw/x.zip") && e.contains("holds 2 entries, expected 1"),
            "{e}"
        );
        let e = err(deflated(&[]), &l);
        assert!(e.contains("holds 0 entries"), "{e}");
        let e = err(deflated(&[("a.txt", b"1")]), &l);
        assert!(e.contains("no `.csv` entry"), "{e}");
        // With --expect-entries 2, a zip with a CSV and a note extracts the CSV.
        let two = Limits {
            expect_entries: 2,
            ..l
        };
        let (s, out) = run(deflated(&[("README", b"x"), ("a.csv", b"1\n")]), &two).unwrap();
        assert_eq!((s.entry.as_str(), out.as_slice()), ("a.csv", &b"1\n"[..]));
        let e = err(deflated(&[("a.csv", b"1"), ("b.csv", b"2")]), &two);
        assert!(e.contains("more than one `.csv`"), "{e}");
    }

    #[test]
    fn unsafe_names_in_a_zip_are_refused() {
        for name in ["../evil.csv", "/abs/evil.csv", "a\\evil.csv", "C:/evil.csv"] {
            let e = err(deflated(&[(name, b"1")]), &Limits::default());
            assert!(e.contains("unsafe entry name"), "{name}: {e}");
        }
    }

    #[test]
    fn a_bomb_is_refused_by_header_and_by_stream() {
        let zeros = vec![0u8; 8 << 20];
        let z = deflated(&[("bomb.csv", &zeros)]);
        let e = err(z.clone(), &Limits::default());
        assert!(e.contains("zip bomb refused") && e.contains("ratio"), "{e}");
        let small = Limits {
            max_uncompressed: 4 << 20,
            max_ratio: 1e9,
            ..Limits::default()
        };
        let e = err(z, &small);
        assert!(
            e.contains("zip bomb refused") && e.contains("4.0 MiB"),
            "{e}"
        );
    }

    #[test]
    fn the_streaming_limit_does_not_trust_the_header() {
        // A deflated 3 MiB entry whose header claims 1 MiB (in the local header and the central
        // directory): the declared check passes (under the ratio floor), the stream must not.
        let body = vec![b'7'; 3 << 20];
        let mut z = deflated(&[("a.csv", &body)]);
        let real = (3u32 << 20).to_le_bytes();
        let fake = (1u32 << 20).to_le_bytes();
        let mut patched = 0;
        for i in 0..z.len() - 4 {
            if z[i..i + 4] == real {
                z[i..i + 4].copy_from_slice(&fake);
                patched += 1;
            }
        }
        assert_eq!(patched, 2, "sizes not found");
        let e = err(z, &Limits::default());
        assert!(
            e.contains("raw/x.zip") && e.contains("inflates past its declared size"),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_deflate_stream_is_corrupt_not_a_bomb() {
        let body: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i},{},{}\n", i * 7 % 1000, i % 13).into_bytes())
            .collect();
        let clean = deflated(&[("a.csv", &body)]);
        // Damage the compressed bytes in the middle of the entry, in several places.
        for offset in [0usize, 997, 4_049] {
            let mut z = clean.clone();
            let mid = z.len() / 2 + offset;
            for b in &mut z[mid..mid + 32] {
                *b ^= 0xA5;
            }
            let e = err(z, &Limits::default());
            assert!(!e.contains("zip bomb"), "{e}");
            assert!(e.contains("corrupt") || e.contains("CRC mismatch"), "{e}");
        }
    }

    #[test]
    fn a_crc_error_is_caught() {
        let body = b"open_time,open\n1,2\n3,4\nMARKER-ROW\n".to_vec();
        let mut z = zip_of(&[("a.csv", &body)], ::zip::CompressionMethod::Stored);
        let at = z.windows(6).position(|w| w == b"MARKER").unwrap();
        z[at] = b'N';
        let e = err(z, &Limits::default());
        assert!(e.contains("raw/x.zip") && e.contains("CRC mismatch"), "{e}");
    }

    #[test]
    fn cancellation_stops_the_copy() {
        let z = deflated(&[("a.csv", b"1\n")]);
        let mut out = Vec::new();
        let e = extract_csv(
            Cursor::new(z),
            "x",
            &Limits::default(),
            &mut out,
            true,
            &|| true,
        );
        assert!(matches!(e, Err(Error::Interrupted)));
    }

    #[test]
    fn garbage_is_not_a_zip() {
        let e = err(b"<html>404</html>".to_vec(), &Limits::default());
        assert!(e.contains("not a readable zip"), "{e}");
    }

    #[tokio::test]
    async fn a_local_zip_that_is_gone_is_named_when_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let raw = "raw/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-01-01.zip";
        let cancel = CancellationToken::new();
        let zip = LocalZip::open(&store, raw, "ab", dir.path(), &cancel)
            .await
            .unwrap();
        let e = zip.verify(raw, "ab").unwrap_err().to_string();
        assert!(e.contains(raw) && e.contains("run download again"), "{e}");
    }

    #[test]
    fn a_spill_stays_in_memory_up_to_its_limit_and_moves_to_a_file_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut small = Spill::new(8, 4, dir.path().to_path_buf());
        small.write_all(b"abcd").unwrap();
        small.write_all(b"efgh").unwrap();
        match small.finish().unwrap() {
            Inflated::Mem(v) => assert_eq!(v, b"abcdefgh"),
            Inflated::File(_) => panic!("8 bytes fit a limit of 8"),
        }
        let mut big = Spill::new(8, 4, dir.path().to_path_buf());
        big.write_all(b"abcdef").unwrap();
        big.write_all(b"ghij").unwrap();
        big.write_all(b"kl").unwrap();
        match big.finish().unwrap() {
            Inflated::File(f) => assert_eq!(std::fs::read(f.path()).unwrap(), b"abcdefghijkl"),
            Inflated::Mem(_) => panic!("12 bytes do not fit a limit of 8"),
        }
    }
}
