//! DAG files: the YAML model (every struct rejects unknown keys), loading, and validation. A DAG
//! names its defaults (arguments applied to every step whose job takes them: store, source,
//! market, symbols, range), its services (programs started before the steps, whose URL steps
//! use as `${services.NAME.url}`), its steps (a job, its arguments, the steps it needs, fan-out
//! by symbol, retries) and its Kubernetes settings. Every problem is reported with the file and
//! line it concerns; resolving a valid DAG into commands is `plan`'s business.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Problem, Problems, Result};
use crate::locate::{Locator, Seg, parse_path};
use crate::registry::{self, ArgKind};

/// The run parameters: defaults that the command line (locally) or the workflow parameters (on
/// Argo) override for a whole run.
pub const RUN_PARAMS: &[&str] = &["store", "start", "end", "symbols"];

/// A scalar argument value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

/// An argument value as written in YAML: a scalar or a list (joined with commas).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ArgValue {
    One(Scalar),
    List(Vec<Scalar>),
}

impl ArgValue {
    /// The command-line text of a value flag (lists joined with commas).
    pub fn text(&self) -> String {
        match self {
            ArgValue::One(s) => s.to_string(),
            ArgValue::List(v) => v
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ArgValue::One(Scalar::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}

/// Arguments in the order the file gives them; duplicate names are an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(pub Vec<(String, ArgValue)>);

impl Args {
    pub fn get(&self, name: &str) -> Option<&ArgValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of argument names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Args, A::Error> {
                let mut out: Vec<(String, ArgValue)> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    if out.iter().any(|(n, _)| *n == k) {
                        return Err(de::Error::custom(format!("argument `{k}` is given twice")));
                    }
                    let v = m.next_value::<ArgValue>().map_err(|e| {
                        // A shape error gets a message naming the argument; a syntax error
                        // keeps the parser's own (and its position).
                        if e.to_string().contains("did not match any variant") {
                            de::Error::custom(format!(
                                "argument `{k}`: expected a string, number, boolean or a list of those"
                            ))
                        } else {
                            e
                        }
                    })?;
                    out.push((k, v));
                }
                Ok(Args(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// How a step fans out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardBy {
    /// Shards split the step's symbols (`--shard I/N`).
    Symbol,
}

/// Kubernetes resource requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// One step of the DAG: a job run with arguments, after the steps it needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the DAG: lower-case letters, digits and `-`.
    pub name: String,
    /// A job of the registry (`download`, `extract`, …).
    pub job: String,
    /// The job's flags without `--`; these win over the DAG's defaults.
    #[serde(default)]
    pub args: Args,
    /// Steps that must finish first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Fan out over symbols into `parallelism` shards.
    #[serde(default)]
    pub shard_by: Option<ShardBy>,
    /// Shards of a `shard_by` step (default 4; fewer when the step has fewer symbols).
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Extra attempts after a failure (default 0).
    #[serde(default)]
    pub retries: u32,
    /// First delay before a retry, doubled at each further one (default 10).
    #[serde(default)]
    pub retry_delay_secs: Option<u64>,
    /// Pod resource requests on Kubernetes (default: the job's, from the registry).
    #[serde(default)]
    pub resources: Option<Resources>,
}

pub const DEFAULT_PARALLELISM: u32 = 4;
pub const DEFAULT_RETRY_DELAY_SECS: u64 = 10;

impl Step {
    pub fn parallelism(&self) -> u32 {
        self.parallelism.unwrap_or(DEFAULT_PARALLELISM)
    }

    pub fn retry_delay_secs(&self) -> u64 {
        self.retry_delay_secs.unwrap_or(DEFAULT_RETRY_DELAY_SECS)
    }
}

/// How a service runs on Kubernetes: a daemon task other tasks reach by its pod IP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceKubernetes {
    /// The container's command (it must listen on all interfaces, on `port`).
    pub command: Vec<String>,
    pub port: u16,
    #[serde(default)]
    pub resources: Option<Resources>,
}

/// A program started before the steps and stopped after them. It must print its base URL
/// (`http://…` or `https://…`) alone on a line of its stdout once it is ready.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Program and arguments; the program is found like a job binary.
    pub command: Vec<String>,
    /// How long to wait for the URL (default 60).
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
    #[serde(default)]
    pub kubernetes: Option<ServiceKubernetes>,
}

/// Settings of the rendered Argo manifests.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// The WorkflowTemplate / CronWorkflow name (default `binance-<dag name>`).
    pub name: Option<String>,
    /// Default `binance-pipeline`.
    pub namespace: Option<String>,
    /// Default `binance-pipeline:latest`; `render-argo --image` overrides it.
    pub image: Option<String>,
    /// Default `pipeline` (the ServiceAccount of `k8s/namespace-rbac.yaml`).
    pub service_account: Option<String>,
    /// The `store` workflow parameter's default; a local folder means nothing to pods.
    pub store: Option<String>,
    /// The optional Secret whose keys become environment variables (default `pipeline-store`).
    pub secret: Option<String>,
    /// At most this many pods at once (`spec.parallelism`).
    pub parallelism: Option<u32>,
    /// The name of an Argo mutex every run holds (`spec.synchronization`): runs of every DAG
    /// naming the same lock wait for each other instead of overlapping.
    pub lock: Option<String>,
}

/// A DAG file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DagSpec {
    /// Names run state (`_runs/<name>/`) and the rendered manifests.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Cron schedule (UTC) of the rendered CronWorkflow.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Arguments applied to every step whose job takes them, unless the step sets its own.
    #[serde(default)]
    pub defaults: Args,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub kubernetes: Kubernetes,
}

