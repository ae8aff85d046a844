//! A unit's pass over its inputs, month by month: each month's kline, funding and metrics files
//! are decoded into buffers its thread reuses, and its days are fingerprinted and (the changed
//! ones) computed while the month is still in cache; months are spread over threads. A month's
//! first day, which needs the end of the month before (its last minute, the funding records of
//! the 24 h and the metrics of the hour before), is finished by whichever thread completes the
//! second of the two months; when the month before has no minute (or is not read), at the end.
//!
//! Why months, not the year at once: a symbol-year of minutes is ~42 MB (its metrics ~12 MB) of
//! fresh memory to fault in and stream through three times (decode, fingerprint, compute); a
//! month is a few MB, written and read again while it is hot, and nothing waits for a whole
//! year of any input to be decoded.
//!
//! Why a month's other days need nothing of the month before: a bar takes the latest funding
//! record at most 24 h older than its close and the latest metrics record at most 1 h older, and
//! a day's fingerprint covers the same windows; from a month's second day on, both lie inside the
//! month (metrics partitions go by `create_time`, so a month's file may end with a snapshot of the
//! next month's first minute: it belongs to that month's first day, which takes it from here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{Datelike, Months, NaiveDate};
use frames::direct::Reader;
use shared::{Error, Result};

use crate::features::{
    self, Bars, FUNDING_MAX_AGE_US, Funding, METRICS_MAX_AGE_US, Metrics, Minutes,
};
use crate::frame::{self, InputFile, Kind};
use crate::{DAY_US, day_hash, day_key, day_of_us, day_start_us};

/// The days a unit computes, and what decides which of them to recompute.
pub struct Days {
    /// The unit's days, inclusive; other days of the months read are only context.
    pub first: NaiveDate,
    pub last: NaiveDate,
    /// Days the validation report marks as errors: their minutes are left out.
    pub excluded: BTreeSet<NaiveDate>,
    /// The fingerprints (`day:YYYY-MM-DD`) of the days whose bars are kept from the year file:
    /// a day whose fingerprint is unchanged is not recomputed.
    pub previous: BTreeMap<String, String>,
    /// Bar length.
    pub delta_us: i64,
    /// Names the unit in errors (`SYMBOL/YEAR`).
    pub unit: String,
}

/// What the pass found and computed.
#[derive(Debug, Default)]
pub struct Pass {
    /// Every day of the unit's range, fingerprinted.
    pub hashes: BTreeMap<NaiveDate, String>,
    /// The days whose fingerprint changed; their bars are in `bars`.
    pub changed: BTreeSet<NaiveDate>,
    pub bars: Bars,
    /// Minutes decoded (before exclusions).
    pub minutes_read: u64,
}

/// One month's files (any of them may be missing), owned by the thread that reads them: each is
/// read (or, fetched from a remote store, held) only while it is decoded.
#[derive(Default)]
struct MonthFiles {
    klines: Option<InputFile>,
    funding: Option<InputFile>,
    metrics: Option<InputFile>,
}

/// One month's share of the pass, and what its neighbours' first days need of it.
struct MonthOut {
    month: NaiveDate,
    /// Its last minute after exclusions (none if it has no rows).
    last: Minutes,
    /// Its first day's minutes, funding and metrics (that day is finished once the month before
    /// is read).
    head: (Minutes, Funding, Metrics),
    /// The funding records of its last 24 h and the metrics of its last hour (and after).
    tail: (Funding, Metrics),
    hashes: Vec<(NaiveDate, String)>,
    changed: Vec<NaiveDate>,
    bars: Vec<Bars>,
    rows: u64,
}

/// A thread's buffers, reused month after month.
#[derive(Default)]
struct Scratch {
    reader: Reader,
    minutes: Minutes,
    funding: Funding,
    metrics: Metrics,
    hash: Vec<u8>,
}

/// The months read so far, shared by the month threads: a month's first day is finished by
/// whichever thread completes the second of the two months it needs.
struct Shared {
    outs: Vec<Option<MonthOut>>,
    /// Whether each month's first day has been taken by a thread.
    first_taken: Vec<bool>,
}

