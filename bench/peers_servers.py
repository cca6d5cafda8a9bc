"""The servers under test of bench/peers_table.py: their processes, readiness, answers over HTTP, and the
settings MLServer runs with."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench import perf_analyzer
from bench.load import free_port
from bench.peers.common import config_response
from service.config import ModelConfig
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.http.codec import model_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Served:
    """One server process under test, and what was measured against it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path | None = None
    perf: dict[int, perf_analyzer.PerfPoint | str] = field(default_factory=dict)
    loop: dict[int, list[float]] = field(default_factory=dict)
    cpu_us: dict[int, float] = field(default_factory=dict)
    """Per concurrency: the server process's CPU time per request during perf_analyzer's run (all its threads)."""
    peer: bool = True
    protocol: str = "grpc"
    tensor_format: str = "binary"
    versus: Served | None = None
    """HTTP rows: the gRPC row their overhead is reported against."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def target(self) -> perf_analyzer.Target:
        return perf_analyzer.Target(self.address, self.protocol, self.tensor_format)

    def http_row(self, name: str, port: int, tensor_format: str, versus: Served | None = None) -> Served:
        """A row for the HTTP port of the same process."""
        return Served(
            name,
            self.proc,
            port,
            self.log,
            peer=self.peer,
            protocol="http",
            tensor_format=tensor_format,
            versus=versus or self,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


def start(name: str, cmd: list[str], port: int, logs: Path, env: dict[str, str] | None = None) -> Served:
    log = logs / f"{name.split()[0]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Served(name, proc, port, log)


def wait_ready(server: Served, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    if server.protocol == "http":
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited {server.proc.returncode}\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{server.address}/v2/models/{model}/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s\n{server.log_tail()}")
    with grpc.insecure_channel(server.address) as channel:
        ready = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited {server.proc.returncode}\n{server.log_tail()}")
            try:
                if ready(pb.ModelReadyRequest(name=model), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s\n{server.log_tail()}")


def http_infer(address: str, model: str, spec_name: str, datatype: str, sample: np.ndarray, binary: bool) -> bytes:
    """One V2 REST request body (binary data extension or JSON tensors), its headers, and the call; the answer."""
    tensor: dict[str, object] = {"name": spec_name, "datatype": datatype, "shape": list(sample.shape)}
    headers = {"Content-Type": "application/json"}
    if binary:
        tensor["parameters"] = {"binary_data_size": sample.nbytes}
        head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": False}}).encode()
        body = head + sample.tobytes()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    else:
        tensor["data"] = sample.ravel().tolist()
        body = json.dumps({"inputs": [tensor]}).encode()
    request = urllib.request.Request(f"http://{address}/v2/models/{model}/infer", body, headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return bytes(answer.read())


def check_http_answer(
    server: Served, model: str, spec_name: str, datatype: str, sample: np.ndarray, expected: np.ndarray
) -> None:
    binary = server.tensor_format == "binary"
    answer = json.loads(http_infer(server.address, model, spec_name, datatype, sample, binary))
    out = np.asarray(answer["outputs"][0]["data"], dtype=expected.dtype).reshape(expected.shape)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def warm_http(server: Served, model: str, spec_name: str, datatype: str, sample: np.ndarray, seconds: float) -> None:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        http_infer(server.address, model, spec_name, datatype, sample, server.tensor_format == "binary")


def mlserver_folder(
    tmp: Path, model_dir: Path, config: ModelConfig, options: dict[str, object]
) -> tuple[Path, int, int]:
    """MLServer's settings.json and model-settings.json (parallel_workers 0, no adaptive batching, access log
    off), and the model configuration answers its launcher adds (gRPC, HTTP); its folder, gRPC and HTTP ports."""
    folder, port, http_port = tmp / "mlserver", free_port(), free_port()
    (folder / model_dir.name).mkdir(parents=True)
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "grpc_port": port,
        "http_port": http_port,
        "metrics_port": free_port(),
        "model_repository_root": str(folder),
    }

    def tensors(specs: tuple) -> list[dict[str, object]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]} for t in specs]

    model_settings = {
        "name": model_dir.name,
        "implementation": "bench.peers.mlserver_runtime.OnnxModel",
        "parameters": {"uri": str(model_dir / "1" / "model.onnx"), "version": "1", "extra": {"ort": options}},
        "inputs": tensors(config.inputs),
        "outputs": tensors(config.outputs),
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / model_dir.name / "model-settings.json").write_text(json.dumps(model_settings))
    (folder / "model_config.bin").write_bytes(config_response(model_dir.name, config).SerializeToString())
    (folder / "model_config.json").write_text(json.dumps(model_config(model_dir.name, ["1"], config)))
    return folder, port, http_port


def mlserver_rest_stack(python: Path) -> str:
    """What MLServer's REST port runs on in its virtualenv: FastAPI on uvicorn, with uvicorn's `auto` choice of HTTP
    implementation (httptools where installed, else h11)."""
    probe = "import importlib.util as u; print('httptools' if u.find_spec('httptools') else 'h11')"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return f"FastAPI on uvicorn {done.stdout.strip() or '?'}"
