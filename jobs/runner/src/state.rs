//! Run state in the store, so that a rerun continues where a crashed run stopped and a finished
//! DAG reruns as a no-op. Under `_runs/<dag>/<run key>/` (the run key covers the DAG name and
//! its resolved range and symbols):
//!
//! ```text
//! params.json                       the resolved run parameters (written by every run)
//! steps/<step>/<i>-of-<n>.json      one record per finished shard, with the hash of its arguments
//! runs/<run id>.json                the summary of every invocation
//! ```
//!
//! A shard is skipped when its record exists with the same argument hash and none of the steps
//! it needs ran in this invocation; the jobs' own manifests make any rerun cheap anyway.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::Store;
use shared::report::Counts;

use crate::error::{Error, Result};
use crate::plan::{Plan, PlannedStep, Shard};

/// What the store keeps about a shard that finished with exit code 0.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardRecord {
    pub step: String,
    pub job: String,
    pub shard: String,
    /// sha256 of the job name and its arguments (services as placeholders).
    pub args_hash: String,
    pub args: Vec<String>,
    /// The runner run that finished it, and the job's own run id (its report's name).
    pub run_id: String,
    pub job_run_id: String,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub attempts: u32,
    #[serde(default)]
    pub counts: Option<Counts>,
    #[serde(default)]
    pub report: Option<String>,
}

/// The run state of one (DAG, run key).
#[derive(Debug, Clone)]
pub struct RunState {
    store: Store,
    prefix: String,
}

impl RunState {
    pub fn new(store: Store, plan: &Plan) -> RunState {
        RunState {
            store,
            prefix: plan.state_prefix(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn shard_path(&self, step: &str, shard: Shard) -> String {
        format!("{}steps/{step}/{}.json", self.prefix, shard.slug())
    }

    /// The record of a shard, if it finished before with the same arguments.
    pub async fn done(&self, step: &PlannedStep, shard: Shard) -> Result<Option<ShardRecord>> {
        let path = self.shard_path(&step.name, shard);
        let Some(bytes) = self.store.get_opt(&path).await? else {
            return Ok(None);
        };
        // A record that does not parse (a format of older runners) only means "run it again".
        let Ok(rec) = serde_json::from_slice::<ShardRecord>(&bytes) else {
            tracing::warn!(path = %path, "unreadable run-state record: the shard runs again");
            return Ok(None);
        };
        Ok((rec.args_hash == step.args_hash(shard)).then_some(rec))
    }

    pub async fn record(&self, rec: &ShardRecord, shard: Shard) -> Result<()> {
        let path = self.shard_path(&rec.step, shard);
        self.put_json(&path, rec).await
    }

    pub async fn write_params(&self, plan: &Plan) -> Result<()> {
        let path = format!("{}params.json", self.prefix);
        self.put_json(&path, &plan.params).await
    }

    /// Write a run summary; returns its path.
    pub async fn write_summary<T: Serialize>(&self, run_id: &str, summary: &T) -> Result<String> {
        let path = format!("{}runs/{run_id}.json", self.prefix);
        self.put_json(&path, summary).await?;
        Ok(path)
    }

    async fn put_json<T: Serialize>(&self, path: &str, v: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(v).map_err(|e| Error::Json {
            context: format!("serializing {path}"),
            source: e,
        })?;
        self.store.put(path, body).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::Dag;
    use crate::plan::{Overrides, plan};

    #[tokio::test]
    async fn records_match_only_the_same_arguments() {
        let text = "name: t\ndefaults: {symbols: [A, B], start: 2024-01-01, end: 2024-01-02}\nsteps:\n  - {name: dl, job: download, shard_by: symbol, parallelism: 2}\n";
        let dag = Dag::parse(std::path::Path::new("t.yaml"), text).unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2024, 2, 1).unwrap();
        let p = plan(&dag, &Overrides::default(), today).unwrap();
        let store = Store::open("memory://").unwrap();
        let st = RunState::new(store, &p);
        let step = &p.steps[0];
        let shard = step.shards[1];
        assert!(st.done(step, shard).await.unwrap().is_none());
        let rec = ShardRecord {
            step: step.name.clone(),
            job: step.job.clone(),
            shard: shard.spec(),
            args_hash: step.args_hash(shard),
            args: step.shard_args(shard),
            run_id: "r".into(),
            job_run_id: "r-dl-1-of-2".into(),
            finished_at: Utc::now(),
            seconds: 1.0,
            attempts: 1,
            counts: None,
            report: None,
        };
        st.record(&rec, shard).await.unwrap();
        assert_eq!(st.done(step, shard).await.unwrap(), Some(rec.clone()));
        assert!(st.done(step, step.shards[0]).await.unwrap().is_none());
        // Other arguments: not done.
        let mut changed = step.clone();
        changed.args.push("--refresh".into());
        assert!(st.done(&changed, shard).await.unwrap().is_none());
        assert!(
            st.shard_path("dl", shard)
                .ends_with("/steps/dl/1-of-2.json")
        );
    }
}
