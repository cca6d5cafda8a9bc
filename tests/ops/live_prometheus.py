"""A loopback Prometheus configured from deploy/prometheus for a test server, the traffic it should see, polling."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2

from tests.ops.servers import ROOT, add_sub_request, check_add_sub, v2_stub
from tests.ports import free_port

PROMETHEUS = shutil.which("prometheus")
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
RULES = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = self._config(target)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        cmd = [
            str(PROMETHEUS),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def _config(target: str) -> dict[str, Any]:
        """deploy/prometheus/prometheus.yml with the deepserve job pointed at the test server and 1s intervals."""
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(p) for p in RULES]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        job = jobs["deepserve"]
        job.pop("dns_sd_configs")
        job["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"] = [job]
        return config

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(self.log_path.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def send_traffic(address: str) -> None:
    """Concurrent V2 requests to add_sub and token_sum (so batches form), and requests add_sub refuses with
    INVALID_ARGUMENT (for the error panels). Counter series appear at their first increment, so one of each
    goes first and the rest after Prometheus has scraped that: rate() then sees an increase."""
    with grpc.insecure_channel(address) as channel:
        stub = v2_stub(channel)

        def one(i: int) -> None:
            check_add_sub(stub.ModelInfer(add_sub_request(float(i)), timeout=10), float(i))
            ids = np.arange(1 + i % 5, dtype=np.int64).reshape(1, -1)
            tensor = service_pb2.ModelInferRequest.InferInputTensor(name="token_ids", datatype="INT64", shape=ids.shape)
            request = service_pb2.ModelInferRequest(model_name="token_sum", inputs=[tensor])
            request.raw_input_contents.append(ids.tobytes())
            reply = stub.ModelInfer(request, timeout=10)
            assert np.frombuffer(reply.raw_output_contents[0], dtype=np.int64).item() == ids.sum()

        def refused() -> None:
            bad = add_sub_request(1.0)
            for tensor in bad.inputs:
                tensor.datatype = "INT32"  # same byte count, wrong type for the model
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(bad, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        one(0)
        refused()
        time.sleep(2.5)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(300)))
        for _ in range(4):
            refused()


def wait_until(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)
