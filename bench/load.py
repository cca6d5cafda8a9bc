"""A closed-loop gRPC load and the few helpers every bench shares: free ports, a V2 request as bytes, a check of
the answer. `closed_loop` sends bytes and reads bytes, so the client does no protobuf work of its own."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

from service.grpc._generated.inference import grpc_service_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
ECHO_SERVER = Path(__file__).resolve().parent / "peers" / "echo_server.py"
"""A bare grpc.aio server with no model (ModelInfer and Generate): what gRPC itself costs."""


def serve_command(repository: Path, port: int, metrics_port: int, *flags: str) -> list[str]:
    """`python -m service serve` on `repository` with gRPC on `port`, metrics on `metrics_port`, and `flags`."""
    serve = [sys.executable, "-m", "service", "serve", "--model-repository", str(repository)]
    return [*serve, "--port", str(port), "--metrics-port", str(metrics_port), *flags]


def model_copy(source: Path, repository: Path, override: dict[str, Any] | None = None) -> Path:
    """The model folder `source` copied into the model repository `repository`, with `override` merged into its
    config.yaml (a mapping section is updated key by key, anything else replaced): a variant of a model for an
    A/B, e.g. `{"execution": {"spinning": "never"}}`. Returns the copy's folder."""
    copy = repository / source.name
    shutil.copytree(source, copy)
    if override:
        config_file = copy / "config.yaml"
        config = yaml.safe_load(config_file.read_text())
        for section, values in override.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        config_file.write_text(yaml.safe_dump(config))
    return copy


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (its children, theirs, ...), read from /proc: a server's engine processes."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):  # a process that ended while we read
            continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def closed_loop(
    address: str, payload: bytes, concurrency: int, seconds: float, pause_s: float = 0.0
) -> list[float]:
    """Latencies of every request answered within `seconds`; `concurrency` callers, one request in flight each,
    each waiting `pause_s` after an answer before its next request (0: at once)."""
    latencies: list[float] = []
    options = [("grpc.max_receive_message_length", 64 << 20)]
    # One channel per 8 callers, as a pool of client connections would.
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(max(1, concurrency // 8))]
    calls = [c.unary_unary(INFER) for c in channels]  # bytes in, bytes out: the client does no protobuf work
    stop_at = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        call = calls[i % len(calls)]
        while True:
            t = time.perf_counter()
            if t >= stop_at:
                return
            await call(payload, timeout=30)
            latencies.append(time.perf_counter() - t)
            if pause_s:
                await asyncio.sleep(pause_s)

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    for c in channels:
        await c.close()
    return latencies


def request_bytes(model: str, name: str, datatype: str, sample: np.ndarray) -> bytes:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=name, datatype=datatype, shape=sample.shape)
    req.raw_input_contents.append(sample.tobytes())
    return req.SerializeToString()


def check_answer(address: str, payload: bytes, expected: np.ndarray) -> None:
    with grpc.insecure_channel(address) as channel:
        answer = pb.ModelInferResponse.FromString(channel.unary_unary(INFER)(payload, timeout=30))
    out = np.frombuffer(answer.raw_output_contents[0], dtype=expected.dtype).reshape(expected.shape)
    np.testing.assert_allclose(out, expected, atol=1e-4)


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