/// Run the pass over `files` (a unit's inputs: kline, funding and metrics months) on up to
/// `threads` threads.
pub fn run(files: Vec<InputFile>, days: &Days, threads: usize) -> Result<Pass> {
    let mut months: BTreeMap<NaiveDate, MonthFiles> = BTreeMap::new();
    for f in files {
        let slot = months.entry(f.month).or_default();
        match f.kind {
            Kind::Klines => slot.klines = Some(f),
            Kind::Funding => slot.funding = Some(f),
            Kind::Metrics => slot.metrics = Some(f),
        }
    }
    // Each month's files, taken by the thread that reads it.
    let months: Vec<(NaiveDate, Mutex<MonthFiles>)> = months
        .into_iter()
        .map(|(start, files)| (start, Mutex::new(files)))
        .collect();
    let n = months.len();
    let in_range = |start: NaiveDate| (days.first..=days.last).contains(&start);
    let shared = Mutex::new(Shared {
        outs: (0..n).map(|_| None).collect(),
        first_taken: vec![false; n],
    });
    let lock = || shared.lock().expect("not poisoned");
    // Month `j`'s first day can be finished from months `j - 1` and `j` alone when they are
    // consecutive and `j - 1` has a last minute; otherwise it is left to the end (it needs an
    // earlier month's last minute, or has none).
    let local_first = |sh: &Shared, j: usize| {
        j > 0
            && j < n
            && in_range(months[j].0)
            && !sh.first_taken[j]
            && months[j - 1].0 + Months::new(1) == months[j].0
            && sh.outs[j].is_some()
            && sh.outs[j - 1].as_ref().is_some_and(|o| !o.last.is_empty())
    };
    let next = AtomicUsize::new(0);
    let worker = || -> Result<()> {
        let mut s = Scratch::default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((start, files)) = months.get(i) else {
                break;
            };
            let files = std::mem::take(&mut *files.lock().expect("not poisoned"));
            let out = month(*start, files, &mut s, days)?;
            // Store it, and finish the first days it completes (its own, and the next month's)
            // from the two months in place: a day's work under the lock, which the other
            // threads take only as they finish a month.
            let mut sh = lock();
            sh.outs[i] = Some(out);
            for j in [i, i + 1] {
                if !local_first(&sh, j) {
                    continue;
                }
                sh.first_taken[j] = true;
                let d = months[j].0;
                let (prev, cur) = (sh.outs[j - 1].as_ref(), sh.outs[j].as_ref());
                let (prev, cur) = (prev.expect("read"), cur.expect("read"));
                let (h, bars) = finish_day(&mut s, d, &FirstDay::of(prev, cur), days)?;
                let o = sh.outs[j].as_mut().expect("read");
                if let Some(b) = bars {
                    o.changed.push(d);
                    o.bars.push(b);
                }
                o.hashes.push((d, h));
            }
        }
        Ok(())
    };
    let threads = threads.clamp(1, n.max(1));
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let worker = &worker;
        let others: Vec<_> = (1..threads).map(|_| s.spawn(worker)).collect();
        let mut results = vec![worker()];
        results.extend(
            others
                .into_iter()
                .map(|h| h.join().expect("month thread panicked")),
        );
        results
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let sh = shared.into_inner().expect("not poisoned");
    let mut outs: Vec<MonthOut> = sh.outs.into_iter().flatten().collect();

    let mut pass = Pass {
        minutes_read: outs.iter().map(|o| o.rows).sum(),
        ..Pass::default()
    };
    let mut parts = Vec::new();
    for o in &mut outs {
        pass.hashes.extend(o.hashes.drain(..));
        pass.changed.extend(o.changed.drain(..));
        parts.append(&mut o.bars);
    }
    // The days left: the first days no month thread could finish, and the days of months that
    // have no file. A first day takes the last minute before it (of the nearest earlier month
    // that has one) and the tail of the month before.
    let by_month: BTreeMap<NaiveDate, &MonthOut> = outs.iter().map(|o| (o.month, o)).collect();
    let mut s = Scratch::default();
    for d in days.first.iter_days().take_while(|d| *d <= days.last) {
        if pass.hashes.contains_key(&d) {
            continue;
        }
        let start = month_start(d);
        let mut first = FirstDay {
            before: by_month
                .range(..start)
                .rev()
                .map(|(_, o)| &o.last)
                .find(|l| !l.is_empty()),
            ..FirstDay::default()
        };
        if d == start {
            if let Some(o) = by_month.get(&(start - Months::new(1))) {
                first.tail = Some(&o.tail);
            }
            if let Some(o) = by_month.get(&start) {
                first.head = Some(&o.head);
            }
        }
        let (h, bars) = finish_day(&mut s, d, &first, days)?;
        if let Some(b) = bars {
            pass.changed.insert(d);
            parts.push(b);
        }
        pass.hashes.insert(d, h);
    }
    pass.bars = Bars::concat(parts);
    Ok(pass)
}

