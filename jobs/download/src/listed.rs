//! Plans from the bucket listing: which of a target's files over the run's range exist, read from
//! ListObjects pages of the symbol's folders (a marker at the range's first date, no page past
//! its last), so that `download` asks for exactly the files the archive has — no 404 probing, a
//! month's daily files only where its monthly file is absent — and the coverage it records lets a
//! rerun skip the absent files without listing again.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};
use futures::StreamExt;
use shared::http::RetryPolicy;
use shared::job::{Planner, Stamp};
use shared::listing::{ListedObject, list_until, marker_before};
use shared::manifest::{Entry, Manifest, ManifestWriter, UnitStatus};
use shared::paths::{ArchiveFile, Dataset, FileDate};
use shared::plan::{DateRange, monthly_fallback};
use shared::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::plan::{Action, PlannedUnit};
use crate::{Download, LISTING_CONCURRENCY, PlanFrom, Spec, Stats};

/// The unit key of the manifest entry that records what a listing found over a range. It is no
/// archive key, so the jobs reading `download`'s manifest pass it by.
pub const COVERAGE_UNIT: &str = "listing";

/// Files whose period ended this long before a listing are final: absent stays absent.
const ABSENT_FINAL_AFTER_DAYS: u64 = 30;

/// What the listing shows of one zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMeta {
    pub size: u64,
    /// Unquoted; an MD5 for a single-part upload, `<hex>-<parts>` for a multipart one.
    pub etag: String,
    pub last_modified: String,
    /// Whether its `.CHECKSUM` is listed next to it.
    pub checksum_listed: bool,
}

impl ListedMeta {
    /// The ETag as an MD5, when it is one (a multipart ETag is not).
    pub fn md5(&self) -> Option<&str> {
        is_md5(&self.etag).then_some(self.etag.as_str())
    }
}

/// Whether an ETag is a single-part upload's MD5 (32 hex digits; a multipart one ends `-N`).
pub fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One target's files over a range, as the listing shows them.
#[derive(Debug, Clone)]
pub struct Listed {
    files: HashMap<String, ListedMeta>,
    /// Listing pages asked for.
    pub pages: usize,
    pub coverage: Coverage,
}

impl Listed {
    pub fn get(&self, file: &ArchiveFile) -> Option<&ListedMeta> {
        self.files.get(&file.key())
    }
}

/// What a listing established about a target over `range`: files exist only from `first` to
/// `last` (the first and last day any listed file covers), as of `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub range: DateRange,
    pub first: Option<NaiveDate>,
    pub last: Option<NaiveDate>,
    pub at: DateTime<Utc>,
}

impl Coverage {
    /// The coverage a manifest recorded, if any.
    pub fn recorded(manifest: &Manifest) -> Option<Coverage> {
        let e = manifest.get(COVERAGE_UNIT)?;
        let date = |k: &str| {
            e.inputs
                .get(k)
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        };
        Some(Coverage {
            range: DateRange::new(date("from")?, date("to")?).ok()?,
            first: date("first"),
            last: date("last"),
            at: e.recorded_at,
        })
    }

    /// The manifest entry recording it (its time is the entry's).
    pub fn entry(&self, stamp: &shared::job::Stamp) -> Entry {
        let d = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
        let inputs = [
            ("from".to_string(), self.range.start.to_string()),
            ("to".to_string(), self.range.end.to_string()),
            ("first".to_string(), d(self.first)),
            ("last".to_string(), d(self.last)),
        ]
        .into();
        let mut e = stamp.entry(COVERAGE_UNIT, UnitStatus::Missing, inputs, Vec::new());
        e.detail = Some(match (self.first, self.last) {
            (Some(f), Some(l)) => format!(
                "the bucket listing of {}..{} has files from {f} to {l} only",
                self.range.start, self.range.end
            ),
            _ => format!(
                "the bucket listing of {}..{} has no file",
                self.range.start, self.range.end
            ),
        });
        e
    }

    /// Whether `file` lies between the first and last day the listing found files for.
    pub fn within_span(&self, file: &ArchiveFile) -> bool {
        match (self.first, self.last) {
            (Some(f), Some(l)) => file.date.last_day() >= f && file.date.first_day() <= l,
            _ => false,
        }
    }

