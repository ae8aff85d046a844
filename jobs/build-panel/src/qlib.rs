//! The Qlib export of a panel (`../shared/docs/qlib.md`): the continuous `60min` calendar from the
//! panel's first to its last hour, the `day` calendar of the days they span, both again as
//! `_future` calendars one step longer (what `qlib.backtest` steps through), `instruments/all.txt` with each symbol's first and last panel
//! hour, and per symbol and numeric column `features/<lowercase symbol>/<field>.60min.bin`
//! (little-endian float32: the calendar index of the symbol's first hour, then one value per
//! calendar hour to its last; NaN for hours without a row and for nulls). `filled` is 0/1.
//! Builds file contents only; `lib.rs` writes them and commits the export with a marker.

use chrono::DateTime;

use crate::panel::{COLUMNS, CS_FACTORS, Factors, HOUR_US, Panel, Series, TS_FACTORS};

/// Qlib's name for the hourly frequency (it has no hour unit).
pub const FREQ: &str = "60min";
/// Written last: an export without it is incomplete (a run stopped midway).
pub const MARKER: &str = "_SUCCESS";

/// Every exported field, in panel column order: the numeric columns.
pub fn fields() -> Vec<&'static str> {
    let mut v: Vec<&str> = COLUMNS.iter().map(|(n, _, _)| *n).collect();
    v.push("filled");
    v.extend(TS_FACTORS);
    v.extend(CS_FACTORS);
    v
}

/// `YYYY-MM-DD HH:MM:SS`, naive UTC.
pub fn hour_label(t_us: i64) -> String {
    DateTime::from_timestamp_micros(t_us)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `calendars/60min.txt`: every hour from `first` to `last` inclusive, one per line.
pub fn calendar(first: i64, last: i64) -> String {
    let mut s = String::new();
    let mut t = first;
    while t <= last {
        s.push_str(&hour_label(t));
        s.push('\n');
        t += HOUR_US;
    }
    s
}

/// Qlib's name for the daily frequency.
pub const DAY_FREQ: &str = "day";

/// Every calendar file of an export of the hours `first..=last`, `(file name, text)`: `60min`
/// and `day`, and each again as `<freq>_future.txt` with one more step. `qlib.backtest` reads
/// the `_future` calendars (falling back to the plain ones) and asks for the step after each
/// one it trades, so without them a backtest cannot reach the last hour or day; a `day`
/// calendar keeps a daily outer executor from resampling through a stock-exchange session.
pub fn calendars(first: i64, last: i64) -> Vec<(String, String)> {
    vec![
        (format!("{FREQ}.txt"), calendar(first, last)),
        (
            format!("{FREQ}_future.txt"),
            calendar(first, last + HOUR_US),
        ),
        (format!("{DAY_FREQ}.txt"), day_calendar(first, last)),
        (
            format!("{DAY_FREQ}_future.txt"),
            day_calendar(first, last + 24 * HOUR_US),
        ),
    ]
}

/// `calendars/day.txt`: every UTC day from the one holding `first` to the one holding `last`,
/// `YYYY-MM-DD` per line. `qlib.backtest` builds its trade calendar from the daily calendar
/// whatever the executor's frequency, and fails on an export without one.
pub fn day_calendar(first: i64, last: i64) -> String {
    use shared::time::DAY_US;
    let mut s = String::new();
    let mut t = first.div_euclid(DAY_US) * DAY_US;
    while t <= last {
        if let Some(d) = DateTime::from_timestamp_micros(t) {
            s.push_str(&d.format("%Y-%m-%d").to_string());
            s.push('\n');
        }
        t += DAY_US;
    }
    s
}

/// `instruments/all.txt`: `SYMBOL\tfirst hour\tlast hour` per symbol, no header.
pub fn instruments(spans: &[(String, i64, i64)]) -> String {
    spans
        .iter()
        .map(|(s, a, b)| format!("{s}\t{}\t{}\n", hour_label(*a), hour_label(*b)))
        .collect()
}

/// A `.bin` file: `[start_index, values…]` as little-endian float32.
pub fn bin(start_index: usize, values: &[f32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 * (values.len() + 1));
    b.extend_from_slice(&(start_index as f32).to_le_bytes());
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// The value of field `f` (an index into [`fields`]) at panel row `k`.
pub fn value(
    panel: &Panel,
    series: &[Series],
    factors: &[Factors],
    k: usize,
    f: usize,
) -> Option<f64> {
    let (s, r) = panel.rows[k];
    let (s, r) = (s as usize, r as usize);
    let n = COLUMNS.len();
    let t = TS_FACTORS.len();
    if f < n {
        series[s].cols[f].get_f64(r)
    } else if f == n {
        Some(if series[s].filled[r] { 1.0 } else { 0.0 })
    } else if f <= n + t {
        factors[s][f - n - 1][r]
    } else if f == n + t + 1 {
        panel.funding_pressure[k]
    } else {
        panel.relative_volume[k]
    }
}

/// The `.bin` files of one symbol: `(field, bytes)`, from its panel rows `rows` (indices into
/// `panel.rows`, in time order), on the calendar starting at `calendar_first`.
pub fn symbol_files(
    panel: &Panel,
    series: &[Series],
    factors: &[Factors],
    rows: &[usize],
    calendar_first: i64,
) -> Vec<(&'static str, Vec<u8>)> {
    let (Some(&k0), Some(&k1)) = (rows.first(), rows.last()) else {
        return Vec::new();
    };
    let time = |k: usize| {
        let (s, r) = panel.rows[k];
        series[s as usize].open_time[r as usize]
    };
    let (first, last) = (time(k0), time(k1));
    let start = ((first - calendar_first) / HOUR_US) as usize;
    let len = ((last - first) / HOUR_US) as usize + 1;
    let mut out = Vec::new();
    for (f, name) in fields().into_iter().enumerate() {
        let mut v = vec![f32::NAN; len];
        for &k in rows {
            if let Some(x) = value(panel, series, factors, k, f) {
                v[((time(k) - first) / HOUR_US) as usize] = x as f32;
            }
        }
        out.push((name, bin(start, &v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn future_calendars_add_one_step() {
        let h = 3_600_000_000i64;
        let t0 = 20_000 * 24 * h; // a midnight
        let cals: std::collections::BTreeMap<String, String> =
            calendars(t0 + 22 * h, t0 + 23 * h).into_iter().collect();
        assert_eq!(cals.len(), 4);
        assert_eq!(cals["60min.txt"].lines().count(), 2);
        assert_eq!(cals["60min_future.txt"].lines().count(), 3);
        assert!(cals["60min_future.txt"].starts_with(&cals["60min.txt"]));
        assert!(cals["60min_future.txt"].ends_with(" 00:00:00\n"));
        assert_eq!(cals["day.txt"].lines().count(), 1);
        assert_eq!(cals["day_future.txt"].lines().count(), 2);
    }

    #[test]
    fn day_calendar_spans_the_days_of_the_hours() {
        let t = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_micros()
        };
        assert_eq!(
            day_calendar(t("2024-12-30 23:00:00"), t("2025-01-01 00:00:00")),
            "2024-12-30\n2024-12-31\n2025-01-01\n"
        );
        assert_eq!(
            day_calendar(t("2025-01-01 05:00:00"), t("2025-01-01 06:00:00")),
            "2025-01-01\n"
        );
    }
}
