"""A Prometheus histogram whose `observe` is cheap enough for the request path.

prometheus_client's `Histogram.observe` checks the metric, then takes one lock for the sum and another for the
bucket it finds by scanning the bounds in Python: 1.06 µs a call here. A lone V2 request observes four
histograms (its duration; the run's queue time, compute time and batch size). `Histogram.labels(...)` here gives
a child that finds its bucket with `bisect` (in C) and adds to it and to the sum under one lock: 0.35 µs.

The family is a custom collector of prometheus_client's registry, so scrapes, `get_sample_value` and the text
format are prometheus_client's own. It exposes what prometheus_client's histogram does (`_bucket` per `le`,
cumulative; `_count`; `_sum`), except the `_created` series.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class HistogramChild:
    """One label set's buckets (not cumulative; the last is +Inf) and sum."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, amount: float) -> None:
        """Count `amount` in the first bucket whose bound is at least it (prometheus_client's rule)."""
        index = bisect.bisect_left(self._bounds, amount)
        with self._lock:
            self._counts[index] += 1
            self._sum += amount

    def snapshot(self) -> tuple[list[int], float]:
        """The cumulative bucket counts and the sum, read together."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        return list(itertools.accumulate(counts)), total


class Histogram:
    """A labelled histogram family (labels are required: every family here has them)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if not bounds or bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be given in increasing order, each once")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._bounds = bounds
        self._les = [floatToGoString(b) for b in bounds]
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {list(self.labelnames)}, not {list(values)}")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = HistogramChild(self._bounds)
            return child

    def remove(self, *values: str) -> None:
        with self._lock:
            self._children.pop(tuple(str(v) for v in values), None)

    def describe(self) -> list[Metric]:
        """The family without samples: the registry learns its names without collecting it."""
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            counts, total = child.snapshot()
            family.add_metric(list(values), list(zip(self._les, counts, strict=True)), total)
        yield family
