#!/usr/bin/env bash
# Bars benchmark. Makes a virtualenv with numba, pyarrow and numpy (target/bench-venv-bars, once;
# needs PyPI), builds the release `bars` and `bench-bars`, then runs bench-bars: 20 M synthetic
# UM aggTrades in one optimized month file; the Rust core loop in process, the `bars` binary end
# to end from Parquet (wall, peak RSS), and numba dollar-imbalance bars (loop, whole process).
# Usage: tests/bench/bars.sh [bench-bars flags, e.g. --trades 40000000 --repeat 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/bench-venv-bars
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import numba, pyarrow, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet numba pyarrow numpy
fi
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
    -p bench --bin bars --bin bench-bars
exec target/release/bench-bars --python "$venv/bin/python" \
    --numba-script tests/bench/bars_numba.py "$@"
