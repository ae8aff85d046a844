//! Rendering a DAG as an Argo `WorkflowTemplate` (or a `CronWorkflow` when it has a schedule).
//!
//! One DAG template mirrors the steps (`dependencies` = `needs`). A sharded step fans out with
//! `withParam` over the JSON array that a planning task (`runner plan-shards`) prints: only the
//! shard specs travel through Argo (`["0/4","1/4",…]`), never the symbol list, so a large universe
//! cannot hit Argo's parameter size limit; each pod picks its symbols with `--shard`. The run
//! parameters (store, start, end, symbols) become workflow parameters, so a backfill is
//! `argo submit --from workflowtemplate/NAME -p start=… -p end=…`; relative dates resolve in every
//! pod against the workflow's creation date (`--today`), so all pods agree. A service becomes a
//! daemon task that the steps using it depend on, reached at its pod IP. Pods run the image's
//! job binaries with JSON logs, the store's credentials from an optional Secret or the service
//! account (IRSA web identity), resource requests from the job registry, non-root, read-only
//! root filesystem with an emptyDir `/tmp`.

use crate::dag::{ArgValue, Dag, Step, substitute};
use crate::error::{Error, Result};
use crate::registry::{self, ArgKind};
use crate::yamlout::{Node, map, strs};

/// What the command line may override in the rendering.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub image: Option<String>,
    pub schedule: Option<String>,
    pub store: Option<String>,
    pub namespace: Option<String>,
}

pub const DEFAULT_IMAGE: &str = "binance-pipeline:latest";
pub const DEFAULT_NAMESPACE: &str = "binance-pipeline";
pub const DEFAULT_SERVICE_ACCOUNT: &str = "pipeline";
pub const DEFAULT_SECRET: &str = "pipeline-store";
pub const DEFAULT_STORE: &str = "s3://CHANGE-ME/binance";
/// The image's non-root user (Dockerfile).
pub const RUN_AS: i64 = 10001;

const TODAY: &str = "{{workflow.creationTimestamp.Y}}-{{workflow.creationTimestamp.m}}-{{workflow.creationTimestamp.d}}";

fn param(name: &str) -> String {
    format!("{{{{workflow.parameters.{name}}}}}")
}

fn input(name: &str) -> String {
    format!("{{{{inputs.parameters.{name}}}}}")
}

fn service_param(service: &str) -> String {
    format!("{service}-url")
}

