#!/usr/bin/env bash
# Download benchmark (issue: foundation). Builds the release binaries, then serves a synthetic
# archive on loopback and compares `download` with curl and curl | openssl on the same files.
# Usage: tests/bench/download.sh [bench-download flags, e.g. --small-symbols 40 --large-files 2]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p download -p archive-sim --bin download --bin bench-download
exec target/release/bench-download "$@"
