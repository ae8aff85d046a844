//! The archive bucket's S3 `ListObjects` (v1) XML listing: parsing one page, following
//! pagination, and discovering every symbol of a dataset — delisted ones included, which is what
//! makes `--symbols all` survivorship-free (binance-archive.md §2).

use std::collections::BTreeSet;

use quick_xml::Reader;
use quick_xml::events::Event;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::http::{RetryPolicy, get_small};
use crate::paths::{ArchiveFile, Dataset, FileDate, encode_key};

/// The real archive's download base.
pub const DEFAULT_SOURCE: &str = "https://data.binance.vision";
/// The real archive bucket's S3 ListObjects endpoint.
pub const DEFAULT_LISTING_URL: &str = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision";

/// The listing endpoint: `given`, else the bucket's own endpoint for the real archive, else
/// `source` (a mirror or the simulator serves its listing at its root). Both must be http(s)
/// URLs with a host: a malformed one is a usage error, not a network failure to retry.
pub fn listing_url_for(source: &str, given: Option<&str>) -> Result<String> {
    let check = crate::cli::check_http_url;
    check("--source", source)?;
    let listing = match given {
        Some(u) => u.to_string(),
        None if source.trim_end_matches('/') == DEFAULT_SOURCE => DEFAULT_LISTING_URL.to_string(),
        None => source.to_string(),
    };
    check("--listing-url", &listing)?;
    Ok(listing)
}

/// One `<Contents>` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    /// The ETag without quotes (an MD5 for single-part uploads).
    pub etag: String,
    pub last_modified: String,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    /// `<CommonPrefixes><Prefix>` values (sub-folders), not the root `<Prefix>` echo.
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_marker: Option<String>,
}

impl ListPage {
    /// The marker for the next page: `NextMarker`, else the last key or prefix (S3's rule).
    pub fn marker(&self) -> Option<String> {
        if !self.is_truncated {
            return None;
        }
        self.next_marker.clone().or_else(|| {
            let k = self.objects.last().map(|o| o.key.clone());
            let p = self.common_prefixes.last().cloned();
            k.into_iter().chain(p).max()
        })
    }
}

/// Parse one `ListBucketResult` page. Element names are matched without their namespace, and
/// the root `<Prefix>` echo is not mistaken for a folder.
pub fn parse_page(url: &str, xml: &[u8]) -> Result<ListPage> {
    let fail = |reason: String| Error::Listing {
        url: url.to_string(),
        reason,
    };
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut page = ListPage::default();
    let mut stack: Vec<String> = Vec::new();
    let mut obj = ListedObject::default();
    let mut saw_root = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if stack.is_empty() {
                    if name == "Error" {
                        return Err(fail("the server answered an S3 error document".into()));
                    }
                    if name != "ListBucketResult" {
                        return Err(fail(format!("unexpected root element <{name}>")));
                    }
                    saw_root = true;
                }
                if name == "Contents" {
                    obj = ListedObject::default();
                }
                stack.push(name);
            }
            Ok(Event::End(_)) => {
                if stack.pop().as_deref() == Some("Contents") {
                    page.objects.push(std::mem::take(&mut obj));
                }
            }
            Ok(Event::Text(t)) => {
                let text = t
                    .xml_content()
                    .map_err(|e| fail(format!("bad text: {e}")))?
                    .into_owned();
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                match path.as_slice() {
                    [_, "IsTruncated"] => page.is_truncated = text.eq_ignore_ascii_case("true"),
                    [_, "NextMarker"] => page.next_marker = Some(text),
                    [_, "CommonPrefixes", "Prefix"] => page.common_prefixes.push(text),
                    [_, "Contents", "Key"] => obj.key = text,
                    [_, "Contents", "Size"] => {
                        obj.size = text
                            .parse()
                            .map_err(|_| fail(format!("bad <Size> `{text}`")))?
                    }
                    [_, "Contents", "ETag"] => obj.etag = text.trim_matches('"').to_string(),
                    [_, "Contents", "LastModified"] => obj.last_modified = text,
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(fail(format!("malformed XML: {e}"))),
        }
        buf.clear();
    }
    if !saw_root {
        return Err(fail("no ListBucketResult element".into()));
    }
    Ok(page)
}

