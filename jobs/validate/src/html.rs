//! The HTML page of a dataset report: a coverage heatmap (symbols × days, one cell per
//! symbol-day coloured by status, its gaps on hover; a click lists that day's gaps below; the
//! symbol column and the month and day header stay in view while it scrolls, and each month
//! starts with a rule), then
//! the outages, the gap list, and the errors, warnings and notes. One self-contained file:
//! inline CSS and JS, no fonts, images or scripts from anywhere, so it opens offline.

use std::fmt::Write as _;

use chrono::Datelike;

use shared::validation::{DatasetReport, DayStatus, Finding, GapClass};

use crate::checks::fmt_us;
use crate::summary::{day_runs, duration, gap_runs, span};

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// One colour per status, far apart in hue and lightness (the Okabe–Ito palette, which stays
/// distinct under the common colour-vision deficiencies), the two "not trading" states in greys
/// of clearly different lightness.
pub(crate) fn colour(s: DayStatus) -> &'static str {
    match s {
        DayStatus::Ok => "#009e73",
        DayStatus::BeforeListing => "#e4e4e4",
        DayStatus::AfterDelisting => "#8a8a8a",
        DayStatus::Outage => "#56b4e9",
        DayStatus::Gap => "#f0e442",
        DayStatus::Partial => "#e69f00",
        DayStatus::MissingFile => "#cc79a7",
        DayStatus::Error => "#b2182b",
    }
}

fn class_colour(c: GapClass) -> &'static str {
    match c {
        GapClass::MissingFile => colour(DayStatus::MissingFile),
        GapClass::Partial => colour(DayStatus::Partial),
        GapClass::Outage => colour(DayStatus::Outage),
        GapClass::BeforeListing => colour(DayStatus::BeforeListing),
        GapClass::AfterDelisting => colour(DayStatus::AfterDelisting),
        GapClass::Gap => colour(DayStatus::Gap),
    }
}