/// What a day finished apart from its month needs: the last minute before it, and for a
/// month's first day the tail of the month before and its own head.
#[derive(Default)]
struct FirstDay<'a> {
    before: Option<&'a Minutes>,
    tail: Option<&'a (Funding, Metrics)>,
    head: Option<&'a (Minutes, Funding, Metrics)>,
}

impl<'a> FirstDay<'a> {
    /// Month `cur`'s first day from `prev` (the month before) and `cur`.
    fn of(prev: &'a MonthOut, cur: &'a MonthOut) -> FirstDay<'a> {
        FirstDay {
            before: Some(&prev.last),
            tail: Some(&prev.tail),
            head: Some(&cur.head),
        }
    }
}

/// Day `d` from `first`: its fingerprint, and its bars when the fingerprint changed.
fn finish_day(
    s: &mut Scratch,
    d: NaiveDate,
    first: &FirstDay,
    days: &Days,
) -> Result<(String, Option<Bars>)> {
    let start = month_start(d);
    let (m, fu, mt) = (&mut s.minutes, &mut s.funding, &mut s.metrics);
    m.clear();
    fu.clear();
    mt.clear();
    if let Some(before) = first.before {
        m.extend_from(before, 0..before.len().min(1));
    }
    if d == start {
        if let Some((tf, tm)) = first.tail {
            fu.extend_from(tf, 0..tf.len());
            mt.extend_from(tm, 0..tm.len());
        }
        if let Some((hm, hf, hmt)) = first.head {
            m.extend_from(hm, 0..hm.len());
            fu.extend_from(hf, 0..hf.len());
            mt.extend_from(hmt, 0..hmt.len());
        }
        let prev = start - Months::new(1);
        let joined = format!("{} across {} and {}", days.unit, prev, start);
        check_sorted(&fu.calc_time, "funding calc_time", &joined)?;
        check_sorted(&mt.snapshot_time, "metrics snapshot_time", &joined)?;
    }
    let h = day_hash(
        &mut s.hash,
        m,
        Some(fu),
        Some(mt),
        d,
        days.excluded.contains(&d),
    );
    let bars = (days.previous.get(&day_key(d)) != Some(&h)).then(|| {
        features::compute(
            m,
            Some(fu),
            Some(mt),
            days.delta_us,
            day_start_us(d),
            day_start_us(d) + DAY_US,
        )
    });
    Ok((h, bars))
}

/// The first day of `d`'s month.
fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("day 1")
}

/// The month starting `start`, decoded into `s` from `files`: checked, its excluded days dropped,
/// its days in the unit's range (but the first) fingerprinted and the changed ones computed.
fn month(start: NaiveDate, files: MonthFiles, s: &mut Scratch, days: &Days) -> Result<MonthOut> {
    let end = start + Months::new(1);
    let (lo, hi) = (day_start_us(start), day_start_us(end));
    let Scratch {
        reader,
        minutes: m,
        funding: fu,
        metrics: mt,
        hash: buf,
    } = s;
    m.clear();
    fu.clear();
    mt.clear();
    if let Some(f) = &files.klines {
        frame::read_klines(reader, f, m)?;
        check_sorted(&m.open_time, "klines open_time", &f.path)?;
        if m.open_time.first().is_some_and(|&t| t < lo)
            || m.open_time.last().is_some_and(|&t| t >= hi)
        {
            return Err(Error::bad_data(
                &f.path,
                format!(
                    "klines rows outside {} (run optimize)",
                    start.format("%Y-%m")
                ),
            ));
        }
    }
    if let Some(f) = &files.funding {
        frame::read_funding(reader, f, fu)?;
        check_sorted(&fu.calc_time, "funding calc_time", &f.path)?;
    }
    if let Some(f) = &files.metrics {
        frame::read_metrics(reader, f, mt)?;
        check_sorted(&mt.snapshot_time, "metrics snapshot_time", &f.path)?;
    }
    // A remote store's bytes freed here, while the other threads compute: not all at once after
    // the pass, on the unit's path to its output.
    drop(files);
    let rows = m.len() as u64;
    if days.excluded.range(start..end).next().is_some() {
        m.retain(|t| !days.excluded.contains(&day_of_us(t)));
    }
    let mut out = MonthOut {
        month: start,
        last: Minutes::default(),
        head: Default::default(),
        tail: Default::default(),
        hashes: Vec::new(),
        changed: Vec::new(),
        bars: Vec::new(),
        rows,
    };
    if !m.is_empty() {
        out.last.extend_from(m, m.len() - 1..m.len());
    }
    // What the next month's first day needs: the records its lookbacks reach.
    let from = fu
        .calc_time
        .partition_point(|&t| t < hi - FUNDING_MAX_AGE_US);
    out.tail.0.extend_from(fu, from..fu.len());
    let from = mt
        .snapshot_time
        .partition_point(|&t| t < hi - METRICS_MAX_AGE_US);
    out.tail.1.extend_from(mt, from..mt.len());
    // This month's first day, when it is the unit's: its rows, finished with the month before.
    if (days.first..=days.last).contains(&start) {
        let day2 = lo + DAY_US;
        let n = m.open_time.partition_point(|&t| t < day2);
        out.head.0.extend_from(m, 0..n);
        let n = fu.calc_time.partition_point(|&t| t < day2);
        out.head.1.extend_from(fu, 0..n);
        let n = mt.snapshot_time.partition_point(|&t| t < day2);
        out.head.2.extend_from(mt, 0..n);
    }
    // This month's days of the unit, but the first.
    let from = days.first.max(start.succ_opt().expect("a day after"));
    let to = days.last.min(end.pred_opt().expect("a day before"));
    let (f, mt) = (Some(&*fu), Some(&*mt));
    for d in from.iter_days().take_while(|d| *d <= to) {
        let h = day_hash(buf, m, f, mt, d, days.excluded.contains(&d));
        if days.previous.get(&day_key(d)) != Some(&h) {
            out.changed.push(d);
        }
        out.hashes.push((d, h));
    }
    // The changed days, run by run of consecutive days (bars never straddle a day, so a run cut
    // at a day boundary gives the same bars).
    let mut k = 0;
    while k < out.changed.len() {
        let a = out.changed[k];
        let mut b = a;
        while k + 1 < out.changed.len() && Some(out.changed[k + 1]) == b.succ_opt() {
            k += 1;
            b = out.changed[k];
        }
        k += 1;
        out.bars.push(features::compute(
            m,
            f,
            mt,
            days.delta_us,
            day_start_us(a),
            day_start_us(b) + DAY_US,
        ));
    }
    Ok(out)
}

