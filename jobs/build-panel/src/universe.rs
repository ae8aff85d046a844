//! The universe: which symbols the panel holds at each hour. `--universe A,B` and `all` are
//! static ([`panel::Universe::Static`]: a symbol is a member from its first bar on, delisted ones
//! included); `top-funding:N` ranks the candidates by their settled funding rate, point in time.
//!
//! The `top-funding:N` rule, exactly:
//! - **Candidates**: the symbols of `--symbols` (every symbol with hourly features when `all`)
//!   that have features in the range; a symbol without features cannot hold a slot.
//! - **Records**: each candidate's settled funding records (`calc_time`, `last_funding_rate`)
//!   from the optimized fundingRate dataset.
//! - **Ranking hours**: every hour `h` in which at least one candidate's record has its
//!   `calc_time` (`h <= calc_time < h + 1h`; settlements come a few ms after the hour). Symbols
//!   on 8h, 4h and 1h intervals all trigger rankings.
//! - **Ranking at `h`**: for each candidate, its latest record with `calc_time <= h + 1h - 1ms`
//!   (the close of the row labelled `h`: the T+1ms rule of features.md) and at most 24 h older
//!   than that close (as `aggregate` joins `funding_rate`); a candidate without such a record is
//!   not ranked. Order by `|rate|` descending, ties by symbol ascending; the first `N` are the
//!   members.
//! - **Holding**: the members of the ranking at `h` are the universe for the hours
//!   `h <= t < h'`, `h'` the next ranking hour; before the first ranking the universe is empty.
//!
//! Membership at `t` therefore uses only records with `calc_time <= close_time(t)`.

use crate::panel::HOUR_US;

/// Settled funding records of one symbol, sorted by `calc_time` (µs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FundingRecords {
    pub calc_time: Vec<i64>,
    pub rate: Vec<f64>,
}

/// How old a record may be at the close of the ranking's hour.
pub const MAX_AGE_US: i64 = 24 * HOUR_US;
const MS_US: i64 = 1_000;

/// The rankings of `top-funding:n` over candidates `0..funding.len()` (named by `symbols`, for
/// the tie-break): `(hour, member indices sorted)`, sorted by hour.
pub fn top_funding(
    symbols: &[String],
    funding: &[FundingRecords],
    n: usize,
) -> Vec<(i64, Vec<usize>)> {
    let mut hours: Vec<i64> = funding
        .iter()
        .flat_map(|f| f.calc_time.iter().map(|t| t.div_euclid(HOUR_US) * HOUR_US))
        .collect();
    hours.sort_unstable();
    hours.dedup();
    let mut out = Vec::with_capacity(hours.len());
    let mut ranked: Vec<(f64, usize)> = Vec::with_capacity(funding.len());
    for h in hours {
        let close = h + HOUR_US - MS_US;
        ranked.clear();
        for (i, f) in funding.iter().enumerate() {
            let j = f.calc_time.partition_point(|&c| c <= close);
            let Some(j) = j.checked_sub(1) else { continue };
            if close - f.calc_time[j] > MAX_AGE_US || !f.rate[j].is_finite() {
                continue;
            }
            ranked.push((f.rate[j].abs(), i));
        }
        ranked.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| symbols[a.1].cmp(&symbols[b.1]))
        });
        let mut members: Vec<usize> = ranked.iter().take(n).map(|(_, i)| *i).collect();
        members.sort_unstable();
        out.push((h, members));
    }
    out
}
