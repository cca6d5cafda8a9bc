"""`deepserve serve` as a real process on free ports: health, inference, and a graceful SIGTERM that lets
in-flight requests finish before it exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port
from tests.tiny_models import make_repository
from tests.triton_inputs import add_sub_inputs

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REQUESTS = 8  # the slow model's max_queue_size
BATCH = 4  # each request is a full batch, so the slow model runs them one after another


def serve_command() -> list[str]:
    script = Path(sys.executable).parent / "deepserve"
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "service", "serve"]


class Served:
    def __init__(self, repo: Path, log: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = log
        args = ["--model-repository", str(repo), "--port", str(self.port), "--metrics-port", str(self.metrics_port)]
        args += ["--http-port", "0", "--host", "127.0.0.1", "--grace-seconds", "20", "--log-level", "info"]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*serve_command(), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.channel = grpc.insecure_channel(self.address)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log.read_text()}"
            try:
                if self.health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not SERVING after {timeout}s:\n{self.log.read_text()}")

    def metrics(self, *names: str) -> dict[str, list[tuple[dict[str, str], float]]]:
        """One scrape (of only the samples `names`, if given): sample name → (labels, value) of each sample."""
        query = "&".join(f"name[]={name}" for name in names)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics?{query}", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append((s.labels, s.value))
        return samples

    def metric(self, sample: str, scraped: dict | None = None, **labels: str) -> float:
        scraped = self.metrics() if scraped is None else scraped
        return sum(v for got, v in scraped.get(sample, []) if labels.items() <= got.items())

    def close(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(make_repository(tmp_path / "models", names=("slow", "add_sub")), tmp_path / "serve.log")
    try:
        server.wait_serving()
        yield server
    finally:
        server.close()


def slow_input(value: float) -> list[tc.InferInput]:
    x = tc.InferInput("x", [BATCH, 64, 512], "FP32")
    x.set_data_from_numpy(np.full((BATCH, 64, 512), value, dtype=np.float32))
    return [x]


def burst_then_sigterm(served: Served, client: tc.InferenceServerClient) -> tuple[list[tc.InferResult], bool]:
    """Send REQUESTS requests at once; SIGTERM as soon as all have reached the server and some still run."""
    names = ("deepserve_inflight_requests", "deepserve_requests_total")
    done_before = served.metric("deepserve_requests_total", served.metrics(*names), model="slow")
    signalled = False
    with ThreadPoolExecutor(REQUESTS) as pool:
        futures: list[Future] = [
            pool.submit(client.infer, "slow", slow_input(1.0), request_id=str(i)) for i in range(REQUESTS)
        ]
        deadline = time.monotonic() + 10
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            scraped = served.metrics(*names)
            inflight = served.metric("deepserve_inflight_requests", scraped, model="slow")
            done = served.metric("deepserve_requests_total", scraped, model="slow") - done_before
            if inflight >= 1 and inflight + done == REQUESTS:
                served.process.send_signal(signal.SIGTERM)
                signalled = True
                break
        return [f.result(timeout=30) for f in futures], signalled


def test_sigterm_drains_in_flight_requests_then_exits_zero(served: Served) -> None:
    client = tc.InferenceServerClient(served.address)
    assert client.is_server_ready() and client.is_model_ready("slow")
    expected = client.infer("slow", slow_input(1.0)).as_numpy("y")

    statuses: list[int] = []
    watching = threading.Event()

    def watch_health() -> None:
        stream = served.health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        try:
            for update in stream:
                statuses.append(update.status)
                watching.set()
                if update.status == NOT_SERVING:
                    stream.cancel()  # an open stream would hold the drain for its whole grace period
                    return
        except grpc.RpcError:
            pass  # the assertions on `statuses` tell what was missed

    watcher = threading.Thread(target=watch_health, daemon=True)
    watcher.start()
    assert watching.wait(5)

    for _attempt in range(3):  # a burst that finished before it was seen in flight is retried
        results, signalled = burst_then_sigterm(served, client)
        for i, result in enumerate(results):
            assert result.get_response().id == str(i)
            np.testing.assert_array_equal(result.as_numpy("y"), expected)
        if signalled:
            break
    else:
        pytest.fail("the requests were never seen in flight together")

    assert served.process.wait(30) == 0, served.log.read_text()
    watcher.join(10)
    assert statuses[0] == SERVING and statuses[-1] == NOT_SERVING
    log = served.log.read_text()
    assert '"event": "draining"' in log and '"event": "stopped"' in log


def test_serves_v2_over_the_real_command(served: Served) -> None:
    client = tc.InferenceServerClient(served.address)
    assert (
        served.health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == SERVING
    )
    assert [m.name for m in client.get_model_repository_index().models] == ["add_sub", "slow"]
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    inputs = add_sub_inputs(tc, a)
    np.testing.assert_array_equal(client.infer("add_sub", inputs).as_numpy("OUTPUT0"), a * 2)
    assert served.metric("deepserve_request_duration_seconds_count", model="add_sub") == 1
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(30) == 0


def test_bad_settings_exit_nonzero_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [*serve_command(), "--model-repository", str(tmp_path), "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "deepserve: invalid settings: port:" in result.stderr


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_refuses_to_start(tmp_path: Path) -> None:
    args = [
        "--model-repository",
        str(tmp_path),
        "--port",
        "0",
        "--metrics-port",
        str(free_port()),
        "--http-port",
        "0",
        "--device",
        "cuda",
    ]
    result = subprocess.run(
        [*serve_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--device cuda was requested but onnxruntime offers no CUDAExecutionProvider" in result.stderr
