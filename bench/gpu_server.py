"""Section server of bench/gpu.py: `deepserve serve` on the device under test, measured with perf_analyzer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench import perf_analyzer
from bench.gpu_run import MODELS, ROOT, Run, gpu_processes
from bench.load import free_port, serve_command


def serve(
    repository: Path, device: str, logs: Path, name: str, extra: list[str]
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port, log = free_port(), logs / f"server-{name}.log"
    cmd = serve_command(repository, port, free_port(), "--http-port", "0", "--device", device, *extra)
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    return proc, f"127.0.0.1:{port}", log


def wait_ready(proc: subprocess.Popen[bytes], address: str, models: list[str], log: Path, timeout: float) -> float:
    import grpc

    from service.grpc._generated.inference import grpc_service_pb2 as pb
    from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc

    start = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if all(stub.ModelReady(pb.ModelReadyRequest(name=m), timeout=1).ready for m in models):
                    return time.monotonic() - start
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout} s: {log.read_text()[-3000:]}")


def loaded_providers(log: Path) -> dict[str, Any]:
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if "model version loaded" in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            found[record.get("model", "?")] = record.get("providers")
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def variant(repository: Path, folder: Path, model: str, execution: dict[str, Any]) -> Path:
    """A repository of `model` alone, its config's `execution` section updated with `execution`."""
    shutil.copytree(repository / model, folder / model)
    path = folder / model / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("execution", {}).update(execution)
    path.write_text(yaml.safe_dump(config))
    return folder


def server(
    run: Run, binary: Path | None, window_ms: int, raw_best: float | None, chosen: list[str] | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    config, _, _ = run.entry("digits_cnn")
    spec = config.inputs[0]
    sample = np.random.default_rng(0).random((1, *spec.dims), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="deepserve-gpu-"))
    data = perf_analyzer.input_data(tmp / "input.json", {spec.name: sample})
    env = dict(os.environ)
    if binary:
        env["LD_LIBRARY_PATH"] = f"{binary.parent}:{env.get('LD_LIBRARY_PATH', '')}"
    everything = (run.repository, run.device.value, list(MODELS), [])
    digits = ["digits_cnn"]
    setups = {
        "committed": everything,
        "workers_1": (run.repository, run.device.value, list(MODELS), ["--workers", "1"]),
        "intra_op_1": (
            variant(run.repository, tmp / "intra", "digits_cnn", {"intra_op_threads": 1}),
            run.device.value,
            digits,
            [],
        ),
        "io_binding": (variant(run.repository, tmp / "bound", "digits_cnn", {"io_binding": True}), "auto", digits, []),
        "no_buckets": (
            variant(run.repository, tmp / "one", "digits_cnn", {"batch_buckets": []}),
            run.device.value,
            digits,
            [],
        ),
        "buckets_1_8": (
            variant(run.repository, tmp / "two", "digits_cnn", {"batch_buckets": [1, 8]}),
            run.device.value,
            digits,
            [],
        ),
    }
    for label, (repository, device, models, extra) in setups.items():
        if chosen and label not in chosen:
            continue
        proc, address, log = serve(repository, device, run.out, label, extra)
        try:
            ready_s = wait_ready(proc, address, models, log, 180)
            row: dict[str, Any] = {"device": device, "ready_s": round(ready_s, 1), "providers": loaded_providers(log)}
            run.say(
                f"{label} (--device {device} {' '.join(extra)}): ready in {ready_s:.1f} s, providers {row['providers']}"
            )
            if binary:
                for concurrency in (1, 8, 32):
                    got = perf_analyzer.run(binary, env, address, "digits_cnn", concurrency, data, window_ms, 20, 6)
                    row[f"c{concurrency}"] = got.__dict__ if isinstance(got, perf_analyzer.PerfPoint) else got
                    if isinstance(got, perf_analyzer.PerfPoint):
                        ratio = f", {got.throughput / raw_best:.3f} of raw best" if raw_best else ""
                        run.say(
                            f"  c={concurrency}: {got.throughput:.0f} infer/s, p50 {got.p50_us / 1000:.3f} ms, "
                            f"p99 {got.p99_us / 1000:.3f} ms{ratio}; server {got.server_us}"
                        )
                    else:
                        run.say(f"  c={concurrency}: {got}")
            row["gpu_processes"] = gpu_processes()
            run.say(f"  GPU memory by process: {row['gpu_processes']}")
            found[label] = row
        finally:
            stop(proc)
    return found