/// Render `dag` as a manifest (YAML text with a header comment).
pub fn render(dag: &Dag, o: &RenderOptions) -> Result<String> {
    let k = &dag.spec.kubernetes;
    let image = o
        .image
        .clone()
        .or_else(|| k.image.clone())
        .unwrap_or_else(|| DEFAULT_IMAGE.into());
    let namespace = o
        .namespace
        .clone()
        .or_else(|| k.namespace.clone())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let name = k
        .name
        .clone()
        .unwrap_or_else(|| format!("binance-{}", dag.name()));
    let schedule = o.schedule.clone().or_else(|| dag.spec.schedule.clone());
    if let Some(s) = &schedule
        && s.split_whitespace().count() != 5
    {
        return Err(Error::usage(format!(
            "schedule `{s}`: expected a cron expression of 5 fields"
        )));
    }
    let defaults = &dag.spec.defaults;
    let store = o
        .store
        .clone()
        .or_else(|| k.store.clone())
        .unwrap_or_else(|| DEFAULT_STORE.into());
    let secret = k.secret.clone().unwrap_or_else(|| DEFAULT_SECRET.into());

    // Workflow parameters: the run parameters the DAG has defaults for.
    let mut params = vec![map([
        ("name", "store".into()),
        ("value", store.into()),
        (
            "description",
            "Where everything lives: s3://bucket/prefix (credentials from the Secret or the service account)".into(),
        ),
    ])];
    for (p, what) in [
        (
            "start",
            "First day, YYYY-MM-DD or relative (yesterday, -7d, month-start)",
        ),
        ("end", "Last day, inclusive, same forms as start"),
        ("symbols", "Comma-separated symbols, or all"),
    ] {
        if let Some(v) = defaults.get(p) {
            params.push(map([
                ("name", p.into()),
                ("value", v.text().into()),
                ("description", what.into()),
            ]));
        }
    }

    let used_services: Vec<String> = {
        let mut v: Vec<String> = dag
            .steps()
            .iter()
            .flat_map(|s| step_args(dag, s).1)
            .collect();
        v.sort();
        v.dedup();
        v
    };

    for svc in &used_services {
        if dag.spec.services[svc].kubernetes.is_none() {
            return Err(Error::usage(format!(
                "{}: service `{svc}` has no `kubernetes:` settings (command, port): it cannot run on Argo",
                dag.file.display()
            )));
        }
    }

    // The DAG's tasks.
    let mut tasks = Vec::new();
    for svc in &used_services {
        tasks.push(map([
            ("name", svc.into()),
            ("template", format!("service-{svc}").into()),
        ]));
    }
    let any_sharded = dag.steps().iter().any(|s| s.shard_by.is_some());
    // One planning task per distinct (symbols, parallelism): steps over the same universe share it.
    let mut planners: Vec<(String, String, u32)> = Vec::new();
    for step in dag.steps().iter().filter(|s| s.shard_by.is_some()) {
        let symbols = symbols_expr(step);
        let p = step.parallelism();
        if planners.iter().any(|(_, s, q)| *s == symbols && *q == p) {
            continue;
        }
        let name = if step.args.get("symbols").is_none() {
            format!("plan-shards-{p}")
        } else {
            format!("plan-{}", step.name)
        };
        tasks.push(map([
            ("name", name.as_str().into()),
            ("template", "plan-shards".into()),
            (
                "arguments",
                map([(
                    "parameters",
                    Node::List(vec![
                        map([
                            ("name", "symbols".into()),
                            ("value", symbols.as_str().into()),
                        ]),
                        map([
                            ("name", "parallelism".into()),
                            ("value", p.to_string().into()),
                        ]),
                    ]),
                )]),
            ),
        ]));
        planners.push((name, symbols, p));
    }
    let planner_of = |step: &Step| -> String {
        let symbols = symbols_expr(step);
        planners
            .iter()
            .find(|(_, s, q)| *s == symbols && *q == step.parallelism())
            .map(|(n, _, _)| n.clone())
            .expect("every sharded step has a planner")
    };
    for step in dag.steps() {
        let (_, services) = step_args(dag, step);
        let mut deps: Vec<String> = step.needs.clone();
        deps.extend(services.iter().cloned());
        if step.shard_by.is_some() {
            deps.push(planner_of(step));
        }
        let mut task = map([
            ("name", step.name.as_str().into()),
            ("template", step.name.as_str().into()),
        ]);
        if !deps.is_empty() {
            task.push("dependencies", strs(&deps));
        }
        let mut args = Vec::new();
        if step.shard_by.is_some() {
            task.push(
                "withParam",
                format!("{{{{tasks.{}.outputs.result}}}}", planner_of(step)),
            );
            args.push(map([
                ("name", "shard".into()),
                ("value", "{{item}}".into()),
            ]));
        }
        for svc in &services {
            let port = dag.spec.services[svc]
                .kubernetes
                .as_ref()
                .map(|k| k.port)
                .expect("validated: services used on Kubernetes have a port");
            args.push(map([
                ("name", service_param(svc).into()),
                (
                    "value",
                    format!("http://{{{{tasks.{svc}.ip}}}}:{port}").into(),
                ),
            ]));
        }
        if !args.is_empty() {
            task.push("arguments", map([("parameters", Node::List(args))]));
        }
        tasks.push(task);
    }

    let mut templates = vec![map([
        ("name", "main".into()),
        ("dag", map([("tasks", Node::List(tasks))])),
    ])];
    if any_sharded {
        templates.push(map([
            ("name", "plan-shards".into()),
            (
                "inputs",
                map([(
                    "parameters",
                    Node::List(vec![
                        map([("name", "symbols".into())]),
                        map([("name", "parallelism".into())]),
                    ]),
                )]),
            ),
            (
                "container",
                container(
                    &image,
                    "runner",
                    vec![
                        "plan-shards".into(),
                        "--symbols".into(),
                        input("symbols"),
                        "--parallelism".into(),
                        input("parallelism"),
                    ],
                    ("100m", "128Mi"),
                    None,
                ),
            ),
        ]));
    }
    for step in dag.steps() {
        templates.push(step_template(dag, step, &image, &secret));
    }
    for svc in &used_services {
        let def = &dag.spec.services[svc];
        let kube = def.kubernetes.as_ref().expect("validated");
        let res = kube
            .resources
            .as_ref()
            .map(|r| {
                (
                    r.cpu.clone().unwrap_or_else(|| "500m".into()),
                    r.memory.clone().unwrap_or_else(|| "1Gi".into()),
                )
            })
            .unwrap_or_else(|| ("500m".into(), "1Gi".into()));
        let mut c = container(
            &image,
            &kube.command[0],
            kube.command[1..].to_vec(),
            (&res.0, &res.1),
            None,
        );
        c.push(
            "ports",
            Node::List(vec![map([("containerPort", Node::Int(kube.port.into()))])]),
        );
        c.push(
            "readinessProbe",
            map([
                // IntOrString: the schema takes the string form.
                ("tcpSocket", map([("port", kube.port.to_string().into())])),
                ("initialDelaySeconds", Node::Int(1)),
                ("periodSeconds", Node::Int(2)),
            ]),
        );
        templates.push(map([
            ("name", format!("service-{svc}").into()),
            ("daemon", true.into()),
            ("container", c),
        ]));
    }

    let mut spec = map([
        ("entrypoint", "main".into()),
        (
            "serviceAccountName",
            k.service_account
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.into())
                .into(),
        ),
    ]);
    if let Some(p) = k.parallelism {
        spec.push("parallelism", Node::Int(p.into()));
    }
    // A run waits for the one holding the mutex: two runs of the DAG (the cron's and a manual
    // one, or a slow one and the next) never write the store at once.
    if let Some(lock) = &k.lock {
        spec.push(
            "synchronization",
            map([(
                "mutexes",
                Node::List(vec![map([("name", lock.clone().into())])]),
            )]),
        );
    }
    spec.push("arguments", map([("parameters", Node::List(params))]));
    spec.push(
        "securityContext",
        map([
            ("runAsNonRoot", true.into()),
            ("runAsUser", Node::Int(RUN_AS)),
            ("runAsGroup", Node::Int(RUN_AS)),
            ("fsGroup", Node::Int(RUN_AS)),
        ]),
    );
    spec.push(
        "podMetadata",
        map([(
            "labels",
            map([
                ("app.kubernetes.io/name", "binance-pipeline".into()),
                ("app.kubernetes.io/component", dag.name().into()),
            ]),
        )]),
    );
    spec.push("podGC", map([("strategy", "OnPodSuccess".into())]));
    spec.push(
        "ttlStrategy",
        map([
            ("secondsAfterSuccess", Node::Int(86_400)),
            ("secondsAfterFailure", Node::Int(7 * 86_400)),
        ]),
    );
    spec.push(
        "volumes",
        Node::List(vec![map([("name", "tmp".into()), ("emptyDir", map([]))])]),
    );
    spec.push("templates", Node::List(templates));

    let mut metadata = map([
        ("name", name.into()),
        ("namespace", namespace.into()),
        (
            "labels",
            map([
                ("app.kubernetes.io/name", "binance-pipeline".into()),
                ("app.kubernetes.io/component", dag.name().into()),
            ]),
        ),
    ]);
    if let Some(d) = &dag.spec.description {
        metadata.push(
            "annotations",
            map([(
                "workflows.argoproj.io/description",
                d.split_whitespace().collect::<Vec<_>>().join(" ").into(),
            )]),
        );
    }
    let doc = match schedule {
        None => map([
            ("apiVersion", "argoproj.io/v1alpha1".into()),
            ("kind", "WorkflowTemplate".into()),
            ("metadata", metadata),
            ("spec", spec),
        ]),
        Some(s) => map([
            ("apiVersion", "argoproj.io/v1alpha1".into()),
            ("kind", "CronWorkflow".into()),
            ("metadata", metadata),
            (
                "spec",
                map([
                    ("schedules", strs(&[s])),
                    ("timezone", "UTC".into()),
                    ("concurrencyPolicy", "Forbid".into()),
                    ("startingDeadlineSeconds", Node::Int(3600)),
                    ("successfulJobsHistoryLimit", Node::Int(7)),
                    ("failedJobsHistoryLimit", Node::Int(7)),
                    ("workflowSpec", spec),
                ]),
            ),
        ]),
    };
    let file = dag
        .file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!(
        "# Rendered from dags/{file} by `runner render-argo dags/{file}`: edit the DAG and\n\
         # render again (a test fails while this file is out of date). See k8s/README.md.\n{}",
        doc.to_yaml()
    ))
}

