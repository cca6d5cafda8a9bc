"""Section shapes of bench/gpu.py: what a change of input shape between runs costs."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.gpu_run import Run, timed
from service.config import CudaExecution
from service.runtime import (
    with_options,
)


def shapes(run: Run, seconds: float) -> dict[str, Any]:
    """What a change of input shape between runs costs, as dynamic batching makes them: runs/s with the batch
    size cycling 1..8 after every size has run (so first-run costs are excluded), against batch 4 every run,
    per provider option; the ops that take the time (ONNX Runtime's profile); and a session per batch size."""
    found: dict[str, Any] = {}
    rng = np.random.default_rng(5)
    for name in ("digits_cnn", "sentiment_rnn"):
        config, path, _ = run.entry(name)
        spec, out = config.inputs[0], config.outputs[0].name
        if name == "digits_cnn":
            inputs = [rng.random((b, *spec.dims), dtype=np.float32) for b in range(1, 9)]
        else:  # batch 4, sequence lengths 8..64 as padding to the longest text makes them
            inputs = [rng.integers(5, 1000, (4, n)).astype(np.int64) for n in range(8, 65, 8)]
        fixed = inputs[3]
        base = CudaExecution().provider_options()
        variants = {
            "heuristic": {},
            "exhaustive": {"cudnn_conv_algo_search": "EXHAUSTIVE"},
            "default_algo": {"cudnn_conv_algo_search": "DEFAULT"},
            "prefer_nhwc": {"prefer_nhwc": "1"},
            "next_power_of_two": {"arena_extend_strategy": "kNextPowerOfTwo"},
        }
        for label, change in variants.items():
            options = {**base, **change}
            try:
                session = ort.InferenceSession(str(path), providers=with_options(run.accel, options))
            except Exception as err:  # noqa: BLE001 - an option this build lacks
                found[f"{name}/{label}"] = f"{type(err).__name__}: {err}"
                continue
            for x in inputs * 2:
                session.run([out], {spec.name: x})
            changing = timed(cycling(session, out, spec.name, inputs), seconds)
            same = timed(cycling(session, out, spec.name, [fixed]), seconds)
            found[f"{name}/{label}"] = {
                "ms_changing_shape": round(changing * 1000, 3),
                "ms_same_shape": round(same * 1000, 3),
            }
            run.say(f"{name} {label}: {found[f'{name}/{label}']}")
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "shapes")
        session = ort.InferenceSession(str(path), opts, providers=with_options(run.accel, base))
        for x in inputs * 3:
            session.run([out], {spec.name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
        per_op: dict[str, float] = {}
        for event in events:
            if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                op = event.get("args", {}).get("op_name", "?")
                per_op[op] = per_op.get(op, 0.0) + event.get("dur", 0) / 1000
        top = dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:8])
        found[f"{name}/ms_per_op"] = {k: round(v, 2) for k, v in top.items()}
        run.say(f"{name} ms per op type over 24 runs, shape changing every run: {found[f'{name}/ms_per_op']}")
        if name == "digits_cnn":  # a session per batch size: each sees one shape only
            per_size = {b: ort.InferenceSession(str(path), providers=with_options(run.accel, base)) for b in (1, 8)}
            for b, sess in per_size.items():
                sess.run([out], {spec.name: inputs[b - 1]})
            pair = [per_size[1], per_size[8]]
            one_session = timed(cycling(per_size[1], out, spec.name, [inputs[0], inputs[7]]), seconds)
            per_size_session = timed(alternating(pair, out, spec.name, [inputs[0], inputs[7]]), seconds)
            found[f"{name}/1_and_8_alternating_ms"] = {
                "a_session_per_size": round(per_size_session * 1000, 3),
                "one_session": round(one_session * 1000, 3),
            }
            run.say(f"{name}: batch 1 and 8 alternating, ms per run: {found[f'{name}/1_and_8_alternating_ms']}")
    return found


def cycling(session: ort.InferenceSession, out: str, name: str, inputs: list[np.ndarray]) -> Callable[[], object]:
    """A call that runs `session` on the next of `inputs`, round and round."""
    turn = iter(range(10**12))
    return lambda: session.run([out], {name: inputs[next(turn) % len(inputs)]})


def alternating(
    sessions: list[ort.InferenceSession], out: str, name: str, inputs: list[np.ndarray]
) -> Callable[[], object]:
    """A call that runs the next session on its own input, round and round."""
    turn = iter(range(10**12))

    def call() -> object:
        i = next(turn) % len(sessions)
        return sessions[i].run([out], {name: inputs[i]})

    return call
