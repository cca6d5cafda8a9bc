"""Section raw of bench/gpu.py: digits_cnn through ONNX Runtime alone (run, I/O binding, CUDA graphs, threads)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.gpu_run import Run, timed
from service.config import CudaExecution
from service.runtime import (
    CUDA,
    with_options,
)


def raw(run: Run, seconds: float) -> dict[str, Any]:
    config, path, _ = run.entry("digits_cnn")
    spec, out = config.inputs[0], config.outputs[0].name
    rng = np.random.default_rng(2)
    cuda = run.accel[0] == CUDA
    device = "cuda" if cuda else "cpu"

    def session(
        search: str = "heuristic", graphs: bool = False, threads: int = 0, spin: str = "0"
    ) -> ort.InferenceSession:
        options = CudaExecution(cudnn_conv_algo_search=search).provider_options()  # type: ignore[arg-type]
        if graphs:
            options["enable_cuda_graph"] = "1"
        listed = with_options(run.accel, options)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        return ort.InferenceSession(str(path), opts, providers=listed)

    # the server's sessions don't spin (execution.spinning: lone_runs runs lone requests on a spinning
    # session on the CPU only); intra-op threads: ONNX Runtime's default, one per core
    plain, exhaustive = session(), session("exhaustive")
    one_thread, spinning = session(threads=1), session(threads=1, spin="1")
    found: dict[str, Any] = {}
    for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
        x = rng.random((batch, *spec.dims), dtype=np.float32)
        row: dict[str, float] = {"run": timed(lambda s=plain, x=x: s.run([out], {spec.name: x}), seconds)}
        binding = plain.io_binding()

        def bound(binding: ort.IOBinding = binding, x: np.ndarray = x) -> object:
            binding.bind_cpu_input(spec.name, x)
            binding.bind_output(out, "cpu")
            plain.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()

        row["io_binding"] = timed(bound, seconds)
        if cuda:
            on_device = plain.io_binding()

            def device_out(binding: ort.IOBinding = on_device, x: np.ndarray = x) -> object:
                binding.bind_cpu_input(spec.name, x)
                binding.bind_output(out, device)
                plain.run_with_iobinding(binding)
                return binding.copy_outputs_to_cpu()

            row["io_binding_device_out"] = timed(device_out, seconds)
        if batch in (1, 64):
            row["run_exhaustive"] = timed(lambda s=exhaustive, x=x: s.run([out], {spec.name: x}), seconds)
        if cuda and batch in (1, 8, 64, 256):
            try:
                probe = plain.run([out], {spec.name: x})[0]
                row["cuda_graph"] = cuda_graph(session(graphs=True), spec.name, out, x, probe, seconds)
            except Exception as err:  # noqa: BLE001 - reported, the other modes go on
                run.say(f"batch {batch}: CUDA graph failed: {err}")
        if batch in (1, 8, 64):
            row["run_1_thread"] = timed(lambda s=one_thread, x=x: s.run([out], {spec.name: x}), seconds)
            row["run_1_thread_spinning"] = timed(lambda s=spinning, x=x: s.run([out], {spec.name: x}), seconds)
        found[str(batch)] = {mode: round(batch / t, 1) for mode, t in row.items()}
        found[str(batch)]["run_ms"] = round(row["run"] * 1000, 4)
        run.say(f"batch {batch}: items/s {found[str(batch)]}")
    found["threads"] = concurrent(plain, one_thread, spec.name, out, np.asarray(spec.dims), seconds, run)
    best = {
        mode: max((found[b].get(mode, 0.0), int(b)) for b in found if b.isdigit()) for mode in ("run", "io_binding")
    }
    found["best"] = {mode: {"items_per_s": v, "batch": b} for mode, (v, b) in best.items()}
    run.say(f"best: {found['best']}")
    return found


def concurrent(
    default: ort.InferenceSession,
    one: ort.InferenceSession,
    name: str,
    out: str,
    dims: np.ndarray,
    seconds: float,
    run: Run,
) -> dict[str, Any]:
    """Runs per second of 1..8 threads calling one session at once (as the server's workers do), at batch 1
    and with batch sizes changing every run (1..8, as dynamic batching makes them)."""
    import threading

    rng = np.random.default_rng(4)
    inputs = {b: rng.random((b, *dims), dtype=np.float32) for b in range(1, 9)}
    found: dict[str, Any] = {}
    for label, session in (("default_threads", default), ("1_intra_op_thread", one)):
        for varying in (False, True):
            for threads in (1, 2, 4, 8):
                counts = [0] * threads
                stop_at = time.perf_counter() + seconds

                def work(
                    i: int,
                    session: ort.InferenceSession = session,
                    varying: bool = varying,
                    stop_at: float = stop_at,
                    counts: list[int] = counts,
                ) -> None:
                    b = 1
                    while time.perf_counter() < stop_at:
                        b = b % 8 + 1 if varying else 1
                        session.run([out], {name: inputs[b]})
                        counts[i] += 1

                pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
                for t in pool:
                    t.start()
                for t in pool:
                    t.join()
                key = f"{label}/{'batch_1_to_8' if varying else 'batch_1'}/{threads}_threads"
                found[key] = round(sum(counts) / seconds, 1)
        run.say(
            f"runs/s on one session, {label}: "
            + ", ".join(f"{k.split('/', 1)[1]} {v}" for k, v in found.items() if k.startswith(label))
        )
    return found


def cuda_graph(
    session: ort.InferenceSession, name: str, out: str, x: np.ndarray, probe: np.ndarray, seconds: float
) -> float:
    """Seconds per batch with a captured CUDA graph: the input copied into a fixed device buffer, the graph
    replayed, the output copied back. ONNX Runtime captures during the first runs through the binding, so
    the session must never run any other way (`probe`: the output of a plain session)."""
    x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    y_gpu = ort.OrtValue.ortvalue_from_shape_and_type(probe.shape, probe.dtype, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(name, x_gpu)
    binding.bind_ortvalue_output(out, y_gpu)

    def step() -> np.ndarray:
        x_gpu.update_inplace(x)
        session.run_with_iobinding(binding)
        return y_gpu.numpy()

    for _ in range(3):
        first = step()
    if not np.allclose(first, probe, atol=1e-4):
        raise AssertionError(f"the CUDA graph's output differs from run()'s by {np.abs(first - probe).max():.2e}")
    return timed(step, seconds)
