"""The simplest peer (issue 12): a sync grpcio server, ONNX Runtime inline in the handler, no batching.

    python bench/peers/inline_server.py --port 9001 [--model-dir models/digits_cnn --workers 8 --ort-defaults --aio]

Each ModelInfer runs on the gRPC handler thread that received it: decode, session.run, encode. Concurrent
requests run concurrently on the one session (ONNX Runtime allows that), sharing its intra-op threads. With `--aio`
it serves on grpc.aio on uvloop instead, running each request on the event loop (bench/paired.py's reference for
what that stack allows at c=1).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import Peer, serve


class InlineServer(Peer):
    def ModelInfer(self, request: Any, context: Any) -> Any:
        return self.encode(self.run(self.decode(request)))


if __name__ == "__main__":
    serve(InlineServer, default_workers=8, aio=True)
