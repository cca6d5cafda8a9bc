"""The task tests on the HTTP port run against the tiny task models with that port open."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer


@pytest.fixture(scope="module")
def task_server(http_task_server: RunningServer) -> RunningServer:
    """Overrides the tasks' gRPC-only server, so that `client` talks to the one the HTTP requests go to."""
    return http_task_server
