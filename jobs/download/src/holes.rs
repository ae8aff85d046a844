//! Monthly holes: a day a verified monthly file lacks, where the archive has the day's daily
//! file, is repaired in the same run by fetching that daily file (found in the listing, so no
//! 404 is asked for). Extract and convert then carry both sources, and `optimize` compares them
//! value by value and keeps the complete one.

use bytes::Bytes;
use chrono::NaiveDate;
use serde::Serialize;
use shared::paths::{ArchiveFile, FileDate, Period};
use shared::plan::{DateRange, monthly_fallback};
use shared::{Error, Result};

use crate::days::rows_per_day;
use crate::fetch::{FetchOutcome, process};
use crate::listed::Lister;
use crate::plan::{Action, PlannedUnit};
use crate::{Run, Stats};

/// A monthly file found lacking days, for the report's `details.monthly_holes`.
#[derive(Debug, Clone, Serialize)]
pub struct MonthlyHole {
    pub file: String,
    /// Days of the month (inside the run's range) the monthly file has no row for.
    pub days_absent: Vec<NaiveDate>,
    /// Of those, the days whose daily file was fetched and verified (the others: the archive has
    /// no daily file either, as before a listing or after a delisting).
    pub repaired: Vec<NaiveDate>,
}

/// Check a monthly file just verified, and fetch the daily files of the days it lacks. `held` is
/// its body when it was verified in memory; otherwise it is read back from the store.
pub async fn repair_month(run: &Run<'_>, unit: &PlannedUnit, held: Option<Bytes>) -> Result<()> {
    let file = &unit.file;
    let range = run.spec.common.range;
    if file.period() != Period::Monthly || monthly_fallback(file, range).is_empty() {
        return Ok(());
    }
    let ds = file.dataset;
    let counted = match held {
        Some(b) => {
            tokio::task::spawn_blocking(move || rows_per_day(&ds, std::io::Cursor::new(b))).await
        }
        None => {
            let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::Io {
                context: "creating a temp file to count a monthly file's days".into(),
                source: e,
            })?;
            run.ctx
                .store
                .download_to(&file.raw_path(), tmp.path())
                .await?;
            tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(tmp.path()).ok()?;
                rows_per_day(&ds, std::io::BufReader::new(f))
            })
            .await
        }
    };
    let counted = counted.map_err(|e| Error::Internal(format!("{file}: counting days: {e}")))?;
    let Some(counted) = counted else {
        return Ok(());
    };
    let absent: Vec<NaiveDate> = file
        .date
        .days()
        .filter(|d| range.contains(*d) && !counted.contains_key(d))
        .collect();
    let (Some(first), Some(last)) = (absent.first(), absent.last()) else {
        return Ok(());
    };
    // The archive's daily files of those days, from one listing of the month's stretch: days
    // before a listing or after a delisting have none, and cost no request.
    let lister = Lister::of(run.spec, run.http, &run.ctx.cancel);
    let stretch = DateRange::new(*first, *last)?;
    let listed = match lister
        .daily(&ds, &file.symbol, stretch, run.ctx.clock.now())
        .await
    {
        Ok(l) => {
            Stats::add(&run.stats.listing_pages, l.pages as u64);
            Some(l)
        }
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(e) => {
            tracing::warn!(file = %file, error = %e, "the listing could not be read: asking for the absent days' daily files");
            None
        }
    };
    let mut repaired = Vec::new();
    for day in &absent {
        let daily = ArchiveFile::new(ds, file.symbol.clone(), FileDate::Day(*day));
        let meta = match &listed {
            Some(l) => match l.get(&daily) {
                Some(m) => Some(m.clone()),
                None => continue,
            },
            None => None,
        };
        let u = PlannedUnit {
            file: daily,
            action: Action::Fetch,
            writer: unit.writer.clone(),
            recorded_sha: None,
            listed: meta,
        };
        match process(run, &u).await {
            Ok(FetchOutcome::Verified { .. }) => repaired.push(*day),
            Ok(_) => {}
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            // Recorded failed in the manifest: the next run asks again.
            Err(e) => {
                tracing::warn!(file = %u.file, error = %e, "a monthly hole's daily file failed")
            }
        }
    }
    if !repaired.is_empty() {
        tracing::warn!(file = %file, days = ?repaired, "the monthly file lacks days its daily files have: fetched them");
    }
    if !repaired.is_empty() {
        run.stats
            .monthly_holes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(MonthlyHole {
                file: file.key(),
                days_absent: absent,
                repaired,
            });
    }
    Ok(())
}
