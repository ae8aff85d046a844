//! Resolving a valid DAG for one run: the run parameters (store, range, symbols) after
//! command-line overrides, relative dates resolved against today, each step's argument list and
//! shards, and the run key that names the run's state in the store. Nothing here starts a
//! process; `exec` does.

use chrono::NaiveDate;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dag::{ArgValue, Dag, Scalar, Step};
use crate::error::{Error, Result};
use crate::registry::{self, ArgKind};

/// What the command line overrides for a whole run (the DAG's defaults otherwise).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub store: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub symbols: Option<Vec<String>>,
    /// The archive URL instead of the DAG's `source` default.
    pub source: Option<String>,
    /// The REST host instead of the DAG's `rest-url` default (`tail`).
    pub rest_url: Option<String>,
    /// Which steps run (the default selects the whole DAG).
    pub selection: Selection,
}

/// A cut of the DAG: `steps` and everything they need, `from` a step and everything after it,
/// `until` a step and everything before it; the three intersect. A step left out is taken as
/// done: a kept step's needs on it are dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub steps: Option<Vec<String>>,
    pub from: Option<String>,
    pub until: Option<String>,
}

impl Selection {
    /// The indices of the steps kept, in file order.
    pub fn apply(&self, dag: &Dag) -> Result<Vec<usize>> {
        let steps = dag.steps();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        let index = |flag: &str, name: &str| -> Result<usize> {
            dag.step_index(name).ok_or_else(|| {
                Error::usage(format!(
                    "{flag}: no step `{name}` in {} (its steps: {})",
                    dag.file.display(),
                    names.join(", ")
                ))
            })
        };
        let needs: Vec<Vec<usize>> = steps
            .iter()
            .map(|s| s.needs.iter().filter_map(|n| dag.step_index(n)).collect())
            .collect();
        // Closure of `roots` over `next` (the needs, or the steps that need a step).
        let closure = |roots: &[usize], next: &dyn Fn(usize) -> Vec<usize>| -> Vec<bool> {
            let mut seen = vec![false; steps.len()];
            let mut stack = roots.to_vec();
            while let Some(i) = stack.pop() {
                if !std::mem::replace(&mut seen[i], true) {
                    stack.extend(next(i));
                }
            }
            seen
        };
        let before = |i: usize| needs[i].clone();
        let after = |i: usize| {
            (0..steps.len())
                .filter(|&j| needs[j].contains(&i))
                .collect()
        };
        let mut keep = vec![true; steps.len()];
        let mut cut = |set: Vec<bool>| keep.iter_mut().zip(set).for_each(|(k, s)| *k &= s);
        if let Some(list) = &self.steps {
            if list.is_empty() {
                return Err(Error::usage("--steps: name at least one step"));
            }
            let roots = list
                .iter()
                .map(|n| index("--steps", n))
                .collect::<Result<Vec<_>>>()?;
            cut(closure(&roots, &before));
        }
        if let Some(n) = &self.until {
            cut(closure(&[index("--until", n)?], &before));
        }
        if let Some(n) = &self.from {
            cut(closure(&[index("--from", n)?], &after));
        }
        let kept: Vec<usize> = (0..steps.len()).filter(|&i| keep[i]).collect();
        if kept.is_empty() {
            let given = |flag: &str, v: Option<String>| v.map(|v| format!("{flag} {v}"));
            let flags: Vec<String> = [
                given("--steps", self.steps.as_ref().map(|s| s.join(","))),
                given("--from", self.from.clone()),
                given("--until", self.until.clone()),
            ]
            .into_iter()
            .flatten()
            .collect();
            return Err(Error::usage(format!(
                "{} leave no step: no step is in all of them",
                flags.join(" and ")
            )));
        }
        Ok(kept)
    }
}