/// `t` strictly increasing, or an error naming `what` and `whose` (a file or a unit).
fn check_sorted(t: &[i64], what: &str, whose: &str) -> Result<()> {
    match t.windows(2).position(|w| w[0] >= w[1]) {
        None => Ok(()),
        Some(i) => Err(Error::bad_data(
            whose,
            format!(
                "{what} not strictly increasing at row {} (run optimize)",
                i + 2
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    //! The month pass against one pass over the concatenated minutes (what the job computed
    //! before it went month by month): same fingerprints, same bars, bit for bit.
    use super::*;
    use crate::frame::{FUNDING_COLUMNS, KLINE_COLUMNS, METRICS_COLUMNS, Source};
    use frames::polars::prelude::*;

    const MIN: i64 = features::MINUTE_US;

    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn parquet(n: usize, cols: Vec<Column>) -> frames::Buffer<u8> {
        let df = DataFrame::new(n, cols).unwrap();
        let mut buf =
            frames::ParquetBuffer::new(df.schema(), &frames::ParquetOptions::default()).unwrap();
        buf.write(&df).unwrap();
        frames::Buffer::from_owner(buf.finish("t.parquet").unwrap().0)
    }

    fn time(name: &str, v: &[i64]) -> Column {
        Column::new(name.into(), v)
            .cast(&frames::time_dtype())
            .unwrap()
    }

    /// Minutes from 2023-01-30 to 2023-04-03 with gaps, flat and idle minutes, opens away from
    /// the previous close, and Apr 1 starting at 00:07.
    fn minutes() -> Minutes {
        let mut m = Minutes::default();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (start, end) = (
            day_start_us(date(2023, 1, 30)),
            day_start_us(date(2023, 4, 4)),
        );
        let apr1 = day_start_us(date(2023, 4, 1));
        let mut close = 100.0;
        let mut t = start;
        while t < end {
            let u = rng.unit();
            if (u < 0.01 && t % DAY_US != 0) || (apr1..apr1 + 7 * MIN).contains(&t) {
                t += MIN;
                continue;
            }
            let open = if u < 0.05 { close * 1.001 } else { close };
            close = open * (1.0 + (rng.unit() - 0.5) * 0.002);
            let flat = u > 0.97;
            let (hi, lo) = if flat {
                (open, open)
            } else {
                (
                    open.max(close) * (1.0 + rng.unit() * 1e-3),
                    open.min(close) * (1.0 - rng.unit() * 1e-3),
                )
            };
            if flat {
                close = open;
            }
            let volume = if u > 0.95 { 0.0 } else { rng.unit() * 10.0 };
            m.open_time.push(t);
            m.open.push(open);
            m.high.push(hi);
            m.low.push(lo);
            m.close.push(close);
            m.volume.push(volume);
            m.quote_volume.push(volume * close);
            m.trades.push((volume * 3.0) as i64);
            m.taker_buy_volume.push(volume * 0.4);
            m.taker_buy_quote_volume.push(volume * 0.4 * close);
            t += MIN;
        }
        m
    }

    fn kline_file(m: &Minutes, month: NaiveDate) -> InputFile {
        let (lo, hi) = (day_start_us(month), day_start_us(month + Months::new(1)));
        let (a, b) = (
            m.open_time.partition_point(|&t| t < lo),
            m.open_time.partition_point(|&t| t < hi),
        );
        let c = KLINE_COLUMNS;
        let cols = vec![
            time(c[0], &m.open_time[a..b]),
            Column::new(c[1].into(), &m.open[a..b]),
            Column::new(c[2].into(), &m.high[a..b]),
            Column::new(c[3].into(), &m.low[a..b]),
            Column::new(c[4].into(), &m.close[a..b]),
            Column::new(c[5].into(), &m.volume[a..b]),
            Column::new(c[6].into(), &m.quote_volume[a..b]),
            Column::new(c[7].into(), &m.trades[a..b]),
            Column::new(c[8].into(), &m.taker_buy_volume[a..b]),
            Column::new(c[9].into(), &m.taker_buy_quote_volume[a..b]),
        ];
        InputFile {
            kind: Kind::Klines,
            month,
            path: format!("klines/{month}"),
            source: Source::Bytes(parquet(b - a, cols)),
        }
    }

    /// Funding every 8 h (a few ms off), metrics every 5 min with blanks, over the whole span.
    fn small() -> (Funding, Metrics) {
        let (start, end) = (
            day_start_us(date(2023, 1, 29)),
            day_start_us(date(2023, 4, 4)),
        );
        let mut f = Funding::default();
        let mut t = start;
        let mut k = 0;
        while t < end {
            // A few ms late or early: Feb 1 and Mar 1 00:00 settle in the month before.
            f.calc_time
                .push(t + if k % 2 == 0 { 3_000 } else { -2_000 });
            k += 1;
            f.rate.push(1e-4 * ((t / MIN) % 7) as f64);
            f.interval_hours.push(8);
            t += 480 * MIN;
        }
        let mut mt = Metrics::default();
        let mut t = start;
        let mut k = 0u64;
        while t < end {
            // No snapshots in a month's first half hour but the one at 00:00 (filed with the
            // month before): its first bars take that one.
            let since = t - day_start_us(month_start(day_of_us(t)));
            if since > 0 && since <= 30 * MIN && day_of_us(t).day() == 1 {
                t += 5 * MIN;
                k += 1;
                continue;
            }
            mt.snapshot_time.push(t);
            let v = |j: u64| (!(k + j).is_multiple_of(11)).then_some((k + j) as f64 * 0.5);
            mt.open_interest.push(v(0));
            mt.open_interest_value.push(v(1));
            mt.top_trader_account_ls_ratio.push(v(2));
            mt.top_trader_position_ls_ratio.push(v(3));
            mt.account_ls_ratio.push(v(4));
            mt.taker_ls_volume_ratio.push(v(5));
            t += 5 * MIN;
            k += 1;
        }
        (f, mt)
    }

    /// Funding and metrics as monthly files, partitioned as `optimize` does: funding by
    /// `calc_time`, metrics by `create_time` (the snapshot 5 minutes earlier), so each metrics
    /// file but the last ends with a snapshot of the next month's first minute.
    fn small_files(f: &Funding, mt: &Metrics) -> Vec<InputFile> {
        let months = [(2023, 1), (2023, 2), (2023, 3), (2023, 4)].map(|(y, m)| date(y, m, 1));
        let mut out = Vec::new();
        for month in months {
            let (lo, hi) = (day_start_us(month), day_start_us(month + Months::new(1)));
            let rows = |t: &[i64], shift: i64| {
                t.partition_point(|&x| x - shift < lo)..t.partition_point(|&x| x - shift < hi)
            };
            let r = rows(&f.calc_time, 0);
            let c = FUNDING_COLUMNS;
            let funding = parquet(
                r.len(),
                vec![
                    time(c[0], &f.calc_time[r.clone()]),
                    Column::new(c[1].into(), &f.rate[r.clone()]),
                    Column::new(c[2].into(), &f.interval_hours[r]),
                ],
            );
            let r = rows(&mt.snapshot_time, 5 * MIN);
            let c = METRICS_COLUMNS;
            let metrics = parquet(
                r.len(),
                vec![
                    time(c[0], &mt.snapshot_time[r.clone()]),
                    Column::new(c[1].into(), &mt.open_interest[r.clone()]),
                    Column::new(c[2].into(), &mt.open_interest_value[r.clone()]),
                    Column::new(c[3].into(), &mt.top_trader_account_ls_ratio[r.clone()]),
                    Column::new(c[4].into(), &mt.top_trader_position_ls_ratio[r.clone()]),
                    Column::new(c[5].into(), &mt.account_ls_ratio[r.clone()]),
                    Column::new(c[6].into(), &mt.taker_ls_volume_ratio[r]),
                ],
            );
            out.push(InputFile {
                kind: Kind::Funding,
                month,
                path: format!("funding/{month}"),
                source: Source::Bytes(funding),
            });
            out.push(InputFile {
                kind: Kind::Metrics,
                month,
                path: format!("metrics/{month}"),
                source: Source::Bytes(metrics),
            });
        }
        out
    }

    #[test]
    fn month_by_month_equals_one_pass_over_the_concatenated_minutes() {
        let all = minutes();
        let (f, mt) = small();
        // Klines of January (the lookback month), February and April: March has only funding
        // and metrics.
        let mut files: Vec<InputFile> = [date(2023, 1, 1), date(2023, 2, 1), date(2023, 4, 1)]
            .into_iter()
            .map(|m| kline_file(&all, m))
            .collect();
        files.extend(small_files(&f, &mt));
        // What the files hold, as one frame: March dropped, the excluded days too. Feb 1 00:00
        // follows Jan 31 23:59 (its return and fingerprint need January's last minute).
        let mar = (
            day_start_us(date(2023, 3, 1)),
            day_start_us(date(2023, 4, 1)),
        );
        let excluded: BTreeSet<NaiveDate> = [date(2023, 2, 2), date(2023, 2, 14)].into();
        let mut one = all.clone();
        one.retain(|t| !(mar.0..mar.1).contains(&t) && !excluded.contains(&day_of_us(t)));
        let (first, last) = (date(2023, 1, 31), date(2023, 4, 2));
        let range: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
        let mut buf = Vec::new();
        let want_hashes: BTreeMap<NaiveDate, String> = range
            .iter()
            .map(|&d| {
                let h = day_hash(
                    &mut buf,
                    &one,
                    Some(&f),
                    Some(&mt),
                    d,
                    excluded.contains(&d),
                );
                (d, h)
            })
            .collect();

        for delta_us in [15 * MIN, 60 * MIN, 240 * MIN, DAY_US] {
            let want_bars = features::compute(
                &one,
                Some(&f),
                Some(&mt),
                delta_us,
                day_start_us(first),
                day_start_us(last) + DAY_US,
            );
            assert!(want_bars.len() >= 29, "{}", want_bars.len());
            for threads in [1, 2, 3] {
                let mut days = Days {
                    first,
                    last,
                    excluded: excluded.clone(),
                    previous: BTreeMap::new(),
                    delta_us,
                    unit: "TEST/2023".into(),
                };
                let pass = run(files.clone(), &days, threads).unwrap();
                let what = format!("Δ {delta_us} µs, {threads} threads");
                assert_eq!(
                    pass.minutes_read,
                    (all.len() - {
                        let a = all.open_time.partition_point(|&t| t < mar.0);
                        all.open_time.partition_point(|&t| t < mar.1) - a
                    }) as u64,
                    "{what}"
                );
                assert_eq!(pass.hashes, want_hashes, "{what}");
                assert_eq!(pass.changed.len(), range.len(), "{what}");
                assert_eq!(pass.bars, want_bars, "{what}");

                // Days whose recorded fingerprint matches are not recomputed: every other day
                // here, among them month starts (Feb 1, Mar 1, Apr 1) and most of March (no file).
                days.previous = want_hashes
                    .iter()
                    .filter(|(d, _)| d.day() % 2 == 1)
                    .map(|(d, h)| (crate::day_key(*d), h.clone()))
                    .collect();
                let pass = run(files.clone(), &days, threads).unwrap();
                let changed: BTreeSet<NaiveDate> =
                    range.iter().copied().filter(|d| d.day() % 2 == 0).collect();
                assert_eq!(pass.changed, changed, "{what}");
                assert_eq!(pass.hashes, want_hashes, "{what}");
                let mut want = Bars::default();
                for i in 0..want_bars.len() {
                    if changed.contains(&day_of_us(want_bars.open_time[i])) {
                        want.push_row(&want_bars, i);
                    }
                }
                assert_eq!(pass.bars, want, "{what}");
            }
        }
    }

    #[test]
    fn rows_out_of_order_or_outside_their_month_name_the_file() {
        let all = minutes();
        let (f, mt) = small();
        let mut files = vec![kline_file(&all, date(2023, 2, 1))];
        files.extend(small_files(&f, &mt));
        let days = Days {
            first: date(2023, 2, 1),
            last: date(2023, 2, 28),
            excluded: BTreeSet::new(),
            previous: BTreeMap::new(),
            delta_us: 60 * MIN,
            unit: "TEST/2023".into(),
        };
        // February's rows filed as March's.
        files[0].month = date(2023, 3, 1);
        let e = run(files.clone(), &days, 2).unwrap_err().to_string();
        assert!(
            e.contains("klines/2023-02-01: klines rows outside 2023-03"),
            "{e}"
        );
        // Two rows swapped.
        let mut m = all.clone();
        let i = m
            .open_time
            .partition_point(|&t| t < day_start_us(date(2023, 2, 10)));
        m.open_time.swap(i, i + 1);
        files[0] = kline_file(&m, date(2023, 2, 1));
        let e = run(files, &days, 2).unwrap_err().to_string();
        assert!(
            e.contains("klines open_time not strictly increasing at row"),
            "{e}"
        );
    }
}
