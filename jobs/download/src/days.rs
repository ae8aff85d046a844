//! Which days a monthly file holds: its rows counted per UTC day by the format's time column, so
//! that a day the monthly pack lacks (or holds short) is found while its bytes are at hand and
//! its daily file fetched in the same run (binance-archive.md: monthly files missing days, #186,
//! #220, #253, aggTrades #140).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek};

use chrono::{DateTime, NaiveDate};
use shared::formats::{Kind, format_of};
use shared::paths::Dataset;

/// The position of the column that places a row on a day, when it is an epoch integer (the
/// formats whose time is a datetime string have no monthly files).
fn time_column(ds: &Dataset) -> Option<usize> {
    let f = format_of(ds);
    f.fields
        .iter()
        .position(|x| x.name == f.time_field && x.kind == Kind::Time)
}

/// An epoch integer in s, ms, µs or ns (by magnitude, binance-archive.md §5.6) as its UTC day.
fn day_of(t: i64) -> Option<NaiveDate> {
    let us = match t.unsigned_abs() {
        n if n >= 1_000_000_000_000_000_000 => t / 1000,
        n if n >= 1_000_000_000_000_000 => t,
        n if n >= 1_000_000_000_000 => t.checked_mul(1000)?,
        _ => t.checked_mul(1_000_000)?,
    };
    DateTime::from_timestamp_micros(us).map(|d| d.date_naive())
}

/// Rows per UTC day of the CSV inside a zip. `None` when the format has no epoch time column or
/// the zip does not read (the download has verified it; extract names such a defect).
pub fn rows_per_day(ds: &Dataset, zip: impl Read + Seek) -> Option<BTreeMap<NaiveDate, u64>> {
    let col = time_column(ds)?;
    let mut z = zip::ZipArchive::new(zip).ok()?;
    let entry = z.by_index(0).ok()?;
    let mut r = BufReader::with_capacity(1 << 20, entry);
    let mut out: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return Some(out);
        }
        let Some(field) = line.split(|b| *b == b',').nth(col) else {
            continue;
        };
        // A header, or a blank line: no number.
        let Some(t) = std::str::from_utf8(field)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
        else {
            continue;
        };
        if let Some(d) = day_of(t) {
            *out.entry(d).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::paths::{DataType, Interval, Market};
    use std::io::Write;

    fn zip_of(csv: &str) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        w.start_file("x.csv", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(csv.as_bytes()).unwrap();
        w.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn rows_are_counted_per_day_by_the_time_column_in_any_unit() {
        let ds = Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap();
        // 2024-12-01 00:00 and 23:59 in ms, 2024-12-03 00:00 in µs, a header.
        let csv = "open_time,open,high,low,close\n\
                   1733011200000,1,1,1,1\n1733097540000,1,1,1,1\n1733184000000000,1,1,1,1\n";
        let got = rows_per_day(&ds, std::io::Cursor::new(zip_of(csv))).unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![(d("2024-12-01"), 2), (d("2024-12-03"), 1)]
        );
        let agg = Dataset::new(Market::Um, DataType::AggTrades, None).unwrap();
        // aggTrades: transact_time is the sixth column.
        let csv = "1,2.0,3.0,1,1,1733011200000,true\n";
        let got = rows_per_day(&agg, std::io::Cursor::new(zip_of(csv))).unwrap();
        assert_eq!(got[&d("2024-12-01")], 1);
    }
}
