"""The simplest HTTP peer: one process, ONNX Runtime called inline on the event loop (no threads, no batching), KServe
V2 REST with JSON tensors and Triton's binary data extension; a Starlette app on uvicorn, or the same on aiohttp.

    python bench/peers/http_inline_server.py --port 9000 [--model-dir models/digits_cnn --http h11|httptools|aiohttp]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import DEFAULT_INTRA_OP_THREADS, ort_options
from bench.peers.ort_session import session
from service.config import DATATYPES, load_model_config
from service.http.codec import model_config, model_metadata


class Model:
    def __init__(self, model_dir: Path, intra_op_threads: int) -> None:
        self.name, self.config = model_dir.name, load_model_config(model_dir)
        self.session = session(str(model_dir / "1" / "model.onnx"), ort_options(self.config, intra_op_threads))
        self.input, self.outputs = self.config.inputs[0].name, [t.name for t in self.config.outputs]
        self.gets = {  # path -> JSON answer
            "/v2": {"name": "http_inline_peer", "version": "0", "extensions": []},
            f"/v2/models/{self.name}": model_metadata(self.name, ["1"], self.config),
            f"/v2/models/{self.name}/config": model_config(self.name, ["1"], self.config),
            f"/v2/models/{self.name}/ready": {"name": self.name, "ready": True},
        }

    def infer(self, body: bytes, header_length: str | None) -> tuple[bytes, dict[str, str]]:
        """The answer's body and headers."""
        size = int(header_length or len(body))
        head = json.loads(body[:size])
        tensor = head["inputs"][0]
        dtype = np.dtype(DATATYPES[tensor["datatype"]])
        if "binary_data_size" in tensor.get("parameters", {}):
            x = np.frombuffer(body[size:], dtype=dtype).reshape(tensor["shape"])
        else:
            x = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        results = self.session.run(self.outputs, {self.input: x})
        wanted = {o["name"]: o.get("parameters", {}) for o in head.get("outputs", [])}
        default = head.get("parameters", {}).get("binary_data_output", False)
        answer: dict[str, Any] = {"model_name": self.name, "model_version": "1", "outputs": []}
        blobs = []
        for spec, y in zip(self.config.outputs, results, strict=True):
            out = {"name": spec.name, "datatype": spec.datatype, "shape": list(y.shape)}
            if wanted.get(spec.name, {}).get("binary_data", default):
                blobs.append(y.tobytes())
                out["parameters"] = {"binary_data_size": len(blobs[-1])}
            else:
                out["data"] = y.ravel().tolist()
            answer["outputs"].append(out)
        text = json.dumps(answer).encode()
        if not blobs:
            return text, {"Content-Type": "application/json"}
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(text))}
        return b"".join([text, *blobs]), headers


def serve_starlette(model: Model, port: int, http: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def infer(request: Request) -> Response:
        body, headers = model.infer(await request.body(), request.headers.get("inference-header-content-length"))
        return Response(body, headers=headers)

    routes = [Route(path, lambda r, doc=doc: JSONResponse(doc)) for path, doc in model.gets.items()]
    app = Starlette(routes=[*routes, Route(f"/v2/models/{model.name}/infer", infer, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, lifespan="off", log_level="warning", access_log=False)


def serve_aiohttp(model: Model, port: int) -> None:
    from aiohttp import web

    async def infer(request: web.Request) -> web.Response:
        body, headers = model.infer(await request.read(), request.headers.get("inference-header-content-length"))
        return web.Response(body=body, headers=headers)

    app = web.Application()
    for path, doc in model.gets.items():
        app.router.add_get(path, lambda r, doc=doc: web.json_response(doc))  # type: ignore[misc]
    app.router.add_post(f"/v2/models/{model.name}/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path(__file__).resolve().parents[2] / "models" / "digits_cnn")
    parser.add_argument("--intra-op-threads", type=int, default=DEFAULT_INTRA_OP_THREADS)
    parser.add_argument("--http", default="h11", help="uvicorn's HTTP implementation (h11, httptools), or aiohttp")
    args = parser.parse_args()
    model = Model(args.model_dir, args.intra_op_threads)
    if args.http == "aiohttp":
        serve_aiohttp(model, args.port)
    else:
        serve_starlette(model, args.port, args.http)