/// The value `--symbols` gets for a step on Argo.
fn symbols_expr(step: &Step) -> String {
    match step.args.get("symbols") {
        Some(v) => v.text(),
        None => param("symbols"),
    }
}

/// A step's command-line words on Argo, and the services they use.
fn step_args(dag: &Dag, step: &Step) -> (Vec<String>, Vec<String>) {
    let job = registry::job(&step.job).expect("validated job");
    let mut args = Vec::new();
    let mut services = Vec::new();
    for spec in job.all_args() {
        let name = spec.name;
        let value: Option<String> = match (name, step.args.get(name)) {
            ("store", _) => Some(param("store")),
            (_, Some(v)) => Some(arg_text(spec.kind, v)).flatten(),
            (_, None) if !spec.takes_defaults => None,
            ("start" | "end" | "symbols", None) => dag.spec.defaults.get(name).map(|_| param(name)),
            (_, None) => dag
                .spec
                .defaults
                .get(name)
                .and_then(|v| arg_text(spec.kind, v)),
        };
        let Some(value) = value else { continue };
        if spec.kind == ArgKind::Switch {
            args.push(format!("--{name}"));
            continue;
        }
        let refs = crate::dag::service_refs(&value).unwrap_or_default();
        let value = substitute(&value, &|svc| Some(input(&service_param(svc))));
        services.extend(refs);
        args.push(format!("--{name}"));
        args.push(value);
    }
    services.sort();
    services.dedup();
    (args, services)
}

