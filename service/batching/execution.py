"""Running one batch, in a worker thread or (a lone request) on the event loop: collate, run, split.

Errors are returned, never raised past here. A batch of several requests that fails is run again one
request at a time, so only the guilty ones fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.batching.collate import CollateSpec, Tensors, concat, split
from service.errors import DeepserveError, InferenceError

log = logging.getLogger(__name__)

RunFn = Callable[[Tensors], Tensors]
"""Runs one batch: feed dict in, all outputs out."""


@dataclass(slots=True)
class Outcome:
    pieces: list[Tensors | BaseException] | None = None
    """Per request: its outputs, or the error of its own run when the batch failed and was re-run one by one."""
    error: BaseException | None = None
    collate_s: float = 0.0
    infer_s: float = 0.0
    split_s: float = 0.0


def execute(
    model: str,
    inputs: list[Tensors],
    sizes: list[int],
    lengths: list[int | None],
    run: RunFn,
    rerun: RunFn,
    spec: CollateSpec,
    batched: bool,
) -> Outcome:
    """The requests' `inputs` (each `sizes[i]` items, `lengths[i]` its own length where padding applies)
    collated into one feed, `run`, and split back; when that fails, each request alone through `rerun`."""
    outcome = Outcome()
    t0 = time.perf_counter()
    try:
        feed, padded_len = concat(inputs, spec)
        t1 = time.perf_counter()
        outputs = run(feed)
        t2 = time.perf_counter()
        outcome.pieces = list(split(outputs, sizes, lengths, padded_len, spec)) if batched else [outputs]
        t3 = time.perf_counter()
        outcome.collate_s, outcome.infer_s, outcome.split_s = t1 - t0, t2 - t1, t3 - t2
    except BaseException as err:  # noqa: BLE001 - every failure must reach the callers
        if len(inputs) > 1 and not isinstance(err, DeepserveError):
            log.warning(
                "batch failed; running its requests one by one",
                extra={"model": model, "batch": len(inputs), "error": repr(err)},
            )
            outcome.pieces = [
                _run_alone(one, size, length, rerun, spec, batched)
                for one, size, length in zip(inputs, sizes, lengths, strict=True)
            ]
        else:
            outcome.error = err
        outcome.infer_s = time.perf_counter() - t0
    return outcome


def _run_alone(
    inputs: Tensors, size: int, length: int | None, run: RunFn, spec: CollateSpec, batched: bool
) -> Tensors | BaseException:
    try:
        outputs = run(inputs)
    except BaseException as err:  # noqa: BLE001 - returned to this request only
        return err
    if not batched:
        return outputs
    try:
        return split(outputs, [size], [length], length, spec)[0]
    except BaseException as err:  # noqa: BLE001
        return err


def user_error(model: str, error: BaseException, batch: int) -> BaseException:
    """What a request whose run failed is told: domain errors as they are, anything else logged and generic."""
    if isinstance(error, DeepserveError):
        return error
    log.error("model run failed", extra={"model": model, "batch": batch, "error": repr(error)}, exc_info=error)
    return InferenceError(f"model '{model}' failed to run this request; the error was logged")
