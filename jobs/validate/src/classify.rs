//! The gap taxonomy, across symbols: from every symbol's result for one dataset and range, find
//! the stretches missing in most symbols at once (exchange-wide outages), classify every
//! stretch without rows, give each symbol-day its status, and assemble the dataset report.
//!
//! A stretch is split at day boundaries, then each piece is, in this order:
//! 1. `before_listing` / `after_delisting`: outside the symbol's first..last data;
//! 2. `missing_file`: the `download` manifest has the day's file as a 404;
//! 3. `outage`: the same time is missing in at least `outage_share` of the symbols that have
//!    data around it (and in at least two);
//! 4. `partial`: it touches the day's start or end while the day's file is present (rows stop
//!    early or start late, or the file holds none of the day);
//! 5. `gap`: anything else.
//!
//! A day's status is `error` when a check failed on one of its rows; else the worst class among
//! its in-life pieces (`missing_file` > `partial` > `gap` > `outage`); else
//! `before_listing`/`after_delisting` when at least half the day lies outside the symbol's data;
//! else `ok`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use shared::paths::Dataset;
use shared::plan::DateRange;
use shared::validation::{
    DatasetReport, DayReport, DayStatus, Gap, GapClass, Outage, ReportParams, SCHEMA, SymbolReport,
    Totals,
};

use crate::checks::{DAY_US, day_start_us};
use crate::result::{FileState, SymbolResult};

/// Symbols that must miss the same time before it can be an outage.
pub const MIN_OUTAGE_SYMBOLS: usize = 2;

/// What the report is assembled with, besides the per-symbol results.
pub struct Assembly<'a> {
    pub dataset: Dataset,
    pub range: DateRange,
    pub params: ReportParams,
    pub fingerprint: String,
    pub generated_at: DateTime<Utc>,
    pub run_id: &'a str,
}

/// `[a, b)` ∩ `[c, d)`.
fn intersect(a: i64, b: i64, c: i64, d: i64) -> Option<(i64, i64)> {
    let (s, e) = (a.max(c), b.min(d));
    (s < e).then_some((s, e))
}

/// A symbol's in-life stretches without rows (what counts towards an outage).
fn in_life(r: &SymbolResult) -> Vec<(i64, i64)> {
    let Some([l0, l1]) = r.life else {
        return Vec::new();
    };
    r.gaps
        .iter()
        .filter_map(|g| intersect(g[0], g[1], l0, l1))
        .collect()
}

/// The stretches missing in at least `share` of the symbols alive at the time (and in at least
/// [`MIN_OUTAGE_SYMBOLS`]), merged. A sweep over the start and end of every life and stretch.
pub fn outages(results: &[SymbolResult], share: f64) -> Vec<(i64, i64)> {
    let mut events: Vec<(i64, i32, i32)> = Vec::new(); // (time, Δalive, Δmissing)
    for r in results {
        if let Some([a, b]) = r.life {
            events.push((a, 1, 0));
            events.push((b, -1, 0));
        }
        for (a, b) in in_life(r) {
            events.push((a, 0, 1));
            events.push((b, 0, -1));
        }
    }
    events.sort_unstable();
    let (mut alive, mut missing) = (0i32, 0i32);
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        while i < events.len() && events[i].0 == t {
            alive += events[i].1;
            missing += events[i].2;
            i += 1;
        }
        let Some(next) = events.get(i).map(|e| e.0) else {
            break;
        };
        let m = missing.max(0) as usize;
        if m >= MIN_OUTAGE_SYMBOLS && m as f64 >= share * alive.max(1) as f64 - 1e-9 {
            match out.last_mut() {
                Some(last) if last.1 == t => last.1 = next,
                _ => out.push((t, next)),
            }
        }
    }
    out
}