    /// Whether the listing settles that `file` does not exist: it lies in the listed range but
    /// outside the files' span — before the first (the archive does not publish backwards) or
    /// after the last once its period ended long enough before the listing to be final. Holes
    /// inside the span have their own records.
    pub fn settles_absent(&self, file: &ArchiveFile) -> bool {
        let (start, end) = (file.date.first_day(), file.date.last_day());
        if start < self.range.start || end > self.range.end || self.within_span(file) {
            return false;
        }
        let before_first = self.first.is_some_and(|f| end < f);
        let final_ = self
            .at
            .date_naive()
            .checked_sub_days(Days::new(ABSENT_FINAL_AFTER_DAYS))
            .is_some_and(|cutoff| end < cutoff);
        before_first || final_
    }
}

/// Where the listing asks for a folder's files from `first` to `last`: the folder, the marker
/// just before the first file, and the last key that belongs (the last file's CHECKSUM).
fn bounds(probe: &ArchiveFile, first: FileDate, last: FileDate) -> (String, String, String) {
    let file = |date| ArchiveFile::new(probe.dataset, probe.symbol.clone(), date);
    (
        probe.folder(),
        marker_before(&file(first)),
        file(last).checksum_key(),
    )
}

/// The listing endpoint and how to ask it.
pub struct Lister<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub retry: &'a RetryPolicy,
    pub cancel: &'a CancellationToken,
}

impl<'a> Lister<'a> {
    /// The run's listing endpoint, asked with its retry policy.
    pub fn of(spec: &'a Spec, http: &'a reqwest::Client, cancel: &'a CancellationToken) -> Self {
        Lister {
            http,
            url: &spec.listing_url,
            retry: &spec.retry,
            cancel,
        }
    }
}

impl Lister<'_> {
    async fn folder(
        &self,
        probe: &ArchiveFile,
        first: FileDate,
        last: FileDate,
        out: &mut Vec<ListedObject>,
    ) -> Result<usize> {
        let (folder, marker, stop) = bounds(probe, first, last);
        let (objs, pages) = list_until(
            self.http,
            self.url,
            &folder,
            Some(&marker),
            |k| k > stop.as_str(),
            self.retry,
            self.cancel,
        )
        .await?;
        out.extend(objs);
        Ok(pages)
    }

    /// The daily files of (`ds`, `symbol`) from `a` to `b`: a monthly file's days checked
    /// against what the archive has for them.
    pub async fn daily(
        &self,
        ds: &Dataset,
        symbol: &str,
        range: DateRange,
        at: DateTime<Utc>,
    ) -> Result<Listed> {
        let (a, b) = (FileDate::Day(range.start), FileDate::Day(range.end));
        let probe = ArchiveFile::new(*ds, symbol, a);
        let mut objs = Vec::new();
        let pages = self.folder(&probe, a, b, &mut objs).await?;
        Ok(collect(objs, pages, range, at))
    }

    /// List the files of (`ds`, `symbol`) that cover `range`: the monthly folder over the
    /// range's months, then the daily folder over each run of months that need daily files (a
    /// month the range covers in part, or whose monthly file is not listed).
    pub async fn target(
        &self,
        ds: &Dataset,
        symbol: &str,
        range: DateRange,
        at: DateTime<Utc>,
    ) -> Result<Listed> {
        let (has_daily, has_monthly) = (ds.has_daily_files(), ds.has_monthly_files());
        let months = range.months();
        let mut objs = Vec::new();
        let mut pages = 0;
        if has_monthly && let (Some(first), Some(last)) = (months.first(), months.last()) {
            let probe = ArchiveFile::new(*ds, symbol, *first);
            pages += self.folder(&probe, *first, *last, &mut objs).await?;
        }
        let listed_monthly: std::collections::HashSet<&str> =
            objs.iter().map(|o| o.key.as_str()).collect();
        // Runs of consecutive months that need their daily files, clipped to the range.
        let mut runs: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        let mut open: Option<(NaiveDate, NaiveDate)> = None;
        for m in &months {
            let full = range.start <= m.first_day() && m.last_day() <= range.end;
            let monthly = ArchiveFile::new(*ds, symbol, *m).key();
            let by_monthly = has_monthly && (full || !has_daily);
            let need = has_daily && !(by_monthly && listed_monthly.contains(monthly.as_str()));
            let (a, b) = (m.first_day().max(range.start), m.last_day().min(range.end));
            match (need, open.as_mut()) {
                (true, Some(run)) => run.1 = b,
                (true, None) => open = Some((a, b)),
                (false, _) => runs.extend(open.take()),
            }
        }
        runs.extend(open);
        for (a, b) in runs {
            let probe = ArchiveFile::new(*ds, symbol, FileDate::Day(a));
            pages += self
                .folder(&probe, FileDate::Day(a), FileDate::Day(b), &mut objs)
                .await?;
        }
        Ok(collect(objs, pages, range, at))
    }
}

