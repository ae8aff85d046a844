//! The archive's `.CHECKSUM` files (`<64 hex sha256>  <zip name>`, with or without a final
//! newline: binance-archive.md §1.6) and the streaming sha256 every job uses to fingerprint bytes.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A parsed `.CHECKSUM` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// Lowercase hex sha256 of the zip.
    pub sha256: String,
    /// The file name the line names, if any.
    pub file_name: Option<String>,
}

/// Parse a `.CHECKSUM` body. `path` names the file in errors. When `expect_name` is given and the
/// file names another zip, that is an error too (a CHECKSUM copied to the wrong folder).
pub fn parse_checksum(path: &str, body: &[u8], expect_name: Option<&str>) -> Result<Checksum> {
    let bad = |reason: String| Error::BadChecksumFile {
        path: path.to_string(),
        reason,
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
    let mut tokens = text.split_whitespace();
    let hash = tokens.next().ok_or_else(|| bad("empty".into()))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown: String = hash.chars().take(80).collect();
        return Err(bad(format!("`{shown}` is not a 64-digit hex sha256")));
    }
    let file_name = tokens.next().map(|n| n.trim_start_matches('*').to_string());
    if let (Some(want), Some(got)) = (expect_name, file_name.as_deref())
        && want != got
    {
        return Err(bad(format!("names `{got}`, expected `{want}`")));
    }
    Ok(Checksum {
        sha256: hash.to_ascii_lowercase(),
        file_name,
    })
}

/// Lowercase hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An incremental sha256 for streaming bodies.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish_hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/binance");

    #[test]
    fn real_checksum_files_parse() {
        // Spot: no trailing newline. Futures: trailing newline.
        let cases = [
            (
                "spot/BTCUSDT-1m-2026-07.zip.CHECKSUM",
                "BTCUSDT-1m-2026-07.zip",
                "3ef15c84353da48e1c7c5fd99b9751cb036bf8986ed47f7cd1be63359c0d4f6b",
                false,
            ),
            (
                "spot/BTCUSDT-1m-2026-08-01.zip.CHECKSUM",
                "BTCUSDT-1m-2026-08-01.zip",
                "",
                false,
            ),
            (
                "cm/BTCUSD_PERP-fundingRate-2023-05.zip.CHECKSUM",
                "BTCUSD_PERP-fundingRate-2023-05.zip",
                "61f662cb5a781b9586eb51c0fd8731becade4505e6828f735d5e43d7f871c7a8",
                true,
            ),
            (
                "cm/BTCUSD_PERP-liquidationSnapshot-2023-06-25.zip.CHECKSUM",
                "BTCUSD_PERP-liquidationSnapshot-2023-06-25.zip",
                "",
                true,
            ),
        ];
        for (file, name, hash, newline) in cases {
            let path = format!("{FIXTURES}/{file}");
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(body.ends_with(b"\n"), newline, "{file}");
            let c = parse_checksum(file, &body, Some(name)).unwrap();
            assert_eq!(c.file_name.as_deref(), Some(name));
            assert_eq!(c.sha256.len(), 64);
            if !hash.is_empty() {
                assert_eq!(c.sha256, hash);
            }
        }
    }

    #[test]
    fn bad_checksum_files_are_named() {
        let ok = "a".repeat(64);
        assert!(parse_checksum("x", b"", None).is_err());
        assert!(parse_checksum("x", b"<Error>NoSuchKey</Error>", None).is_err());
        assert!(parse_checksum("x", "z".repeat(64).as_bytes(), None).is_err());
        assert!(parse_checksum("x", "a".repeat(63).as_bytes(), None).is_err());
        let e = parse_checksum(
            "f.CHECKSUM",
            format!("{ok}  other.zip").as_bytes(),
            Some("a.zip"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("f.CHECKSUM"), "{e}");
        // Upper-case hex and CRLF are tolerated; the hash is normalised to lowercase.
        let c = parse_checksum(
            "x",
            format!("{}  a.zip\r\n", "A".repeat(64)).as_bytes(),
            Some("a.zip"),
        )
        .unwrap();
        assert_eq!(c.sha256, ok);
        // A bare hash with no name is accepted.
        assert_eq!(
            parse_checksum("x", ok.as_bytes(), Some("a.zip"))
                .unwrap()
                .file_name,
            None
        );
    }

    #[test]
    fn streaming_hash_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::new();
        for chunk in data.chunks(777) {
            h.update(chunk);
        }
        assert_eq!(h.finish_hex(), sha256_hex(&data));
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
