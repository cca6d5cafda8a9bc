"""`service.histogram.Histogram` against prometheus_client's own histogram: fed the same observations, both
expose the same samples (but `_created`), in the text format Prometheus scrapes."""

from __future__ import annotations

import threading

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.histogram import Histogram
from service.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics

VALUES = [0.0, 0.0001, 0.00010001, 0.0007, 0.001, 0.25, 9.99, 10.0, 10.5, 1e9, -1.0]


def samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
    text = generate_latest(registry).decode()
    return sorted(
        (s.name, sorted(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    )


@pytest.mark.parametrize("buckets", [LATENCY_BUCKETS, BATCH_BUCKETS, (1.0, float("inf"))])
def test_same_samples_as_prometheus_clients_histogram(buckets: tuple[float, ...]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = Histogram("h_seconds", "doc", ("model", "version"), buckets, ours)
    reference = prometheus_client.Histogram("h_seconds", "doc", ("model", "version"), buckets=buckets, registry=theirs)
    for i, value in enumerate(VALUES):
        labels = ("a", "1") if i % 3 else ("b", "2")
        mine.labels(*labels).observe(value)
        reference.labels(*labels).observe(value)
    mine.labels("never", "observed")
    reference.labels("never", "observed")
    assert samples(ours) == samples(theirs)
    assert ours.get_sample_value("h_seconds_count", {"model": "a", "version": "1"}) == 7


def test_removed_children_are_no_longer_exposed_and_labels_must_match() -> None:
    registry = CollectorRegistry()
    family = Histogram("h", "doc", ("model",), (1.0,), registry)
    family.labels("a").observe(0.5)
    family.remove("a")
    assert registry.get_sample_value("h_count", {"model": "a"}) is None
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("a", "b")
    with pytest.raises(ValueError, match="increasing order"):
        Histogram("g", "doc", ("model",), (2.0, 1.0), registry)


def test_observations_from_many_threads_are_all_counted() -> None:
    registry = CollectorRegistry()
    child = Histogram("h", "doc", ("model",), LATENCY_BUCKETS, registry).labels("a")

    def observe() -> None:
        for _ in range(20_000):
            child.observe(0.001)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert registry.get_sample_value("h_count", {"model": "a"}) == 80_000
    assert registry.get_sample_value("h_sum", {"model": "a"}) == pytest.approx(80.0)


def test_the_servers_histograms_are_these() -> None:
    metrics = Metrics()
    for family in (metrics.request_duration, metrics.queue_duration, metrics.compute_duration, metrics.batch_size):
        assert isinstance(family, Histogram)
