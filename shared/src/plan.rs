//! Planning: date ranges, and turning (dataset, symbols, range) into archive files. Monthly files
//! for the months a range covers completely where the data type has them, daily files for the
//! rest; types published only monthly (fundingRate) or only daily (metrics, bookDepth, …) use what
//! exists. A monthly file missing upstream falls back to its month's daily files.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::{ArchiveFile, Dataset, FileDate};

/// An inclusive range of UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl DateRange {
    pub fn new(start: NaiveDate, end: NaiveDate) -> Result<Self> {
        if end < start {
            return Err(Error::usage(format!(
                "--end {end} is before --start {start}"
            )));
        }
        Ok(DateRange { start, end })
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.start <= d && d <= self.end
    }

    pub fn days(&self) -> impl Iterator<Item = NaiveDate> {
        let end = self.end;
        self.start.iter_days().take_while(move |d| *d <= end)
    }

    /// Every calendar month the range touches, in order.
    pub fn months(&self) -> Vec<FileDate> {
        let mut out = Vec::new();
        let mut m = FileDate::month_of(self.start);
        while m.first_day() <= self.end {
            out.push(m);
            m = FileDate::month_of(m.last_day().succ_opt().expect("date in range"));
        }
        out
    }
}

/// Parse a `YYYY-MM-DD` date argument.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| Error::usage(format!("`{s}` is not a date (expected YYYY-MM-DD)")))
}

/// Resolve a date argument that may be relative to `today`: `today`, `yesterday`, `-7d`,
/// `month-start` (first day of the current month), `prev-month-start`, or `YYYY-MM-DD`.
pub fn resolve_date(s: &str, today: NaiveDate) -> Result<NaiveDate> {
    let s = s.trim();
    match s {
        "today" => return Ok(today),
        "yesterday" => return Ok(today.pred_opt().expect("valid date")),
        "month-start" => return Ok(today.with_day(1).expect("day 1 exists")),
        "prev-month-start" => {
            let first = today.with_day(1).expect("day 1 exists");
            return Ok(first.pred_opt().expect("valid").with_day(1).expect("day 1"));
        }
        _ => {}
    }
    if let Some(n) = s.strip_prefix('-').and_then(|r| r.strip_suffix('d'))
        && let Ok(n) = n.parse::<u32>()
    {
        return today
            .checked_sub_days(chrono::Days::new(n.into()))
            .ok_or_else(|| Error::usage(format!("`{s}` is out of range")));
    }
    parse_date(s)
}

/// The archive files that cover `range` for one symbol of `dataset`.
pub fn plan_symbol(dataset: &Dataset, symbol: &str, range: DateRange) -> Vec<ArchiveFile> {
    let (has_daily, has_monthly) = (dataset.has_daily_files(), dataset.has_monthly_files());
    let mut out = Vec::new();
    for month in range.months() {
        let full = range.start <= month.first_day() && month.last_day() <= range.end;
        if has_monthly && (full || !has_daily) {
            out.push(ArchiveFile::new(*dataset, symbol, month));
        } else if has_daily {
            out.extend(
                month
                    .days()
                    .filter(|d| range.contains(*d))
                    .map(|d| ArchiveFile::new(*dataset, symbol, FileDate::Day(d))),
            );
        }
    }
    out
}

/// The archive files for every symbol, in (symbol, date) order.
pub fn plan_files(dataset: &Dataset, symbols: &[String], range: DateRange) -> Vec<ArchiveFile> {
    symbols
        .iter()
        .flat_map(|s| plan_symbol(dataset, s, range))
        .collect()
}

