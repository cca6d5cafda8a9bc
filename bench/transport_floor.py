"""What the gRPC stack alone costs a ModelInfer, measured with perf_analyzer: a sync grpcio server (the stack of
bench/peers_table.py's minimal peers) against grpc.aio on uvloop (deepserve's), both answering a canned answer
with no model run (bench/peers/canned_server.py). Windows interleaved, medians printed.

    python bench/transport_floor.py [--rounds 5 --window-ms 2000 --concurrency 1 32]

At c=1 the difference of the two p50s is the part of a gap to the minimal peers that the transport explains.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perf_analyzer, venvs  # noqa: E402
from bench.load import free_port  # noqa: E402
from service.config import load_model_config  # noqa: E402
from service.warmup import sample_feed  # noqa: E402

STACKS = (("sync grpcio, 8 handler threads", []), ("grpc.aio on uvloop", ["--aio"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "digits_cnn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    binary, env = venvs.perf_analyzer()
    model = args.model_dir.name
    config = load_model_config(args.model_dir)
    (tensor,) = config.inputs
    sample = sample_feed(config, 0, args.model_dir, model)[tensor.name][:1]
    servers = []
    for name, flags in STACKS:
        port = free_port()
        cmd = [sys.executable, str(ROOT / "bench" / "peers" / "canned_server.py"), "--port", str(port), *flags]
        servers.append((name, subprocess.Popen([*cmd, "--model-dir", str(args.model_dir)]), f"127.0.0.1:{port}"))
    results: dict[tuple[str, int], list[perf_analyzer.PerfPoint]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = perf_analyzer.input_data(Path(tmp) / "input.json", {tensor.name: sample})
            time.sleep(3)  # both listening
            for round_ in range(args.rounds):
                for name, _, address in servers if round_ % 2 == 0 else servers[::-1]:
                    for c in args.concurrency:
                        got = perf_analyzer.run(binary, env, address, model, c, data, args.window_ms, 100_000, 3)
                        if isinstance(got, str):
                            sys.exit(f"perf_analyzer against {name}: {got}")
                        results.setdefault((name, c), []).append(got)
    finally:
        for _, process, _ in servers:
            process.terminate()
            process.wait(30)
    print(f"{args.rounds} interleaved rounds, perf_analyzer -i grpc -b 1, {args.window_ms} ms windows, {model} input")
    print("| stack (canned answer, no model) | concurrency | infer/s (median) | p50 µs (median) |")
    print("| --- | --- | --- | --- |")
    for (name, c), points in results.items():
        got = perf_analyzer.median(points)
        print(f"| {name} | {c} | {got.throughput:,.0f} | {got.p50_us:,.0f} |")


if __name__ == "__main__":
    main()
