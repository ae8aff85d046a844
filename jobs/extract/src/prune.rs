//! `--prune-converted`: delete staging CSVs that `convert` has taken. A CSV goes only when the
//! convert manifest has its unit done from exactly that CSV (`inputs["csv"]` equals the sha256
//! the extract manifest recorded); the extract entry is then re-recorded as pruned so later runs
//! treat the unit as up to date while its zip is unchanged.

use shared::Result;
use shared::manifest::{Entry, Manifest, ManifestKey, UnitStatus};

use crate::plan::Unit;
use crate::{Run, is_pruned, pruned_detail};

/// The convert job whose manifest says a CSV has been consumed.
pub const CONVERT_JOB: shared::job::JobName = shared::job::JobName::CONVERT;

/// A CSV that can go, with the extract entry to re-record.
pub struct Candidate {
    pub csv: String,
    pub entry: Entry,
}

/// Candidates among `units` (all of one dataset and symbol): extract done and not yet pruned,
/// convert done from the same CSV, and the CSV still in the store.
pub async fn candidates(run: &Run<'_>, units: &[Unit]) -> Result<Vec<Candidate>> {
    let Some(first) = units.first() else {
        return Ok(Vec::new());
    };
    let scope = first.file.dataset.scope();
    let sym = &first.file.symbol;
    let store = &run.ctx.store;
    let extract = Manifest::load(store, &ManifestKey::new(crate::JOB, &scope, sym)).await?;
    let convert = Manifest::load(store, &ManifestKey::new(CONVERT_JOB, &scope, sym)).await?;
    let mut out = Vec::new();
    for u in units {
        let key = u.file.key();
        let csv = u.file.csv_path();
        let Some(e) = extract.get(&key) else { continue };
        if e.status != UnitStatus::Done || is_pruned(e) || e.inputs != u.inputs {
            continue;
        }
        let Some(sha) = e.outputs.iter().find(|o| o.path == csv).map(|o| &o.sha256) else {
            continue;
        };
        let converted = convert
            .get(&key)
            .is_some_and(|c| c.status == UnitStatus::Done && c.inputs.get("csv") == Some(sha));
        if converted && store.size_opt(&csv).await?.is_some() {
            out.push(Candidate {
                csv,
                entry: e.clone(),
            });
        }
    }
    Ok(out)
}

/// Delete one candidate's CSV and record the unit as pruned. The record comes after the delete:
/// a crash between them leaves a done entry without its CSV, which the next run re-extracts.
pub async fn prune(run: &Run<'_>, unit: &Unit, c: Candidate) -> Result<()> {
    run.ctx.store.delete(&c.csv).await?;
    let sha = c
        .entry
        .outputs
        .iter()
        .find(|o| o.path == c.csv)
        .map(|o| o.sha256.clone())
        .unwrap_or_default();
    let entry = Entry {
        recorded_at: run.ctx.clock.now(),
        run_id: run.ctx.run_id.clone(),
        detail: Some(pruned_detail(&sha, &run.ctx.run_id)),
        ..c.entry
    };
    unit.writer.record(entry).await?;
    tracing::debug!(csv = %c.csv, "pruned");
    Ok(())
}