/// Join each zip with its CHECKSUM's presence; the span is that of the zips that cover the range.
fn collect(objs: Vec<ListedObject>, pages: usize, range: DateRange, at: DateTime<Utc>) -> Listed {
    let mut checksums = std::collections::HashSet::new();
    let mut zips = Vec::new();
    for o in objs {
        if let Some(zip) = o.key.strip_suffix(".CHECKSUM") {
            checksums.insert(zip.to_string());
        } else if o.key.ends_with(".zip") {
            zips.push(o);
        }
    }
    let (mut first, mut last): (Option<NaiveDate>, Option<NaiveDate>) = (None, None);
    let mut files = HashMap::new();
    for o in zips {
        let Ok(f) = ArchiveFile::parse_key(&o.key) else {
            continue;
        };
        let (a, b) = (f.date.first_day(), f.date.last_day());
        if b < range.start || a > range.end {
            continue;
        }
        first = Some(first.map_or(a, |x| x.min(a)));
        last = Some(last.map_or(b, |x| x.max(b)));
        let checksum_listed = checksums.contains(&o.key);
        files.insert(
            o.key,
            ListedMeta {
                size: o.size,
                etag: o.etag,
                last_modified: o.last_modified,
                checksum_listed,
            },
        );
    }
    Listed {
        files,
        pages,
        coverage: Coverage {
            range,
            first,
            last,
            at,
        },
    }
}

/// A target whose plan asks for files the listing has to settle first.
pub struct Pending {
    pub ds: Dataset,
    pub symbol: String,
    pub units: Vec<PlannedUnit>,
    pub manifest: Manifest,
    pub stored: HashMap<String, u64>,
    pub writer: Arc<ManifestWriter>,
}

/// List the pending targets (concurrently) and keep of their plans what exists: a listed file
/// is fetched with what the listing says of it; an absent monthly file gives way to its month's
/// listed daily files; an absent file inside the span of listed files is recorded missing, and
/// the coverage records the rest. A listing that cannot be read fails the run with
/// `--plan-from listing`, and falls back to asking for every file by date with `auto`.
pub async fn plan_listed(
    job: &Download,
    p: &mut Planner<'_>,
    pending: Vec<Pending>,
) -> Result<Vec<PlannedUnit>> {
    let spec = &job.spec;
    let ctx = p.ctx;
    let lister = Lister::of(spec, &job.http, &ctx.cancel);
    let range = spec.common.range;
    let at = ctx.clock.now();
    let lister = &lister;
    let listed: Vec<(Pending, Result<Listed>)> = futures::stream::iter(pending)
        .map(|pd| async move {
            let r = lister.target(&pd.ds, &pd.symbol, range, at).await;
            (pd, r)
        })
        .buffered(LISTING_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    let mut warned = false;
    for (pd, r) in listed {
        let l = match r {
            Ok(l) => l,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) if spec.plan_from == PlanFrom::Listing => return Err(e),
            Err(e) => {
                if !warned {
                    p.tally.warn(format!(
                        "the bucket listing could not be read ({e}); planning by dates, asking \
                         for every file"
                    ));
                    warned = true;
                }
                out.extend(pd.units);
                continue;
            }
        };
        Stats::add(&job.stats.listing_pages, l.pages as u64);
        Stats::add(&job.stats.listed_targets, 1);
        let records = settle(job, &p.stamp, &pd, &l, &mut out);
        for e in &records {
            p.known_missing(e.unit.clone(), format!("{:<10} {}", "missing", e.unit));
        }
        if !spec.common.dry_run {
            for e in records {
                pd.writer.record(e).await?;
            }
            pd.writer.record(l.coverage.entry(&p.stamp)).await?;
        }
    }
    Ok(out)
}

