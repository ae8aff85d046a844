#!/usr/bin/env bash
# Convert and optimize benchmark. Builds the release binaries (a clean release build of Polars
# takes about 20 minutes on 2 cores), then stages synthetic CSVs in a temp local store and times
# the release `convert` on (a) many small daily 1m-kline files and (b) large monthly aggTrades
# files, and `optimize` on (b)'s month, with peak RSS.
# Usage: tests/bench/convert.sh [bench-convert flags, e.g. --small-symbols 40 --agg-rows 30000000]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
    -p bench \
    --bin convert --bin optimize --bin bench-convert
exec target/release/bench-convert "$@"
