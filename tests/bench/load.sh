#!/usr/bin/env bash
# Load benchmark (issue: `load`). Builds the release binaries; serves a simulated archive of one
# USD-M symbol: a year of 1m klines (525,600 rows) and a month of aggTrades (about 20 M rows at the
# default --agg-trades-per-minute); runs download → extract → convert → optimize; starts a
# PostgreSQL cluster in a temp folder; then, in the same run, times `load` of each dataset next
# to `psql \copy` of the same rows from CSV (written by DuckDB from the optimized Parquet) into an
# identical empty table, and prints rows/s, peak RSS and the database size.
# Usage: tests/bench/load.sh [--agg-trades-per-minute 460] [--keep]
set -euo pipefail
cd "$(dirname "$0")/../.."
per_minute=460
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agg-trades-per-minute) per_minute="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
# The package set every bench script builds (one feature resolution: Polars compiles once).
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
  -p bench -p tail -p download -p extract -p validate -p runner -p load --bins
bin="$PWD/target/release"
python="${PIPELINE_TEST_PYTHON:-$PWD/.venv-ci/bin/python}"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 755 "$work"
sim_pid=""
# Every step of the cleanup runs whatever the one before did (no `set -e` here): a simulator that
# already exited must not leave the cluster running and the store on disk.
cleanup() {
  set +e
  [ -z "$sim_pid" ] || kill "$sim_pid" 2>/dev/null
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1
  rm -rf "$work"
}
[ -n "$keep" ] || trap cleanup EXIT
[ -z "$keep" ] || echo "work folder: $work"

cat > "$work/sim.json" <<EOF
{"start": "2024-01-01", "end": "2024-12-31",
 "symbols": [{"market": "um", "symbol": "BTCUSDT", "listed": "2019-09-08", "base_price": 42000.0,
              "data_types": ["klines", "aggTrades"]}],
 "trades_per_minute": [$per_minute, $per_minute], "intervals": ["1m"]}
EOF
"$bin/archive-sim" --config "$work/sim.json" --port 0 --print-url > "$work/sim.url" 2>/dev/null &
sim_pid=$!
for _ in $(seq 100); do [ -s "$work/sim.url" ] && [ "$(wc -l < "$work/sim.url")" -ge 2 ] && break; sleep 0.1; done
url=$(sed -n 2p "$work/sim.url")
store="$work/store"
echo "staging: klines 2024, aggTrades 2024-03 ($per_minute trades a minute)…"
for job in download extract convert optimize; do
  extra=()
  [ "$job" = download ] && extra=(--source "$url")
  "$bin/$job" --store "$store" --symbols BTCUSDT --data-type klines --start 2024-01-01 --end 2024-12-31 "${extra[@]}" --json > /dev/null
  "$bin/$job" --store "$store" --symbols BTCUSDT --data-type aggTrades --start 2024-03-01 --end 2024-03-31 "${extra[@]}" --json > /dev/null
done
kill $sim_pid 2>/dev/null || true

# PostgreSQL: its own cluster, owned by `postgres` (initdb refuses root), no fsync.
mkdir -p "$work/pg" && chown postgres:postgres "$work/pg"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -U postgres -A trust --no-sync > /dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=4GB" start > /dev/null
db="postgresql://postgres@127.0.0.1:$port/postgres"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$db" "$@"; }

now() { date +%s.%N; }
for spec in "klines:klines-1m:um_klines_1m:2024-01-01:2024-12-31" "aggTrades:aggTrades:um_agg_trades:2024-03-01:2024-03-31"; do
  IFS=: read -r dtype dir table start end <<< "$spec"
  # load, timed with its peak RSS.
  t0=$(now)
  /usr/bin/time -f "%M" -o "$work/rss" "$bin/load" --store "$store" --symbols BTCUSDT --data-type "$dtype" \
    --start "$start" --end "$end" --database-url "$db" --json > "$work/report.json"
  t1=$(now)
  rows=$(psql -At -c "SELECT count(*) FROM binance.$table")
  load_s=$(echo "$t1 - $t0" | bc)
  rss=$(cat "$work/rss")
  # The same rows as CSV (DuckDB from the optimized Parquet, in the table's column order), then
  # \copy into an empty copy of the table.
  cols=$(psql -At -c "SELECT string_agg(quote_ident(column_name), ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema='binance' AND table_name='$table' AND column_name <> 'symbol'")
  "$python" - "$store/optimized/futures-um/$dir" "$work/rows.csv" "$cols" <<'PY'
import sys, duckdb
src, out, cols = sys.argv[1], sys.argv[2], sys.argv[3]
duckdb.sql(f"COPY (SELECT 'BTCUSDT' AS symbol, {cols} FROM read_parquet('{src}/**/*.parquet')) TO '{out}' (HEADER false)")
PY
  size=$(psql -At -c "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'binance.$table'::regclass")
  # Into the same table (same partitions, key and index), emptied.
  psql -c "TRUNCATE binance.$table"
  t0=$(now)
  psql -c "\\copy binance.$table FROM '$work/rows.csv' CSV"
  t1=$(now)
  copy_s=$(echo "$t1 - $t0" | bc)
  copied=$(psql -At -c "SELECT count(*) FROM binance.$table")
  [ "$copied" = "$rows" ] || { echo "\\copy loaded $copied rows, load $rows" >&2; exit 1; }
  printf "%-10s rows %10s | load %7.2f s %11.0f rows/s, peak RSS %5d MiB | psql \\\\copy %7.2f s %11.0f rows/s | load / \\\\copy %.2fx | table %s\n" \
    "$dtype" "$rows" "$load_s" "$(echo "$rows / $load_s" | bc -l)" "$((rss / 1024))" \
    "$copy_s" "$(echo "$rows / $copy_s" | bc -l)" "$(echo "$copy_s / $load_s" | bc -l)" "$size"
done
echo "database size: $(psql -At -c "SELECT pg_size_pretty(pg_database_size('postgres'))")"