/// The symbols of `symbols` with a file of `ds` covering a day of `a..=b`, from listings of that
/// range (concurrently): `--listed-between`.
pub async fn listed_between(
    job: &Download,
    ctx: &shared::Context,
    ds: &Dataset,
    symbols: Vec<String>,
    a: NaiveDate,
    b: NaiveDate,
) -> Result<Vec<String>> {
    let spec = &job.spec;
    let lister = Lister::of(spec, &job.http, &ctx.cancel);
    let range = DateRange::new(a, b)?;
    let at = ctx.clock.now();
    let lister = &lister;
    let spans: Vec<(String, Result<Listed>)> = futures::stream::iter(symbols)
        .map(|sym| async move {
            let r = lister.target(ds, &sym, range, at).await;
            (sym, r)
        })
        .buffered(LISTING_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for (sym, r) in spans {
        let l = r?;
        Stats::add(&job.stats.listing_pages, l.pages as u64);
        let span = l.coverage.first.zip(l.coverage.last);
        if spec.common.select.admits_span(span) {
            out.push(sym);
        }
    }
    Ok(out)
}

/// Keep of a target's plan what the listing shows; returns the entries recording the holes.
fn settle(
    job: &Download,
    stamp: &Stamp,
    pd: &Pending,
    l: &Listed,
    out: &mut Vec<PlannedUnit>,
) -> Vec<Entry> {
    let spec = &job.spec;
    let mut holes: Vec<String> = Vec::new();
    let absent = |f: &ArchiveFile, holes: &mut Vec<String>| {
        Stats::add(&job.stats.absent_in_listing, 1);
        if l.coverage.within_span(f) {
            holes.push(f.key());
        }
    };
    for mut u in pd.units.iter().cloned() {
        if u.action == Action::Refresh {
            refresh(job, pd, l, u, out);
            continue;
        }
        if !matches!(u.action, Action::Fetch | Action::Adopt) {
            out.push(u);
            continue;
        }
        if let Some(meta) = l.get(&u.file) {
            u.listed = Some(meta.clone());
            out.push(u);
            continue;
        }
        if u.action == Action::Adopt {
            // The store has it: its CHECKSUM decides.
            out.push(u);
            continue;
        }
        let fallback = monthly_fallback(&u.file, spec.common.range);
        if fallback.is_empty() {
            absent(&u.file, &mut holes);
            continue;
        }
        absent(&u.file, &mut holes);
        let mut any = false;
        for f in fallback {
            match l.get(&f) {
                Some(meta) => {
                    any = true;
                    let at = out.len();
                    crate::plan::plan_file(spec, f, &pd.manifest, &pd.stored, &pd.writer, out);
                    for v in &mut out[at..] {
                        v.listed = Some(meta.clone());
                    }
                }
                None => absent(&f, &mut holes),
            }
        }
        if any {
            Stats::add(&job.stats.monthly_fallbacks, 1);
        }
    }
    holes
        .into_iter()
        .map(|key| {
            let mut e = stamp.entry(key, UnitStatus::Missing, Default::default(), Vec::new());
            e.detail = Some("absent from the bucket listing".into());
            e
        })
        .collect()
}

/// `--refresh` of a verified file by the listing alone: the ETag and LastModified recorded when
/// it was verified against the listing's. Unchanged, it is skipped without a request; changed,
/// it is downloaded again (the CHECKSUM is read anew with it). A file verified before these were
/// recorded re-reads its CHECKSUM as without a listing.
fn refresh(
    job: &Download,
    pd: &Pending,
    l: &Listed,
    mut u: PlannedUnit,
    out: &mut Vec<PlannedUnit>,
) {
    let prev = pd.manifest.get(&u.file.key());
    let recorded = prev.and_then(|e| e.inputs.get("etag"));
    match (l.get(&u.file), recorded) {
        (Some(meta), Some(etag)) => {
            Stats::add(&job.stats.refresh_checks, 1);
            let same_time = prev
                .and_then(|e| e.inputs.get("last_modified"))
                .is_none_or(|t| *t == meta.last_modified);
            if *etag == meta.etag && same_time {
                u.action = Action::Skip("unchanged");
            } else {
                tracing::info!(file = %u.file, "ETag or LastModified changed in the listing: the archive republished this file");
                Stats::add(&job.stats.republished, 1);
                u.action = Action::Fetch;
                u.listed = Some(meta.clone());
            }
        }
        (Some(meta), None) => u.listed = Some(meta.clone()),
        (None, _) => {
            tracing::warn!(file = %u.file, "verified before, no longer in the bucket listing: kept as verified");
            u.action = Action::Skip("verified");
        }
    }
    out.push(u);
}

/// The error for a zip the listing shows without its CHECKSUM: it cannot be verified, so it is
/// not accepted, and no request is made for it (binance-archive.md §1.6).
pub fn no_checksum(file: &ArchiveFile) -> Error {
    Error::BadChecksumFile {
        path: file.checksum_key(),
        reason: "the zip is listed in the bucket but its CHECKSUM is not; not accepted unverified"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::paths::{DataType, Interval, Market};

    fn ds() -> Dataset {
        Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn obj(key: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            size: 10,
            etag: "0123456789abcdef0123456789abcdef".into(),
            last_modified: "2025-01-01T08:00:00.000Z".into(),
        }
    }

    #[test]
    fn markers_fall_just_before_the_first_file_and_stop_after_the_last() {
        let probe = ArchiveFile::new(ds(), "BTCUSDT", FileDate::Day(d("2024-12-05")));
        let (folder, marker, stop) = bounds(
            &probe,
            FileDate::Day(d("2024-12-05")),
            FileDate::Day(d("2024-12-09")),
        );
        assert_eq!(folder, "data/futures/um/daily/klines/BTCUSDT/1m/");
        let key = |day: &str| ArchiveFile::new(ds(), "BTCUSDT", FileDate::Day(d(day))).key();
        // S3 lists keys strictly after the marker.
        assert!(key("2024-12-04") < marker && format!("{}.CHECKSUM", key("2024-12-04")) < marker);
        assert!(key("2024-12-05") > marker);
        assert!(format!("{}.CHECKSUM", key("2024-12-09")) <= stop);
        assert!(key("2024-12-10") > stop);
    }

    #[test]
    fn coverage_settles_what_lies_outside_the_span() {
        let f = |day: &str| ArchiveFile::new(ds(), "X", FileDate::Day(d(day)));
        let k = |day: &str| f(day).key();
        let at = "2025-03-01T00:00:00Z".parse().unwrap();
        let range = DateRange::new(d("2024-11-01"), d("2025-02-28")).unwrap();
        let objs = vec![
            obj(&k("2024-12-10")),
            obj(&format!("{}.CHECKSUM", k("2024-12-10"))),
            obj(&k("2025-02-20")),
        ];
        let l = collect(objs, 1, range, at);
        assert_eq!(l.files.len(), 2);
        assert!(l.get(&f("2024-12-10")).unwrap().checksum_listed);
        assert!(!l.get(&f("2025-02-20")).unwrap().checksum_listed);
        let c = &l.coverage;
        assert_eq!(
            (c.first, c.last),
            (Some(d("2024-12-10")), Some(d("2025-02-20")))
        );
        // Before the first file: absent for good.
        assert!(c.settles_absent(&f("2024-11-03")));
        // Inside the span: not settled by the coverage (a hole has its own record).
        assert!(!c.settles_absent(&f("2025-01-05")));
        // After the last, too recent to be final: asked again.
        assert!(!c.settles_absent(&f("2025-02-25")));
        // Outside the listed range: unknown.
        assert!(!c.settles_absent(&f("2024-10-01")));
        let old = Coverage {
            at: "2025-06-01T00:00:00Z".parse().unwrap(),
            ..c.clone()
        };
        assert!(old.settles_absent(&f("2025-02-25")));
    }

    #[test]
    fn multipart_etags_are_no_md5() {
        let mut m = ListedMeta {
            size: 1,
            etag: "0123456789abcdef0123456789abcdef".into(),
            last_modified: String::new(),
            checksum_listed: true,
        };
        assert!(m.md5().is_some());
        m.etag = "0123456789abcdef0123456789abcdef-3".into();
        assert!(m.md5().is_none());
    }
}
