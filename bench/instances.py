"""`instances: N`: one ONNX Runtime session run from N threads, or N sessions? Measured side by side.

    python bench/instances.py [--model-repository models --model digits_cnn --batch 16 --seconds 3]

Each variant runs N threads in a closed loop for the same time on the same batch; intra-op threads are
split so the variants use the same number of cores. Prints items/s and the ratio to one thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cnn import build_cnn  # noqa: E402
from service.config import DATATYPES, load_model_config  # noqa: E402


def session(path: Path, intra: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def drive(sessions: list[ort.InferenceSession], threads: int, feed: dict, seconds: float) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        s = sessions[i % len(sessions)]
        while time.perf_counter() < stop:
            s.run(None, feed)
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    batch = next(iter(feed.values())).shape[0]
    return sum(counts) * batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    folder = args.model_repository / args.model
    if not folder.is_dir():
        folder = Path(tempfile.mkdtemp()) / "cnn"
        build_cnn(folder)
    config = load_model_config(folder)
    spec = config.inputs[0]
    x = np.random.default_rng(0).random((args.batch, *spec.dims)).astype(DATATYPES[spec.datatype])
    feed = {spec.name: x}
    path = folder / "1" / "model.onnx"
    n = args.instances
    variants = {
        "1 session, 1 thread, intra-op auto": ([session(path, 0)], 1),
        f"1 session, {n} threads, intra-op 1": ([session(path, 1)], n),
        f"{n} sessions, 1 thread each, intra-op 1": ([session(path, 1) for _ in range(n)], n),
        f"1 session, {n} threads, intra-op auto": ([session(path, 0)], n),
    }
    results = {}
    for name, (sessions, threads) in variants.items():
        drive(sessions, threads, feed, 0.3)
        results[name] = drive(sessions, threads, feed, args.seconds)
    base = next(iter(results.values()))
    print(f"model {args.model}, batch {args.batch}, {args.seconds:.0f} s each")
    for name, value in results.items():
        print(f"{name:<42}{value:>10,.0f} items/s {value / base:>6.2f}x")


if __name__ == "__main__":
    main()
