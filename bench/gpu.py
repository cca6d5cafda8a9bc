"""The CUDA execution provider on a real GPU, in one run: what docs/gpu.md reports.

    python bench/gpu.py --out DIR [--perf-analyzer .gpu/perf/perf_analyzer] [--device cuda]

Sections, each timed and written to DIR/gpu.json as soon as it ends (a failing one records its error and
the rest still run), with the text of each in DIR/gpu.log:

1. env: the card (nvidia-smi), ONNX Runtime's version and providers.
2. providers: every committed model and step graph loads under `--device cuda` on CUDAExecutionProvider
   (`session.get_providers()`), `--device auto` picks CUDA, and a session that cannot start CUDA with its
   options (device id 99) is a load error, not a silent fallback. Node placement per provider, from ONNX
   Runtime's profile of one run.
3. parity: outputs of each model and of the KV-cache step graph (prefill and a decoding step) on CUDA
   against the CPU, same inputs; the goal is a max abs difference of 1e-4 (TF32 off), and TF32 on is shown.
4. raw: digits_cnn through ONNX Runtime alone at batch 1..512: `run` with numpy, I/O binding, I/O binding
   with outputs left on the GPU and copied after, and CUDA graphs (fixed shapes, inputs updated in place);
   cuDNN's exhaustive against heuristic algorithm search.
5. server: `deepserve serve --device cuda` on the committed models, perf_analyzer at concurrency 1, 8, 32
   on digits_cnn, with the ratio to raw ONNX Runtime's best; again with `execution.io_binding: true`, on a
   server started with `--device auto`.
6. generation: bench/generation.py and bench/generation_grpc.py with `--device cuda`.
7. memory: GPU memory of a process per model (NVML), the arena settings, and that `gpu_mem_limit` holds.
8. lanes: `generation.engine: process` on the device (bench/gpu_lanes.py): process lanes generate the text
   thread lanes do, the GPU memory of the server and its engine children, and generation over gRPC on
   process lanes against thread lanes.
9. gaps: a batch-1 run's time back to back and after idle gaps (bench/gpu_gaps.py).
10. placement: each committed model's time per batch on the device and on the CPU, and the providers each loads
    on in `deepserve serve` (bench/gpu_placement.py).

`--device cpu` runs the same code on the CPU (CUDA's sections compare the CPU with itself): a dry run for
machines without a GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_gaps import gaps  # noqa: E402
from bench.gpu_lanes import lanes  # noqa: E402
from bench.gpu_memory import generation, memory, probe  # noqa: E402
from bench.gpu_placement import placement  # noqa: E402
from bench.gpu_providers import env, parity, providers  # noqa: E402
from bench.gpu_raw import raw  # noqa: E402
from bench.gpu_run import Run  # noqa: E402
from bench.gpu_server import server  # noqa: E402
from bench.gpu_shapes import shapes  # noqa: E402
from service.config import Device  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="deepserve-gpu-")))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--perf-analyzer", type=Path, default=None)
    parser.add_argument("--window-ms", type=int, default=1500)
    parser.add_argument("--raw-seconds", type=float, default=0.4)
    parser.add_argument("--quick", action="store_true", help="fewer generation runs (a dry run)")
    parser.add_argument("--only", nargs="*", default=None, help="sections to run (default: all)")
    parser.add_argument("--setups", nargs="*", default=None, help="server setups to run (default: all)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = Device(args.device)
    if args.probe:
        probe(args.probe, device, args.model_repository)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, device, args.model_repository)
    sections: dict[str, Callable[[], Any]] = {
        "env": lambda: env(run),
        "providers": lambda: providers(run),
        "parity": lambda: parity(run),
        "raw": lambda: raw(run, args.raw_seconds),
        "shapes": lambda: shapes(run, 1.0),
        "server": lambda: server(run, args.perf_analyzer, args.window_ms, raw_best(run), args.setups),
        "generation": lambda: generation(run, args.quick),
        "memory": lambda: memory(run),
        "lanes": lambda: lanes(run),
        "gaps": lambda: gaps(run),
        "placement": lambda: placement(run),
    }
    for name, body in sections.items():
        if args.only is None or name in args.only:
            run.section(name, body)
    run.say(f"\nresults: {args.out / 'gpu.json'}")


def raw_best(run: Run) -> float | None:
    got = run.results.get("raw", {}).get("result", {}).get("best", {}).get("run", {})
    return got.get("items_per_s")


if __name__ == "__main__":
    main()
