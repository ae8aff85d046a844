#!/usr/bin/env bash
# tail benchmark: the release `tail` against the simulator's REST API on loopback — 100 USD-M
# symbols, one day of 1m klines + fundingRate + metrics at Binance's real limits (requests against
# the minimum, weight, wall), then klines under a low weight limit (the share of each minute's
# budget used, wall against the weight-limited minimum; a few minutes by design).
# Usage: tests/bench/tail.sh [bench-tail flags, e.g. --symbols 50 --bound-weight-limit 600 --skip-bound]
set -euo pipefail
cd "$(dirname "$0")/../.."
# The package set every bench script builds (one feature resolution: Polars compiles once).
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
  -p bench -p tail --bin tail --bin bench-tail
exec target/release/bench-tail "$@"
