"""Dynamic batcher: many concurrent requests → few model runs.

Batches form on the event loop, in callbacks (a request arrives, a batch finishes, the oldest request's
delay runs out); each batch runs in a worker thread (ONNX Runtime releases the GIL) while the event loop
keeps accepting requests. Up to `instances` batches run at once.

A batch closes when it reaches `max_batch_size` or a preferred size, or when its oldest request has
waited `max_queue_delay`. Because the queue only forms batches while an instance is free, requests
that arrive during a run gather on their own, so `max_queue_delay: 0` batches under load yet adds no
wait when the server is idle. All waiting is on events and timers; time is the loop's monotonic clock.

Every accepted request gets exactly one outcome: its outputs, or an error (queue full, deadline,
shutdown, model failure). Cancelled and expired requests leave the queue before they cost compute.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from concurrent.futures import Executor

from service.batching.activity import Activity
from service.batching.admission import admit
from service.batching.collate import Tensors, batch_size, own_length
from service.batching.execution import Outcome, RunFn, execute, user_error
from service.batching.pending import DONE, QUEUED, RUNNING, Pending
from service.batching.policy import INLINE_MAX_S, BatchObserver, BatchPolicy, NullObserver
from service.batching.slots import Slots
from service.errors import DeadlineExceededError, InferenceError, InvalidInputError, UnavailableError

log = logging.getLogger(__name__)


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run: RunFn,
        policy: BatchPolicy,
        executor: Executor,
        observer: BatchObserver | None = None,
        run_inline: RunFn | None = None,
        slots: Slots | None = None,
    ) -> None:
        """`run_inline`: what runs a lone request on the event loop (`BatchPolicy.inline`), when that should
        differ from `run`: a session whose threads spin while it runs, say. `slots`: taken for each model run,
        shared with the server's other batchers and generation lanes (`--workers`); None: no bound."""
        self.name = name
        self._run = run
        self._run_lone = run_inline or run
        self._policy = policy
        self._executor = executor
        self._slots = slots
        self._observer: BatchObserver = observer or NullObserver()
        self._queue: deque[Pending] = deque()
        self._live = 0
        """Requests queued and not dropped (the deque may still hold dropped ones until compaction)."""
        self._live_items = 0
        self._free = policy.instances
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._inline = policy.inline and not (policy.batched and policy.max_queue_delay_s > 0)
        self._solo_s = float("inf")
        """Moving average of the model time of batches of one request; until the first has run in a worker
        thread it is unknown, and no request runs on the event loop."""
        self.executions = 0
        """Model runs so far (tests count them)."""

    # ---- public API -------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return self._live

    async def submit(self, inputs: Tensors, deadline: float | None = None) -> Tensors:
        """Queue one request (which may carry its own batch) and wait for its outputs.

        `deadline` is a `time.monotonic()` value; past it the request is dropped if it has not started.
        """
        policy = self._policy
        size = batch_size(inputs) if policy.batched else 1
        if size > policy.max_batch_size and policy.batched:
            raise InvalidInputError(
                f"batch of {size} exceeds max_batch_size {policy.max_batch_size} of model '{self.name}'"
            )
        now = time.monotonic()
        if deadline is None and policy.default_timeout_s is not None:
            deadline = now + policy.default_timeout_s
        admit(
            self.name,
            self._observer,
            closed=self._closed,
            waiting=self._live,
            limit=("max_queue_size", policy.max_queue_size),
            deadline=deadline,
            now=now,
        )
        Activity.in_flight += 1
        try:
            alone = Activity.alone(now)  # called for every request: it also records the signs of load
            lone = alone and self._inline and self._free == policy.instances and self._solo_s <= INLINE_MAX_S
            probe = lone and Activity.probe(now)  # a lone request that runs in a worker, on the lone run's session
            if lone and not probe:
                answer = self._run_now(inputs, size, now)
                if answer is not None:
                    return answer
                # every run slot is taken: it queues, and waits for one in a worker thread
            loop = asyncio.get_running_loop()
            key = policy.collate.key(inputs) if policy.batched else ()
            item = Pending(inputs, size, key, loop.create_future(), now)
            if policy.collate.pad_values:
                item.length = own_length(inputs, policy.collate)
            if deadline is not None:
                item.timer = loop.call_later(deadline - now, self._expire, item)
            self._queue.append(item)
            self._live += 1
            self._live_items += size
            self._idle.clear()
            try:
                if probe:
                    self._launch(self._take(size), self._run_lone)
                elif self._free:
                    self._pump()
                return await item.future
            except asyncio.CancelledError:
                if item.state == QUEUED:
                    self._drop(item)
                    self._observer.rejected("cancelled")
                raise
        finally:
            Activity.in_flight -= 1
            Activity.last_answer = time.monotonic()

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting; let queued and running batches finish (up to `timeout`), then fail the rest."""
        self._closed = True
        self._pump()  # a request waiting for its batch to fill need not wait any longer
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        for item in list(self._queue):
            if item.state == QUEUED:
                self._drop(item)
                self._fail(item, UnavailableError(f"model '{self.name}' was unloaded before the request ran"))
        if self._timer is not None:
            self._timer.cancel()

    # ---- queue bookkeeping ----------------------------------------------------------------------
    def _drop(self, item: Pending) -> None:
        item.state = DONE
        self._live -= 1
        self._live_items -= item.size
        if item.timer is not None:
            item.timer.cancel()
        if len(self._queue) > 2 * self._live + 64:
            self._queue = deque(p for p in self._queue if p.state == QUEUED)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._live and not self._running:
            self._idle.set()

    def _expire(self, item: Pending) -> None:
        if item.state == QUEUED:
            self._drop(item)
            self._observer.rejected("deadline")
            self._fail(item, DeadlineExceededError(f"deadline passed while waiting in the queue of '{self.name}'"))

    @staticmethod
    def _fail(item: Pending, error: BaseException) -> None:
        if not item.future.done():
            item.future.set_exception(error)

    # ---- batch formation --------------------------------------------------------------------------
    def _limit(self) -> int:
        """How many batch items to take now, or 0 to keep waiting for more."""
        policy = self._policy
        if not policy.batched:
            return 1
        queued = self._live_items
        if queued >= policy.max_batch_size:
            return policy.max_batch_size
        fitting = [p for p in policy.preferred_batch_sizes if p <= queued]
        if fitting:
            return fitting[-1]
        return 0

    def _take(self, limit: int) -> list[Pending]:
        """Oldest live request and the compatible ones after it, up to `limit` batch items (FIFO)."""
        queue = self._queue
        while queue and queue[0].state != QUEUED:
            queue.popleft()
        head = queue.popleft()
        batch, items = [head], head.size
        if self._policy.batched:
            skipped: list[Pending] = []
            while queue and items < limit:
                nxt = queue[0]
                if nxt.state != QUEUED:
                    queue.popleft()
                    continue
                if nxt.key != head.key or items + nxt.size > limit:
                    if nxt.key == head.key:
                        break
                    skipped.append(queue.popleft())
                    continue
                batch.append(queue.popleft())
                items += nxt.size
            queue.extendleft(reversed(skipped))
        now = time.monotonic()
        for item in batch:
            item.state = RUNNING
            item.started = now
            if item.timer is not None:
                item.timer.cancel()
        self._live -= len(batch)
        self._live_items -= items
        return batch

    def _pump(self) -> None:
        """Start every batch that can start now; otherwise wake up when the oldest request's delay is over."""
        while self._live and self._free:
            limit = self._limit()
            if not limit:
                oldest = next(p for p in self._queue if p.state == QUEUED)
                remaining = oldest.enqueued + self._policy.max_queue_delay_s - time.monotonic()
                if remaining > 0 and not self._closed:
                    if self._timer is None:  # an armed timer is never later than the oldest's delay
                        self._timer = asyncio.get_running_loop().call_later(remaining, self._on_timer)
                    return
                limit = self._policy.max_batch_size
            self._launch(self._take(limit))

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _launch(self, batch: list[Pending], run: RunFn | None = None) -> None:
        """`batch` to a worker thread, through `run` (default: the batch run)."""
        self._free -= 1
        self._running += 1
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._execute_in_slot, batch, run or self._run)
        done.add_done_callback(functools.partial(self._finish, batch=batch))

    def _run_now(self, inputs: Tensors, size: int, enqueued: float) -> Tensors | None:
        """A lone request run at once on this (the event loop's) thread, through the lone run, without queueing:
        its outputs, or its error raised. None when every run slot is taken (by generation steps): then it must
        wait for one in a worker thread, not here."""
        if self._slots is not None and not self._slots.acquire(blocking=False):
            return None
        self._free -= 1
        self._running += 1
        length = own_length(inputs, self._policy.collate) if self._policy.collate.pad_values else None
        started = time.monotonic()
        try:
            outcome = self._execute_feeds([inputs], [size], [length], self._run_lone)
        finally:
            if self._slots is not None:
                self._slots.release()
        answer = self._done(outcome, 1)[0]
        self._observe(outcome, size, [started - enqueued], not isinstance(answer, BaseException))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    # ---- running --------------------------------------------------------------------------------
    def _execute_in_slot(self, batch: list[Pending], run: RunFn) -> Outcome:
        """In a worker thread: `_execute` once a run slot is free."""
        if self._slots is None:
            return self._execute(batch, run)
        with self._slots:
            return self._execute(batch, run)

    def _execute(self, batch: list[Pending], run: RunFn) -> Outcome:
        """In a worker thread: a batch of queued requests (see `execution.execute`)."""
        return self._execute_feeds([p.inputs for p in batch], [p.size for p in batch], [p.length for p in batch], run)

    def _execute_feeds(self, inputs: list[Tensors], sizes: list[int], lengths: list[int | None], run: RunFn) -> Outcome:
        """`execution.execute` for this model: in a worker thread, or on the loop for a lone request."""
        return execute(self.name, inputs, sizes, lengths, run, self._run, self._policy.collate, self._policy.batched)

    def _finish(self, done: asyncio.Future, batch: list[Pending]) -> None:
        self._settle(done.result(), batch)

    def _settle(self, outcome: Outcome, batch: list[Pending]) -> None:
        answers = self._done(outcome, len(batch))
        for item, answer in zip(batch, answers, strict=True):
            item.state = DONE
            if item.future.done():
                continue
            if isinstance(answer, BaseException):
                item.future.set_exception(answer)
            else:
                item.future.set_result(answer)
        ok = not any(isinstance(a, BaseException) for a in answers)
        self._observe(outcome, sum(p.size for p in batch), [p.started - p.enqueued for p in batch], ok)

    def _done(self, outcome: Outcome, requests: int) -> list[Tensors | BaseException]:
        """After a run of `requests` requests: the instance freed and the next batch started; each one's answer."""
        self._free += 1
        self._running -= 1
        self.executions += 1
        if requests == 1:
            solo = self._solo_s
            self._solo_s = outcome.infer_s if solo == float("inf") else 0.8 * solo + 0.2 * outcome.infer_s
        self._pump()  # start the next batch before answering this one's callers
        pieces = outcome.pieces
        if pieces is None:
            error = outcome.error or InferenceError(f"model '{self.name}' returned no outputs")
            pieces = [error for _ in range(requests)]
        return [user_error(self.name, p, requests) if isinstance(p, BaseException) else p for p in pieces]

    def _observe(self, outcome: Outcome, items: int, waits: list[float], ok: bool) -> None:
        """The run of `items` batch items, to the metrics and statistics, once its callers have their answers
        (`ok`: every one of them has outputs)."""
        self._observer.batch_done(items, waits, outcome.collate_s, outcome.infer_s, outcome.split_s, ok)
        self._check_idle()
