"""The simplest HTTP peer: a Starlette app on uvicorn, one process, ONNX Runtime called inline on the event loop
(no threads, no batching), KServe V2 REST with JSON tensors and Triton's binary data extension.

    python bench/peers/http_inline_server.py --port 9000 [--model-dir models/digits_cnn --http h11]

The session gets the same options as the gRPC inline peer (bench/peers/common.py). The routes perf_analyzer -i http
calls: server and model metadata, model config (deepserve's JSON for them: not timed), ready, infer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import DEFAULT_INTRA_OP_THREADS, ort_options
from bench.peers.ort_session import session
from service.config import DATATYPES, load_model_config
from service.http.codec import model_config, model_metadata

HEADER = "inference-header-content-length"


def build(model_dir: Path, intra_op_threads: int) -> Starlette:
    name, config = model_dir.name, load_model_config(model_dir)
    ort = session(str(model_dir / "1" / "model.onnx"), ort_options(config, intra_op_threads))
    spec, outputs = config.inputs[0], [t.name for t in config.outputs]
    metadata, model_cfg = model_metadata(name, ["1"], config), model_config(name, ["1"], config)

    async def infer(request: Request) -> Response:
        body = await request.body()
        size = int(request.headers.get(HEADER, len(body)))
        head, tensor = json.loads(body[:size]), json.loads(body[:size])["inputs"][0]
        dtype = np.dtype(DATATYPES[tensor["datatype"]])
        if "binary_data_size" in tensor.get("parameters", {}):
            x = np.frombuffer(body[size:], dtype=dtype).reshape(tensor["shape"])
        else:
            x = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        results = ort.run(outputs, {spec.name: x})
        wanted = {o["name"]: o.get("parameters", {}) for o in head.get("outputs", [])}
        default = head.get("parameters", {}).get("binary_data_output", False)
        answer: dict[str, Any] = {"model_name": name, "model_version": "1", "outputs": []}
        blobs = []
        for out_name, y in zip(outputs, results, strict=True):
            out = {"name": out_name, "datatype": config.outputs[0].datatype, "shape": list(y.shape)}
            if wanted.get(out_name, {}).get("binary_data", default):
                blobs.append(y.tobytes())
                out["parameters"] = {"binary_data_size": len(blobs[-1])}
            else:
                out["data"] = y.ravel().tolist()
            answer["outputs"].append(out)
        text = json.dumps(answer).encode()
        if not blobs:
            return Response(text, media_type="application/json")
        headers = {"Inference-Header-Content-Length": str(len(text))}
        return Response(b"".join([text, *blobs]), headers=headers, media_type="application/octet-stream")

    return Starlette(routes=[
        Route("/v2", lambda r: JSONResponse({"name": "http_inline_peer", "version": "0", "extensions": []})),
        Route("/v2/models/{name}", lambda r: JSONResponse(metadata)),
        Route("/v2/models/{name}/config", lambda r: JSONResponse(model_cfg)),
        Route("/v2/models/{name}/ready", lambda r: JSONResponse({"name": name, "ready": True})),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    ])  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path(__file__).resolve().parents[2] / "models" / "digits_cnn")
    parser.add_argument("--intra-op-threads", type=int, default=DEFAULT_INTRA_OP_THREADS)
    parser.add_argument("--http", default="auto", help="uvicorn's HTTP implementation: auto, h11 or httptools")
    args = parser.parse_args()
    app = build(args.model_dir, args.intra_op_threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, http=args.http, lifespan="off", log_level="warning",
                access_log=False)  # fmt: skip
