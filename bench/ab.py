"""Interleaved A/B of deepserve variants: every variant's server is started up front, then short closed-loop
windows alternate between them (one server under load at a time, order reversed every other round), and
the medians per variant are printed. On a shared, noisy machine this compares far better than separate runs.
Besides throughput and latency it prints the server's CPU time per request (all its threads, from
/proc/PID/task/*/schedstat, where Linux has it): steadier than throughput when other work shares the cores.

    python bench/ab.py NAME=SOURCE[:REPOSITORY] ... [--rounds 7 --seconds 1.5 --model digits_cnn]

SOURCE is a checkout of deepserve (e.g. `git worktree add /tmp/base HEAD~1` for the code before a change;
run `python scripts/codegen.py` there once); REPOSITORY a model repository (default: SOURCE/models),
e.g. a copy of a model with another `execution` section. Example, a change against the commit before it:

    python bench/ab.py before=/tmp/base now=. never=.:/tmp/repo_never

`--pause-ms 20` makes each caller wait after every answer: isolated requests, not a closed loop.
`--server-cpus 0,1 --client-cpus 2-7` holds the servers to two cores and the load generator to others, on a
machine with more than two (bench/affinity.py).
`--perf-analyzer` drives the windows with Triton's perf_analyzer instead (issue 12's load generator, a C++
client; installed into .bench-venvs/ on first use): its figures, and the server-side time per request it reads
from the statistics extension (ONNX Runtime's share as `compute µs`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import affinity, perf_analyzer, venvs  # noqa: E402
from bench.load import INFER, closed_loop, cpu_seconds, free_port, request_bytes, serve_command  # noqa: E402
from service.config import load_model_config  # noqa: E402
from service.warmup import sample_feed  # noqa: E402


def start(source: Path, repository: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = serve_command(repository, port, free_port(), "--log-level", "warning")
    # No HTTP port: several servers run at once, and older checkouts have no --http-port flag (the variable
    # is ignored by them).
    env = {**os.environ, "DEEPSERVE_HTTP_PORT": "0"}
    return subprocess.Popen(cmd, cwd=source, env=env), f"127.0.0.1:{port}"  # `-m service` imports SOURCE's code


async def ready(address: str, payload: bytes, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while True:
            try:
                await channel.unary_unary(INFER)(payload, timeout=2)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> None:
    variants = []
    for spec in args.variants:
        name, _, where = spec.partition("=")
        source, _, repository = where.partition(":")
        src = Path(source).resolve()
        variants.append((name, src, Path(repository).resolve() if repository else src / "models"))
    config = load_model_config(variants[0][2] / args.model)
    (tensor,) = config.inputs
    feed = sample_feed(config, 0, variants[0][2] / args.model, args.model)
    payload = request_bytes(args.model, tensor.name, tensor.datatype, feed[tensor.name][:1])
    where = affinity.placement(args.server_cpus, args.client_cpus)
    if where:
        print(f"# {where}", flush=True)
    affinity.pin(args.server_cpus)
    servers = [(name, *start(src, repo)) for name, src, repo in variants]
    affinity.pin(args.client_cpus)  # from here on, this process and perf_analyzer are the clients
    tmp = tempfile.TemporaryDirectory()  # perf_analyzer's input file
    try:
        for _, _, address in servers:
            await ready(address, payload)
            await closed_loop(address, payload, 8, 1.0)  # warm up connections and threads
        results: dict[tuple[str, int], list[tuple[float, ...]]] = {}
        window = perf_window(args, feed[tensor.name][:1], tensor.name, Path(tmp.name)) if args.perf_analyzer else None
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                for name, process, address in servers if round_ % 2 == 0 else servers[::-1]:
                    if window:
                        rate, p50_ms, cpu_us, compute_us = window(process.pid, address, concurrency)
                    else:
                        cpu = cpu_seconds(process.pid)
                        latencies = await closed_loop(address, payload, concurrency, args.seconds, args.pause_ms / 1e3)
                        rate, p50_ms, compute_us = len(latencies) / args.seconds, statistics.median(latencies) * 1e3, 0
                        cpu_us = (cpu_seconds(process.pid) - cpu) / len(latencies) * 1e6
                    results.setdefault((name, concurrency), []).append((rate, p50_ms, cpu_us, compute_us))
        client = "perf_analyzer" if window else "closed-loop grpc.aio client"
        if args.pause_ms and not window:
            client += f", {args.pause_ms:g} ms pause after each answer"
        print(f"{args.rounds} interleaved rounds of {args.seconds:g} s windows ({client}), {args.model}, batch 1")
        columns = ["req/s", "p50 ms", "server CPU µs/request"] + (["server compute µs/request"] if window else [])
        print(f"| variant | concurrency | {' | '.join(f'{c} (median)' for c in columns)} | req/s per round |")
        print("|" + " --- |" * (len(columns) + 3))
        for concurrency in args.concurrency:
            for name, _, _ in servers:
                points = results[name, concurrency]
                medians = [statistics.median(p[i] for p in points) for i in range(len(columns))]
                shown = [f"{medians[0]:,.0f}", f"{medians[1]:.3f}", *(f"{m:,.0f}" for m in medians[2:])]
                rates = ", ".join(f"{p[0]:,.0f}" for p in points)
                print(f"| {name} | {concurrency} | {' | '.join(shown)} | {rates} |")
    finally:
        tmp.cleanup()
        for _, process, _ in servers:
            process.terminate()
            process.wait(30)


def perf_window(args: argparse.Namespace, sample: np.ndarray, name: str, folder: Path):
    """A function measuring one perf_analyzer window against a server process: (infer/s, p50 ms, its CPU µs per
    request, its compute µs per request). The input file goes into `folder`."""
    binary, env = venvs.perf_analyzer()
    data = perf_analyzer.input_data(folder / "input.json", {name: sample})

    def window(pid: int, address: str, concurrency: int) -> tuple[float, float, float, float]:
        # Three windows of the length asked for, no stability check: the rounds are the repetitions.
        window_ms = int(args.seconds * 1000)
        got, cpu_us = perf_analyzer.run_with_cpu(
            pid, binary, env, address, args.model, concurrency, data, window_ms, 100_000, 3
        )
        if isinstance(got, str):
            raise RuntimeError(f"perf_analyzer against {address}: {got}")
        compute = got.server_us["compute_infer"] if got.server_us else float("nan")
        return got.throughput, got.p50_us / 1e3, cpu_us, compute

    return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME=SOURCE[:REPOSITORY]")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one window")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--perf-analyzer", action="store_true", help="drive the windows with perf_analyzer")
    parser.add_argument(
        "--pause-ms", type=float, default=0.0, help="each caller waits this long after an answer (isolated requests)"
    )
    affinity.add_arguments(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
