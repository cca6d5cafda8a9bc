"""The token tests' tokens, scopes and tokens file, and one call per RPC with the scope it needs and its status code."""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from tritonclient.grpc import service_pb2 as v2
from tritonclient.grpc import service_pb2_grpc as v2_grpc

from service.grpc._generated.deepserve.v1 import image_classifier_pb2 as ic
from service.grpc._generated.deepserve.v1 import image_classifier_pb2_grpc as ic_grpc
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2_grpc as sa_grpc
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc

Code = grpc.StatusCode
TOKENS = {name: f"{name}-{secrets.token_urlsafe(24)}" for name in ("reader", "ops", "both", "burst")}
SCOPES = {"reader": ["infer"], "ops": ["admin"], "both": ["infer", "admin"], "burst": ["infer"]}
BURST_LIMIT = 2
CREDENTIALS: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (),
    "unknown": (("authorization", f"Bearer {secrets.token_urlsafe(24)}"),),
    "malformed": (("authorization", f"Basic {TOKENS['reader']}"),),
    "digest": (("authorization", f"Bearer {hashlib.sha256(TOKENS['reader'].encode()).hexdigest()}"),),
    "reader": (("authorization", f"Bearer {TOKENS['reader']}"),),
    "ops": (("authorization", f"Bearer {TOKENS['ops']}"),),
    "both": (("authorization", f"Bearer {TOKENS['both']}"),),
}
"""digest: the digest from the file presented as if it were the token (it is not)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_file(path: Path, names: tuple[str, ...] = tuple(TOKENS), extra: dict[str, str] | None = None) -> Path:
    entries = [{"name": n, "sha256": digest(TOKENS[n]), "scopes": SCOPES[n]} for n in names]
    for entry in entries:
        if entry["name"] == "burst":
            entry["max_concurrent_requests"] = BURST_LIMIT
    entries += [{"name": n, "sha256": digest(t), "scopes": ["infer"]} for n, t in (extra or {}).items()]
    path.write_text(yaml.safe_dump({"tokens": entries}))
    return path


Metadata = tuple[tuple[str, str], ...]


def png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (32, 32), 255).save(out, format="PNG")
    return out.getvalue()


def infer_request(model: str = "add_sub") -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones((1, 4), dtype=np.float32).tobytes())
    return request


SPARE = "fp16_double"
"""The model the matrix loads and unloads (nothing else uses it)."""


def v2_call(method: str, request: object) -> Callable[[grpc.Channel, Metadata], object]:
    return lambda ch, md: getattr(v2_grpc.GRPCInferenceServiceStub(ch), method)(request, metadata=md, timeout=30)


RPCS: dict[str, tuple[str | None, Callable[[grpc.Channel, Metadata], object]]] = {
    "ModelInfer": ("infer", v2_call("ModelInfer", infer_request())),
    "ModelReady": ("infer", v2_call("ModelReady", v2.ModelReadyRequest(name="add_sub"))),
    "ServerMetadata": ("infer", v2_call("ServerMetadata", v2.ServerMetadataRequest())),
    "ModelMetadata": ("infer", v2_call("ModelMetadata", v2.ModelMetadataRequest(name="add_sub"))),
    "ModelConfig": ("infer", v2_call("ModelConfig", v2.ModelConfigRequest(name="add_sub"))),
    "ModelStatistics": ("infer", v2_call("ModelStatistics", v2.ModelStatisticsRequest(name="add_sub"))),
    "RepositoryIndex": ("infer", v2_call("RepositoryIndex", v2.RepositoryIndexRequest())),
    "SystemSharedMemoryStatus": ("infer", v2_call("SystemSharedMemoryStatus", v2.SystemSharedMemoryStatusRequest())),
    "RepositoryModelLoad": ("admin", v2_call("RepositoryModelLoad", v2.RepositoryModelLoadRequest(model_name=SPARE))),
    "RepositoryModelUnload": (
        "admin",
        v2_call("RepositoryModelUnload", v2.RepositoryModelUnloadRequest(model_name=SPARE)),
    ),
    "Classify": (
        "infer",
        lambda ch, md: ic_grpc.ImageClassifierStub(ch).Classify(
            ic.ClassifyRequest(images=[png()]), metadata=md, timeout=30
        ),
    ),
    "Analyze": (
        "infer",
        lambda ch, md: sa_grpc.SentimentAnalyzerStub(ch).Analyze(
            sa.AnalyzeRequest(texts=["a lovely day"]), metadata=md, timeout=30
        ),
    ),
    "Generate": (
        "infer",
        lambda ch, md: list(
            tg_grpc.TextGeneratorStub(ch).Generate(
                tg.GenerateRequest(prompt="the", max_new_tokens=3, model_name="tiny_lm"), metadata=md, timeout=30
            )
        ),
    ),
    "ServerLive": (None, v2_call("ServerLive", v2.ServerLiveRequest())),
    "ServerReady": (None, v2_call("ServerReady", v2.ServerReadyRequest())),
    "Health.Check": (
        None,
        lambda ch, md: health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), metadata=md, timeout=30
        ),
    ),
    "Reflection": (
        None,
        lambda ch, md: list(
            reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=md, timeout=30
            )
        ),
    ),
}
"""RPC → (the scope it needs, a call). Covers every group: V2 inference, V2 metadata/config/statistics/index,
model load/unload, each task API, V2 liveness/readiness, health and reflection."""
WHEN_ALLOWED = {"SystemSharedMemoryStatus": Code.UNIMPLEMENTED}
"""What an authorized call gets where it is not OK."""


def status(call: Callable[[grpc.Channel, Metadata], object], ch: grpc.Channel, md: Metadata) -> tuple[Code, str]:
    try:
        call(ch, md)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return Code.OK, ""
