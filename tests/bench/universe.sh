#!/usr/bin/env bash
# Universe benchmark (issue: the whole archive, exactly). Builds the release binaries, serves a
# simulated USD-M market of 400 symbols x 6 years (late listings, delistings, one-row-a-day kline
# files) and plans and mirrors it with `download --symbols all --plan-from listing`: planning
# time, requests against the minimum (listing pages + a CHECKSUM and a zip per file), 404s,
# files/s, and a rerun.
# Usage: tests/bench/universe.sh [bench-universe flags, e.g. --symbols 100 --years 2]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p download -p archive-sim --bin download --bin bench-universe
exec target/release/bench-universe "$@"
