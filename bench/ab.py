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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import INFER, closed_loop, free_port, request_bytes, serve_command  # noqa: E402
from service.config import load_model_config  # noqa: E402
from service.warmup import sample_feed  # noqa: E402


def start(source: Path, repository: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = serve_command(repository, port, free_port(), "--log-level", "warning")
    # No HTTP port: several servers run at once, and older checkouts have no --http-port flag (the variable
    # is ignored by them).
    env = {**os.environ, "DEEPSERVE_HTTP_PORT": "0"}
    return subprocess.Popen(cmd, cwd=source, env=env), f"127.0.0.1:{port}"  # `-m service` imports SOURCE's code


def cpu_seconds(pid: int) -> float:
    """Time the process's threads have spent on a CPU (nanosecond counters; NaN where /proc has none)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    except OSError:
        return float("nan")
    return total / 1e9


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
    servers = [(name, *start(src, repo)) for name, src, repo in variants]
    try:
        for _, _, address in servers:
            await ready(address, payload)
            await closed_loop(address, payload, 8, 1.0)  # warm up connections and threads
        results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                for name, process, address in servers if round_ % 2 == 0 else servers[::-1]:
                    cpu = cpu_seconds(process.pid)
                    latencies = await closed_loop(address, payload, concurrency, args.seconds)
                    cpu_us = (cpu_seconds(process.pid) - cpu) / len(latencies) * 1e6
                    point = (len(latencies) / args.seconds, statistics.median(latencies) * 1e3, cpu_us)
                    results.setdefault((name, concurrency), []).append(point)
        print(f"{args.rounds} interleaved rounds of {args.seconds:g} s windows, {args.model}, batch 1 per request")
        columns = ["req/s", "p50 ms", "server CPU µs/request"]
        print(f"| variant | concurrency | {' | '.join(f'{c} (median)' for c in columns)} | req/s per round |")
        print("| --- | --- | --- | --- | --- | --- |")
        for concurrency in args.concurrency:
            for name, _, _ in servers:
                points = results[name, concurrency]
                rates = ", ".join(f"{r:,.0f}" for r, _, _ in points)
                print(
                    f"| {name} | {concurrency} | {statistics.median(r for r, _, _ in points):,.0f} | "
                    f"{statistics.median(p for _, p, _ in points):.3f} | "
                    f"{statistics.median(c for _, _, c in points):,.0f} | {rates} |"
                )
    finally:
        for _, process, _ in servers:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME=SOURCE[:REPOSITORY]")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one window")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
