//! `runner` binary: the command line (run a DAG, `validate`, `render-argo`, `plan-shards`),
//! logging and the runtime; everything else is in the library.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use runner::argo::{RenderOptions, plan_shards_json, render};
use runner::bins::{BinDirs, build_if_under_cargo};
use runner::exec::{RunOptions, dry_run, run};
use runner::plan::{Overrides, Selection, plan};
use runner::state::RunState;
use runner::{Dag, Error};
use shared::cli::LogFormat;
use shared::error::exit;

/// Run a pipeline DAG on this machine, check DAG files, or render them for Argo Workflows.
#[derive(Parser, Debug)]
#[command(
    name = "runner",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  runner dags/demo.yaml\n  runner dags/full.yaml --start 2024-01-01 --end 2024-03-31 --symbols BTCUSDT,ETHUSDT\n  runner validate dags/*.yaml\n  runner render-argo dags/daily.yaml --image registry.example/binance-pipeline:1.0 > k8s/daily.yaml"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The DAG file to run.
    #[arg(required = true)]
    dag: Option<PathBuf>,

    /// First day for every step that takes the DAG's default (YYYY-MM-DD or yesterday, -7d, …).
    #[arg(long, allow_hyphen_values = true)]
    start: Option<String>,

    /// Last day, inclusive (same forms as --start).
    #[arg(long, allow_hyphen_values = true)]
    end: Option<String>,

    /// Symbols for every step that takes the DAG's default: A,B or all.
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,

    /// The store instead of the DAG's (a path, file://, s3://bucket/prefix).
    #[arg(long, env = "PIPELINE_STORE")]
    store: Option<String>,

    /// The archive's URL instead of the DAG's `source` (a mirror, a simulator).
    #[arg(long)]
    source: Option<String>,

    /// The REST host instead of the DAG's `rest-url` (`tail`'s; a simulator).
    #[arg(long)]
    rest_url: Option<String>,

    /// Run only these steps and the steps they need: `--steps aggregate` downloads, extracts,
    /// converts and optimizes what aggregate reads, and runs nothing else.
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<String>>,

    /// Start at this step: it and the steps after it run, the ones before are taken as done.
    #[arg(long)]
    from: Option<String>,

    /// Stop after this step: it and the steps it needs run, nothing after it.
    #[arg(long)]
    until: Option<String>,

    /// Resolve relative dates as if today were this day.
    #[arg(long, env = "PIPELINE_TODAY")]
    today: Option<String>,

    /// Job processes at once (shards and independent steps).
    #[arg(long, default_value_t = default_concurrency())]
    concurrency: usize,

    /// Ignore the run state: run every step again (the jobs still skip up-to-date units).
    #[arg(long)]
    force: bool,

    /// Print what would run (each shard's command line) and do nothing.
    #[arg(long)]
    dry_run: bool,

    /// Log format on stderr: pretty (prefixed lines) or json (one object per line).
    #[arg(
        long,
        value_enum,
        default_value = "pretty",
        env = "PIPELINE_LOG_FORMAT"
    )]
    log_format: LogFormat,

    /// Run id (default: generated, sortable by time).
    #[arg(long)]
    run_id: Option<String>,

    /// When a step's job finds its lease held by another run on the same store (another
    /// runner, a backfill), wait for it: forever, or up to DURATION (`10m`). Without it the step
    /// fails at once (exit 75) naming the holder, and is retried as its `retries` say.
    #[arg(
        long,
        env = "PIPELINE_WAIT_LOCK",
        num_args = 0..=1,
        default_missing_value = "forever",
        value_name = "DURATION"
    )]
    wait_lock: Option<String>,

    /// Print the run's JSON summary on stdout even on a terminal (off one it always is).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check DAG files: unknown keys, jobs or arguments, cycles, missing needs, bad values.
    Validate {
        #[arg(required = true)]
        dags: Vec<PathBuf>,
    },
    /// Render a DAG as an Argo WorkflowTemplate (a CronWorkflow with a schedule).
    RenderArgo {
        dag: PathBuf,
        /// Container image holding every job binary and the runner.
        #[arg(long)]
        image: Option<String>,
        /// Cron schedule (UTC): render a CronWorkflow.
        #[arg(long)]
        schedule: Option<String>,
        /// Default of the `store` workflow parameter.
        #[arg(long)]
        store: Option<String>,
        /// Namespace of the manifest.
        #[arg(long)]
        namespace: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the JSON array of `--shard` specs for a symbol list (Argo's withParam input).
    PlanShards {
        #[arg(long, value_delimiter = ',', required = true)]
        symbols: Vec<String>,
        #[arg(long)]
        parallelism: u32,
    },
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.run.log_format;
    shared::logging::init(log_format);
    let result = match cli.command {
        Some(Command::Validate { dags }) => Ok(validate(&dags)),
        Some(Command::RenderArgo {
            dag,
            image,
            schedule,
            store,
            namespace,
            output,
        }) => render_argo(
            &dag,
            &RenderOptions {
                image,
                schedule,
                store,
                namespace,
            },
            output,
        ),
        Some(Command::PlanShards {
            symbols,
            parallelism,
        }) => {
            if parallelism == 0 {
                Err(Error::usage("--parallelism must be at least 1"))
            } else {
                println!("{}", plan_shards_json(&symbols, parallelism));
                Ok(exit::OK)
            }
        }
        None => run_dag(cli.run),
    };
    let code = result.unwrap_or_else(|e| fail(&e, log_format));
    ExitCode::from(code as u8)
}

fn fail(e: &Error, log_format: LogFormat) -> i32 {
    // With JSON logs every line on stderr is an event; a person gets the message plain.
    match log_format {
        LogFormat::Json => {
            tracing::error!(error = %e, exit_code = e.exit_code(), "runner stopped")
        }
        LogFormat::Pretty => eprintln!("error: {e}"),
    }
    e.exit_code()
}

fn validate(dags: &[PathBuf]) -> i32 {
    let mut code = exit::OK;
    for path in dags {
        match Dag::load(path) {
            Ok(d) => eprintln!(
                "{}: ok ({} steps, {} services)",
                path.display(),
                d.steps().len(),
                d.spec.services.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                code = e.exit_code();
            }
        }
    }
    code
}

fn render_argo(
    dag: &std::path::Path,
    o: &RenderOptions,
    output: Option<PathBuf>,
) -> Result<i32, Error> {
    let text = Dag::load(dag).and_then(|d| render(&d, o))?;
    let written = match &output {
        Some(p) => std::fs::write(p, &text),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    };
    written.map_err(|e| Error::Io {
        context: format!(
            "writing {}",
            output.map_or("stdout".into(), |p| p.display().to_string())
        ),
        source: e,
    })?;
    Ok(exit::OK)
}

fn run_dag(a: RunArgs) -> Result<i32, Error> {
    let path = a.dag.expect("clap requires the DAG");
    let dag = Dag::load(&path)?;
    if a.concurrency == 0 {
        return Err(Error::usage("--concurrency must be at least 1"));
    }
    let today = match &a.today {
        Some(t) => shared::plan::parse_date(t).map_err(|e| Error::usage(e.to_string()))?,
        None => shared::context::Clock::from_env()
            .map_err(|e| Error::usage(e.to_string()))?
            .now()
            .date_naive(),
    };
    if let Some(s) = &a.source {
        shared::cli::check_http_url("--source", s).map_err(|e| Error::usage(e.to_string()))?;
    }
    if let Some(s) = &a.rest_url {
        shared::cli::check_http_url("--rest-url", s).map_err(|e| Error::usage(e.to_string()))?;
    }
    let overrides = Overrides {
        store: a.store,
        start: a.start,
        end: a.end,
        symbols: a.symbols,
        source: a.source,
        rest_url: a.rest_url,
        selection: Selection {
            steps: a.steps,
            from: a.from,
            until: a.until,
        },
    };
    let plan = plan(&dag, &overrides, today)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            context: "starting the runtime".into(),
            source: e,
        })?;
    if a.dry_run {
        // A local store that does not exist has no run state: do not create it to find out.
        let url = &plan.params.store;
        let local = !url.contains("://") || url.starts_with("file://");
        let missing = local && !std::path::Path::new(url.trim_start_matches("file://")).exists();
        let store = shared::Store::open(if missing { "memory://" } else { url })?;
        let state = RunState::new(store, &plan);
        let lines = rt.block_on(dry_run(&plan, &state, a.force))?;
        let mut out = std::io::stdout().lock();
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        return Ok(exit::OK);
    }
    if let Some(w) = &a.wait_lock {
        shared::lease::Wait::parse(w)?;
    }
    let store = shared::Store::open(&plan.params.store)?;
    let dirs = BinDirs::from_env();
    let programs_needed = plan.programs(&dag);
    build_if_under_cargo(&dirs, &programs_needed)?;
    let mut programs = BTreeMap::new();
    for p in programs_needed {
        let path = dirs.find(&p)?;
        programs.insert(p, path);
    }
    let run_id = a
        .run_id
        .unwrap_or_else(|| shared::context::new_run_id(chrono::Utc::now()));
    // The runner's own writes (run state, summaries) are staged under its run id like a job's,
    // and its liveness lease keeps them from being swept while it runs.
    let holder = shared::lease::Holder::me(&run_id, "runner");
    let liveness = rt.block_on(shared::lease::Lease::acquire_run(
        &store,
        &holder,
        shared::lease::Policy::default().ttl,
        tokio_util::sync::CancellationToken::new(),
    ))?;
    // What killed runs left (their staging, liveness leases and temp folders) goes first: a
    // resumed run whose steps are all done starts no job that would sweep it.
    if let Err(e) = rt.block_on(shared::hygiene::sweep(
        &store,
        &run_id,
        &[std::env::temp_dir()],
    )) {
        tracing::warn!(error = %e, "sweeping what dead runs left");
    }
    let store = store.for_run(&run_id);
    let opts = RunOptions {
        concurrency: a.concurrency,
        force: a.force,
        log_format: a.log_format,
        run_id: run_id.clone(),
        wait_lock: a.wait_lock.clone(),
    };
    let summary = rt.block_on(run(&dag, plan, store.clone(), programs, opts));
    rt.block_on(async {
        let _ = shared::hygiene::clear_staging(&store, &run_id).await;
        liveness.release().await;
    });
    let summary = summary?;
    if a.log_format == LogFormat::Pretty {
        eprintln!("\n{}", summary.table());
    } else {
        tracing::info!(
            dag = %summary.dag, outcome = ?summary.outcome, seconds = summary.seconds,
            summary = ?summary.summary_path, "run finished"
        );
    }
    if a.json || !std::io::stdout().is_terminal() {
        match serde_json::to_string(&summary) {
            Ok(s) => println!("{s}"),
            Err(e) => tracing::error!(error = %e, "serializing the summary"),
        }
    }
    Ok(summary.exit_code())
}
