//! Time on the pipeline's one clock: µs since the Unix epoch, UTC. The units every dataset's
//! timestamps are normalized to, and the day arithmetic the jobs partition and plan by.

use chrono::NaiveDate;

pub const MINUTE_US: i64 = 60_000_000;
pub const HOUR_US: i64 = 60 * MINUTE_US;
pub const DAY_US: i64 = 24 * HOUR_US;

/// Midnight UTC of `day`, in µs.
pub fn day_start_us(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// The UTC day holding `t` (µs); days before the epoch too. `NaiveDate::MIN` for a time
/// outside chrono's range.
pub fn day_of_us(t: i64) -> NaiveDate {
    // 719,163: days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
    i32::try_from(t.div_euclid(DAY_US) + 719_163)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_their_midnights_round_trip() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(day_start_us(d("1970-01-01")), 0);
        assert_eq!(day_start_us(d("2025-01-01")), 1_735_689_600_000_000);
        for day in ["1969-12-31", "1970-01-01", "2024-02-29", "2025-01-01"] {
            let start = day_start_us(d(day));
            assert_eq!(day_of_us(start), d(day));
            assert_eq!(day_of_us(start + DAY_US - 1), d(day));
            assert_eq!(day_of_us(start - 1), d(day).pred_opt().unwrap());
        }
        assert_eq!(day_of_us(i64::MAX), NaiveDate::MIN);
    }
}