/// One shard of a step: `--shard index/count`, or the whole step when `count` is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `0/2`.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    /// `0-of-2`, for paths and run ids.
    pub fn slug(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

/// Split a symbol list (or `all`) into at most `parallelism` shards: `--shard I/N` specs.
pub fn shards(symbols: &[String], parallelism: u32) -> Vec<Shard> {
    let n = parallelism.max(1) as usize;
    let all = symbols.len() == 1 && symbols[0].eq_ignore_ascii_case("all");
    let count = if all {
        n
    } else {
        let mut distinct: Vec<String> = symbols.iter().map(|s| s.trim().to_uppercase()).collect();
        distinct.sort();
        distinct.dedup();
        n.min(distinct.len().max(1))
    };
    (0..count).map(|index| Shard { index, count }).collect()
}

/// A step ready to run: its job, its arguments (`--flag value` pairs, services still as
/// `${services.NAME.url}`), its shards.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub name: String,
    pub job: String,
    /// Indices of the steps it needs.
    pub needs: Vec<usize>,
    /// Command-line words after the program, without `--shard`, `--run-id`, `--log-format`.
    pub args: Vec<String>,
    pub shards: Vec<Shard>,
    pub sharded: bool,
    pub retries: u32,
    pub retry_delay_secs: u64,
    /// Services whose URL the arguments use.
    pub services: Vec<String>,
}

impl PlannedStep {
    /// The shard's command-line words: the step's, then `--shard` when the step is sharded.
    pub fn shard_args(&self, shard: Shard) -> Vec<String> {
        let mut a = self.args.clone();
        if self.sharded {
            a.push("--shard".into());
            a.push(shard.spec());
        }
        a
    }

