"""Serving benchmark: the server under closed-loop gRPC load vs raw ONNX Runtime, side by side in one run.

    python bench/serving.py [--model-repository models --model digits_cnn --duration 5]

1. Raw ONNX Runtime in this process on the same model file: throughput at batch sizes 1..64 (best is the
   reference) and latency at batch 1.
2. `deepserve serve` as a subprocess on free ports, driven by N concurrent async gRPC callers (closed loop:
   each sends its next request when the previous answer arrives), N = 1, 8, 32, with dynamic batching on,
   then the same with batching off.
Prints throughput, p50/p99 latency, mean batch size (from the server's /metrics) and the ratio to raw.
Machines are shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cnn import build_cnn  # noqa: E402
from bench.instances import drive  # noqa: E402
from bench.load import (  # noqa: E402
    ECHO_SERVER,
    check_answer,
    closed_loop,
    free_port,
    model_copy,
    percentile,
    request_bytes,
    serve_command,
)
from service.config import DATATYPES, load_model_config  # noqa: E402
from service.grpc._generated.inference import grpc_service_pb2 as pb  # noqa: E402


# ---- raw ONNX Runtime ---------------------------------------------------------------------------------
def raw_onnxruntime(model_file: Path, sample: np.ndarray, name: str, seconds: float) -> tuple[dict[int, float], float]:
    """Items/s per batch size, and p50 latency (s) at batch 1, with ONNX Runtime's default options."""
    opts = ort.SessionOptions()
    session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    throughput = {}
    for batch in (1, 2, 4, 8, 16, 32, 64):
        feed = {name: np.repeat(sample, batch, axis=0)}
        session.run(None, feed)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, feed)
            count += 1
        throughput[batch] = count * batch / (time.perf_counter() - start)
    latencies = []
    feed = {name: sample}
    for _ in range(2000):
        t = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - t)
    return throughput, percentile(latencies, 50)


def raw_concurrent(model_file: Path, sample: np.ndarray, name: str, seconds: float, threads: int = 8) -> float:
    """Items/s of batch-1 runs made by `threads` threads at once on one session (ONNX Runtime's default options,
    as `raw_onnxruntime`): the most a server that runs each request inline in its handler thread can reach."""
    session = ort.InferenceSession(str(model_file), ort.SessionOptions(), providers=["CPUExecutionProvider"])
    feed = {name: sample}
    session.run(None, feed)
    return drive([session], threads, feed, seconds)


