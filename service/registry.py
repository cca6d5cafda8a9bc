"""Loaded models by name and version: load, reload, unload at run time; readiness.

Loading a model builds everything its versions serve with, in a worker thread: the task processing (labels,
tokenizer), each version's sessions (checked, warmed up), pipeline and, for text generation, scheduler. Any
failure fails the load, so a model is either serving everything it offers or not loaded (one state, which
ModelReady, RepositoryIndex, health and the task APIs all read). A reload builds the new versions completely
before swapping them in, so a failed reload leaves the old ones serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor

from service.batching.slots import Slots
from service.config import Device
from service.errors import (
    DeepserveError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    UnavailableError,
    quoted,
)
from service.handlers import generation_scheduler, task_processing
from service.memory import release_memory
from service.metrics import Metrics
from service.pipeline import ModelPipeline
from service.repository import ModelEntry, ModelRepository
from service.runtime import (
    ModelSession,
    available_providers,
    check_signature,
    choose_providers,
    load_step_model,
)
from service.tasks.assets import vocab_size
from service.tasks.text_generation import TextGeneration
from service.types import ModelIndexEntry, ModelState
from service.validation import RequestLimits

log = logging.getLogger(__name__)

PipelineFactory = Callable[[ModelEntry, str, ModelSession], ModelPipeline]
MAX_LISTED = 20
"""Model names (or versions) listed in a NOT_FOUND message, at most."""

MODEL_CONTROL_OFF = (
    "model control is off: this server does not load or unload models on request; start it with "
    "--model-control-mode explicit to allow RepositoryModelLoad and RepositoryModelUnload"
)
"""Why RepositoryModelLoad/Unload (gRPC) and POST /v2/repository/models/{name}/load|unload (HTTP) are refused."""
MAX_NAMED_PARAMETERS = 5


def load_parameters_refused(names: list[str]) -> str:
    """The message for a RepositoryModelLoad with parameters (Triton's `config` and `file:<path>` overrides): not
    supported, rather than answered OK with nothing changed. Names the first few, each cut short."""
    shown = ", ".join(quoted(name) for name in sorted(names)[:MAX_NAMED_PARAMETERS])
    more = f" and {len(names) - MAX_NAMED_PARAMETERS} more" if len(names) > MAX_NAMED_PARAMETERS else ""
    return (
        f"RepositoryModelLoad parameters are not supported (got {shown}{more}): deepserve loads a model only as it "
        "is in its repository; change the files there and load it again without parameters"
    )


class ModelRegistry:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        executor: Executor,
        device: Device = Device.AUTO,
        slots: Slots | None = None,
    ) -> None:
        """`slots`: taken for every model run (batches and generation steps), so that `--workers` bounds them
        all; None: only the executor's threads bound the batches."""
        self.repository = repository
        self.metrics = metrics
        self.executor = executor
        self.slots = slots
        self.device = device
        self._models: dict[str, dict[str, ModelPipeline]] = {}
        self._newest: dict[str, ModelPipeline] = {}
        """Each model's newest version, which a request naming no version gets (`get`): kept with `_models`."""
        self._failed: dict[str, str] = {}
        """Models whose last load failed → why. A load that succeeds, or an unload, clears it."""
        self._unready: dict[str, list[str]] = {}
        """Models that failed to load with no version serving → the versions exported as `deepserve_model_ready` 0."""
        self._loading: set[str] = set()
        self._lock = asyncio.Lock()
        self.listeners: list[Callable[[], None]] = []
        """Called after every change (health status follows readiness)."""

    # ---- queries ---------------------------------------------------------------------------------
    def get(self, name: str, version: str = "") -> ModelPipeline:
        if not version:
            newest = self._newest.get(name)
            if newest is not None:
                return newest
        versions = self._models.get(name)
        if not versions:
            if name in self._loading:
                raise UnavailableError(f"model {quoted(name)} is loading; retry shortly")
            if name in self._failed:
                raise UnavailableError(f"model {quoted(name)} failed to load: {self._failed[name]}")
            raise ModelNotFoundError(  # "Request for unknown model": Triton's wording, which tools check for
                f"Request for unknown model {quoted(name)}; available models: {_listed(sorted(self._models))}"
            )
        if not version:
            return versions[max(versions, key=int)]
        if not version.isdigit():  # Triton's wording, which its example clients check for
            raise InvalidInputError(
                f"failed to get model version from specified version string {quoted(version)}: versions are "
                "positive integers; leave it empty for the newest"
            )
        pipeline = versions.get(version)
        if pipeline is None:
            raise ModelNotFoundError(
                f"model {quoted(name)} has no version {quoted(version)} loaded; "
                f"loaded versions: {_listed(sorted(versions, key=int))}"
            )
        return pipeline

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except DeepserveError:
            return False
        return True

    def all_ready(self) -> bool:
        """Strict readiness: a model serves, and so does every model the server is meant to serve: each one whose load
        was asked for (all of the repository's at start-up, then `load`) and that was not unloaded since. A model
        whose reload failed while its older versions keep serving counts as serving."""
        return bool(self._models) and all(name in self._models for name in self._failed)

    def loaded(self) -> list[ModelPipeline]:
        return [p for versions in self._models.values() for p in versions.values()]

    def by_task(self, task: str) -> ModelPipeline:
        """The default model for a task: the only one with that task, or the first by name."""
        for name in sorted(self._models):
            pipeline = self.get(name)
            if pipeline.config.task.value == task:
                return pipeline
        raise ModelNotFoundError(f"no loaded model serves the task {quoted(task)}; name a model in the request")

    def index(self) -> list[ModelIndexEntry]:
        entries: list[ModelIndexEntry] = []
        for name in self.repository.names():
            if name in self._models:
                failed = self._failed.get(name)
                reason = f"last reload failed, older version serving: {failed}" if failed else ""
                versions = sorted(self._models[name], key=int)
                entries += [ModelIndexEntry(name, v, ModelState.READY, reason) for v in versions]
            elif name in self._loading:
                entries.append(ModelIndexEntry(name, "", ModelState.LOADING))
            else:
                entries.append(ModelIndexEntry(name, "", ModelState.UNAVAILABLE, self._failed.get(name, "not loaded")))
        return entries

    # ---- changes ---------------------------------------------------------------------------------
    async def load_all(self) -> None:
        """Load every model of the repository (which `App` has checked holds some); one that fails is logged and
        left UNAVAILABLE, and the others load."""
        for name in self.repository.names():
            try:
                await self.load(name)
            except DeepserveError as err:
                log.error("model failed to load", extra={"model": name, "error": err.message})

    async def load(self, name: str) -> None:
        """(Re)load every selected version of `name`; on failure the versions already serving stay."""
        async with self._lock:
            self.repository.model_dir(name)  # NOT_FOUND for names outside the repository, before a metric names it
            self.metrics.load_failures.labels(name)  # at 0 before any failure, so that increase() sees the first
            self._loading.add(name)
            entry: ModelEntry | None = None
            try:
                entry = self.repository.load(name)
                new = await asyncio.to_thread(self._build, entry)
            except ModelNotFoundError:
                raise
            except DeepserveError as err:
                self._load_failed(name, err.message, entry)
                raise
            except Exception:
                log.exception("unexpected error loading model", extra={"model": name})
                error = ModelLoadError(f"model '{name}': failed to load, unexpectedly (the server log has the details)")
                self._load_failed(name, error.message, entry)
                raise error from None
            finally:
                self._loading.discard(name)
            for pipeline in new.values():
                pipeline.start()
            old = self._models.get(name, {})
            self._models[name] = new
            if new:
                self._newest[name] = new[max(new, key=int)]
            else:
                self._newest.pop(name, None)
            self._failed.pop(name, None)
            gone = [*old, *self._unready.pop(name, [])]
            self.metrics.forget_ready(name, [v for v in gone if v not in new])
            self.metrics.model_loaded(name, new)
            self._notify()
        await self._release(old)
        log.info("model ready", extra={"model": name, "versions": sorted(new, key=int)})

    async def unload(self, name: str, timeout: float | None = 30.0) -> None:
        async with self._lock:
            self.repository.model_dir(name)  # NOT_FOUND for names outside the repository
            old = self._models.pop(name, {})
            self._newest.pop(name, None)
            self._failed.pop(name, None)
            self.metrics.forget_ready(name, [*old, *self._unready.pop(name, [])])  # not expected to serve: no series
            self._notify()
        await self._release(old, timeout=timeout)
        log.info("model unloaded", extra={"model": name})

    async def close(self, timeout: float | None = None) -> None:
        models, self._models = self._models, {}
        self._newest = {}
        self._notify()
        await asyncio.gather(*(p.close(timeout) for versions in models.values() for p in versions.values()))

    def _load_failed(self, name: str, reason: str, entry: ModelEntry | None) -> None:
        """Remember why `name` failed to load and count it. When no version of it serves, the versions it would have
        served (or "", when its config did not read) are exported as not ready."""
        self._failed[name] = reason
        unready: list[str] = []
        if name not in self._models:
            unready = list(entry.versions) if entry is not None else [""]
            self.metrics.forget_ready(name, [v for v in self._unready.get(name, []) if v not in unready])
            self._unready[name] = unready
        self.metrics.load_failed(name, unready)
        self._notify()

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()

    @staticmethod
    async def _release(old: dict[str, ModelPipeline], timeout: float | None = None) -> None:
        """Close replaced or unloaded versions (queued requests get up to `timeout`), let go of them, then hand
        the memory their sessions held back to the OS, so that reloads don't grow the process."""
        if not old:
            return
        pipelines = list(old.values())
        old.clear()  # the caller's dict; from here `pipelines` holds this registry's last references
        for pipeline in pipelines:
            await pipeline.close(timeout)
        del pipeline, pipelines
        await asyncio.to_thread(release_memory)

    def _build(self, entry: ModelEntry) -> dict[str, ModelPipeline]:
        """Worker thread: the task processing, and for every selected version its sessions, checked against the
        config and warmed up, and its pipeline."""
        task = task_processing(entry.name, entry.config, entry.path)
        providers = choose_providers(self.device, entry.config.execution.providers, available_providers())
        built: dict[str, ModelPipeline] = {}
        limits = RequestLimits.resolve(entry.name, entry.config, vocab_size(entry.name, entry.path, entry.config))
        strict = self.device is Device.CUDA
        for version, path in entry.versions.items():
            session = ModelSession(path, entry.config, providers, strict)
            check_signature(session, entry.config, entry.name)
            session.warmup()
            step_file = entry.step_models.get(version)
            step = load_step_model(step_file, entry.config, providers, entry.name, strict) if step_file else None
            log.info(
                "model version loaded",
                extra={"model": entry.name, "version": version, "providers": session.providers},
            )
            metrics = self.metrics.for_model(entry.name, version)
            scheduler = None
            if isinstance(task, TextGeneration):
                generation = self.metrics.for_generation(entry.name, version)
                name = f"{entry.name}:{version}"
                scheduler = generation_scheduler(name, session, step, task, metrics, generation, self.slots)
            built[version] = ModelPipeline(
                entry.name,
                version,
                entry.config,
                session,
                self.executor,
                metrics,
                step,
                limits,
                task,
                scheduler,
                self.slots,
            )
        return built


def _listed(names: list[str]) -> str:
    """`names` for a message: "none", or the list, cut after `MAX_LISTED` with the count left out."""
    if not names:
        return "none"
    if len(names) <= MAX_LISTED:
        return str(names)
    return f"{names[:MAX_LISTED]} and {len(names) - MAX_LISTED} more"
