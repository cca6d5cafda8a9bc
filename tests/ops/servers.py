"""Real processes for the ops tests: `deepserve serve` subprocesses on loopback, and V2 calls over a plain
gRPC channel (tritonclient's stubs, so the tests share no code with the server they check)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


ANY_PORTS = ("--port", "0", "--metrics-port", "0", "--http-port", "0")
"""Ports the kernel picks (for a server that is expected to stop at start-up)."""


def serve_command(repo: Path, *flags: str) -> list[str]:
    """`python -m service serve` on `repo`, on the CPU, with `flags`."""
    return [sys.executable, "-m", "service", "serve", "--model-repository", str(repo), "--device", "cpu", *flags]


def deepserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGS` to its end, with no DEEPSERVE_* variables but those in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSERVE_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class Server:
    """One `python -m service serve` process; its log goes to a file so a failure can show it."""

    repo: Path
    log_path: Path
    grace_seconds: float = 5.0
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    """Extra `deepserve serve` flags."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        ports = ("--port", str(self.port), "--metrics-port", str(self.metrics_port), "--http-port", str(self.http_port))
        logs = ("--grace-seconds", str(self.grace_seconds), "--log-level", "info")
        cmd = serve_command(self.repo, "--host", "127.0.0.1", *ports, *logs, *self.args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSERVE_")}
        with self.log_path.open("ab") as log:  # a restart on the same ports appends to the same log
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_serving(self, timeout: float = 120.0) -> None:
        """Until grpc.health.v1 reports SERVING for the whole server (models loaded)."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"server exited:\n{self.log()}"
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"{self.address} not SERVING after {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float | None = None) -> int:
        """SIGTERM (graceful drain) and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout if timeout is not None else self.grace_seconds + 15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss_mb(self) -> float:
        """Resident memory of the server process, in MiB (from /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS in /proc status")

    def threads(self) -> int:
        assert self.proc is not None
        return len(list(Path(f"/proc/{self.proc.pid}/task").iterdir()))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def add_sub_request(value: float, width: int = 4) -> service_pb2.ModelInferRequest:
    """V2 ModelInfer for tests/tiny_models.add_sub: INPUT0 = INPUT1 = `value`, one row."""
    row = np.full((1, width), value, dtype=np.float32).tobytes()
    tensor = service_pb2.ModelInferRequest.InferInputTensor
    return service_pb2.ModelInferRequest(
        model_name="add_sub",
        inputs=[tensor(name=n, datatype="FP32", shape=[1, width]) for n in ("INPUT0", "INPUT1")],
        raw_input_contents=[row, row],
    )


def check_add_sub(reply: service_pb2.ModelInferResponse, value: float) -> None:
    names = [o.name for o in reply.outputs]
    total = np.frombuffer(reply.raw_output_contents[names.index("OUTPUT0")], dtype=np.float32)
    np.testing.assert_array_equal(total, np.full(total.shape, 2 * value, dtype=np.float32))


def v2_stub(channel: grpc.Channel) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)
