"""The server keeps its long-lived objects out of the cycle collector's full passes (service/collector.py): after
start-up and again after the loaded models change."""

from __future__ import annotations

import gc
from pathlib import Path

from service.collector import settle
from tests.conftest import start_server
from tests.tiny_models import make_repository
from tests.waiting import eventually


def test_settle_leaves_the_collector_little_to_walk() -> None:
    kept = [[object()] for _ in range(20_000)]  # long-lived, tracked objects
    settle()
    assert len(gc.get_objects()) < 5_000  # what the collector still walks: not the 20,000 above, nor the rest
    assert gc.get_freeze_count() >= len(kept)


def walked(thing: object) -> bool:
    """Whether the cycle collector's passes still walk `thing` (frozen objects are left out of them)."""
    return any(o is thing for o in gc.get_objects())


def test_start_up_and_a_reload_freeze_the_server_s_objects(tmp_path: Path) -> None:
    running = start_server(make_repository(tmp_path, ("add_sub",)), model_control_mode="explicit")
    try:
        first = running.app.registry.get("add_sub")
        assert gc.is_tracked(first) and not walked(first)  # frozen at the end of start-up
        running.call(running.app.registry.load("add_sub"))  # a new version: new long-lived objects
        second = running.app.registry.get("add_sub")
        assert second is not first
        assert eventually(lambda: not walked(second), timeout=10)  # frozen once the reload settled
    finally:
        running.stop()
