"""Request accounting, the same for every gRPC method and HTTP route: how long a request took and how it ended,
under the model it went to (`deepserve_request_duration_seconds`, `deepserve_requests_total`).

Each edge's boundary opens a `Call` when a request arrives and ends it once, with the status its client sees
(`grpc/boundary.py` for gRPC, `http/server.py` for HTTP). Model labels are bounded: a request is counted under a
loaded model version, the one it names (or its task's default), else under `_unknown`; a request about no model
(liveness, the repository index) under "". Per-model statistics (ModelStatistics, the in-flight gauge) are kept
by the model's pipeline itself, around the inference the core runs (`ModelPipeline.serving`).
"""

from __future__ import annotations

import logging
import time

from service.config import Task
from service.errors import DeepserveError
from service.metrics import UNKNOWN_MODEL, RequestRecorder
from service.registry import ModelRegistry

log = logging.getLogger(__name__)


class Accounting:
    def __init__(self, recorder: RequestRecorder, registry: ModelRegistry) -> None:
        self.recorder = recorder
        self.registry = registry

    def call(self, api: str, task: Task | None = None) -> Call:
        """A request of `api` (the metrics label) arriving now; for a task API, `task` is its default model's."""
        return Call(self, api, task)

    def model_of(self, task: Task | None, model: str, version: str) -> tuple[str, str]:
        """The labels of a request naming `model` and `version` ("" for none): the loaded version it goes to."""
        if not model and task is None:
            return "", ""
        try:
            pipeline = self.registry.get(model, version) if model else self.registry.by_task(task.value)  # type: ignore[union-attr]
        except DeepserveError:
            return UNKNOWN_MODEL, ""
        return pipeline.name, pipeline.version


class Call:
    """One request, from its arrival to its end (`end`, once: later calls do nothing)."""

    __slots__ = ("_accounting", "api", "ended", "model", "request_id", "start", "task", "version")

    def __init__(self, accounting: Accounting, api: str, task: Task | None) -> None:
        self._accounting, self.api, self.task = accounting, api, task
        self.model = self.version = ""
        """The model and version the request names, once known ("": none, or the task's default)."""
        self.request_id = ""
        """The id the request gives itself (V2's `id`), quoted in the message of an internal error."""
        self.start = time.perf_counter()
        self.ended = False

    def named(self, model: str, version: str) -> None:
        self.model, self.version = model, version

    def end(self, code: str) -> None:
        """Count the request with `code`, the status its client sees (a gRPC status name, an HTTP status)."""
        if self.ended:
            return
        self.ended = True
        seconds = time.perf_counter() - self.start
        accounting = self._accounting
        model, version = accounting.model_of(self.task, self.model, self.version)
        accounting.recorder.record(model, version, self.api, code, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request done",
                extra={"api": self.api, "model": model, "version": version, "code": code, "ms": seconds * 1000},
            )
