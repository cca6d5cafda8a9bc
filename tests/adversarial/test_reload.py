"""Reloading a model over and over (V2 RepositoryModelLoad) must not grow the server: each reload lets go of
the replaced version (its sessions, its generation scheduler's lanes and KV caches) and hands the memory back."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
import tritonclient.grpc as triton

from service.client import TaskClient
from tests.adversarial.conftest import MODELS, serve
from tests.conftest import RunningServer, start_server
from tests.ops.servers import Server
from tests.waiting import eventually

MODEL = "textgen_transformer"
WARMUP, RELOADS, GENERATE_EVERY = 10, 60, 5
"""About 0.1 s a reload on 2 cores: the whole loop takes a few seconds."""
RSS_GROWTH = 0.10


def generate(client: TaskClient, seed: int) -> str:
    return client.generate("The list type", max_new_tokens=16, seed=seed, model=MODEL).text()


def settled_rss(server: Server) -> float:
    """RSS once the replaced version's scheduler has stopped in the background (it drops its memory then)."""
    time.sleep(0.5)
    return server.rss_mb()


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The suite's server on models/, with model control on (RepositoryModelLoad is refused by default)."""
    server = serve(tmp_path_factory.mktemp("reload"), "--model-control-mode", "explicit")
    yield server
    server.kill()


def test_reloads_do_not_grow_the_server(committed: Server) -> None:
    v2 = triton.InferenceServerClient(committed.address)
    with TaskClient(committed.address, timeout=60) as client:
        start = time.monotonic()
        for i in range(1, RELOADS + 1):
            v2.load_model(MODEL)
            if i % GENERATE_EVERY == 0:
                assert generate(client, i)
            if i == WARMUP:
                warm = settled_rss(committed)
        seconds = time.monotonic() - start
        after = settled_rss(committed)
        assert generate(client, 0)
    assert after <= warm * (1 + RSS_GROWTH), (
        f"RSS grew from {warm:.0f} MiB after {WARMUP} reloads to {after:.0f} MiB after {RELOADS} "
        f"({seconds:.1f} s of reloading)\n{committed.log()}"
    )


@pytest.fixture(scope="module")
def in_process() -> Iterator[RunningServer]:
    running = start_server(MODELS, model_control_mode="explicit")
    yield running
    running.stop()


def test_a_reload_frees_the_replaced_version_without_the_cycle_collector(in_process: RunningServer) -> None:
    """With the cycle collector off, the old version dies by reference counting alone: nothing holds it, not
    even in a reference cycle (which would keep its ONNX Runtime sessions until a rare full collection)."""
    app = in_process.app
    with TaskClient(in_process.address, timeout=60) as client:
        assert generate(client, 1)  # the scheduler's lanes have run and filled their KV caches
        old = app.registry.get(MODEL)
        scheduler = app.tasks.scheduler(MODEL)
        assert old.step_model is not None and scheduler is not None
        lanes = [t for t in threading.enumerate() if t.name.startswith(f"generation:{MODEL}:")]
        refs = {
            "pipeline": weakref.ref(old),
            "session": weakref.ref(old.session),
            "step session": weakref.ref(old.step_model.session),
            "scheduler": weakref.ref(scheduler),
        }
        del old, scheduler
        gc.collect()
        gc.disable()
        try:
            in_process.call(app.registry.load(MODEL))
            assert generate(client, 2)
            freed = eventually(lambda: all(ref() is None for ref in refs.values()), 10.0)
            alive = [name for name, ref in refs.items() if ref() is not None]
        finally:
            gc.enable()
    assert freed, f"still referenced after the reload: {alive}"
    assert lanes and not any(t.is_alive() for t in lanes), "the old scheduler's lane threads did not exit"
