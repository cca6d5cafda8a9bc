"""`deepserve serve` as a real process: a repository without models is a start-up error (one line, exit code 1,
no traceback); with a broken model the server serves the others but reports NOT_SERVING unless it runs with
`--strict-readiness false`."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2

from tests.ops.servers import ANY_PORTS, ROOT, Server, add_sub_request, check_add_sub, metric, serve_command, v2_stub
from tests.tiny_models import make_broken, make_repository

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("layout", ["missing", "empty", "file"])
def test_a_repository_without_models_is_a_start_up_error(tmp_path: Path, layout: str) -> None:
    repo = tmp_path / "models"
    problem = {"missing": "does not exist", "empty": "holds no models", "file": "is not a folder"}[layout]
    if layout == "empty":
        repo.mkdir()
    elif layout == "file":
        repo.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSERVE_")}
    done = subprocess.run(
        serve_command(repo, *ANY_PORTS),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], f"one line, no traceback:\n{done.stderr}"
    assert done.stderr.startswith(f"deepserve: --model-repository {repo.resolve()} {problem}"), done.stderr


def started(server: Server, timeout: float = 60.0) -> int:
    """Health `""` once start-up has finished (no model LOADING, and the "listening" and load lines logged)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc is not None and server.proc.poll() is None, f"server exited:\n{server.log()}"
        if '"event": "started, not ready' in server.log() or '"event": "ready"' in server.log():
            with grpc.insecure_channel(server.address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                return int(reply.status)
        time.sleep(0.1)
    raise TimeoutError(f"start-up did not finish in {timeout}s:\n{server.log()}")


@pytest.mark.parametrize("flag", [[], ["--strict-readiness", "true"], ["--strict-readiness", "false"]])
def test_a_broken_model_and_strict_readiness(tmp_path: Path, flag: list[str]) -> None:
    repo = make_broken(make_repository(tmp_path / "models", names=("add_sub",)))
    strict = flag != ["--strict-readiness", "false"]
    server = Server(repo, tmp_path / "serve.log", args=flag).start()
    try:
        status = started(server)
        assert status == (NOT_SERVING if strict else SERVING)
        with grpc.insecure_channel(server.address) as channel:
            stub = v2_stub(channel)
            assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready is not strict
            assert not stub.ModelReady(service_pb2.ModelReadyRequest(name="broken"), timeout=5).ready
            check_add_sub(stub.ModelInfer(add_sub_request(2.0), timeout=10), 2.0)  # the others serve either way
        samples = server.scrape()
        assert metric(samples, "deepserve_model_ready", model="broken", version="1") == 0
        assert metric(samples, "deepserve_model_load_failures_total", model="broken") == 1
        assert metric(samples, "deepserve_model_ready", model="add_sub", version="1") == 1
        if strict:
            assert "started, not ready: a model failed to load" in server.log()
    finally:
        server.kill()