/// A loaded, valid DAG.
#[derive(Debug, Clone)]
pub struct Dag {
    pub file: PathBuf,
    pub spec: DagSpec,
    locator: Locator,
}

/// A `${services.NAME.url}` reference in a value.
pub fn service_refs(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in `{s}`"));
        };
        let inner = &after[..end];
        match inner
            .strip_prefix("services.")
            .and_then(|r| r.strip_suffix(".url"))
        {
            Some(name) if !name.is_empty() && !name.contains('.') => out.push(name.to_string()),
            _ => {
                return Err(format!(
                    "unknown placeholder `${{{inner}}}` (the only one is `${{services.NAME.url}}`)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Replace `${services.NAME.url}` with `url(NAME)`.
pub fn substitute(s: &str, url: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${services.") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else { break };
        let name = after[..end]
            .trim_start_matches("services.")
            .trim_end_matches(".url");
        match url(name) {
            Some(u) => out.push_str(&u),
            None => out.push_str(&rest[i..i + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Dag {
    /// Read, parse and validate a DAG file.
    pub fn load(path: &Path) -> Result<Dag> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Dag::parse(path, &text)
    }

    /// Parse and validate DAG text; `path` names it in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Dag> {
        let locator = Locator::new(text);
        let spec: DagSpec = yaml_serde::from_str(text)
            .map_err(|e| Error::Invalid(Problems(vec![yaml_problem(path, &locator, &e)])))?;
        let dag = Dag {
            file: path.to_path_buf(),
            spec,
            locator,
        };
        let problems = dag.check();
        if problems.is_empty() {
            Ok(dag)
        } else {
            Err(Error::Invalid(Problems(problems)))
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn steps(&self) -> &[Step] {
        &self.spec.steps
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.spec.steps.iter().position(|s| s.name == name)
    }

    /// The value an argument of a step takes from the file: the step's own, else the default
    /// (for a flag the step's job takes). Run parameters may still be overridden by the run.
    pub fn arg<'a>(&'a self, step: &'a Step, name: &str) -> Option<&'a ArgValue> {
        step.args.get(name).or_else(|| {
            registry::job(&step.job)
                .and_then(|j| j.arg(name))
                .filter(|a| a.takes_defaults)
                .and_then(|_| self.spec.defaults.get(name))
        })
    }

    /// Steps in an order where every step comes after the steps it needs.
    pub fn topo_order(&self) -> Vec<usize> {
        let n = self.spec.steps.len();
        let mut done = vec![false; n];
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let before = out.len();
            for i in 0..n {
                if !done[i]
                    && self.spec.steps[i]
                        .needs
                        .iter()
                        .all(|d| self.step_index(d).is_none_or(|j| done[j]))
                {
                    done[i] = true;
                    out.push(i);
                }
            }
            if out.len() == before {
                break; // a cycle: `check` refuses those
            }
        }
        out
    }

    fn problem(&self, path: &[Seg<'_>], message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.locator.line(path),
            column: None,
            message: message.into(),
        }
    }

    fn check(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let spec = &self.spec;
        if !dns_label(&spec.name) {
            p.push(self.problem(
                &[Seg::Key("name")],
                format!(
                    "DAG name `{}`: use lower-case letters, digits and `-` (at most 40), starting with a letter",
                    spec.name
                ),
            ));
        }
        if let Some(s) = &spec.schedule
            && s.split_whitespace().count() != 5
        {
            p.push(self.problem(
                &[Seg::Key("schedule")],
                format!("schedule `{s}`: expected a cron expression of 5 fields"),
            ));
        }
        // Defaults: flags some job takes, not the runner's own.
        for (name, value) in &spec.defaults.0 {
            let at = [Seg::Key("defaults"), Seg::Key(name)];
            if let Some(why) = registry::reserved(name) {
                p.push(self.problem(&at, format!("`{name}` cannot be set in a DAG: {why}")));
                continue;
            }
            let kinds: Vec<ArgKind> = registry::JOBS
                .iter()
                .filter_map(|j| j.arg(name))
                .filter(|a| a.takes_defaults)
                .map(|a| a.kind)
                .collect();
            if kinds.is_empty() {
                let all: BTreeSet<&str> = registry::JOBS
                    .iter()
                    .flat_map(|j| j.all_args().map(|a| a.name))
                    .collect();
                let hint = registry::closest(name, all.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                p.push(self.problem(
                    &at,
                    format!("unknown argument `{name}` in defaults: no job takes `--{name}`{hint}"),
                ));
            } else if let Some(m) = kind_mismatch(name, kinds[0], value) {
                p.push(self.problem(&at, format!("defaults: {m}")));
            } else if let Some(m) = value_problem(name, value) {
                p.push(self.problem(&at, format!("defaults: {m}")));
            } else if let Some(m) = self.check_refs(value) {
                p.push(self.problem(&at, m));
            }
        }
        // Services.
        for (name, svc) in &spec.services {
            let at = [Seg::Key("services"), Seg::Key(name)];
            if !dns_label(name) {
                p.push(self.problem(
                    &at,
                    format!("service name `{name}`: use lower-case letters, digits and `-`"),
                ));
            }
            if svc.command.is_empty() {
                p.push(self.problem(
                    &[Seg::Key("services"), Seg::Key(name), Seg::Key("command")],
                    format!("service `{name}` has an empty command"),
                ));
            }
            if let Some(k) = &svc.kubernetes
                && k.command.is_empty()
            {
                p.push(self.problem(
                    &[Seg::Key("services"), Seg::Key(name), Seg::Key("kubernetes")],
                    format!("service `{name}`: empty kubernetes command"),
                ));
            }
        }
        if spec.steps.is_empty() {
            p.push(self.problem(&[Seg::Key("steps")], "the DAG has no steps"));
        }
        let mut seen = BTreeSet::new();
        for (i, step) in spec.steps.iter().enumerate() {
            let at = |k: &'static str| [Seg::Key("steps"), Seg::Index(i), Seg::Key(k)];
            if !dns_label(&step.name) {
                p.push(self.problem(
                    &at("name"),
                    format!(
                        "step name `{}`: use lower-case letters, digits and `-` (at most 40), starting with a letter",
                        step.name
                    ),
                ));
            } else if !seen.insert(step.name.as_str()) {
                p.push(self.problem(
                    &at("name"),
                    format!("step `{}` is defined twice", step.name),
                ));
            } else if step.name.starts_with("plan-") || spec.services.contains_key(&step.name) {
                p.push(self.problem(
                    &at("name"),
                    format!(
                        "step name `{}` is taken (`plan-*` names the shard planners, service names their daemons)",
                        step.name
                    ),
                ));
            }
            let Some(job) = registry::job(&step.job) else {
                let hint = registry::closest(&step.job, registry::JOBS.iter().map(|j| j.name))
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                let known: Vec<_> = registry::JOBS.iter().map(|j| j.name).collect();
                p.push(self.problem(
                    &at("job"),
                    format!(
                        "step `{}`: unknown job `{}`{hint}; jobs are {}",
                        step.name,
                        step.job,
                        known.join(", ")
                    ),
                ));
                continue;
            };
            for (name, value) in &step.args.0 {
                let at = [
                    Seg::Key("steps"),
                    Seg::Index(i),
                    Seg::Key("args"),
                    Seg::Key(name),
                ];
                let name = name.strip_prefix("--").unwrap_or(name);
                if name == "store" {
                    p.push(self.problem(
                        &at,
                        format!(
                            "step `{}`: `store` is the run's, for every step: set it in defaults",
                            step.name
                        ),
                    ));
                    continue;
                }
                if let Some(why) = registry::reserved(name) {
                    p.push(self.problem(
                        &at,
                        format!(
                            "step `{}`: `{name}` cannot be set in a DAG: {why}",
                            step.name
                        ),
                    ));
                    continue;
                }
                let Some(spec_arg) = job.arg(name) else {
                    let hint = registry::closest(name, job.all_args().map(|a| a.name))
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    p.push(self.problem(
                        &at,
                        format!(
                            "step `{}`: unknown argument `{name}` for job `{}`{hint}",
                            step.name, step.job
                        ),
                    ));
                    continue;
                };
                if let Some(m) = kind_mismatch(name, spec_arg.kind, value) {
                    p.push(self.problem(&at, format!("step `{}`: {m}", step.name)));
                } else if let Some(m) = value_problem(name, value) {
                    p.push(self.problem(&at, format!("step `{}`: {m}", step.name)));
                } else if let Some(m) = self.check_refs(value) {
                    p.push(self.problem(&at, format!("step `{}`: {m}", step.name)));
                }
            }
            // Needs: known, not itself, not twice.
            let mut needs = BTreeSet::new();
            for need in &step.needs {
                if !needs.insert(need) {
                    p.push(self.problem(
                        &at("needs"),
                        format!("step `{}` needs `{need}` twice", step.name),
                    ));
                } else if *need == step.name {
                    p.push(
                        self.problem(&at("needs"), format!("step `{}` needs itself", step.name)),
                    );
                } else if self.step_index(need).is_none() {
                    let hint = registry::closest(need, spec.steps.iter().map(|s| s.name.as_str()))
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    p.push(self.problem(
                        &at("needs"),
                        format!(
                            "step `{}` needs `{need}`, which is not a step of this DAG{hint}",
                            step.name
                        ),
                    ));
                }
            }
            if step.parallelism.is_some() && step.shard_by.is_none() {
                p.push(self.problem(
                    &at("parallelism"),
                    format!(
                        "step `{}`: `parallelism` needs `shard_by: symbol`",
                        step.name
                    ),
                ));
            }
            if step.parallelism == Some(0) {
                p.push(self.problem(
                    &at("parallelism"),
                    format!("step `{}`: parallelism must be at least 1", step.name),
                ));
            }
            p.extend(self.check_values(i, step));
        }
        if let Some(cycle) = self.find_cycle() {
            let first = cycle[0];
            let names: Vec<&str> = cycle
                .iter()
                .chain(std::iter::once(&first))
                .map(|&i| spec.steps[i].name.as_str())
                .collect();
            p.push(self.problem(
                &[Seg::Key("steps"), Seg::Index(first), Seg::Key("needs")],
                format!("steps form a cycle: {}", names.join(" -> ")),
            ));
        } else {
            p.extend(self.check_leases());
        }
        p.sort_by_key(|x| x.line);
        p
    }

    /// `${services.X.url}` must name a service of this DAG.
    fn check_refs(&self, value: &ArgValue) -> Option<String> {
        let texts: Vec<String> = match value {
            ArgValue::One(Scalar::Str(s)) => vec![s.clone()],
            ArgValue::List(v) => v.iter().map(|s| s.to_string()).collect(),
            _ => Vec::new(),
        };
        for t in texts {
            match service_refs(&t) {
                Err(m) => return Some(m),
                Ok(refs) => {
                    for r in refs {
                        if !self.spec.services.contains_key(&r) {
                            return Some(format!(
                                "`${{services.{r}.url}}` names no service of this DAG"
                            ));
                        }
                    }
                }
            }
        }
        None
    }

    /// The values every job checks first (market, data types, interval, dates), checked here
    /// so a bad DAG fails at `validate` rather than halfway through a run.
    fn check_values(&self, i: usize, step: &Step) -> Vec<Problem> {
        let mut p = Vec::new();
        let at = |name: &'static str| -> Vec<Seg<'static>> {
            if step.args.get(name).is_some() {
                vec![
                    Seg::Key("steps"),
                    Seg::Index(i),
                    Seg::Key("args"),
                    Seg::Key(name),
                ]
            } else if self.spec.defaults.get(name).is_some() {
                vec![Seg::Key("defaults"), Seg::Key(name)]
            } else {
                vec![Seg::Key("steps"), Seg::Index(i)]
            }
        };
        let literal = |name: &str| {
            self.arg(step, name)
                .map(|v| v.text())
                .filter(|t| !t.contains("${"))
        };
        for required in ["symbols", "start", "end"] {
            if self.arg(step, required).is_none() {
                p.push(self.problem(
                    &at(required),
                    format!(
                        "step `{}` has no `{required}`: set it in defaults or in the step's args",
                        step.name
                    ),
                ));
            }
        }
        let today = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid");
        let mut dates = Vec::new();
        for name in ["start", "end"] {
            if let Some(t) = literal(name) {
                match shared::plan::resolve_date(&t, today) {
                    Ok(d) => dates.push((name, t, d)),
                    Err(e) => p.push(self.problem(&at(name), format!("step `{}`: {e}", step.name))),
                }
            }
        }
        if let [(_, s, sd), (_, e, ed)] = &dates[..]
            && ed < sd
            && shared::plan::parse_date(s).is_ok()
            && shared::plan::parse_date(e).is_ok()
        {
            p.push(self.problem(
                &at("end"),
                format!("step `{}`: end {e} is before start {s}", step.name),
            ));
        }
        let market = literal("market").unwrap_or_else(|| "um".into());
        let market: shared::paths::Market = match market.parse() {
            Ok(m) => m,
            Err(e) => {
                p.push(self.problem(&at("market"), format!("step `{}`: {e}", step.name)));
                return p;
            }
        };
        let interval = literal("interval").unwrap_or_else(|| "1m".into());
        let interval: shared::paths::Interval = match interval.parse() {
            Ok(iv) => iv,
            Err(e) => {
                p.push(self.problem(&at("interval"), format!("step `{}`: {e}", step.name)));
                return p;
            }
        };
        let types = literal("data-type").unwrap_or_else(|| "klines".into());
        for t in types.split(',') {
            let r = t.trim().parse::<shared::paths::DataType>().and_then(|dt| {
                shared::paths::Dataset::new(market, dt, dt.is_kline_family().then_some(interval))
            });
            if let Err(e) = r {
                p.push(self.problem(&at("data-type"), format!("step `{}`: {e}", step.name)));
            }
        }
        p
    }

    /// A cycle among the steps, as step indices in order, if there is one.
    /// The lease a step's job takes ([`shared::job::lease_key`]; every shard of a step takes its
    /// own, so shard 0 stands for them), from the step's arguments over the DAG's defaults over
    /// the jobs' own defaults. `None` when a market, data type or interval does not parse: the
    /// value checks report those.
    fn lease_of(&self, step: &Step) -> Option<String> {
        let arg = |name: &str, default: &str| {
            self.arg(step, name)
                .or_else(|| step.args.get(&format!("--{name}")))
                .map_or(default.to_string(), ArgValue::text)
        };
        let market: shared::paths::Market = arg("market", "um").parse().ok()?;
        let types: Vec<String> = arg("data-type", "klines")
            .split(',')
            .map(str::to_string)
            .collect();
        let datasets = shared::cli::datasets(market, &types, &arg("interval", "1m")).ok()?;
        let shards = match step.shard_by {
            Some(_) => step.parallelism.unwrap_or(DEFAULT_PARALLELISM),
            None => 1,
        };
        Some(shared::job::lease_key(
            &step.job,
            market,
            &datasets,
            (0, shards as usize),
        ))
    }

    /// Two steps that take the same lease and neither of which needs the other (directly or
    /// not) would run at once, and the second would find the lease held (exit 75).
    fn check_leases(&self) -> Vec<Problem> {
        let steps = &self.spec.steps;
        let leases: Vec<Option<String>> = steps.iter().map(|s| self.lease_of(s)).collect();
        let mut out = Vec::new();
        for j in 0..steps.len() {
            for i in 0..j {
                let Some(lease) = leases[j]
                    .as_ref()
                    .filter(|l| leases[i].as_ref() == Some(*l))
                else {
                    continue;
                };
                if self.reaches(i, j) || self.reaches(j, i) {
                    continue;
                }
                out.push(self.problem(
                    &[Seg::Key("steps"), Seg::Index(j), Seg::Key("name")],
                    format!(
                        "steps `{}` and `{}` run `{}` on the same data (lease `{}`) and neither needs the other: they would run at once and one would find the lease held; add `needs: [{}]` to `{}`",
                        steps[i].name,
                        steps[j].name,
                        steps[j].job,
                        lease,
                        steps[i].name,
                        steps[j].name
                    ),
                ));
            }
        }
        out
    }

    /// Whether step `from` needs step `to`, directly or through others (the DAG has no cycle).
    fn reaches(&self, from: usize, to: usize) -> bool {
        let mut todo = vec![from];
        let mut seen = vec![false; self.spec.steps.len()];
        while let Some(i) = todo.pop() {
            for need in &self.spec.steps[i].needs {
                let Some(n) = self.step_index(need) else {
                    continue;
                };
                if n == to {
                    return true;
                }
                if !std::mem::replace(&mut seen[n], true) {
                    todo.push(n);
                }
            }
        }
        false
    }

    fn find_cycle(&self) -> Option<Vec<usize>> {
        let steps = &self.spec.steps;
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut state = vec![0u8; steps.len()];
        let mut stack = Vec::new();
        fn visit(
            dag: &Dag,
            i: usize,
            state: &mut [u8],
            stack: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            state[i] = 1;
            stack.push(i);
            for need in &dag.spec.steps[i].needs {
                let Some(j) = dag.step_index(need) else {
                    continue;
                };
                if state[j] == 1 {
                    let from = stack.iter().position(|&x| x == j).expect("on the stack");
                    return Some(stack[from..].to_vec());
                }
                if state[j] == 0
                    && let Some(c) = visit(dag, j, state, stack)
                {
                    return Some(c);
                }
            }
            stack.pop();
            state[i] = 2;
            None
        }
        for i in 0..steps.len() {
            if state[i] == 0
                && let Some(mut c) = visit(self, i, &mut state, &mut stack)
            {
                // Name the cycle from the step written first in the file.
                let min = c
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, x)| **x)
                    .map(|(k, _)| k)
                    .unwrap_or(0);
                c.rotate_left(min);
                // `needs` points backwards: list it in the order work flows.
                c[1..].reverse();
                return Some(c);
            }
        }
        None
    }
}

/// A value of the wrong shape for its flag.
/// A value the job would refuse at start, found while the DAG is read: a symbol that is no symbol
/// name, a URL that is no http(s) URL (one naming a service is checked once resolved).
fn value_problem(name: &str, value: &ArgValue) -> Option<String> {
    let text = value.text();
    match name {
        "symbols" if !text.eq_ignore_ascii_case("all") => text
            .split(',')
            .find(|s| shared::cli::validate_symbol(s).is_err())
            .map(|bad| {
                format!("`symbols`: `{}` is not a symbol name (no `/`, spaces or `?#%&=*\\`), e.g. BTCUSDT", bad.trim())
            }),
        "source" | "listing-url" | "rest-url" if !text.contains("${") => {
            shared::cli::check_http_url(&format!("`{name}`"), &text)
                .err()
                .map(|e| e.to_string())
        }
        _ => None,
    }
}

fn kind_mismatch(name: &str, kind: ArgKind, value: &ArgValue) -> Option<String> {
    match (kind, value) {
        (ArgKind::Switch, ArgValue::One(Scalar::Bool(_))) => None,
        (ArgKind::Switch, _) => Some(format!("`{name}` is a switch: write `{name}: true`")),
        (_, ArgValue::One(Scalar::Bool(_))) => {
            Some(format!("`{name}` takes a value, not a boolean"))
        }
        (ArgKind::Value, ArgValue::List(_)) => {
            Some(format!("`{name}` takes one value, not a list"))
        }
        (_, ArgValue::List(v)) if v.iter().any(|s| matches!(s, Scalar::Bool(_))) => {
            Some(format!("`{name}`: a list of booleans makes no sense"))
        }
        _ => None,
    }
}

/// A parse error of the YAML library, placed at its line (or, for errors it reports without a
/// position, at the line of the path it names).
fn yaml_problem(path: &Path, locator: &Locator, e: &yaml_serde::Error) -> Problem {
    let text = e.to_string();
    let loc = e.location().map(|l| (l.line(), l.column()));
    // The library says " at line L column C"; the position goes in front instead.
    let message = match loc {
        Some((l, c)) => text.replacen(&format!(" at line {l} column {c}"), "", 1),
        None => text,
    };
    // "steps[1].args: argument `x`: …": our own messages name the path and the argument, which
    // places them better than the parser's position (an argument's value is buffered whole).
    let (at, arg) = match message.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') => (
            parse_path(p),
            rest.strip_prefix("argument `")
                .and_then(|r| r.split_once('`'))
                .map(|(a, _)| a),
        ),
        _ => (Vec::new(), None),
    };
    // "duplicate field `name`": the second spelling of the key, which serde does not place.
    let duplicate = message
        .split_once("duplicate field `")
        .and_then(|(_, r)| r.split_once('`'))
        .and_then(|(k, _)| locator.duplicate(&at, k));
    let (line, column) = match (duplicate, arg, loc) {
        (Some(l), _, _) => (l, None),
        (None, Some(a), _) => {
            let mut at = at;
            at.push(Seg::Key(a));
            (locator.line(&at), None)
        }
        (None, None, Some((l, c))) => (l, Some(c)),
        (None, None, None) => (locator.line(&at), None),
    };
    Problem {
        file: path.to_path_buf(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<Dag, String> {
        Dag::parse(Path::new("x.yaml"), text).map_err(|e| e.to_string())
    }

    const OK: &str = "\
name: t
defaults:
  store: ./data
  symbols: [BTCUSDT, ETHUSDT]
  start: 2024-12-01
  end: 2024-12-31
  source: ${services.sim.url}
services:
  sim:
    command: [archive-sim, --port, \"0\", --print-url]
steps:
  - name: download
    job: download
    args:
      data-type: [klines, aggTrades]
      retries: 3
      refresh: true
    shard_by: symbol
    parallelism: 2
    retries: 1
  - name: extract
    job: extract
    needs: [download]
";

    #[test]
    fn a_valid_dag_loads() {
        let d = parse(OK).unwrap();
        assert_eq!(d.name(), "t");
        assert_eq!(d.steps().len(), 2);
        let s = &d.steps()[0];
        assert_eq!(s.args.get("data-type").unwrap().text(), "klines,aggTrades");
        assert_eq!(s.args.get("retries").unwrap().text(), "3");
        assert_eq!(d.arg(s, "source").unwrap().text(), "${services.sim.url}");
        // extract takes no --source: the default does not apply to it.
        assert!(d.arg(&d.steps()[1], "source").is_none());
        assert_eq!(d.topo_order(), vec![0, 1]);
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn every_kind_of_mistake_names_its_line() {
        let e = err(&OK.replace(
            "    parallelism: 2\n",
            "    parallelism: 2\n    colour: red\n",
        ));
        assert!(e.starts_with("x.yaml:20:"), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");

        let e = err(&OK.replace("job: extract", "job: extrakt"));
        assert!(e.starts_with("x.yaml:22:"), "{e}");
        assert!(
            e.contains("unknown job `extrakt` (did you mean `extract`?)"),
            "{e}"
        );

        let e = err(&OK.replace("retries: 3", "retrys: 3"));
        assert!(e.starts_with("x.yaml:16:"), "{e}");
        assert!(
            e.contains("unknown argument `retrys` for job `download` (did you mean `retries`?)"),
            "{e}"
        );

        let e = err(&OK.replace("needs: [download]", "needs: [dl]"));
        assert!(e.starts_with("x.yaml:23:"), "{e}");
        assert!(e.contains("needs `dl`, which is not a step"), "{e}");

        let e = err(&OK.replace("    retries: 1\n", "    retries: 1\n    needs: [extract]\n"));
        assert!(e.starts_with("x.yaml:21:"), "{e}");
        assert!(e.contains("cycle: download -> extract -> download"), "{e}");

        // Two steps on the same lease, neither needing the other.
        let twin = "  - name: extract-again\n    job: extract\n    needs: [download]\n";
        let e = err(&format!("{OK}{twin}"));
        assert!(e.starts_with("x.yaml:24:"), "{e}");
        assert!(
            e.contains("steps `extract` and `extract-again` run `extract` on the same data")
                && e.contains("add `needs: [extract]` to `extract-again`"),
            "{e}"
        );
        // Ordered, or on other data, they are fine.
        parse(&format!("{OK}{}", twin.replace("[download]", "[extract]"))).unwrap();
        parse(&format!("{OK}{twin}    args:\n      data-type: metrics\n")).unwrap();
        parse(&format!("{OK}{twin}    args:\n      interval: 1h\n")).unwrap();

        let e = err(&OK.replace("  end: 2024-12-31\n", "  end: 2024-12-31\n   bad: [\n"));
        assert!(e.starts_with("x.yaml:7:"), "{e}");

        let e = err(&OK.replace("refresh: true", "refresh: yes"));
        assert!(e.contains("x.yaml:17:") && e.contains("switch"), "{e}");

        let e = err(&OK.replace("${services.sim.url}", "${services.simm.url}"));
        assert!(
            e.starts_with("x.yaml:7:") && e.contains("names no service"),
            "{e}"
        );

        let e = err(&OK.replace("retries: 3", "shard: 0/2"));
        assert!(
            e.starts_with("x.yaml:16:") && e.contains("runner sets it"),
            "{e}"
        );

        let e = err(&OK.replace("klines, aggTrades", "klines, candles"));
        assert!(e.starts_with("x.yaml:15:") && e.contains("candles"), "{e}");

        let e = err(&OK.replace("  start: 2024-12-01\n", ""));
        assert!(e.contains("has no `start`"), "{e}");
    }

    #[test]
    fn defaults_skip_flags_that_mean_something_else() {
        let text = format!(
            "{OK}  - name: bars\n    job: bars\n    needs: [extract]\n    args:\n      bar: [tick]\n"
        );
        let d = parse(&text).unwrap();
        let bars = &d.steps()[2];
        // `source` is download's archive URL in the defaults, not bars' trade source.
        assert!(d.arg(bars, "source").is_none());
        assert_eq!(d.arg(bars, "symbols").unwrap().text(), "BTCUSDT,ETHUSDT");
    }

    #[test]
    fn services_are_substituted() {
        assert_eq!(
            service_refs("${services.a.url}/x/${services.b.url}").unwrap(),
            vec!["a", "b"]
        );
        assert!(service_refs("${env.HOME}").is_err());
        let s = substitute("${services.a.url}/x", &|n| {
            (n == "a").then(|| "http://h:1".to_string())
        });
        assert_eq!(s, "http://h:1/x");
    }
}