/// Classify one symbol's day: its gap pieces and status.
fn classify_day(
    r: &SymbolResult,
    day: NaiveDate,
    outages: &[(i64, i64)],
) -> (Vec<Gap>, DayStatus, Option<u64>, u64) {
    let (d0, d1) = (day_start_us(day), day_start_us(day) + DAY_US);
    let counts = r.days.get(&day).cloned().unwrap_or_default();
    let life = r.life.map(|[a, b]| (a, b));
    let mut gaps: Vec<Gap> = Vec::new();
    let mut push = |s: i64, e: i64, class: GapClass| match gaps.last_mut() {
        Some(g) if g.end_us == s && g.class == class => g.end_us = e,
        _ => gaps.push(Gap {
            start_us: s,
            end_us: e,
            class,
        }),
    };
    let file_present = counts.rows > 0 || counts.file == FileState::Present;
    // Without any data the symbol has no life to compare with, and does not take part in outages.
    let outages = if life.is_some() { outages } else { &[] };
    for g in &r.gaps {
        let Some((a, b)) = intersect(g[0], g[1], d0, d1) else {
            continue;
        };
        // 1. Outside the symbol's data.
        let (l0, l1) = life.unwrap_or((i64::MIN, i64::MAX));
        if let Some((s, e)) = intersect(a, b, i64::MIN, l0) {
            push(s, e, GapClass::BeforeListing);
        }
        let Some((a2, b2)) = intersect(a, b, l0, l1) else {
            if let Some((s, e)) = intersect(a, b, l1, i64::MAX) {
                push(s, e, GapClass::AfterDelisting);
            }
            continue;
        };
        // 2. A 404.
        if counts.file == FileState::Missing {
            push(a2, b2, GapClass::MissingFile);
        } else {
            // 3. Outages cut the piece; 4./5. the rest by where it lies in the day.
            let mut cur = a2;
            let rest = |s: i64, e: i64| {
                if (s == d0 || e == d1) && file_present {
                    GapClass::Partial
                } else {
                    GapClass::Gap
                }
            };
            for &(os, oe) in outages {
                if let Some((s, e)) = intersect(cur, b2, os, oe) {
                    if s > cur {
                        push(cur, s, rest(cur, s));
                    }
                    push(s, e, GapClass::Outage);
                    cur = e;
                }
            }
            if cur < b2 {
                push(cur, b2, rest(cur, b2));
            }
        }
        if let Some((s, e)) = intersect(a, b, l1, i64::MAX) {
            push(s, e, GapClass::AfterDelisting);
        }
    }

    let (expected, missing) = match (r.grid_us, life) {
        (Some(step), Some((l0, l1))) => {
            let alive = intersect(d0, d1, l0, l1).map_or(0, |(s, e)| e - s);
            let missing: i64 = gaps
                .iter()
                .filter(|g| !matches!(g.class, GapClass::BeforeListing | GapClass::AfterDelisting))
                .map(|g| g.end_us - g.start_us)
                .sum();
            (Some((alive / step) as u64), (missing / step) as u64)
        }
        _ => (None, 0),
    };

    let worst = gaps
        .iter()
        .filter_map(|g| match g.class {
            GapClass::MissingFile => Some(DayStatus::MissingFile),
            GapClass::Partial => Some(DayStatus::Partial),
            GapClass::Gap => Some(DayStatus::Gap),
            GapClass::Outage => Some(DayStatus::Outage),
            GapClass::BeforeListing | GapClass::AfterDelisting => None,
        })
        .max();
    let outside = |class: GapClass| -> i64 {
        gaps.iter()
            .filter(|g| g.class == class)
            .map(|g| g.end_us - g.start_us)
            .sum()
    };
    let status = if counts.errors > 0 {
        DayStatus::Error
    } else if let Some(w) = worst {
        w
    } else if 2 * outside(GapClass::BeforeListing) >= DAY_US {
        DayStatus::BeforeListing
    } else if 2 * outside(GapClass::AfterDelisting) >= DAY_US {
        DayStatus::AfterDelisting
    } else {
        DayStatus::Ok
    };
    (gaps, status, expected, missing)
}

/// The dataset report from every symbol's result.
pub fn assemble(results: &[SymbolResult], a: Assembly<'_>) -> DatasetReport {
    let outs = outages(results, a.params.outage_share);
    let mut totals = Totals {
        status: DayStatus::ALL.iter().map(|s| (*s, 0)).collect(),
        gaps: GapClass::ALL.iter().map(|c| (*c, 0)).collect(),
        ..Totals::default()
    };
    let mut symbols = BTreeMap::new();
    for r in results {
        let mut days = BTreeMap::new();
        for day in a.range.days() {
            // Past what has been fetched: not yet there, not a gap.
            if r.data_until_us.is_some_and(|u| day_start_us(day) >= u) {
                continue;
            }
            let c = r.days.get(&day).cloned().unwrap_or_default();
            let (gaps, status, expected, missing) = classify_day(r, day, &outs);
            *totals.status.entry(status).or_default() += 1;
            for g in &gaps {
                *totals.gaps.entry(g.class).or_default() += 1;
            }
            totals.symbol_days += 1;
            if c.file == FileState::Rest {
                totals.provisional_days += 1;
            }
            days.insert(
                day,
                DayReport {
                    status,
                    rows: c.rows,
                    expected,
                    missing,
                    zero_volume: c.zero_volume,
                    errors: c.errors,
                    warnings: c.warnings,
                    source_duplicates: c.source_duplicates,
                    gaps,
                    provisional: c.file == FileState::Rest,
                },
            );
        }
        totals.symbols += 1;
        totals.errors += r.error_count;
        totals.warnings += r.warning_count;
        totals.notes += r.notes.len() as u64;
        symbols.insert(
            r.symbol.clone(),
            SymbolReport {
                first_data_us: r.first_data_us,
                last_data_us: r.last_data_us,
                data_until_us: r.data_until_us,
                days,
                errors: r.errors.clone(),
                warnings: r.warnings.clone(),
                notes: r.notes.clone(),
                error_count: r.error_count,
                warning_count: r.warning_count,
            },
        );
    }
    let outages = outs
        .iter()
        .map(|&(s, e)| Outage {
            start_us: s,
            end_us: e,
            symbols: results
                .iter()
                .filter(|r| {
                    in_life(r)
                        .iter()
                        .any(|&(a, b)| intersect(a, b, s, e).is_some())
                })
                .map(|r| r.symbol.clone())
                .collect(),
        })
        .collect();
    DatasetReport {
        schema: SCHEMA.into(),
        dataset: a.dataset,
        scope: a.dataset.scope(),
        range: a.range,
        generated_at: a.generated_at,
        run_id: a.run_id.to_string(),
        grid_us: results.first().and_then(|r| r.grid_us),
        params: a.params,
        fingerprint: a.fingerprint,
        totals,
        outages,
        symbols,
    }
}
