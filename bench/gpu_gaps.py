"""Section gaps of bench/gpu.py: a batch-1 run's time when runs come back to back, and when each follows an idle gap.

perf_analyzer at concurrency 1 leaves the device idle between requests (the round trip through gRPC), and the
server's reported compute for a batch-1 run on CUDA was about twice what ONNX Runtime alone takes back to back
(docs/gpu.md, section 7). This times `ModelSession.run` on digits_cnn (the server's session, with its batch
buckets) at batch 1 after gaps of 0 to 2 ms, the gap either slept (the CPU thread may idle) or spun (the CPU stays
busy), on the calling thread or handed to a worker thread as the server's batcher does: which part of the
difference is the device's or the CPU's waking up, and which the server's.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench.gpu_run import Run, feeds
from service.runtime import ModelSession

GAPS_MS = (0.0, 0.2, 0.7, 2.0)
RUNS = 400


def gaps(run: Run) -> dict[str, Any]:
    config, path, _ = run.entry("digits_cnn")
    session = ModelSession(path, config, run.accel)
    session.warmup()
    feed = feeds(config, 1, np.random.default_rng(0))
    found: dict[str, Any] = {"providers": session.providers}
    with ThreadPoolExecutor(1) as worker:
        for where in ("caller", "worker"):
            for idle in ("sleep", "spin"):
                for gap_ms in GAPS_MS:
                    if gap_ms == 0 and idle == "spin":
                        continue
                    times = _times(session, feed, gap_ms / 1000, idle, worker if where == "worker" else None)
                    p50, p90 = np.percentile(times, [50, 90]) * 1e6
                    key = f"{where}, {idle} {gap_ms} ms"
                    found[key] = {"p50_us": round(float(p50), 1), "p90_us": round(float(p90), 1)}
                    run.say(f"{key}: run p50 {p50:.0f} us, p90 {p90:.0f} us")
    return found


def _times(
    session: ModelSession, feed: dict[str, np.ndarray], gap: float, idle: str, worker: ThreadPoolExecutor | None
) -> list[float]:
    def timed() -> float:
        start = time.perf_counter()
        session.run(feed)
        return time.perf_counter() - start

    times = []
    for _ in range(RUNS):
        if gap:
            if idle == "sleep":
                time.sleep(gap)
            else:
                until = time.perf_counter() + gap
                while time.perf_counter() < until:
                    pass
        times.append(worker.submit(timed).result() if worker is not None else timed())
    return times
