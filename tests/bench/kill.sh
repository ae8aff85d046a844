#!/usr/bin/env bash
# Kill-anywhere trial, longer: the demo DAG (two symbols, three days) SIGKILLed with all its
# processes at KILLS random instants (default 50), each killed run resumed and checked
# byte-identical to an uninterrupted run with no staging object, partial write, dead run's
# lease or temp folder left. The same test CI runs with 10 kills; debug binaries, as CI uses.
# Usage: tests/bench/kill.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIPELINE_KILL_TRIALS="${1:-50}"
if [ -n "${2:-}" ]; then export PIPELINE_KILL_SEED="$2"; fi
exec cargo test -p archive-sim --test e2e -- --exact \
  runner::the_demo_dag_killed_anywhere_resumes_to_identical_outputs_and_leaves_nothing --nocapture
