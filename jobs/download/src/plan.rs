//! Deciding, per archive file, what this run does with it: skip (verified and present), fetch,
//! refresh (re-read its CHECKSUM), adopt (present in the store but not in the manifest), or count
//! it as missing upstream without asking again.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Days, Utc};
use shared::Result;
use shared::manifest::{Manifest, ManifestWriter, UnitStatus};
use shared::paths::{ArchiveFile, Dataset, FileDate, Period};
use shared::plan::{monthly_fallback, plan_symbol};
use shared::store::Store;

use crate::listed::ListedMeta;
use crate::{JOB_VERSION, Spec};

/// Files whose period ended this long before the probe are final: missing stays missing. A more
/// recent file recorded missing is asked again by every run that covers it (the archive
/// publishes late: hours for daily files, days for monthly ones), so a file published after a
/// run is fetched by the next one.
const MISSING_FINAL_AFTER_DAYS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do; the reason is for the dry-run listing.
    Skip(&'static str),
    /// Recorded as missing upstream and not due for another probe.
    KnownMissing,
    Fetch,
    /// Verified before: hash the stored zip again and download it again only if it changed
    /// (`--verify`).
    Verify,
    /// Verified before: re-read the CHECKSUM and re-download only if it changed.
    Refresh,
    /// The store has the file but the manifest does not (e.g. killed between write and record):
    /// verify the stored bytes against the CHECKSUM instead of downloading again.
    Adopt,
}

impl Action {
    pub fn is_skip(&self) -> bool {
        matches!(self, Action::Skip(_))
    }

    pub fn label(&self) -> &'static str {
        match self {
            Action::Skip(why) => why,
            Action::KnownMissing => "missing",
            Action::Fetch => "fetch",
            Action::Refresh => "refresh",
            Action::Verify => "verify",
            Action::Adopt => "adopt",
        }
    }
}

/// One archive file and what to do with it.
#[derive(Clone)]
pub struct PlannedUnit {
    pub file: ArchiveFile,
    pub action: Action,
    pub writer: Arc<ManifestWriter>,
    /// The sha256 the manifest recorded, for refresh.
    pub recorded_sha: Option<String>,
    /// What the bucket listing shows of the file, when the plan came from it.
    pub listed: Option<ListedMeta>,
}

/// Raw objects the store holds for one (dataset, symbol): path → size.
pub async fn stored_raw(store: &Store, ds: &Dataset, symbol: &str) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for period in ds.data_type.periods(ds.market) {
        let date = match period {
            Period::Daily => FileDate::Day(chrono::NaiveDate::MIN),
            Period::Monthly => FileDate::Month {
                year: 2000,
                month: 1,
            },
        };
        let probe = ArchiveFile::new(*ds, symbol, date);
        let folder = format!(
            "raw/{}",
            probe.folder().strip_prefix("data/").unwrap_or_default()
        );
        out.extend(store.list(&folder).await?);
    }
    Ok(out)
}

fn missing_is_final(file: &ArchiveFile, recorded_at: DateTime<Utc>) -> bool {
    let period_end = file.date.last_day();
    let probe_day = recorded_at.date_naive();
    probe_day
        .checked_sub_days(Days::new(MISSING_FINAL_AFTER_DAYS))
        .is_some_and(|cutoff| period_end < cutoff)
}

/// Plan one (dataset, symbol).
pub fn plan_units(
    spec: &Spec,
    ds: &Dataset,
    symbol: &str,
    manifest: &Manifest,
    stored: &HashMap<String, u64>,
    writer: &Arc<ManifestWriter>,
) -> Vec<PlannedUnit> {
    let mut out = Vec::new();
    for file in plan_symbol(ds, symbol, spec.common.range) {
        plan_file(spec, file, manifest, stored, writer, &mut out);
    }
    out
}

pub fn plan_file(
    spec: &Spec,
    file: ArchiveFile,
    manifest: &Manifest,
    stored: &HashMap<String, u64>,
    writer: &Arc<ManifestWriter>,
    out: &mut Vec<PlannedUnit>,
) {
    let unit = |action, recorded_sha| PlannedUnit {
        file: file.clone(),
        action,
        writer: writer.clone(),
        recorded_sha,
        listed: None,
    };
    let on_store = stored.get(&file.raw_path()).copied();
    if spec.common.force {
        out.push(unit(Action::Fetch, None));
        return;
    }
    let Some(e) = manifest.get(&file.key()) else {
        out.push(unit(
            if on_store.is_some() {
                Action::Adopt
            } else {
                Action::Fetch
            },
            None,
        ));
        return;
    };
    match e.status {
        // An erratum accepted on the ETag's word is not verified for `--strict-checksum`.
        UnitStatus::Done
            if spec.strict_checksum
                && e.inputs.get("verified_by").map(String::as_str) == Some("etag") =>
        {
            out.push(unit(Action::Fetch, None))
        }
        UnitStatus::Done if e.job_version == JOB_VERSION => {
            let out_ok = e
                .outputs
                .first()
                .is_some_and(|o| on_store == Some(o.size) && o.path == file.raw_path());
            let (action, sha) = match (out_ok, spec.verify, spec.refresh) {
                (false, _, _) => (Action::Fetch, None),
                // The sha256 the stored bytes had when verified.
                (true, true, _) => (Action::Verify, e.outputs.first().map(|o| o.sha256.clone())),
                (true, false, true) => (Action::Refresh, e.inputs.get("checksum").cloned()),
                (true, false, false) => (Action::Skip("verified"), None),
            };
            out.push(unit(action, sha));
        }
        UnitStatus::Done | UnitStatus::Failed => out.push(unit(Action::Fetch, None)),
        UnitStatus::Missing => {
            let due = spec.retry_missing || !missing_is_final(&file, e.recorded_at);
            if due {
                out.push(unit(Action::Fetch, None));
                return;
            }
            let fallback = monthly_fallback(&file, spec.common.range);
            if fallback.is_empty() {
                out.push(unit(Action::KnownMissing, None));
            } else {
                for f in fallback {
                    plan_file(spec, f, manifest, stored, writer, out);
                }
            }
        }
    }
}