/// What replaces a monthly file that is missing upstream: the daily files of that month inside
/// `range`, if the data type has daily files at all (otherwise nothing can replace it).
pub fn monthly_fallback(file: &ArchiveFile, range: DateRange) -> Vec<ArchiveFile> {
    let ds = &file.dataset;
    match file.date {
        FileDate::Month { .. } if ds.has_daily_files() => file
            .date
            .days()
            .filter(|d| range.contains(*d))
            .map(|d| ArchiveFile::new(*ds, file.symbol.clone(), FileDate::Day(d)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Pick shard `index` of `count` (0-based) from a list of symbols: a stable assignment by
/// position in the sorted list, so every shard of one run sees the same split.
pub fn shard_symbols(symbols: &[String], index: usize, count: usize) -> Vec<String> {
    let mut sorted = symbols.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % count == index)
        .map(|(_, s)| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Period;
    use crate::paths::{DataType, Interval, Market};

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }
    fn r(a: &str, b: &str) -> DateRange {
        DateRange::new(d(a), d(b)).unwrap()
    }
    fn names(files: &[ArchiveFile]) -> Vec<String> {
        files.iter().map(|f| f.file_name()).collect()
    }
    fn klines() -> Dataset {
        Dataset::new(Market::Um, DataType::Klines, Some(Interval::M1)).unwrap()
    }

    #[test]
    fn full_months_monthly_rest_daily() {
        let files = plan_symbol(&klines(), "BTCUSDT", r("2024-01-30", "2024-03-02"));
        assert_eq!(
            names(&files),
            vec![
                "BTCUSDT-1m-2024-01-30.zip",
                "BTCUSDT-1m-2024-01-31.zip",
                "BTCUSDT-1m-2024-02.zip",
                "BTCUSDT-1m-2024-03-01.zip",
                "BTCUSDT-1m-2024-03-02.zip",
            ]
        );
    }

    #[test]
    fn exact_month_is_one_monthly_file_and_leap_february_counts() {
        assert_eq!(
            names(&plan_symbol(&klines(), "X", r("2024-02-01", "2024-02-29"))),
            vec!["X-1m-2024-02.zip"]
        );
        // One day short of the leap month's end: all daily.
        let files = plan_symbol(&klines(), "X", r("2024-02-01", "2024-02-28"));
        assert_eq!(files.len(), 28);
        assert!(files.iter().all(|f| f.period() == Period::Daily));
        // Non-leap February ends on the 28th.
        assert_eq!(
            names(&plan_symbol(&klines(), "X", r("2023-02-01", "2023-02-28"))),
            vec!["X-1m-2023-02.zip"]
        );
    }

    #[test]
    fn year_boundary_and_single_day() {
        assert_eq!(
            names(&plan_symbol(&klines(), "X", r("2023-12-01", "2024-01-01"))),
            vec!["X-1m-2023-12.zip", "X-1m-2024-01-01.zip"]
        );
        assert_eq!(
            names(&plan_symbol(&klines(), "X", r("2024-12-31", "2024-12-31"))),
            vec!["X-1m-2024-12-31.zip"]
        );
    }

    #[test]
    fn monthly_only_types_use_monthly_files_for_partial_months() {
        let funding = Dataset::new(Market::Um, DataType::FundingRate, None).unwrap();
        assert_eq!(
            names(&plan_symbol(&funding, "X", r("2024-01-15", "2024-02-02"))),
            vec!["X-fundingRate-2024-01.zip", "X-fundingRate-2024-02.zip"]
        );
        let weekly = Dataset::new(Market::Spot, DataType::Klines, Some(Interval::W1)).unwrap();
        assert_eq!(
            names(&plan_symbol(&weekly, "X", r("2024-01-15", "2024-01-20"))),
            vec!["X-1w-2024-01.zip"]
        );
    }

    #[test]
    fn daily_only_types_never_use_monthly_files() {
        let metrics = Dataset::new(Market::Um, DataType::Metrics, None).unwrap();
        let files = plan_symbol(&metrics, "X", r("2024-01-01", "2024-02-29"));
        assert_eq!(files.len(), 60);
        assert!(files.iter().all(|f| f.period() == Period::Daily));
    }

    #[test]
    fn missing_monthly_falls_back_to_daily_within_range() {
        let files = plan_symbol(&klines(), "X", r("2024-02-01", "2024-02-29"));
        let fb = monthly_fallback(&files[0], r("2024-02-01", "2024-02-29"));
        assert_eq!(fb.len(), 29);
        assert_eq!(fb[28].file_name(), "X-1m-2024-02-29.zip");
        // Monthly-only types have nothing to fall back to.
        let funding = Dataset::new(Market::Um, DataType::FundingRate, None).unwrap();
        let f = &plan_symbol(&funding, "X", r("2024-02-01", "2024-02-29"))[0];
        assert!(monthly_fallback(f, r("2024-02-01", "2024-02-29")).is_empty());
    }

    #[test]
    fn relative_dates() {
        let today = d("2024-03-01");
        assert_eq!(resolve_date("yesterday", today).unwrap(), d("2024-02-29"));
        assert_eq!(resolve_date("-7d", today).unwrap(), d("2024-02-23"));
        assert_eq!(resolve_date("month-start", d("2024-03-17")).unwrap(), today);
        assert_eq!(
            resolve_date("prev-month-start", d("2024-03-17")).unwrap(),
            d("2024-02-01")
        );
        assert_eq!(resolve_date("2020-01-02", today).unwrap(), d("2020-01-02"));
        assert!(resolve_date("soon", today).is_err());
        assert!(DateRange::new(d("2024-01-02"), d("2024-01-01")).is_err());
    }

    #[test]
    fn shards_partition_the_symbols() {
        let syms: Vec<String> = ["D", "A", "C", "B", "E"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut all: Vec<String> = (0..3).flat_map(|i| shard_symbols(&syms, i, 3)).collect();
        all.sort();
        assert_eq!(all, vec!["A", "B", "C", "D", "E"]);
        assert_eq!(shard_symbols(&syms, 0, 3), vec!["A", "D"]);
    }
}
