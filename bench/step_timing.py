"""Timing a generation's model steps for bench/generation_grpc.py: step models and decoders that add up the
time spent in them, and what ONNX Runtime alone needs for a step at a given row count and cache span: a table
(`step_graph_costs`) and a run's steps replayed right after it (`Replay`, the bound)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np

from service.batching.decoders import Decoder
from service.batching.kv_cache import MIN_SPAN, KVCacheDecoder
from service.runtime import ModelSession, StepModel


class TimedSession:
    """A step model's session whose `run` adds up the seconds spent in it (`spent`)."""

    def __init__(self, session: ModelSession) -> None:
        self.session = session
        self.spent = 0.0

    def run(self, feed: dict, outputs: list[str] | None = None) -> dict:
        start = time.perf_counter()
        out = self.session.run(feed, outputs)
        self.spent += time.perf_counter() - start
        return out


class TimedDecoder:
    """A lane's decoder whose `next_logits` adds up the seconds spent in it (`spent`): the step graph plus the
    decoder's own work (feeds, cache writes); what a step spends outside it is sampling and the lane's loop."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.spent = 0.0
        self.shapes: list[tuple[int, int]] = []
        """(rows, cache span) of each call, for the bound."""

    def next_logits(self, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        start = time.perf_counter()
        logits = self.decoder.next_logits(seq_ids, tokens)
        self.spent += time.perf_counter() - start
        self.shapes.append((len(seq_ids), cast(KVCacheDecoder, self.decoder).span))
        return logits

    def release(self, seq_ids: Iterable[int]) -> None:
        self.decoder.release(seq_ids)


def timed(step: StepModel) -> tuple[StepModel, TimedSession]:
    """`step` with its session timed."""
    session = TimedSession(step.session)
    return dataclasses.replace(step, session=cast(ModelSession, session)), session


def spans(context: int) -> list[int]:
    """The cache spans a KVCacheDecoder feeds: powers of two from MIN_SPAN, and the context."""
    found = [MIN_SPAN]
    while found[-1] * 2 < context:
        found.append(found[-1] * 2)
    return sorted({min(s, context) for s in found} | {context})


def step_graph_costs(step: StepModel, context: int, rows: int = 16) -> dict[tuple[int, int], float]:
    """Seconds of `session.run` of the KV-cache step graph for one decoding step of 1..`rows` rows, at each
    cache span, half of it cached. The cache holds random values: on zeros ONNX Runtime is faster than on real
    keys and values (a 16-row step at span 256: 1.2 ms against 2.2)."""
    replay, costs = Replay(step, context, rows), {}
    for span in spans(context):
        for batch in range(1, rows + 1):
            feed = replay.feed(batch, span)
            step.session.run(feed)
            runs, start = 0, time.perf_counter()
            while runs < 5 or time.perf_counter() - start < 0.06:
                step.session.run(feed)
                runs += 1
            costs[batch, span] = (time.perf_counter() - start) / runs
    return costs


class Replay:
    """ONNX Runtime alone on a run's steps, measured right after the run: one `session.run` of the step graph per
    step, at that step's rows and cache span, on random cache values (on zeros ONNX Runtime is faster than on
    real keys and values: a 16-row step at span 256 took 1.2 ms against 2.2), timed one by one.
    Measured beside each run rather than once, because this machine's speed swings by up to 2x between phases."""

    def __init__(self, step: StepModel, context: int, rows: int = 16) -> None:
        self._session = step.session
        rng = np.random.default_rng(0)
        names = [f"past_{kind}_{i}" for i in range(step.layers) for kind in ("key", "value")]
        self._caches = {
            span: {name: rng.standard_normal((rows, step.heads, span, step.head_dim), np.float32) for name in names}
            for span in spans(context)
        }
        self._feeds: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def feed(self, rows: int, span: int) -> dict[str, np.ndarray]:
        """The step graph's inputs for one decoding step of `rows` rows at `span`, half of it cached (kept)."""
        feed = self._feeds.get((rows, span))
        if feed is None:
            feed = {
                "token_ids": np.ones((rows, 1), np.int64),
                "positions": np.full((rows, 1), span // 2, np.int64),
                "past_mask": (np.arange(span) < span // 2).astype(np.int64)[None].repeat(rows, 0),
            }
            feed |= {name: cache[:rows] for name, cache in self._caches[span].items()}  # views, as the decoder feeds
            self._feeds[rows, span] = feed
        return feed

    def seconds(self, shapes: Iterable[tuple[int, int]]) -> float:
        """Seconds of the step graph alone for these (rows, span) steps."""
        total = 0.0
        for shape in shapes:
            feed = self.feed(*shape)
            start = time.perf_counter()
            self._session.run(feed)
            total += time.perf_counter() - start
        return total
