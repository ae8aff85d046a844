//! The S3 XML the simulator speaks: the ListObjects v1 `ListBucketResult` (binance-archive.md
//! §2.3) and the `<Error>` bodies. Only rendering; the page logic is `Archive::list`.

use std::fmt::Write as _;

use crate::archive::ListPage;

/// Escape text for XML element content (the ETag's quotes come out as `&quot;`, as S3 does).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The request's echo values.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub marker: Option<String>,
    pub max_keys: usize,
    /// `encoding-type=url`: keys, prefixes and markers come back percent-encoded.
    pub url_encoding: bool,
}

/// Render a `ListBucketResult`.
pub fn list_xml(req: &ListRequest, page: &ListPage) -> String {
    let enc = |s: &str| -> String {
        if req.url_encoding {
            xml_escape(&shared::paths::encode_key(s))
        } else {
            xml_escape(s)
        }
    };
    let mut x = String::with_capacity(256 + page.contents.len() * 300);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    x.push_str("<Name>data.binance.vision</Name>");
    let _ = write!(x, "<Prefix>{}</Prefix>", enc(&req.prefix));
    let _ = write!(
        x,
        "<Marker>{}</Marker>",
        enc(req.marker.as_deref().unwrap_or(""))
    );
    let _ = write!(x, "<MaxKeys>{}</MaxKeys>", req.max_keys);
    if let Some(d) = &req.delimiter {
        let _ = write!(x, "<Delimiter>{}</Delimiter>", enc(d));
    }
    if req.url_encoding {
        x.push_str("<EncodingType>url</EncodingType>");
    }
    let _ = write!(x, "<IsTruncated>{}</IsTruncated>", page.is_truncated);
    if let Some(m) = &page.next_marker {
        let _ = write!(x, "<NextMarker>{}</NextMarker>", enc(m));
    }
    for c in &page.contents {
        let _ = write!(
            x,
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            enc(&c.key),
            c.last_modified.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            c.md5_hex,
            c.size
        );
    }
    for p in &page.common_prefixes {
        let _ = write!(
            x,
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            enc(p)
        );
    }
    x.push_str("</ListBucketResult>");
    x
}

/// An S3 `<Error>` body.
pub fn error_xml(code: &str, message: &str, key: Option<&str>) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
    let _ = write!(
        x,
        "<Code>{}</Code><Message>{}</Message>",
        code,
        xml_escape(message)
    );
    if let Some(k) = key {
        let _ = write!(x, "<Key>{}</Key>", xml_escape(k));
    }
    x.push_str("<RequestId>SIMULATED</RequestId><HostId>archive-sim</HostId></Error>");
    x
}
