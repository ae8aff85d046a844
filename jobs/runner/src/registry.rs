//! The job registry: which job binaries exist, the flags each accepts (the common ones and its
//! own), which of those the runner sets itself, and each job's default resource requests on
//! Kubernetes. Adding a job is one entry in [`JOBS`]; the `runner` end-to-end test compares every
//! entry with the binary's own `--help`, so the registry cannot drift from the clap definitions.

use shared::job::JobName;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// `--flag VALUE`.
    Value,
    /// `--flag A,B,C` (a YAML list is joined with commas).
    List,
    /// `--flag` alone (YAML `true`; `false` leaves it out).
    Switch,
}

/// One flag, spelled as on the command line without the leading `--`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    /// Whether the DAG's `defaults` apply to it. Off for a job's own flag that shares its name
    /// with another job's but means something else (`bars --source aggTrades` is no URL).
    pub takes_defaults: bool,
}

impl ArgSpec {
    /// This flag ignores the DAG's defaults: only a step's own `args` set it.
    const fn own(self) -> ArgSpec {
        ArgSpec {
            takes_defaults: false,
            ..self
        }
    }
}

const fn v(name: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind: ArgKind::Value,
        takes_defaults: true,
    }
}
const fn l(name: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind: ArgKind::List,
        takes_defaults: true,
    }
}
const fn s(name: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind: ArgKind::Switch,
        takes_defaults: true,
    }
}

/// The flags every job takes (`shared::cli::CommonArgs`).
pub const COMMON: &[ArgSpec] = &[
    v("store"),
    v("market"),
    l("data-type"),
    v("interval"),
    l("symbols"),
    l("contract"),
    l("quote"),
    l("exclude"),
    v("listed-between"),
    v("start"),
    v("end"),
    v("shard"),
    v("concurrency"),
    s("force"),
    s("dry-run"),
    v("log-format"),
    s("json"),
    v("run-id"),
    v("today"),
    s("allow-future"),
    v("wait-lock"),
    v("lease-ttl"),
];

/// Flags the runner sets itself; a DAG may not.
pub const RESERVED: &[(&str, &str)] = &[
    (
        "shard",
        "the runner sets it from `shard_by` and `parallelism`",
    ),
    ("run-id", "the runner gives every shard its own run id"),
    ("log-format", "the runner passes its own `--log-format`"),
    ("dry-run", "use `runner --dry-run` to see the plan"),
    (
        "json",
        "the runner reads every job's JSON report from its stdout, a pipe",
    ),
    (
        "today",
        "the runner resolves relative dates itself (`runner --today D`)",
    ),
];

/// Kubernetes resource requests of a job's pods (a step may override them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu: &'static str,
    pub memory: &'static str,
}

/// A job binary.
#[derive(Debug, Clone, Copy)]
pub struct JobSpec {
    /// The binary's name, which is also the job's name in a DAG.
    pub name: &'static str,
    /// Its own flags, beside [`COMMON`].
    pub args: &'static [ArgSpec],
    pub resources: Resources,
}

impl JobSpec {
    /// The spec of one of this job's flags, common or its own.
    pub fn arg(&self, name: &str) -> Option<ArgSpec> {
        COMMON
            .iter()
            .chain(self.args)
            .find(|a| a.name == name)
            .copied()
    }

    /// Every flag this job takes.
    pub fn all_args(&self) -> impl Iterator<Item = &ArgSpec> {
        COMMON.iter().chain(self.args)
    }
}