/// The URL of one listing request.
pub fn page_url(listing_url: &str, prefix: &str, marker: Option<&str>) -> String {
    let mut u = format!(
        "{}?delimiter=/&prefix={}",
        listing_url.trim_end_matches('/'),
        encode_key(prefix)
    );
    if let Some(m) = marker {
        u.push_str("&marker=");
        u.push_str(&encode_key(m));
    }
    u
}

/// Ask for the pages under `prefix` after `marker`, one after another, handing each to `take`
/// until it returns `false` or the listing ends. Returns the pages asked for.
async fn walk(
    client: &reqwest::Client,
    listing_url: &str,
    prefix: &str,
    marker: Option<&str>,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    mut take: impl FnMut(ListPage) -> bool,
) -> Result<usize> {
    let mut marker = marker.map(str::to_string);
    let mut pages = 0usize;
    loop {
        let url = page_url(listing_url, prefix, marker.as_deref());
        let body = get_small(client, &url, policy, cancel, |n, e, d| {
            tracing::warn!(url = %url, attempt = n, delay_ms = d.as_millis() as u64, error = %e, "retrying listing");
        })
        .await?;
        let page = parse_page(&url, &body)?;
        pages += 1;
        let next = page.marker();
        if !take(page) {
            return Ok(pages);
        }
        match next {
            Some(m) if Some(&m) != marker.as_ref() => marker = Some(m),
            Some(_) => {
                return Err(Error::Listing {
                    url,
                    reason: "pagination marker did not advance".into(),
                });
            }
            None => return Ok(pages),
        }
    }
}

