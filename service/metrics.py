"""All Prometheus metrics, on one `CollectorRegistry` (never the global default).

Per model and version children are bound once (`Metrics.for_model`) so the hot path does no label
lookups. Names are listed in the README; the Grafana dashboard queries only these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.histogram import Histogram, HistogramChild

# Milliseconds to seconds: fine resolution where serving latencies live.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MODEL = ("model", "version")
UNKNOWN_MODEL = "_unknown"
"""The model label of requests that name no loaded model."""


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.request_duration = Histogram(
            "deepserve_request_duration_seconds",
            "Time from receiving a request to its answer.",
            (*MODEL, "api"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "deepserve_requests", "Requests answered, by gRPC status code.", (*MODEL, "api", "code"), registry=r
        )
        self.queue_duration = Histogram(
            "deepserve_queue_duration_seconds",
            "Time a request waited in the batcher's queue.",
            MODEL,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "deepserve_compute_duration_seconds",
            "Time one model run (one batch) took.",
            MODEL,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "deepserve_batch_size", "Batch items per model run.", MODEL, buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("deepserve_queue_depth", "Requests waiting in the queue.", MODEL, registry=r)
        self.queue_capacity = Gauge("deepserve_queue_capacity", "Configured max_queue_size.", MODEL, registry=r)
        self.inflight = Gauge(
            "deepserve_inflight_requests", "Requests accepted and not yet answered.", MODEL, registry=r
        )
        self.rejected = Counter(
            "deepserve_rejected_requests",
            "Requests dropped before running, by reason.",
            (*MODEL, "reason"),
            registry=r,
        )
        self.pending_response_bytes = Gauge(
            "deepserve_pending_response_bytes",
            "Bytes of responses handed to gRPC whose calls have not ended (clients that read slowly hold them).",
            registry=r,
        )
        self.model_ready = Gauge(
            "deepserve_model_ready",
            '1 while the model version serves; 0 for the versions of a model that failed to load (version "" when '
            "its versions are unknown). Versions replaced or unloaded on purpose have no series.",
            MODEL,
            registry=r,
        )
        self.load_failures = Counter(
            "deepserve_model_load_failures",
            "Loads of a model that failed (at start-up, or on RepositoryModelLoad), whether or not an older version "
            "kept serving.",
            ("model",),
            registry=r,
        )
        self.ttft = Histogram(
            "deepserve_generation_time_to_first_token_seconds",
            "Time from request to its first token.",
            MODEL,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "deepserve_generation_inter_token_latency_seconds",
            "Time between consecutive tokens of a stream.",
            MODEL,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("deepserve_generation_tokens", "Tokens generated.", MODEL, registry=r)
        self.active_sequences = Gauge(
            "deepserve_generation_active_sequences", "Sequences in the running batch.", MODEL, registry=r
        )
        self.waiting_sequences = Gauge(
            "deepserve_generation_waiting_sequences", "Sequences waiting for a slot.", MODEL, registry=r
        )

    def for_model(self, model: str, version: str) -> ModelMetrics:
        labels = (model, version)
        return ModelMetrics(
            queue_duration=self.queue_duration.labels(*labels),
            compute_duration=self.compute_duration.labels(*labels),
            batch_size=self.batch_size.labels(*labels),
            queue_depth=self.queue_depth.labels(*labels),
            queue_capacity=self.queue_capacity.labels(*labels),
            inflight=self.inflight.labels(*labels),
            rejected={r: self.rejected.labels(*labels, r) for r in ("queue_full", "deadline", "cancelled")},
        )

    def for_generation(self, model: str, version: str) -> GenerationModelMetrics:
        """The generation metrics' children, bound only for a model that generates (its scheduler), so that
        other models export no series of zeros."""
        labels = (model, version)
        return GenerationModelMetrics(
            ttft=self.ttft.labels(*labels),
            inter_token=self.inter_token.labels(*labels),
            tokens=self.tokens.labels(*labels),
            active_sequences=self.active_sequences.labels(*labels),
            waiting_sequences=self.waiting_sequences.labels(*labels),
        )

    def model_loaded(self, model: str, versions: Iterable[str]) -> None:
        for version in versions:
            self.model_ready.labels(model, version).set(1)

    def load_failed(self, model: str, versions: Iterable[str]) -> None:
        """A load of `model` failed: count it, and export `deepserve_model_ready` 0 for `versions` (those it would
        have served; empty when an older version keeps serving)."""
        self.load_failures.labels(model).inc()
        for version in versions:
            self.model_ready.labels(model, version).set(0)

    def forget_ready(self, model: str, versions: Iterable[str]) -> None:
        """No `deepserve_model_ready` series for `versions` any more: replaced or unloaded on purpose, or the
        versions of a failed load once the model loads or is unloaded (an alert on 0 then resolves)."""
        for version in versions:
            self.model_ready.remove(model, version)


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """Children of each metric bound to one model version."""

    queue_duration: HistogramChild
    compute_duration: HistogramChild
    batch_size: HistogramChild
    queue_depth: Gauge
    queue_capacity: Gauge
    inflight: Gauge
    rejected: dict[str, Counter]


@dataclass(frozen=True, slots=True)
class GenerationModelMetrics:
    """Children of the generation metrics bound to one version of a text_generation model."""

    ttft: HistogramChild
    inter_token: HistogramChild
    tokens: Counter
    active_sequences: Gauge
    waiting_sequences: Gauge


class RequestRecorder:
    """Request duration and count by status, with label children cached per (model, version, api, code)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._children: dict[tuple[str, str, str, str], tuple[HistogramChild, Counter]] = {}

    def record(self, model: str, version: str, api: str, code: str, seconds: float) -> None:
        key = (model, version, api, code)
        children = self._children.get(key)
        if children is None:
            m = self._metrics
            children = (m.request_duration.labels(model, version, api), m.requests.labels(model, version, api, code))
            self._children[key] = children
        children[0].observe(seconds)
        children[1].inc()