/// `Some("")` for a switch that is on, `None` for one that is off, the text otherwise.
fn arg_text(kind: ArgKind, v: &ArgValue) -> Option<String> {
    match kind {
        ArgKind::Switch => (v.as_bool() == Some(true)).then(String::new),
        _ => Some(v.text()),
    }
}

fn step_template(dag: &Dag, step: &Step, image: &str, secret: &str) -> Node {
    let job = registry::job(&step.job).expect("validated job");
    let (mut args, services) = step_args(dag, step);
    let mut inputs = Vec::new();
    if step.shard_by.is_some() {
        inputs.push(map([("name", "shard".into())]));
        args.extend(["--shard".into(), input("shard")]);
    }
    for svc in &services {
        inputs.push(map([("name", service_param(svc).into())]));
    }
    args.extend([
        "--today".into(),
        TODAY.into(),
        "--run-id".into(),
        "{{pod.name}}".into(),
        "--log-format".into(),
        "json".into(),
    ]);
    let cpu = step
        .resources
        .as_ref()
        .and_then(|r| r.cpu.clone())
        .unwrap_or_else(|| job.resources.cpu.into());
    let memory = step
        .resources
        .as_ref()
        .and_then(|r| r.memory.clone())
        .unwrap_or_else(|| job.resources.memory.into());
    let mut t = map([("name", step.name.as_str().into())]);
    if !inputs.is_empty() {
        t.push("inputs", map([("parameters", Node::List(inputs))]));
    }
    t.push(
        "metadata",
        map([(
            "labels",
            map([
                ("binance-pipeline/step", step.name.as_str().into()),
                ("binance-pipeline/job", step.job.as_str().into()),
            ]),
        )]),
    );
    if step.retries > 0 {
        t.push(
            "retryStrategy",
            map([
                ("limit", step.retries.to_string().into()),
                ("retryPolicy", "Always".into()),
                // Exit 2 is a usage or configuration error: retrying cannot help.
                ("expression", "lastRetry.exitCode != \"2\"".into()),
                (
                    "backoff",
                    map([
                        ("duration", format!("{}s", step.retry_delay_secs()).into()),
                        ("factor", "2".into()),
                        ("maxDuration", "1h".into()),
                    ]),
                ),
            ]),
        );
    }
    t.push(
        "container",
        container(image, &step.job, args, (&cpu, &memory), Some(secret)),
    );
    t
}

fn container(
    image: &str,
    command: &str,
    args: Vec<String>,
    (cpu, memory): (&str, &str),
    secret: Option<&str>,
) -> Node {
    let mut c = map([
        ("image", image.into()),
        ("imagePullPolicy", "IfNotPresent".into()),
        ("command", strs(&[command])),
        ("args", strs(&args)),
        (
            "env",
            Node::List(vec![
                map([
                    ("name", "PIPELINE_LOG_FORMAT".into()),
                    ("value", "json".into()),
                ]),
                map([("name", "RUST_LOG".into()), ("value", "info".into())]),
            ]),
        ),
    ]);
    if let Some(s) = secret {
        c.push(
            "envFrom",
            Node::List(vec![map([(
                "secretRef",
                map([("name", s.into()), ("optional", true.into())]),
            )])]),
        );
    }
    c.push(
        "resources",
        map([
            (
                "requests",
                map([("cpu", cpu.into()), ("memory", memory.into())]),
            ),
            ("limits", map([("memory", memory.into())])),
        ]),
    );
    c.push(
        "securityContext",
        map([
            ("allowPrivilegeEscalation", false.into()),
            ("readOnlyRootFilesystem", true.into()),
            ("capabilities", map([("drop", strs(&["ALL"]))])),
        ]),
    );
    c.push(
        "volumeMounts",
        Node::List(vec![map([
            ("name", "tmp".into()),
            ("mountPath", "/tmp".into()),
        ])]),
    );
    c
}