/// List everything directly under `prefix` (one folder level), following pagination.
pub async fn list_all(
    client: &reqwest::Client,
    listing_url: &str,
    prefix: &str,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Result<ListPage> {
    let mut all = ListPage::default();
    let pages = walk(client, listing_url, prefix, None, policy, cancel, |page| {
        all.objects.extend(page.objects);
        all.common_prefixes.extend(page.common_prefixes);
        true
    })
    .await?;
    tracing::debug!(
        prefix,
        pages,
        objects = all.objects.len(),
        folders = all.common_prefixes.len(),
        "listed"
    );
    Ok(all)
}

/// The objects directly under `prefix` whose keys come after `marker`, in key order, up to the
/// first key for which `past` holds: pages are asked for only until one reaches that key, so a
/// date range inside a folder costs the pages of its own keys, not of the whole folder. Returns
/// the objects and the number of pages asked for.
pub async fn list_until(
    client: &reqwest::Client,
    listing_url: &str,
    prefix: &str,
    marker: Option<&str>,
    past: impl Fn(&str) -> bool,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Result<(Vec<ListedObject>, usize)> {
    let mut out = Vec::new();
    let pages = walk(
        client,
        listing_url,
        prefix,
        marker,
        policy,
        cancel,
        |page| {
            for o in page.objects {
                if past(&o.key) {
                    return false;
                }
                out.push(o);
            }
            true
        },
    )
    .await?;
    Ok((out, pages))
}

/// The listing marker just before `file`'s zip: its key without `.zip`. S3 lists the keys after
/// the marker, so a listing from it starts at that file; the last key of a file is its
/// [`ArchiveFile::checksum_key`].
pub fn marker_before(file: &ArchiveFile) -> String {
    let key = file.key();
    key.strip_suffix(".zip").unwrap_or(&key).to_string()
}

/// The first and last day the archive's files of (`dataset`, `symbol`) cover, from its
/// folders' listings, and the pages asked for. With `after`, only files after that day are
/// listed (a registry brought up to date: one page for a symbol that grew by less than 500 files).
/// A day is that of a daily file where the type has them, else its monthly file's whole month.
pub async fn listed_span(
    client: &reqwest::Client,
    listing_url: &str,
    dataset: &Dataset,
    symbol: &str,
    after: Option<chrono::NaiveDate>,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Result<(Option<(chrono::NaiveDate, chrono::NaiveDate)>, usize)> {
    let (has_daily, has_monthly) = (dataset.has_daily_files(), dataset.has_monthly_files());
    let file = |date: FileDate| ArchiveFile::new(*dataset, symbol, date);
    let day = |d: chrono::NaiveDate| file(FileDate::Day(d));
    let daily_folder = day(chrono::NaiveDate::MIN).folder();
    let mut pages = 0;
    let mut span: Option<(chrono::NaiveDate, chrono::NaiveDate)> = None;
    let zips = |v: Vec<ListedObject>| -> Vec<ListedObject> {
        v.into_iter().filter(|o| o.key.ends_with(".zip")).collect()
    };
    let list = |folder: String, marker: Option<String>, stop: Option<String>| async move {
        list_until(
            client,
            listing_url,
            &folder,
            marker.as_deref(),
            |k| stop.as_deref().is_some_and(|s| k > s),
            policy,
            cancel,
        )
        .await
    };
    if has_daily {
        if let Some(after) = after {
            let marker = day(after).checksum_key();
            let (v, n) = list(daily_folder, Some(marker), None).await?;
            pages += n;
            widen(&mut span, &zips(v));
        } else if has_monthly {
            // The monthly folder is short; the daily one is read at its first month and from its
            // last month on.
            let mfolder = file(FileDate::Month {
                year: 2000,
                month: 1,
            })
            .folder();
            let (months, n) = list(mfolder, None, None).await?;
            pages += n;
            let months: Vec<FileDate> = zips(months)
                .iter()
                .filter_map(|o| ArchiveFile::parse_key(&o.key).ok().map(|f| f.date))
                .collect();
            match (months.first(), months.last()) {
                (Some(first), Some(last)) => {
                    let (v, n) = list(
                        daily_folder.clone(),
                        Some(marker_before(&day(first.first_day()))),
                        Some(day(first.last_day()).checksum_key()),
                    )
                    .await?;
                    pages += n;
                    let v = zips(v);
                    if v.is_empty() {
                        widen_month(&mut span, *first);
                    }
                    widen(&mut span, &v);
                    let (v, n) = list(
                        daily_folder.clone(),
                        Some(marker_before(&day(last.first_day()))),
                        None,
                    )
                    .await?;
                    pages += n;
                    let v = zips(v);
                    if v.is_empty() {
                        widen_month(&mut span, *last);
                    }
                    widen(&mut span, &v);
                }
                _ => {
                    let (v, n) = list(daily_folder, None, None).await?;
                    pages += n;
                    widen(&mut span, &zips(v));
                }
            }
        } else {
            let (v, n) = list(daily_folder, None, None).await?;
            pages += n;
            widen(&mut span, &zips(v));
        }
    } else if has_monthly {
        let month = |d: chrono::NaiveDate| file(FileDate::month_of(d));
        let folder = file(FileDate::Month {
            year: 2000,
            month: 1,
        })
        .folder();
        let marker = after.map(|d| marker_before(&month(d)));
        let (v, n) = list(folder, marker, None).await?;
        pages += n;
        widen(&mut span, &zips(v));
    }
    Ok((span, pages))
}

fn widen(span: &mut Option<(chrono::NaiveDate, chrono::NaiveDate)>, keys: &[ListedObject]) {
    for o in keys {
        if let Ok(f) = ArchiveFile::parse_key(&o.key) {
            widen_month(span, f.date);
        }
    }
}

/// Widen `span` by a file's period (a day, or a month).
fn widen_month(span: &mut Option<(chrono::NaiveDate, chrono::NaiveDate)>, m: FileDate) {
    let (a, b) = (m.first_day(), m.last_day());
    *span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
}

/// Every symbol the archive has for a dataset, over all the periods it is published in,
/// delisted symbols included. Sorted.
pub async fn discover_symbols(
    client: &reqwest::Client,
    listing_url: &str,
    dataset: &Dataset,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Result<Vec<String>> {
    let mut symbols = BTreeSet::new();
    for period in dataset.data_type.periods(dataset.market) {
        let prefix = dataset.symbols_prefix(*period);
        let page = list_all(client, listing_url, &prefix, policy, cancel).await?;
        for p in page.common_prefixes {
            if let Some(sym) = p
                .strip_prefix(&prefix)
                .map(|s| s.trim_end_matches('/'))
                .filter(|s| !s.is_empty() && !s.contains('/'))
            {
                symbols.insert(sym.to_string());
            }
        }
    }
    Ok(symbols.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_url_follows_the_source() {
        assert_eq!(
            listing_url_for(DEFAULT_SOURCE, None).unwrap(),
            DEFAULT_LISTING_URL
        );
        assert_eq!(
            listing_url_for("http://127.0.0.1:8765", None).unwrap(),
            "http://127.0.0.1:8765"
        );
        assert_eq!(
            listing_url_for("http://127.0.0.1:8765", Some("http://h/b")).unwrap(),
            "http://h/b"
        );
        for bad in ["127.0.0.1:8765", "ftp://x", "http//x", "https://"] {
            let e = listing_url_for(bad, None).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{bad}: {e}");
        }
        assert!(listing_url_for(DEFAULT_SOURCE, Some("nope")).is_err());
    }

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>data.binance.vision</Name>
  <Prefix>data/futures/um/daily/trades/BTCUSDT/</Prefix>
  <Marker></Marker>
  <MaxKeys>1000</MaxKeys>
  <Delimiter>/</Delimiter>
  <IsTruncated>true</IsTruncated>
  <NextMarker>data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2026-09-01.zip.CHECKSUM</NextMarker>
  <Contents>
    <Key>data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2026-09-01.zip</Key>
    <LastModified>2026-09-02T07:40:48.000Z</LastModified>
    <ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag>
    <Size>26293521</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2026-09-01.zip.CHECKSUM</Key>
    <LastModified>2026-09-02T07:40:47.000Z</LastModified>
    <ETag>&quot;ffff&quot;</ETag>
    <Size>96</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <CommonPrefixes><Prefix>data/futures/um/daily/trades/BTCUSDT/sub/</Prefix></CommonPrefixes>
</ListBucketResult>"#;

    #[test]
    fn parses_contents_prefixes_and_pagination() {
        let p = parse_page("u", PAGE.as_bytes()).unwrap();
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.objects[0].size, 26293521);
        assert_eq!(p.objects[0].etag, "0123456789abcdef0123456789abcdef");
        assert_eq!(p.objects[0].last_modified, "2026-09-02T07:40:48.000Z");
        // The root <Prefix> echo is not a folder.
        assert_eq!(
            p.common_prefixes,
            vec!["data/futures/um/daily/trades/BTCUSDT/sub/"]
        );
        assert!(p.is_truncated);
        assert_eq!(
            p.marker().unwrap(),
            "data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2026-09-01.zip.CHECKSUM"
        );
    }

    #[test]
    fn marker_falls_back_to_last_key_or_prefix() {
        let xml = PAGE.replace(
            "<NextMarker>data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2026-09-01.zip.CHECKSUM</NextMarker>",
            "",
        );
        let p = parse_page("u", xml.as_bytes()).unwrap();
        assert_eq!(
            p.marker().unwrap(),
            "data/futures/um/daily/trades/BTCUSDT/sub/"
        );
        let done = PAGE.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(parse_page("u", done.as_bytes()).unwrap().marker(), None);
    }

    #[test]
    fn error_documents_and_garbage_are_named() {
        let e = parse_page("http://x/?p", b"<Error><Code>AccessDenied</Code></Error>").unwrap_err();
        assert!(e.to_string().contains("http://x/?p"), "{e}");
        assert!(parse_page("u", b"<html>").is_err());
        assert!(parse_page("u", b"").is_err());
    }

    #[test]
    fn page_urls_encode_prefix_and_marker() {
        assert_eq!(
            page_url(
                "http://h/b/",
                "data/futures/um/daily/klines/",
                Some("data/futures/um/daily/klines/币USDT/")
            ),
            "http://h/b?delimiter=/&prefix=data/futures/um/daily/klines/&marker=data/futures/um/daily/klines/%E5%B8%81USDT/"
        );
    }
}
