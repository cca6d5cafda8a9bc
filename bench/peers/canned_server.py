"""A peer that runs no model: it decodes each ModelInfer's input as the minimal peers do, then answers with one
answer computed at start-up. What the gRPC stack alone costs a request, on a sync grpcio server (as the minimal
peers) or on grpc.aio on uvloop (as deepserve): bench/transport_floor.py's two servers.

    python bench/peers/canned_server.py --port 9001 [--aio] [--model-dir models/digits_cnn --workers 8]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import Peer, serve


class CannedServer(Peer):
    def __init__(self, model_dir: Path, intra_op_threads: int, ort_defaults: bool = False) -> None:
        super().__init__(model_dir, intra_op_threads, ort_defaults)
        spec = self.session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        self.answer = self.encode(self.session.run(None, {self.input_name: np.zeros(shape, np.float32)}))

    def ModelInfer(self, request: Any, context: Any) -> Any:
        self.decode(request)
        self.statistics.add(1, 0)  # no model run: perf_analyzer's server-side figures then read 0
        return self.answer


if __name__ == "__main__":
    serve(CannedServer, default_workers=8, aio=True)
