"""The adversarial suite's server: `deepserve serve` on the committed models, as a subprocess, so its memory
(VmRSS) and threads can be measured apart from the test process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.servers import Server

MODELS = Path(__file__).resolve().parents[2] / "models"


def serve(tmp_path: Path, *args: str, repo: Path = MODELS) -> Server:
    """A started, SERVING server (stop it with `terminate`)."""
    server = Server(repo, tmp_path / "server.log", grace_seconds=2.0, args=list(args)).start()
    try:
        server.wait_serving()
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server on models/ per test module."""
    server = serve(tmp_path_factory.mktemp("adversarial"))
    yield server
    server.kill()
