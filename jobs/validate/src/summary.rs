//! The human summary of a dataset report (printed on stdout before the JSON run report), and the
//! condensed views both it and the HTML page use: runs of days with the same status, gaps merged
//! across midnight.

use chrono::NaiveDate;
use shared::validation::{DatasetReport, DayStatus, Finding, GapClass, SymbolReport};

use crate::checks::fmt_us;

/// Lines of each list the summary shows.
const SHOWN: usize = 12;

/// Consecutive days of one status: `(first, last, status)`, for the days that are not `ok`.
pub fn day_runs(s: &SymbolReport) -> Vec<(NaiveDate, NaiveDate, DayStatus)> {
    let mut out: Vec<(NaiveDate, NaiveDate, DayStatus)> = Vec::new();
    for (day, d) in &s.days {
        if d.status == DayStatus::Ok {
            continue;
        }
        match out.last_mut() {
            Some(r) if r.2 == d.status && r.1.succ_opt() == Some(*day) => r.1 = *day,
            _ => out.push((*day, *day, d.status)),
        }
    }
    out
}

/// A symbol's gaps with pieces of one class that meet at midnight joined: `(start, end, class)`.
pub fn gap_runs(s: &SymbolReport) -> Vec<(i64, i64, GapClass)> {
    let mut out: Vec<(i64, i64, GapClass)> = Vec::new();
    for g in s.days.values().flat_map(|d| d.gaps.iter()) {
        match out.last_mut() {
            Some(r) if r.1 == g.start_us && r.2 == g.class => r.1 = g.end_us,
            _ => out.push((g.start_us, g.end_us, g.class)),
        }
    }
    out
}

/// `2025-01-08 03:00 → 03:30` style: the end without its date when on the same day.
pub fn span(s: i64, e: i64) -> String {
    let (a, b) = (fmt_us(s), fmt_us(e));
    let short = |x: &str| x.strip_suffix(":00").unwrap_or(x).to_string();
    if a.get(..10) == b.get(..10) {
        format!("{} → {}", short(&a), short(b.get(11..).unwrap_or(&b)))
    } else {
        format!("{} → {}", short(&a), short(&b))
    }
}

/// Length of `[s, e)` as `30 min`, `6 h`, `2 d 4 h`.
pub fn duration(s: i64, e: i64) -> String {
    let m = (e - s) / 60_000_000;
    let (d, h, mm) = (m / 1440, (m % 1440) / 60, m % 60);
    match (d, h, mm) {
        (0, 0, 0) => format!("{} s", (e - s) / 1_000_000),
        (0, 0, mm) => format!("{mm} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, mm) => format!("{h} h {mm} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// A one-line account of a symbol's errors, for the run report's failures.
pub fn error_summary(s: &SymbolReport) -> String {
    let mut kinds: Vec<&str> = s.errors.iter().map(|f| f.kind.as_str()).collect();
    kinds.dedup();
    let first = s
        .errors
        .first()
        .map(|f| {
            let at = f.time_us.map(fmt_us).unwrap_or_else(|| f.day.to_string());
            format!("; first: {} at {at}: {}", f.kind.as_str(), f.detail)
        })
        .unwrap_or_default();
    format!(
        "{} data error(s) ({}){first}",
        s.error_count,
        kinds.join(", ")
    )
}

fn finding_line(label: &str, sym: &str, f: &Finding) -> String {
    let at = f.time_us.map(fmt_us).unwrap_or_else(|| f.day.to_string());
    format!("  {label:<7} {sym} {at} {}: {}", f.kind.as_str(), f.detail)
}

/// A few lines for a person.
pub fn text(r: &DatasetReport, html_path: &str) -> String {
    let t = &r.totals;
    let statuses: Vec<String> = t
        .status
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    let mut out = format!(
        "validate {} {}..{}: {} symbols, {} symbol-days: {}; {} errors, {} warnings, {} notes",
        r.scope,
        r.range.start,
        r.range.end,
        t.symbols,
        t.symbol_days,
        statuses.join(", "),
        t.errors,
        t.warnings,
        t.notes
    );
    let mut lines = Vec::new();
    for (label, pick) in [("ERROR", 0usize), ("WARNING", 1), ("NOTE", 2)] {
        for (sym, s) in &r.symbols {
            let list = match pick {
                0 => &s.errors,
                1 => &s.warnings,
                _ => &s.notes,
            };
            lines.extend(list.iter().map(|f| finding_line(label, sym, f)));
        }
    }
    let n = lines.len();
    for l in lines.into_iter().take(SHOWN) {
        out.push('\n');
        out.push_str(&l);
    }
    if n > SHOWN {
        out.push_str(&format!("\n  … and {} more findings", n - SHOWN));
    }
    let mut days = Vec::new();
    for (sym, s) in &r.symbols {
        for (a, b, st) in day_runs(s) {
            let when = if a == b {
                a.to_string()
            } else {
                format!("{a}…{b}")
            };
            days.push(format!("  {:<15} {sym} {when}", st.as_str()));
        }
    }
    let n = days.len();
    for l in days.into_iter().take(SHOWN) {
        out.push('\n');
        out.push_str(&l);
    }
    if n > SHOWN {
        out.push_str(&format!("\n  … and {} more runs of days not ok", n - SHOWN));
    }
    for o in &r.outages {
        out.push_str(&format!(
            "\n  outage  {} ({}, {} symbols)",
            span(o.start_us, o.end_us),
            duration(o.start_us, o.end_us),
            o.symbols.len()
        ));
    }
    out.push_str(&format!("\n  report: {}  heatmap: {html_path}", r.path()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_durations_read_well() {
        let t = 1_736_305_200_000_000; // 2025-01-08 03:00 UTC
        assert_eq!(span(t, t + 1_800_000_000), "2025-01-08 03:00 → 03:30");
        assert_eq!(duration(t, t + 1_800_000_000), "30 min");
        assert_eq!(duration(t, t + 86_400_000_000 * 2), "2 d");
        assert_eq!(duration(t, t + 6 * 3_600_000_000), "6 h");
    }
}
