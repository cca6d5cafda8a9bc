"""A plaintext channel to the module's `server` fixture (each test module starts the server it needs)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.conftest import RunningServer


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch
