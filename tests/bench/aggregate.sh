#!/usr/bin/env bash
# Aggregate benchmark: builds the release `aggregate` and `bench-aggregate`, makes a virtualenv
# with pandas and pyarrow (target/bench-venv), then stages a synthetic year of optimized 1m klines,
# fundingRate and metrics per symbol and times 1m → 1h features for one symbol and for all of
# them, in Rust and in pandas (tests/python/aggregate_pandas.py), which also checks the bars agree.
# Usage: tests/bench/aggregate.sh [bench-aggregate flags, e.g. --symbols 20 --repeat 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
# One package set for every bench script: one feature unification, one release Polars.
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
    -p bench --bin aggregate --bin bench-aggregate
    --bin aggregate --bin bench-aggregate
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Pinned: the ratio is against these (the bench prints them with the machine). The script needs
# pandas 3 (its datetimes in µs; pandas 2.2 refuses merge_asof of µs against ns keys).
"$venv/bin/pip" install --quiet pandas==3.1.1 pyarrow==26.0.1 numpy==2.4.6
# The malloc settings the runner gives its jobs (jobs/runner/src/exec.rs, GLIBC_TUNABLES).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=67108864:glibc.malloc.hugetlb=1:glibc.malloc.arena_max=$(nproc)}"
PIPELINE_BENCH_PYTHON="$PWD/$venv/bin/python" exec target/release/bench-aggregate "$@"
