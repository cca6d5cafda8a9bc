#!/usr/bin/env bash
# On a machine with more than two cores (a lent GPU machine's CPUs, say), after scripts/gpu/setup.sh:
#   bash scripts/gpu/spin_ab.sh OUT
# digits_cnn's `execution.spinning` variants side by side (bench/ab.py with perf_analyzer), every server held to
# cores 0,1: with the load generator on the same two cores (OUT/ab-shared.txt) and on eight others (OUT/ab-apart.txt).
set -uo pipefail
out=${1:?usage: spin_ab.sh OUT}
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
variants=()
for v in default:{} never:'{spinning: never}' always:'{spinning: always}' lone_spin_us_3000:'{lone_spin_us: 3000}'; do
  name=${v%%:*} repo=/tmp/repo_${v%%:*}
  rm -rf "$repo"
  python3 -c 'import sys, yaml; from pathlib import Path; from bench.load import model_copy
model_copy(Path("models/digits_cnn"), Path(sys.argv[1]), {"execution": yaml.safe_load(sys.argv[2])})' "$repo" "${v#*:}"
  variants+=("$name=.:$repo")
done
for clients in shared:0,1 apart:2-9; do
  DEEPSERVE_DEVICE=cpu DEEPSERVE_PERF_ANALYZER=/tmp/perf/perf_analyzer timeout -s INT -k 10 "${AB_TIMEOUT:-200}" \
    python3 bench/ab.py "${variants[@]}" --perf-analyzer --rounds "${AB_ROUNDS:-3}" --seconds 1 \
    --server-cpus 0,1 --client-cpus "${clients#*:}" > "$out/ab-${clients%%:*}.txt" 2>&1
  echo "bench/ab.py, clients ${clients} rc $?"
done
