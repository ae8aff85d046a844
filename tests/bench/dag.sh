#!/usr/bin/env bash
# Whole-DAG benchmark: the release runner over a simulated USD-M archive of N symbols x Y years
# (1m klines, funding, metrics) served in-process, one step at a time from download to
# build-panel: per step wall, user/sys CPU, peak RSS, units, rows, rows/s, files and bytes
# written, manifest objects and bytes; then a no-op rerun and a one-day incremental run.
# The DAG converts the zips directly; --staged-csv runs extract and converts its CSVs instead.
# Usage: tests/bench/dag.sh [--symbols 25] [--years 1] [--concurrency 2] [--store DIR [--reuse-download]] [--staged-csv]
set -euo pipefail
cd "$(dirname "$0")/../.."
# The package set every bench script builds (one feature resolution: Polars compiles once),
# plus the jobs the DAG runs.
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
  -p bench -p tail -p download -p extract -p validate -p runner --bins
exec target/release/bench-dag "$@"
