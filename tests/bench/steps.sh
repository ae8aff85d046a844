#!/usr/bin/env bash
# Per-step costs by data type: on a store the whole-DAG benchmark kept (`dag.sh --store DIR`),
# runs the release convert (from the zips, as the DAGs do) and optimize alone with --force, once
# per data type (klines, fundingRate, metrics) at --concurrency 2, and prints wall, CPU per unit
# and per row, rows/s and peak RSS from each job's report and wait4. The jobs rewrite what they
# redo in place, so the store stays a valid bench store. `extract` (staging CSVs, which the DAGs
# no longer do) can be asked for by name.
# Usage: tests/bench/steps.sh DIR [JOB...]   (JOB: extract, convert, optimize; default convert optimize)
set -euo pipefail
cd "$(dirname "$0")/../.."
store=${1:?usage: tests/bench/steps.sh DIR [JOB...]}
shift
jobs=("$@")
[ ${#jobs[@]} -eq 0 ] && jobs=(convert optimize)
symbols_dir="$store/optimized/futures-um/metrics"
[ -d "$symbols_dir" ] || { echo "$store: no optimized metrics; run tests/bench/dag.sh --store $store first" >&2; exit 2; }
symbols=$(ls "$symbols_dir" | sed 's/^symbol=//' | paste -sd,)
last_year=$(ls "$symbols_dir/$(ls "$symbols_dir" | head -1)" | sed 's/^year=//' | sort | tail -1)
cargo build --release -p convert -p optimize -p archive-sim -p aggregate -p build-panel -p bars \
  -p bench -p tail -p download -p extract -p validate -p runner --bins
timing=$(mktemp)
report=$(mktemp)
trap 'rm -f "$timing" "$report"' EXIT
printf '%-9s %-12s %8s %8s %7s %7s %10s %12s %10s %9s %8s\n' \
  job "data type" "wall s" "user s" "sys s" units rows "CPU/unit ms" "CPU/row us" "M rows/s" "RSS MiB"
for job in "${jobs[@]}"; do
  from=()
  [ "$job" = convert ] && from=(--from raw)
  for dt in klines fundingRate metrics; do
    /usr/bin/time -f "%e %U %S %M" -o "$timing" "target/release/$job" --store "$store" \
      --data-type "$dt" --symbols "$symbols" --start 2023-01-01 --end "$last_year-12-31" \
      --force --concurrency 2 "${from[@]}" >"$report" 2>/dev/null
    python3 - "$job" "$dt" "$timing" "$report" <<'PY'
import json, sys
job, dt, timing, report = sys.argv[1:]
wall, user, sys_, rss = open(timing).read().split()[-4:]
r = json.loads(open(report).read().strip().splitlines()[-1])
units = r["counts"]["done"]
d = r.get("details", {})
rows = d.get("rows") or d.get("rows_in") or d.get("csv_rows") or 0
cpu = float(user) + float(sys_)
print(f"{job:<9} {dt:<12} {float(wall):8.2f} {float(user):8.2f} {float(sys_):7.2f} {units:7} {rows:10} "
      f"{cpu / max(units, 1) * 1e3:12.2f} {cpu / max(rows, 1) * 1e6:10.2f} {rows / float(wall) / 1e6:9.2f} {int(rss) // 1024:8}")
PY
  done
done