# ---- the server -----------------------------------------------------------------------------------------
class Server:
    def __init__(self, repo: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        cmd = serve_command(repo, self.port, self.metrics_port, "--http-port", "0", "--log-level", "warning")
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
        self.address = f"127.0.0.1:{self.port}"

    async def wait_ready(self, model: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            ready = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelReady",
                request_serializer=pb.ModelReadyRequest.SerializeToString,
                response_deserializer=pb.ModelReadyResponse.FromString,
            )
            while time.monotonic() < deadline:
                try:
                    if (await ready(pb.ModelReadyRequest(name=model), timeout=1)).ready:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def batch_stats(self, model: str) -> tuple[float, float]:
        """(batch items, model runs) so far, from /metrics."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        items = runs = 0.0
        for line in text.splitlines():
            if f'model="{model}"' not in line:
                continue
            if line.startswith("deepserve_batch_size_sum"):
                items = float(line.rsplit(" ", 1)[1])
            elif line.startswith("deepserve_batch_size_count"):
                runs = float(line.rsplit(" ", 1)[1])
        return items, runs

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


async def grpc_floor(payload: bytes, concurrencies: list[int], seconds: float) -> dict[int, list[float]]:
    """The same load against a bare grpc.aio server that answers at once: what gRPC itself costs here."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ECHO_SERVER), str(port)])
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                await closed_loop(address, payload, 1, 0.2)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        return {c: await closed_loop(address, payload, c, seconds) for c in concurrencies}
    finally:
        proc.terminate()
        proc.wait(10)


# ---- set-up ---------------------------------------------------------------------------------------------
def prepare(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, str]:
    """Two one-model repositories (batching on / off) and the model's name."""
    source = args.model_repository / args.model
    on, off = tmp / "on", tmp / "off"
    if not source.is_dir():
        print(f"# {source} not found: using a CIFAR-size CNN built with onnx.helper instead", flush=True)
        source = tmp / "built" / args.model
        build_cnn(source)
    model_copy(source, on, yaml.safe_load(args.override) if args.override else None)
    model_copy(on / args.model, off, {"dynamic_batching": {"enabled": False}})
    return on, off, args.model


async def measure(repo: Path, model: str, payload: bytes, expected: np.ndarray, args: argparse.Namespace) -> list:
    server = Server(repo)
    try:
        await server.wait_ready(model)
        check_answer(server.address, payload, expected)
        await closed_loop(server.address, payload, 8, 1.0)  # warm up connections and threads
        rows = []
        for concurrency in args.concurrency:
            items0, runs0 = server.batch_stats(model)
            latencies = await closed_loop(server.address, payload, concurrency, args.duration)
            items1, runs1 = server.batch_stats(model)
            mean_batch = (items1 - items0) / max(runs1 - runs0, 1)
            rows.append((concurrency, len(latencies) / args.duration, latencies, mean_batch))
        return rows
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--override",
        help="YAML/JSON mapping merged into the model's config.yaml for both runs, e.g. "
        "'{execution: {allow_spinning: true}, dynamic_batching: {max_queue_delay_ms: 0}}'",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        on, off, model = prepare(args, Path(tmp))
        config = load_model_config(on / model)
        spec = config.inputs[0]
        dtype = np.dtype(DATATYPES[spec.datatype])
        sample = np.random.default_rng(0).random((1, *spec.dims)).astype(dtype)
        model_file = on / model / "1" / "model.onnx"
        raw, raw_latency = raw_onnxruntime(model_file, sample, spec.name, seconds=min(args.duration, 2.0))
        best_batch = max(raw, key=lambda b: raw[b])
        reference = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        expected = reference.run([config.outputs[0].name], {spec.name: sample})[0]
        payload = request_bytes(model, spec.name, spec.datatype, sample)
        size_mb = model_file.stat().st_size / 1e6
        results = {
            "on": asyncio.run(measure(on, model, payload, expected, args)),
            "off": asyncio.run(measure(off, model, payload, expected, args)),
        }
        floor = asyncio.run(grpc_floor(payload, args.concurrency, args.duration))

    cpus = os.cpu_count()
    print(f"\nmodel {model} ({size_mb:.1f} MB), {cpus} CPUs, {args.duration:.0f} s per point")
    print("raw ONNX Runtime: " + ", ".join(f"b{b}={v:,.0f}/s" for b, v in raw.items()))
    best = raw[best_batch]
    print(f"raw best: {best:,.0f} items/s at batch {best_batch}; batch-1 p50 latency {raw_latency * 1e3:.3f} ms")
    print()
    header = f"{'batching':<9}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'mean batch':>12}{'÷ raw best':>12}"
    print(header)
    print("-" * len(header))
    for mode, rows in results.items():
        for concurrency, rps, lat, mean_batch in rows:
            print(
                f"{mode:<9}{concurrency:>5}{rps:>10,.0f}{percentile(lat, 50) * 1e3:>9.3f}"
                f"{percentile(lat, 99) * 1e3:>9.3f}{mean_batch:>12.2f}{rps / raw[best_batch]:>12.2f}"
            )
    for concurrency, lat in floor.items():
        rps = len(lat) / args.duration
        print(
            f"{'grpc-echo':<9}{concurrency:>5}{rps:>10,.0f}{percentile(lat, 50) * 1e3:>9.3f}"
            f"{percentile(lat, 99) * 1e3:>9.3f}{'-':>12}{'-':>12}"
        )
    print("(grpc-echo: the same load against a bare grpc.aio server that answers at once, no model)")
    on_rows, off_rows = {r[0]: r for r in results["on"]}, {r[0]: r for r in results["off"]}
    print()
    if 1 in on_rows:
        p50 = percentile(on_rows[1][2], 50)
        print(f"concurrency 1: server p50 - raw batch-1 p50 = {(p50 - raw_latency) * 1e3:+.3f} ms")
        if 1 in floor:
            extra = p50 - raw_latency - percentile(floor[1], 50)
            print(f"concurrency 1: server p50 - (raw batch-1 p50 + grpc-echo p50) = {extra * 1e3:+.3f} ms")
    top = max(on_rows)
    print(f"concurrency {top}: batching on ÷ raw best = {on_rows[top][1] / raw[best_batch]:.2f}")
    if top in off_rows:
        print(f"concurrency {top}: batching on ÷ batching off = {on_rows[top][1] / off_rows[top][1]:.2f}")


if __name__ == "__main__":
    main()