    /// The hash that says whether a recorded shard ran with the same arguments.
    pub fn args_hash(&self, shard: Shard) -> String {
        let mut h = Sha256::new();
        h.update(self.job.as_bytes());
        for a in self.shard_args(shard) {
            h.update([0]);
            h.update(a.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// `[name]` or `[name 0/2]`: the prefix of the step's log lines.
    pub fn label(&self, shard: Shard) -> String {
        if self.sharded {
            format!("{} {}", self.name, shard.spec())
        } else {
            self.name.clone()
        }
    }
}

/// The run parameters after overrides, dates resolved.
#[derive(Debug, Clone, Serialize)]
pub struct RunParams {
    pub store: String,
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
    pub symbols: Option<Vec<String>>,
    pub today: NaiveDate,
}

/// A DAG resolved for one run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub dag: String,
    pub params: RunParams,
    /// Names the run's state: `<start>_<end>-<hash of the parameters>`.
    pub run_key: String,
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    /// `_runs/<dag>/<run key>/`.
    pub fn state_prefix(&self) -> String {
        format!("_runs/{}/{}/", self.dag, self.run_key)
    }

    /// Every binary the run starts: jobs and service programs.
    pub fn programs(&self, dag: &Dag) -> Vec<String> {
        let mut p: Vec<String> = self.steps.iter().map(|s| s.job.clone()).collect();
        p.extend(dag.spec.services.values().map(|s| s.command[0].clone()));
        p.sort();
        p.dedup();
        p
    }
}

fn resolve(text: &str, today: NaiveDate, what: &str) -> Result<NaiveDate> {
    shared::plan::resolve_date(text, today).map_err(|e| Error::usage(format!("{what}: {e}")))
}

/// Resolve `dag` for a run on `today` with `overrides`.
pub fn plan(dag: &Dag, overrides: &Overrides, today: NaiveDate) -> Result<Plan> {
    let defaults = &dag.spec.defaults;
    let store = overrides
        .store
        .clone()
        .or_else(|| defaults.get("store").map(|v| v.text()))
        .unwrap_or_else(|| "./data".into());
    if store.starts_with("memory:") {
        return Err(Error::usage(
            "a memory:// store lives inside one process: the runner's jobs cannot share it",
        ));
    }
    // The run's parameters: overrides, else the defaults.
    let run_value = |name: &str, over: Option<ArgValue>| -> Option<ArgValue> {
        over.or_else(|| defaults.get(name).cloned())
    };
    let start_v = run_value(
        "start",
        overrides
            .start
            .clone()
            .map(|s| ArgValue::One(Scalar::Str(s))),
    );
    let end_v = run_value(
        "end",
        overrides.end.clone().map(|s| ArgValue::One(Scalar::Str(s))),
    );
    let symbols_v = run_value(
        "symbols",
        overrides
            .symbols
            .clone()
            .map(|v| ArgValue::List(v.into_iter().map(Scalar::Str).collect())),
    );
    let start = start_v
        .as_ref()
        .map(|v| resolve(&v.text(), today, "start"))
        .transpose()?;
    let end = end_v
        .as_ref()
        .map(|v| resolve(&v.text(), today, "end"))
        .transpose()?;
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        return Err(Error::usage(format!("end {e} is before start {s}")));
    }
    let symbols: Option<Vec<String>> = symbols_v.as_ref().map(|v| split_list(&v.text()));

    let source_v = overrides
        .source
        .clone()
        .map(|s| ArgValue::One(Scalar::Str(s)));
    let rest_url_v = overrides
        .rest_url
        .clone()
        .map(|s| ArgValue::One(Scalar::Str(s)));
    let kept = overrides.selection.apply(dag)?;
    let mut steps = Vec::new();
    for &i in &kept {
        let mut planned = plan_step(
            dag,
            &dag.steps()[i],
            &store,
            today,
            &RunValues {
                start: start_v.as_ref(),
                end: end_v.as_ref(),
                symbols: symbols_v.as_ref(),
                source: source_v.as_ref(),
                rest_url: rest_url_v.as_ref(),
            },
        )?;
        // Indices into the kept steps; a need left out of the cut is taken as done.
        planned.needs = planned
            .needs
            .iter()
            .filter_map(|n| kept.iter().position(|k| k == n))
            .collect();
        steps.push(planned);
    }

    let mut h = Sha256::new();
    h.update(dag.name().as_bytes());
    for part in [
        start.map(|d| d.to_string()).unwrap_or_default(),
        end.map(|d| d.to_string()).unwrap_or_default(),
        symbols.as_ref().map(|s| s.join(",")).unwrap_or_default(),
    ] {
        h.update([0]);
        h.update(part.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    let range = match (start, end) {
        (Some(s), Some(e)) => format!("{s}_{e}"),
        _ => "range".into(),
    };
    Ok(Plan {
        dag: dag.name().to_string(),
        params: RunParams {
            store,
            start,
            end,
            symbols,
            today,
        },
        run_key: format!("{range}-{}", &digest[..10]),
        steps,
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// The run's values that replace the DAG's defaults.
struct RunValues<'a> {
    start: Option<&'a ArgValue>,
    end: Option<&'a ArgValue>,
    symbols: Option<&'a ArgValue>,
    source: Option<&'a ArgValue>,
    rest_url: Option<&'a ArgValue>,
}

fn plan_step(
    dag: &Dag,
    step: &Step,
    store: &str,
    today: NaiveDate,
    run: &RunValues,
) -> Result<PlannedStep> {
    let (start, end, symbols) = (run.start, run.end, run.symbols);
    let job = registry::job(&step.job).expect("validated job");
    let mut args = Vec::new();
    let mut services = Vec::new();
    // The job's flags in registry order: stable command lines whatever the file's key order.
    for spec in job.all_args() {
        let name = spec.name;
        let value = match name {
            "store" => Some(ArgValue::One(Scalar::Str(store.to_string()))),
            _ => step.args.get(name).cloned().or_else(|| match name {
                _ if !spec.takes_defaults => None,
                "start" => start.cloned(),
                "end" => end.cloned(),
                "symbols" => symbols.cloned(),
                "source" if run.source.is_some() => run.source.cloned(),
                "rest-url" if run.rest_url.is_some() => run.rest_url.cloned(),
                _ => dag.spec.defaults.get(name).cloned(),
            }),
        };
        let Some(value) = value else { continue };
        match spec.kind {
            ArgKind::Switch => {
                if value.as_bool() == Some(true) {
                    args.push(format!("--{name}"));
                }
            }
            ArgKind::Value | ArgKind::List => {
                let mut text = value.text();
                if name == "start" || name == "end" {
                    text = resolve(&text, today, &format!("step `{}`: {name}", step.name))?
                        .to_string();
                }
                services.extend(crate::dag::service_refs(&text).unwrap_or_default());
                args.push(format!("--{name}"));
                args.push(text);
            }
        }
    }
    services.sort();
    services.dedup();
    let sharded = step.shard_by.is_some();
    let shard_list = if sharded {
        let syms = step
            .args
            .get("symbols")
            .or(symbols)
            .map(|v| split_list(&v.text()))
            .unwrap_or_default();
        shards(&syms, step.parallelism())
    } else {
        vec![Shard { index: 0, count: 1 }]
    };
    let needs = step
        .needs
        .iter()
        .map(|n| dag.step_index(n).expect("validated need"))
        .collect();
    Ok(PlannedStep {
        name: step.name.clone(),
        job: step.job.clone(),
        needs,
        args,
        shards: shard_list,
        sharded,
        retries: step.retries,
        retry_delay_secs: step.retry_delay_secs(),
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DAG: &str = "\
name: t
defaults:
  store: ./data
  symbols: [BTCUSDT, ETHUSDT, SOLUSDT]
  start: -3d
  end: yesterday
  source: ${services.sim.url}
services:
  sim:
    command: [archive-sim]
steps:
  - name: download
    job: download
    args:
      data-type: [klines, aggTrades]
      refresh: true
      retry-missing: false
    shard_by: symbol
    parallelism: 2
  - name: extract
    job: extract
    needs: [download]
    args:
      symbols: BTCUSDT
";

    fn d(s: &str) -> NaiveDate {
        shared::plan::parse_date(s).unwrap()
    }

    #[test]
    fn resolves_dates_defaults_and_shards() {
        let dag = Dag::parse(Path::new("t.yaml"), DAG).unwrap();
        let p = plan(&dag, &Overrides::default(), d("2025-01-10")).unwrap();
        let dl = &p.steps[0];
        assert_eq!(
            dl.args,
            [
                "--store",
                "./data",
                "--data-type",
                "klines,aggTrades",
                "--symbols",
                "BTCUSDT,ETHUSDT,SOLUSDT",
                "--start",
                "2025-01-07",
                "--end",
                "2025-01-09",
                "--source",
                "${services.sim.url}",
                "--refresh",
            ]
        );
        assert_eq!(dl.services, ["sim"]);
        assert_eq!(dl.shards.len(), 2);
        assert_eq!(
            dl.shard_args(dl.shards[1]).last().map(String::as_str),
            Some("1/2")
        );
        let ex = &p.steps[1];
        assert!(!ex.args.contains(&"--source".to_string()));
        assert!(ex.args.windows(2).any(|w| w == ["--symbols", "BTCUSDT"]));
        assert_eq!(ex.shards, [Shard { index: 0, count: 1 }]);
        assert_eq!(ex.needs, [0]);
        assert!(
            p.run_key.starts_with("2025-01-07_2025-01-09-"),
            "{}",
            p.run_key
        );
        assert_eq!(p.state_prefix(), format!("_runs/t/{}/", p.run_key));
    }

    #[test]
    fn overrides_replace_defaults_and_change_the_run_key() {
        let dag = Dag::parse(Path::new("t.yaml"), DAG).unwrap();
        let today = d("2025-01-10");
        let base = plan(&dag, &Overrides::default(), today).unwrap();
        let o = Overrides {
            start: Some("2024-12-01".into()),
            end: Some("2024-12-02".into()),
            symbols: Some(vec!["BTCUSDT".into()]),
            store: Some("/tmp/s".into()),
            ..Default::default()
        };
        let p = plan(&dag, &o, today).unwrap();
        let dl = &p.steps[0];
        assert!(dl.args.windows(2).any(|w| w == ["--start", "2024-12-01"]));
        assert!(dl.args.windows(2).any(|w| w == ["--store", "/tmp/s"]));
        // One symbol: one shard, whatever the parallelism.
        assert_eq!(dl.shards.len(), 1);
        assert_ne!(p.run_key, base.run_key);
        // The step's own symbols win over the override.
        assert!(
            p.steps[1]
                .args
                .windows(2)
                .any(|w| w == ["--symbols", "BTCUSDT"])
        );
        assert!(dl.args_hash(dl.shards[0]) != base.steps[0].args_hash(base.steps[0].shards[0]));
        let bad = Overrides {
            start: Some("2025-01-05".into()),
            end: Some("2025-01-01".into()),
            ..Default::default()
        };
        assert!(plan(&dag, &bad, today).is_err());
    }

    const CHAIN: &str = "\
name: c
defaults:
  symbols: [BTCUSDT]
  start: 2025-01-01
  end: 2025-01-02
  source: ${services.sim.url}
services:
  sim:
    command: [archive-sim]
steps:
  - {name: download, job: download}
  - {name: extract, job: extract, needs: [download]}
  - {name: convert, job: convert, needs: [extract]}
  - {name: optimize, job: optimize, needs: [convert]}
  - {name: aggregate, job: aggregate, needs: [optimize]}
  - {name: validate, job: validate, needs: [optimize]}
";

    fn kept(sel: Selection) -> Result<Vec<String>> {
        let dag = Dag::parse(Path::new("c.yaml"), CHAIN).unwrap();
        let o = Overrides {
            selection: sel,
            ..Default::default()
        };
        let p = plan(&dag, &o, d("2025-01-10"))?;
        // Needs point into the kept steps, and only at earlier ones.
        for (i, s) in p.steps.iter().enumerate() {
            assert!(s.needs.iter().all(|&n| n < i), "{:?}", s.needs);
        }
        Ok(p.steps.iter().map(|s| s.name.clone()).collect())
    }

    #[test]
    fn steps_from_and_until_cut_the_dag() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sel = |steps: Option<&[&str]>, from: Option<&str>, until: Option<&str>| Selection {
            steps: steps.map(names),
            from: from.map(String::from),
            until: until.map(String::from),
        };
        assert_eq!(
            kept(sel(Some(&["aggregate"]), None, None)).unwrap(),
            names(&["download", "extract", "convert", "optimize", "aggregate"])
        );
        assert_eq!(
            kept(sel(None, Some("optimize"), None)).unwrap(),
            names(&["optimize", "aggregate", "validate"])
        );
        assert_eq!(
            kept(sel(None, Some("extract"), Some("convert"))).unwrap(),
            names(&["extract", "convert"])
        );
        assert_eq!(
            kept(sel(
                Some(&["validate", "aggregate"]),
                Some("optimize"),
                None
            ))
            .unwrap(),
            names(&["optimize", "aggregate", "validate"])
        );
        // A cut step's first kept step needs nothing.
        let dag = Dag::parse(Path::new("c.yaml"), CHAIN).unwrap();
        let o = Overrides {
            selection: sel(None, Some("optimize"), None),
            ..Default::default()
        };
        let p = plan(&dag, &o, d("2025-01-10")).unwrap();
        assert!(p.steps[0].needs.is_empty());
        assert_eq!(p.steps[2].needs, [0]);
        // Unknown names list the steps; an empty cut says why.
        let e = kept(sel(Some(&["agregate"]), None, None)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("agregate") && e.to_string().contains("download, extract"),
            "{e}"
        );
        assert!(kept(sel(None, Some("nope"), None)).is_err());
        assert!(kept(sel(None, Some("aggregate"), Some("convert"))).is_err());
    }

    #[test]
    fn source_override_replaces_the_default_url() {
        let dag = Dag::parse(Path::new("c.yaml"), CHAIN).unwrap();
        let o = Overrides {
            source: Some("http://127.0.0.1:9/".into()),
            ..Default::default()
        };
        let p = plan(&dag, &o, d("2025-01-10")).unwrap();
        assert!(
            p.steps[0]
                .args
                .windows(2)
                .any(|w| w == ["--source", "http://127.0.0.1:9/"])
        );
        // No step refers to the simulator any more, so it is not started.
        assert!(p.steps.iter().all(|s| s.services.is_empty()));
    }

    #[test]
    fn shard_counts() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(shards(&s(&["A", "B", "C"]), 2).len(), 2);
        assert_eq!(shards(&s(&["A", "a"]), 4).len(), 1);
        assert_eq!(shards(&s(&["all"]), 4).len(), 4);
        assert_eq!(shards(&s(&["A"]), 4)[0].spec(), "0/1");
    }
}
