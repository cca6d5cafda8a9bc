"""Shared fixtures: tiny model repositories and a real server running in-process on a free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.app import App
from service.config import ServerSettings
from service.errors import BindError
from tests.ports import free_port
from tests.tiny_models import make_repository


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers by folder: tests/unit → unit, tests/integration → integration, and so on."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "tests" in parts:
            folder = parts[parts.index("tests") + 1]
            if folder in ("unit", "integration", "e2e", "training", "ops", "adversarial", "security"):
                item.add_marker(getattr(pytest.mark, folder))


class RunningServer:
    """An `App` on its own event loop in a background thread (so sync clients can call it)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self.app: App = self.call(self._make(settings))
            self.call(self.app.start())
        except BaseException:
            self._end_loop()
            raise
        self.address = f"127.0.0.1:{self.app.port}"

    @staticmethod
    async def _make(settings: ServerSettings) -> App:
        return App(settings)

    def call(self, coro, timeout: float = 60):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        self.call(self.app.stop(grace))
        self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


FREE_PORT = "free"
"""`start_server(..., http_port=FREE_PORT)`: the HTTP port open, on a port the kernel reports free (the server's
`--http-port 0` turns HTTP off). Another process can take that port before the server binds it: then the server
starts again on another (`server.app.http_port` is the one it has)."""


def start_server(repo: Path, **overrides: object) -> RunningServer:
    overrides.setdefault("drain_notice_s", 0.0)
    overrides.setdefault("http_port", 0)  # off unless a test asks for it (the default, 8000, may be taken)
    tries = 5 if overrides["http_port"] == FREE_PORT else 1
    for attempt in range(tries):
        if tries > 1:
            overrides["http_port"] = free_port()
        settings = ServerSettings(model_repository=repo, host="127.0.0.1", port=0, metrics_port=0, **overrides)
        try:
            return RunningServer(settings)
        except BindError as err:
            if err.setting != "http_port" or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(model_repo: Path) -> Iterator[RunningServer]:
    running = start_server(model_repo)
    yield running
    running.stop()