/// `runner plan-shards`: the JSON array of `--shard` specs for a symbol list (or `all`).
pub fn plan_shards_json(symbols: &[String], parallelism: u32) -> String {
    let specs: Vec<String> = crate::plan::shards(symbols, parallelism)
        .iter()
        .map(|s| s.spec())
        .collect();
    serde_json::to_string(&specs).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DAG: &str = "\
name: t
description: A test.
defaults:
  symbols: [BTCUSDT, ETHUSDT]
  start: yesterday
  end: yesterday
  source: ${services.sim.url}
services:
  sim:
    command: [archive-sim, --port, \"0\", --print-url]
    kubernetes:
      command: [archive-sim, --host, 0.0.0.0, --port, \"8765\"]
      port: 8765
steps:
  - name: download
    job: download
    args:
      refresh: true
    shard_by: symbol
    parallelism: 2
    retries: 2
  - name: extract
    job: extract
    needs: [download]
kubernetes:
  store: s3://bucket/data
";

    #[test]
    fn renders_a_workflow_template_with_fan_out_and_services() {
        let dag = Dag::parse(Path::new("dags/t.yaml"), DAG).unwrap();
        let y = render(&dag, &RenderOptions::default()).unwrap();
        let doc: yaml_serde::Value = yaml_serde::from_str(&y).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("WorkflowTemplate"));
        assert_eq!(doc["metadata"]["name"].as_str(), Some("binance-t"));
        let spec = &doc["spec"];
        assert_eq!(
            spec["arguments"]["parameters"][0]["value"].as_str(),
            Some("s3://bucket/data")
        );
        let tasks = spec["templates"][0]["dag"]["tasks"].as_sequence().unwrap();
        let names: Vec<_> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["sim", "plan-shards-2", "download", "extract"]);
        let dl = &tasks[2];
        assert_eq!(
            dl["withParam"].as_str(),
            Some("{{tasks.plan-shards-2.outputs.result}}")
        );
        let deps: Vec<_> = dl["dependencies"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(deps, ["sim", "plan-shards-2"]);
        assert_eq!(
            dl["arguments"]["parameters"][1]["value"].as_str(),
            Some("http://{{tasks.sim.ip}}:8765")
        );
        let t = spec["templates"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|t| t["name"].as_str() == Some("download"))
            .unwrap();
        let args: Vec<_> = t["container"]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("--store {{workflow.parameters.store}}"),
            "{joined}"
        );
        assert!(
            joined.contains("--symbols {{workflow.parameters.symbols}}"),
            "{joined}"
        );
        assert!(
            joined.contains("--source {{inputs.parameters.sim-url}}"),
            "{joined}"
        );
        assert!(
            joined.contains("--refresh --shard {{inputs.parameters.shard}}"),
            "{joined}"
        );
        assert!(joined.ends_with("--log-format json"), "{joined}");
        assert_eq!(t["retryStrategy"]["limit"].as_str(), Some("2"));
        let daemon = spec["templates"].as_sequence().unwrap().last().unwrap();
        assert_eq!(daemon["daemon"].as_bool(), Some(true));
        // Rendering is deterministic.
        assert_eq!(y, render(&dag, &RenderOptions::default()).unwrap());
    }

    #[test]
    fn a_schedule_makes_a_cron_workflow() {
        let dag = Dag::parse(Path::new("dags/t.yaml"), DAG).unwrap();
        let o = RenderOptions {
            schedule: Some("0 6 * * *".into()),
            image: Some("registry.example/bp:1".into()),
            ..Default::default()
        };
        let doc: yaml_serde::Value = yaml_serde::from_str(&render(&dag, &o).unwrap()).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("CronWorkflow"));
        assert_eq!(doc["spec"]["schedules"][0].as_str(), Some("0 6 * * *"));
        assert_eq!(
            doc["spec"]["workflowSpec"]["templates"][1]["container"]["image"].as_str(),
            Some("registry.example/bp:1")
        );
        let bad = RenderOptions {
            schedule: Some("daily".into()),
            ..Default::default()
        };
        assert!(render(&dag, &bad).is_err());
    }

    #[test]
    fn plan_shards_prints_specs() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            plan_shards_json(&s(&["A", "B", "C"]), 2),
            r#"["0/2","1/2"]"#
        );
        assert_eq!(plan_shards_json(&s(&["all"]), 3), r#"["0/3","1/3","2/3"]"#);
    }
}
