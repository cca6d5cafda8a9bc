"""The server's event loop: uvloop by default (docs/performance.md), asyncio's own on request or without uvloop."""

from __future__ import annotations

import asyncio
import builtins
import logging

import pytest
import uvloop
from pydantic import ValidationError

from service import app
from service.config import ServerSettings


def test_uvloop_is_the_default_and_asyncio_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSERVE_EVENT_LOOP", raising=False)
    assert ServerSettings().event_loop == "uvloop"
    monkeypatch.setenv("DEEPSERVE_EVENT_LOOP", "asyncio")
    assert ServerSettings().event_loop == "asyncio"
    monkeypatch.setenv("DEEPSERVE_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        ServerSettings()


@pytest.mark.parametrize(("choice", "loop_module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_the_runner_runs_on_the_chosen_loop(choice: str, loop_module: str) -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert app._loop_runner(choice)(which()) == loop_module
    assert (app._loop_runner(choice) is uvloop.run) == (choice == "uvloop")


def test_without_uvloop_the_server_says_so_and_runs_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: object, **kwargs: object) -> object:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    with caplog.at_level(logging.WARNING):
        assert app._loop_runner("uvloop") is asyncio.run
    assert any("uvloop is not installed" in r.getMessage() for r in caplog.records)