const STYLE: &str = "
body{font:13px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:20px;color:#222}
h1{font-size:18px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px}
.muted{color:#777}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;vertical-align:-1px;margin-right:4px}
.wrap{overflow:auto;max-width:100%;max-height:80vh;border:1px solid #eee}
table.hm{border-collapse:separate;border-spacing:2px}
table.hm td{width:13px;min-width:13px;height:15px;padding:0;border-radius:2px;cursor:pointer}
table.hm td.sel{outline:2px solid #222}
table.hm td.w{box-shadow:inset 0 0 0 2px #222}
table.hm td.p,.sw.p{background-image:repeating-linear-gradient(45deg,rgba(255,255,255,.6) 0 2px,transparent 2px 5px)}
table.hm .m1{border-left:2px solid #444}
table.hm tbody th{position:sticky;left:0;z-index:1;background:#fff;font-weight:normal;white-space:nowrap;text-align:right;padding-right:6px}
table.hm thead th{position:sticky;background:#fff;font-size:10px;color:#555;font-weight:normal;padding:0;text-align:center}
table.hm thead tr.mo th{top:0;height:16px;text-align:left;font-weight:600;color:#222;padding-left:3px}
table.hm thead tr.dd th{top:18px;height:14px}
table.hm thead th.corner{left:0;z-index:2}
table.ls{border-collapse:collapse;margin-top:4px}
table.ls th,table.ls td{border-bottom:1px solid #eee;padding:3px 10px 3px 0;text-align:left;vertical-align:top}
table.ls th{font-weight:600}
.tag{display:inline-block;padding:0 6px;border-radius:9px;color:#fff;font-size:12px}
.num{text-align:right}
";

/// Shows only the gap rows of the clicked symbol-day; a second click shows them all.
const SCRIPT: &str = "
(function(){
  var sel=null;
  function show(k){
    document.querySelectorAll('tr[data-k]').forEach(function(r){
      r.style.display=(!k||r.getAttribute('data-k').split(' ').indexOf(k)>=0)?'':'none';
    });
    document.getElementById('filter').textContent=k?('showing '+k.replace('|',' ')+' (click the cell again for all)'):'';
  }
  document.querySelectorAll('table.hm td').forEach(function(td){
    td.addEventListener('click',function(){
      var k=td.getAttribute('data-k');
      document.querySelectorAll('table.hm td.sel').forEach(function(x){x.classList.remove('sel');});
      if(sel===k){sel=null;show(null);return;}
      sel=k;td.classList.add('sel');show(k);
      document.getElementById('gaps').scrollIntoView({behavior:'smooth'});
    });
  });
})();
";

fn tag(text: &str, colour: &str) -> String {
    // Dark text on the light greys of listing and delisting.
    let light = [DayStatus::BeforeListing, DayStatus::AfterDelisting].map(self::colour);
    let ink = if light.contains(&colour) {
        "#333"
    } else {
        "#fff"
    };
    format!(
        "<span class=\"tag\" style=\"background:{colour};color:{ink}\">{}</span>",
        esc(text)
    )
}

fn findings_table(out: &mut String, title: &str, rows: &[(&str, &Finding)], total: u64) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h2>{} <span class=\"muted\">({total})</span></h2><table class=\"ls\"><tr><th>symbol</th><th>day</th><th>row time</th><th>kind</th><th>detail</th></tr>",
        esc(title)
    );
    for (sym, f) in rows {
        let _ = write!(
            out,
            "<tr data-k=\"{}|{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(sym),
            f.day,
            esc(sym),
            f.day,
            f.time_us.map(fmt_us).unwrap_or_default(),
            esc(f.kind.as_str()),
            esc(&f.detail)
        );
    }
    out.push_str("</table>");
}

/// ` class="m1"` for the first column of a month after the first column: the month rule.
fn month_start(i: usize, day: &chrono::NaiveDate) -> &'static str {
    if i > 0 && day.day() == 1 {
        " class=\"m1\""
    } else {
        ""
    }
}

/// The whole page.
pub fn render(r: &DatasetReport) -> String {
    let t = &r.totals;
    let mut o = String::with_capacity(64 * 1024);
    let title = format!("{} {} … {}", r.scope, r.range.start, r.range.end);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>validate {}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        o,
        "<h1>{}</h1><div class=\"muted\">generated {} · run {} · {} symbols · {} symbol-days · {} errors · {} warnings · {} notes · price-jump threshold {:.0}% · outage share {:.0}%</div>",
        esc(&title),
        r.generated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        esc(&r.run_id),
        t.symbols,
        t.symbol_days,
        t.errors,
        t.warnings,
        t.notes,
        r.params.price_jump_threshold * 100.0,
        r.params.outage_share * 100.0
    );

    o.push_str("<h2>Coverage</h2><div class=\"legend\">");
    for s in DayStatus::ALL {
        let _ = write!(
            o,
            "<span><i class=\"sw\" style=\"background:{}\"></i>{} ({})</span>",
            colour(s),
            s.as_str(),
            t.status.get(&s).copied().unwrap_or(0)
        );
    }
    o.push_str("<span><i class=\"sw\" style=\"box-shadow:inset 0 0 0 2px #222\"></i>warnings on the day</span>");
    let _ = write!(
        o,
        "<span><i class=\"sw p\" style=\"background-color:#999\"></i>provisional: from REST, not yet in the archive ({})</span>",
        t.provisional_days
    );
    // Two header rows: the months (a cell spanning their days), then the day of the month.
    o.push_str("</div><div class=\"wrap\"><table class=\"hm\"><thead><tr class=\"mo\"><th class=\"corner\"></th>");
    let days: Vec<chrono::NaiveDate> = r.range.days().collect();
    let mut k = 0;
    while k < days.len() {
        let month = (days[k].year(), days[k].month());
        let n = days[k..]
            .iter()
            .take_while(|d| (d.year(), d.month()) == month)
            .count();
        let _ = write!(
            o,
            "<th class=\"m1\" colspan=\"{n}\">{}</th>",
            days[k].format(if n >= 4 { "%Y-%m" } else { "%m" })
        );
        k += n;
    }
    o.push_str("</tr><tr class=\"dd\"><th class=\"corner\">symbol</th>");
    for (i, day) in days.iter().enumerate() {
        let _ = write!(o, "<th{}>{}</th>", month_start(i, day), day.format("%-d"));
    }
    o.push_str("</tr></thead><tbody>");
    for (sym, s) in &r.symbols {
        let _ = write!(o, "<tr><th>{}</th>", esc(sym));
        for (i, (day, d)) in s.days.iter().enumerate() {
            let mut tip = format!("{sym} {day}: {}\nrows {}", d.status.as_str(), d.rows);
            if let Some(e) = d.expected {
                let _ = write!(tip, " of {e} expected");
            }
            if d.zero_volume > 0 {
                let _ = write!(tip, ", {} zero-volume", d.zero_volume);
            }
            if d.provisional {
                tip.push_str("\nprovisional: from REST, the archive has not published it yet");
            }
            if d.errors + d.warnings > 0 {
                let _ = write!(tip, "\n{} errors, {} warnings", d.errors, d.warnings);
            }
            for g in &d.gaps {
                let _ = write!(
                    tip,
                    "\n{} {} ({})",
                    g.class.as_str(),
                    span(g.start_us, g.end_us),
                    duration(g.start_us, g.end_us)
                );
            }
            let classes: Vec<&str> = [
                (d.warnings > 0).then_some("w"),
                d.provisional.then_some("p"),
                (!month_start(i, day).is_empty()).then_some("m1"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let class = if classes.is_empty() {
                String::new()
            } else {
                format!(" class=\"{}\"", classes.join(" "))
            };
            let _ = write!(
                o,
                "<td data-k=\"{}|{day}\"{class} style=\"background:{}\" title=\"{}\"></td>",
                esc(sym),
                colour(d.status),
                esc(&tip)
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table></div><p id=\"filter\" class=\"muted\"></p>");

    if !r.outages.is_empty() {
        o.push_str("<h2>Outages (missing in most symbols at once)</h2><table class=\"ls\"><tr><th>when</th><th>length</th><th>symbols</th></tr>");
        for x in &r.outages {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&span(x.start_us, x.end_us)),
                duration(x.start_us, x.end_us),
                esc(&x.symbols.join(", "))
            );
        }
        o.push_str("</table>");
    }

    o.push_str("<h2 id=\"gaps\">Gaps</h2><table class=\"ls\"><tr><th>symbol</th><th>when</th><th>length</th><th>class</th></tr>");
    let mut any = false;
    for (sym, s) in &r.symbols {
        for (a, b, class) in gap_runs(s) {
            any = true;
            // The days this run touches, so a click on any of them finds it.
            let days: Vec<String> = crate::checks::day_of_us(a)
                .iter_days()
                .take_while(|d| *d <= crate::checks::day_of_us(b - 1))
                .map(|d| format!("{}|{d}", esc(sym)))
                .collect();
            let _ = write!(
                o,
                "<tr data-k=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                days.join(" "),
                esc(sym),
                esc(&span(a, b)),
                duration(a, b),
                tag(class.as_str(), class_colour(class))
            );
        }
    }
    if !any {
        o.push_str("<tr><td colspan=\"4\">none</td></tr>");
    }
    o.push_str("</table>");

    o.push_str("<h2>Days not ok</h2><table class=\"ls\"><tr><th>symbol</th><th>days</th><th>status</th></tr>");
    for (sym, s) in &r.symbols {
        for (a, b, st) in day_runs(s) {
            let when = if a == b {
                a.to_string()
            } else {
                format!("{a} … {b}")
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{when}</td><td>{}</td></tr>",
                esc(sym),
                tag(st.as_str(), colour(st))
            );
        }
    }
    o.push_str("</table>");

    let collect = |pick: fn(&shared::validation::SymbolReport) -> &Vec<Finding>| {
        r.symbols
            .iter()
            .flat_map(|(sym, s)| pick(s).iter().map(move |f| (sym.as_str(), f)))
            .collect::<Vec<_>>()
    };
    findings_table(&mut o, "Errors", &collect(|s| &s.errors), t.errors);
    findings_table(&mut o, "Warnings", &collect(|s| &s.warnings), t.warnings);
    findings_table(&mut o, "Notes", &collect(|s| &s.notes), t.notes);

    let _ = writeln!(
        o,
        "<p class=\"muted\">report.json fingerprint {}</p><script>{SCRIPT}</script></body></html>",
        esc(&r.fingerprint)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_tags_stay_readable() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert!(tag("error", colour(DayStatus::Error)).contains("color:#fff"));
        assert!(tag("before_listing", colour(DayStatus::BeforeListing)).contains("color:#333"));
    }
}