/// Every job the runner can run, in pipeline order.
pub const JOBS: &[JobSpec] = &[
    JobSpec {
        name: JobName::INSTRUMENTS.as_str(),
        args: &[
            v("source"),
            v("listing-url"),
            v("rest-url"),
            s("full"),
            v("retries"),
        ],
        resources: Resources {
            cpu: "500m",
            memory: "512Mi",
        },
    },
    JobSpec {
        name: JobName::DOWNLOAD.as_str(),
        args: &[
            v("source"),
            v("listing-url"),
            v("plan-from"),
            s("refresh"),
            s("strict-checksum"),
            s("verify"),
            s("retry-missing"),
            v("retries"),
            v("retry-base-ms"),
            v("retry-max-secs"),
            v("checksum-attempts"),
            v("connect-timeout-secs"),
            v("read-timeout-secs"),
            v("memory-limit-mib"),
        ],
        resources: Resources {
            cpu: "1",
            memory: "512Mi",
        },
    },
    JobSpec {
        name: JobName::EXTRACT.as_str(),
        args: &[
            v("expect-entries"),
            v("max-uncompressed-gib"),
            v("max-ratio"),
            s("prune-converted"),
            v("tmp-dir"),
        ],
        resources: Resources {
            cpu: "1",
            memory: "512Mi",
        },
    },
    JobSpec {
        name: JobName::CONVERT.as_str(),
        args: &[
            v("row-group-rows"),
            v("read-chunk-mib"),
            v("zstd-level"),
            v("threads"),
            v("from"),
            v("expect-entries"),
            v("max-uncompressed-gib"),
            v("max-ratio"),
        ],
        resources: Resources {
            cpu: "2",
            memory: "4Gi",
        },
    },
    JobSpec {
        name: JobName::TAIL.as_str(),
        args: &[
            v("until"),
            v("rest-url"),
            v("weight-limit"),
            v("funding-limit"),
            v("futures-data-limit"),
            v("headroom"),
            v("max-in-flight"),
            v("um-agg-trades-hours"),
            v("cm-agg-trades-hours"),
            v("metrics-days"),
            v("metrics-time-offset-ms"),
        ],
        resources: Resources {
            cpu: "500m",
            memory: "1Gi",
        },
    },
    JobSpec {
        name: JobName::OPTIMIZE.as_str(),
        args: &[v("row-group-rows"), s("smallest-floats")],
        resources: Resources {
            cpu: "1",
            memory: "2Gi",
        },
    },
    JobSpec {
        name: JobName::VALIDATE.as_str(),
        args: &[v("price-jump-threshold"), v("outage-share"), s("warn-only")],
        resources: Resources {
            cpu: "1",
            memory: "2Gi",
        },
    },
    JobSpec {
        name: JobName::AGGREGATE.as_str(),
        args: &[v("freq")],
        resources: Resources {
            cpu: "1",
            memory: "2Gi",
        },
    },
    JobSpec {
        name: JobName::BARS.as_str(),
        args: &[
            l("bar"),
            l("threshold"),
            l("init-threshold"),
            l("alpha-ticks"),
            l("alpha-imbalance"),
            l("min-threshold"),
            l("max-threshold"),
            l("sign"),
            // The trade source (aggTrades, trades), not download's archive URL.
            l("source").own(),
        ],
        resources: Resources {
            cpu: "1",
            memory: "2Gi",
        },
    },
    // The `build` job (cargo reserves the binary name `build`): one process for the whole panel.
    JobSpec {
        name: JobName::BUILD_PANEL.as_str(),
        args: &[
            v("name"),
            v("freq"),
            v("universe"),
            v("max-ffill-hours"),
            v("min-coverage"),
            v("coverage-base"),
            s("keep-nulls"),
            v("qlib"),
        ],
        resources: Resources {
            cpu: "1",
            memory: "4Gi",
        },
    },
    JobSpec {
        name: JobName::LOAD.as_str(),
        args: &[
            v("database-url"),
            v("schema"),
            v("features"),
            v("bars"),
            v("panel"),
            s("optional"),
        ],
        resources: Resources {
            cpu: "1",
            memory: "1Gi",
        },
    },
];

/// Binaries of this workspace besides the jobs that a DAG may start as services; the runner
/// builds them with the jobs when it was started by `cargo run`.
pub const WORKSPACE_TOOLS: &[&str] = &["archive-sim", "runner"];

/// The registry entry of a job.
pub fn job(name: &str) -> Option<&'static JobSpec> {
    JOBS.iter().find(|j| j.name == name)
}

/// Why the runner reserves a flag, if it does.
pub fn reserved(name: &str) -> Option<&'static str> {
    RESERVED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// The name closest to `name` among `candidates` (for "did you mean" hints).
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_reserved_flags_are_common() {
        let mut names: Vec<_> = JOBS.iter().map(|j| j.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), JOBS.len());
        for j in JOBS {
            let mut flags: Vec<_> = j.all_args().map(|a| a.name).collect();
            flags.sort();
            let n = flags.len();
            flags.dedup();
            assert_eq!(flags.len(), n, "{} repeats a flag", j.name);
        }
        for (r, _) in RESERVED {
            assert!(COMMON.iter().any(|a| a.name == *r), "{r}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            closest("downlaod", JOBS.iter().map(|j| j.name)),
            Some("download")
        );
        assert_eq!(closest("zzz", JOBS.iter().map(|j| j.name)), None);
        assert_eq!(
            job("download").unwrap().arg("listing-url").unwrap().kind,
            ArgKind::Value
        );
        assert_eq!(
            job("extract").unwrap().arg("force").unwrap().kind,
            ArgKind::Switch
        );
        assert!(job("optimize").unwrap().arg("source").is_none());
        assert!(
            job("download")
                .unwrap()
                .arg("source")
                .unwrap()
                .takes_defaults
        );
        assert!(!job("bars").unwrap().arg("source").unwrap().takes_defaults);
    }
}
