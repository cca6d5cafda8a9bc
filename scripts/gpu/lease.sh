#!/usr/bin/env bash
# The one prepared run on a lent GPU machine, after scripts/gpu/setup.sh has received every part (docs/gpu.md):
#   bash scripts/gpu/setup.sh && bash scripts/gpu/lease.sh "$OUT" [SECTION ...]
# 1. bench/gpu.py's SECTIONs on the CUDA execution provider into OUT/gpu/ (default: env providers parity
#    generation memory lanes; the server section runs its committed setup only);
# 2. with PEERS=1, issue 12's peer table on the machine's CPUs, every server held to two cores (0,1), twice: with
#    perf_analyzer on the same two cores, as on the project's 2-core machine (OUT/peers-shared.txt), and on eight
#    others (2-9), where the load generator no longer takes the servers' CPU (OUT/peers-apart.txt).
# Each step has its own time limit, and a failing one does not stop the next.
set -uo pipefail
out=${1:?usage: lease.sh OUT [SECTION ...]}
shift
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(env providers parity generation memory lanes)
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
mkdir -p "$out/gpu"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; lscpu | grep -E 'Model name|^CPU\(s\)'; } \
  > "$out/machine.txt" 2>&1
python3 -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())' >> "$out/machine.txt" 2>&1
timeout -s INT -k 10 330 python3 bench/gpu.py --out "$out/gpu" --perf-analyzer /tmp/perf/perf_analyzer \
  --setups committed --only "${sections[@]}" > "$out/gpu/stdout.txt" 2>&1
echo "bench/gpu.py rc $?" >> "$out/machine.txt"
if [ "${PEERS:-0}" = 1 ]; then
  for clients in shared:0,1 apart:2-9; do
    DEEPSERVE_DEVICE=cpu DEEPSERVE_PERF_ANALYZER=/tmp/perf/perf_analyzer timeout -s INT -k 10 200 python3 bench/peers_table.py \
      --no-mlserver --no-http --rounds 2 --window-ms 1000 --loop-seconds 1 --raw-seconds 0.5 \
      --server-cpus 0,1 --client-cpus "${clients#*:}" > "$out/peers-${clients%%:*}.txt" 2>&1
    echo "bench/peers_table.py, clients ${clients} rc $?" >> "$out/machine.txt"
  done
fi
cat "$out/machine.txt"
