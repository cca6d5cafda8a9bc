"""Property: whatever the arrivals, sizes, cancellations and deadlines, every request ends exactly once, and
only a request that breaks the model fails with it."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.batching.batcher import DynamicBatcher
from service.batching.policy import BatchPolicy
from service.errors import DeadlineExceededError, InferenceError, QueueFullError

request = st.fixed_dictionaries(
    {
        "arrival_ms": st.integers(0, 20),
        "rows": st.integers(1, 3),
        "cancel_ms": st.one_of(st.none(), st.integers(0, 15)),
        "deadline_ms": st.one_of(st.none(), st.integers(1, 15)),
        "poison": st.booleans(),
    }
)


async def scenario(requests: list[dict], policy: BatchPolicy, run_ms: int) -> None:
    seen_rows: list[float] = []

    def model(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["x"]
        seen_rows.extend(x[:, 0].tolist())
        time.sleep(run_ms / 1000)
        if (x < 0).any():
            raise RuntimeError("poisoned batch")
        return {"y": x * 2}

    with ThreadPoolExecutor(2) as executor:
        batcher = DynamicBatcher("prop", model, policy, executor)

        async def one(i: int, r: dict) -> object:
            await asyncio.sleep(r["arrival_ms"] / 1000)
            value = -(i + 1) if r["poison"] else i + 1
            x = np.full((r["rows"], 1), value, dtype=np.float32)
            deadline = None if r["deadline_ms"] is None else time.monotonic() + r["deadline_ms"] / 1000
            task = asyncio.ensure_future(batcher.submit({"x": x}, deadline))
            if r["cancel_ms"] is not None:
                asyncio.get_running_loop().call_later(r["cancel_ms"] / 1000, task.cancel)
            try:
                out = await task
            except asyncio.CancelledError:
                return "cancelled"
            except (DeadlineExceededError, QueueFullError, InferenceError) as err:
                return type(err).__name__
            assert out["y"].shape == x.shape and (out["y"] == 2 * x).all(), "outputs went to the wrong request"
            return "ok"

        outcomes = await asyncio.wait_for(asyncio.gather(*(one(i, r) for i, r in enumerate(requests))), 20)
        assert len(outcomes) == len(requests)
        assert batcher.queue_depth == 0
        for i, (r, outcome) in enumerate(zip(requests, outcomes, strict=True)):
            value = -(i + 1) if r["poison"] else i + 1
            ran = seen_rows.count(value)
            if outcome == "ok":
                # once, or twice when a batch it shared failed and it ran again alone
                assert ran in (r["rows"], 2 * r["rows"]), "a successful request ran once (or once more alone)"
            elif outcome in ("DeadlineExceededError", "QueueFullError"):
                assert ran == 0, f"{outcome} must mean the request never cost compute"
            else:
                assert ran in (0, r["rows"], 2 * r["rows"])
            if outcome == "InferenceError":
                assert r["poison"], "only the request that breaks the model fails"
        await batcher.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(request, min_size=1, max_size=25),
    max_batch=st.integers(1, 6),
    delay_ms=st.integers(0, 5),
    queue=st.integers(1, 30),
    instances=st.integers(1, 2),
    run_ms=st.integers(0, 3),
)
def test_every_request_ends_exactly_once(requests, max_batch, delay_ms, queue, instances, run_ms):
    policy = BatchPolicy(
        max_batch_size=max(max_batch, 3),
        max_queue_delay_s=delay_ms / 1000,
        max_queue_size=queue,
        instances=instances,
    )
    asyncio.run(scenario(requests, policy, run_ms))
