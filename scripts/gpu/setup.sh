#!/usr/bin/env bash
# On the GPU machine, from the repository root: install what scripts/gpu/pack.py wrote into .gpu/, into /tmp/site.
# onnxruntime-gpu comes in parts over consecutive calls: each call stores the parts it brought in
# /tmp/deepserve-parts (kept while the machine is held), and the call that completes them unpacks them.
# Then `source scripts/gpu/env.sh` in every call that runs the server.
set -euo pipefail
site=/tmp/site parts=/tmp/deepserve-parts
mkdir -p "$site" "$parts" /tmp/perf
for part in .gpu/ort-gpu.tar.xz.part-*; do [ -e "$part" ] && cp "$part" "$parts/"; done
if [ ! -e "$site/onnxruntime/__init__.py" ] && [ -e .gpu/ort-gpu.parts ]; then
  read -r count digest < .gpu/ort-gpu.parts
  have=$(ls "$parts" | wc -l)
  if [ "$have" -ge "$count" ]; then
    got=$(cat "$parts"/ort-gpu.tar.xz.part-* | sha256sum | cut -d' ' -f1)
    [ "$got" = "$digest" ] || { echo "onnxruntime-gpu parts: SHA-256 $got, expected $digest" >&2; exit 1; }
    cat "$parts"/ort-gpu.tar.xz.part-* | xz -d | tar -x -C "$site"
    echo "onnxruntime-gpu unpacked into $site"
  else
    echo "onnxruntime-gpu: $have of $count parts here so far"
  fi
fi
if [ -d .gpu/wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/wheels/*.whl
  echo "wheels installed into $site"
fi
if [ -e .gpu/perf.tar.xz ]; then tar -xJf .gpu/perf.tar.xz -C /tmp/perf && echo "perf_analyzer in /tmp/perf"; fi
