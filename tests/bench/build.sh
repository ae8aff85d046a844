#!/usr/bin/env bash
# build-panel benchmark: builds the release `build-panel` and `bench-build`, stages a synthetic year
# of hourly features for 100 symbols (late listings, delistings, gaps, nulls) with their funding,
# and times the panel with and without the Qlib export, a top-funding universe, and an up-to-date
# rerun: input rows/s and peak RSS.
# Usage: tests/bench/build.sh [bench-build flags, e.g. --symbols 50 --repeat 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
# One package set for every bench script: one feature unification, one release Polars.
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
    -p bench --bin build-panel --bin bench-build
    --bin build-panel --bin bench-build
exec target/release/bench-build "$@"
