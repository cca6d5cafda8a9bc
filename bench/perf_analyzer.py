"""Triton's perf_analyzer as the load generator: one run per concurrency, KServe V2 over gRPC or HTTP, batch 1.

It runs in sync mode (one thread per concurrent request, each sending its next request when the answer
arrives), sends the same input in every request (`input_data`), measures windows of `window_ms` until the
last three agree within `stability` percent, and reports their mean: throughput and client latency
percentiles from its CSV (`-f`), and the server-side breakdown (from the ModelStatistics RPC) from its text
output where the server implements that RPC (or, over HTTP, GET /v2/models/{name}/stats).

Over HTTP (`protocol="http"`), `tensor_format` picks how tensors travel both ways: "binary" (Triton's binary data
extension, perf_analyzer's default) or "json" (JSON arrays of numbers).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import cpu_seconds

_SERVER = re.compile(
    r"Avg request latency: (?P<request>\d+) usec \(overhead (?P<overhead>\d+) usec \+ queue (?P<queue>\d+) usec"
    r" \+ compute input (?P<compute_input>\d+) usec \+ compute infer (?P<compute_infer>\d+) usec"
    r" \+ compute output (?P<compute_output>\d+) usec\)"
)


@dataclass(frozen=True)
class PerfPoint:
    concurrency: int
    throughput: float  # infer/s
    p50_us: float
    p99_us: float
    server_us: dict[str, float] | None  # request, overhead, queue, compute_input, compute_infer, compute_output
    stable: bool = True  # False: perf_analyzer's windows never agreed within the stability threshold


def median(points: list[PerfPoint]) -> PerfPoint:
    """One point of the medians of several measurements of the same concurrency (each field on its own)."""
    servers = [p.server_us for p in points]
    server_us = None
    if all(servers):
        server_us = {key: statistics.median(s[key] for s in servers if s) for key in points[0].server_us or {}}
    return PerfPoint(
        concurrency=points[0].concurrency,
        throughput=statistics.median(p.throughput for p in points),
        p50_us=statistics.median(p.p50_us for p in points),
        p99_us=statistics.median(p.p99_us for p in points),
        server_us=server_us,
        stable=all(p.stable for p in points),
    )


def parse_csv(text: str) -> list[dict[str, float]]:
    """perf_analyzer's `-f` file: one row per concurrency, every column a number (µs for latencies)."""
    rows = csv.DictReader(io.StringIO(text.strip()))
    return [{key.strip(): float(value) for key, value in row.items() if key and value} for row in rows]


def parse_server(stdout: str) -> dict[str, float] | None:
    """The last 'Avg request latency: … (overhead … + queue … + compute …)' line of its text output, in µs."""
    found = list(_SERVER.finditer(stdout))
    return {k: float(v) for k, v in found[-1].groupdict().items()} if found else None


def point(csv_text: str, stdout: str) -> PerfPoint:
    row = parse_csv(csv_text)[-1]
    return PerfPoint(
        concurrency=int(row["Concurrency"]),
        throughput=row["Inferences/Second"],
        p50_us=row["p50 latency"],
        p99_us=row["p99 latency"],
        server_us=parse_server(stdout),
    )


def input_data(path: Path, inputs: dict[str, np.ndarray]) -> Path:
    """A `--input-data` file that sends these arrays (batch dimension dropped) in every request. Better than
    perf_analyzer's random FP32 bit patterns: those include NaN and Inf, which cost some models more, and
    which MLServer 1.7.1 cannot encode in a raw answer (struct.error: required argument is not a float)."""
    data = {name: {"content": a[0].ravel().tolist(), "shape": list(a.shape[1:])} for name, a in inputs.items()}
    path.write_text(json.dumps({"data": [data]}))
    return path


PROTOCOLS = ("grpc", "http")
TENSOR_FORMATS = ("binary", "json")


@dataclass(frozen=True)
class Target:
    """What perf_analyzer drives: a server's address (host:port) and the protocol it speaks there."""

    address: str
    protocol: str = "grpc"
    tensor_format: str = "binary"  # over HTTP: binary data extension or JSON tensors

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS or self.tensor_format not in TENSOR_FORMATS:
            raise ValueError(f"protocol {self.protocol!r} / tensor format {self.tensor_format!r}")


def command(
    binary: Path,
    target: Target,
    model: str,
    concurrency: int,
    data: Path,
    window_ms: int,
    stability: int,
    max_trials: int,
    csv_file: Path,
) -> list[str]:
    cmd = [str(binary), "-m", model, "-i", target.protocol, "-u", target.address, "-b", "1", "--input-data", str(data)]
    cmd += ["--concurrency-range", f"{concurrency}:{concurrency}", "-p", str(window_ms), "-s", str(stability)]
    cmd += ["--max-trials", str(max_trials), "-f", str(csv_file)]
    if target.protocol == "http":
        cmd += [f"--input-tensor-format={target.tensor_format}", f"--output-tensor-format={target.tensor_format}"]
    return cmd


def run(
    binary: Path,
    env: dict[str, str],
    target: Target | str,
    model: str,
    concurrency: int,
    data: Path,
    window_ms: int,
    stability: int,
    max_trials: int,
) -> PerfPoint | str:
    """One measurement, or why there is none (perf_analyzer's last error line). `target`: a Target, or a gRPC
    address. When the windows never agree within `stability` percent, measures again with the check off (3
    windows) and marks the point unstable."""
    checked = Target(target) if isinstance(target, str) else target

    def measure(stability: int, max_trials: int) -> PerfPoint | str:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "perf.csv"
            cmd = command(binary, checked, model, concurrency, data, window_ms, stability, max_trials, out)
            timeout = 60 + window_ms / 1000 * (max_trials + 2)
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return f"perf_analyzer timed out after {timeout:.0f} s"
            if done.returncode or not out.exists():
                lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
                if _UNSTABLE in lines:
                    return _UNSTABLE
                return lines[-1] if lines else f"perf_analyzer exited {done.returncode}"
            return point(out.read_text(), done.stdout)

    first = measure(stability, max_trials)
    if first != _UNSTABLE:
        return first
    again = measure(100_000, 3)
    return dataclasses.replace(again, stable=False) if isinstance(again, PerfPoint) else again


def run_with_cpu(pid: int, *args: Any) -> tuple[PerfPoint | str, float]:
    """`run(*args)`, and the CPU time per request that process `pid` (the server) spent meanwhile, in µs (NaN
    when there is no measurement). perf_analyzer's warm-up window ran at about the measured rate too."""
    cpu, began = cpu_seconds(pid), time.monotonic()
    got = run(*args)
    if isinstance(got, str):
        return got, float("nan")
    return got, (cpu_seconds(pid) - cpu) / (got.throughput * (time.monotonic() - began)) * 1e6


_UNSTABLE = "Failed to obtain stable measurement."
