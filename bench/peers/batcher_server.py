"""The inline peer plus a one-thread dynamic batcher (issue 12): max batch 64, 2 ms max wait.

    python bench/peers/batcher_server.py --port 9002 [--model-dir models/digits_cnn --workers 64]

Handler threads queue their input and wait on a future. One batcher thread takes the first waiting request,
then gathers more until the batch holds 64 items or 2 ms have passed since it took the first, runs the batch
and splits the outputs back. At concurrency 1 every request therefore waits the full 2 ms.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import Peer, serve

MAX_BATCH = 64
MAX_WAIT_S = 0.002
Item = tuple[np.ndarray, "Future[list[np.ndarray]]"]


class BatcherServer(Peer):
    def __init__(self, model_dir: Path, intra_op_threads: int, ort_defaults: bool = False) -> None:
        super().__init__(model_dir, intra_op_threads, ort_defaults)
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        threading.Thread(target=self.batch_loop, name="batcher", daemon=True).start()

    def batch_loop(self) -> None:
        while True:
            items = [self.queue.get()]
            size, deadline = len(items[0][0]), time.perf_counter() + MAX_WAIT_S
            while size < MAX_BATCH and (left := deadline - time.perf_counter()) > 0:
                try:
                    items.append(self.queue.get(timeout=left))
                except queue.Empty:
                    break
                size += len(items[-1][0])
            try:
                outputs = self.run(np.concatenate([x for x, _ in items]), len(items))
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error
                for _, future in items:
                    future.set_exception(error)
                continue
            start = 0
            for x, future in items:
                future.set_result([out[start : start + len(x)] for out in outputs])
                start += len(x)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        future: Future[list[np.ndarray]] = Future()
        self.queue.put((self.decode(request), future))
        return self.encode(future.result())


if __name__ == "__main__":
    serve(BatcherServer, default_workers=64)
