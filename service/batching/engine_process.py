"""A lane whose steps run in a child process of its own (`generation.engine: process`).

In a thread lane (`lanes.Lane`) each step's Python (the decoder's feeds and cache writes, numpy sampling) takes
turns for the server's GIL with the event loop that streams the tokens; on two cores that costs over gRPC about
a quarter of what the same steps do alone. Here the child (`python -m service.batching.engine_process`) builds
the decoder from a picklable factory and runs the step loop itself, as vLLM's engine core does: it holds each
running sequence's tokens and random generator, samples, ends the sequences that reach the end-of-text token,
`max_new_tokens` or a full context (the lane's settings, sent with every message), and sends each step's
tokens, with why each sequence ends, back without waiting to be asked. The lane's thread in the server
(`ProcessLane`) does what only the server can: it admits waiting sequences (their prompts go to the child),
tells the child which sequences left (cancelled, stop sequence, deadline), appends each step's tokens to the
sequences and hands the step to the event loop as a thread lane does. Its waiting on the child releases the
GIL. The child runs at most `CHILD_AHEAD` steps ahead of the lane.

A sequence's tokens are the same in either kind of lane: its logits never depend on what else shares the batch,
and its generator, seeded from its sampling parameters, draws once per token in both.

A child that dies ends the sequences it held with an `InferenceError`; the lane starts a new one when it next
has work. A child ends when its connection closes: `ProcessLane.close`, or the server exiting.

Knows nothing of gRPC or ONNX Runtime: the factory brings the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from service.batching.decoders import Decoder, next_tokens
from service.batching.lanes import Ended, Lane, LaneContext, StepResult, ending
from service.batching.sequences import FinishReason, SequenceState
from service.errors import InferenceError, ModelLoadError
from service.types import SamplingParams

log = logging.getLogger(__name__)

CHILD_AHEAD = 6
"""Steps the child may compute that the lane has not yet taken in. The lane itself may run `lanes.AHEAD`
steps ahead of the event loop, so a cancelled request gets at most the sum computed after it left. With 2,
a lone stream's 32 tokens took 7.5% longer than on a thread lane (the child waited for the lane's thread to
wake between steps); with 6 the same (docs/performance.md)."""
START_TIMEOUT_S = 120.0
"""How long a child may take to import, load its model and warm it up."""
STOP_TIMEOUT_S = 5.0

DecoderFactory = Callable[[], Decoder]
"""Builds the decoder in the child: a module-level function, or a `functools.partial` of one with picklable
arguments (it is pickled by reference)."""


class EngineProcess:
    """A child process running a step loop on its own decoder (`serve`), and the connection to it."""

    def __init__(self, name: str, factory: DecoderFactory) -> None:
        """Starts the child and waits until its decoder is built; `ModelLoadError` if it cannot."""
        self.name = name
        self._init = pickle.dumps(factory)
        self.conn: Connection | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "service.batching.engine_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        try:
            conn.send_bytes(self._init)
            if not conn.poll(START_TIMEOUT_S):
                raise ModelLoadError(f"{self.name}: the generation engine did not start in {START_TIMEOUT_S:.0f} s")
            reply = pickle.loads(conn.recv_bytes())
            if reply[0] != "ready":
                raise ModelLoadError(f"{self.name}: the generation engine could not load the step model: {reply[1]}")
        except (EOFError, OSError) as err:
            conn.close()
            code = _reap(child)
            raise ModelLoadError(f"{self.name}: the generation engine exited while starting (code {code})") from err
        except BaseException:
            conn.close()
            _reap(child)
            raise
        self.conn, self._child = conn, child

    @property
    def alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def stop(self) -> int | None:
        """Close the connection (the child then ends) and wait for the child; its exit code."""
        conn, child, self.conn, self._child = self.conn, self._child, None, None
        if conn is not None:
            conn.close()
        return _reap(child) if child is not None else None


def _reap(child: subprocess.Popen[bytes]) -> int | None:
    """Wait for `child`, whose connection is closed, killing it after `STOP_TIMEOUT_S`."""
    try:
        return child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


class ProcessLane(Lane):
    """A lane whose steps its engine process computes (the module's docstring)."""

    def __init__(self, name: str, engine: EngineProcess, slots: int, context: LaneContext) -> None:
        super().__init__(name, None, slots, context)
        self.engine = engine
        self._held: dict[int, SequenceState] = {}
        """Sequences the child runs (it was sent their prompt), in the order it was sent them."""
        self._taken = 0
        """Steps taken in from the child (its credit: it runs at most `CHILD_AHEAD` steps past this)."""
        self._resend: list[SequenceState] = []
        """Sequences a dead child held before their first token: they go to the next child as new."""
        self._retried: set[int] = set()

    def close(self) -> None:
        self.engine.stop()

    # ---- the lane's thread ------------------------------------------------------------------------
    def _run(self) -> None:
        slots = self._context.slots
        holding = False  # a run slot, held while the child has sequences (its steps are model runs)
        try:
            while (news := self._plan_child()) is not None:
                ended, admitted = news
                if ended and not self._emit(StepResult([], ended, 0, 0.0, time.monotonic())):
                    return
                if slots is not None and self._held and not holding:
                    slots.acquire()
                    holding = True
                self._send(admitted)
                if not self._held:
                    if holding and slots is not None:
                        slots.release()
                        holding = False
                    continue
                if not self._emit(self._receive()):
                    return
        finally:
            if holding and slots is not None:
                slots.release()

    def _plan_child(self) -> tuple[list[Ended], list[SequenceState]] | None:
        """The sequences that ended since the last step (their ids go to the child) and those admitted now;
        waits while the child has nothing to run and nothing waits. None when the scheduler stops."""
        queue = self._context.queue
        with queue.lock:
            while not queue.stopping:
                now = time.monotonic()
                running, ended = self._sort_out(list(self._held.values()), now)
                self._held = {seq.id: seq for seq in running}
                ended += queue.expire(now)
                queue.admit(running, self.slots)
                admitted = running[len(self._held) :]
                for seq in admitted:
                    self._held[seq.id] = seq
                self.running = running
                if self._held or ended or self._released:
                    return ended, admitted
                queue.lock.wait()
        return None

    def _send(self, admitted: list[SequenceState]) -> None:
        """What changed, to the child: the sequences that left and those admitted (prompt, budget, sampling),
        and how many of its steps were taken in (its credit). A child found dead here (it died while it had
        nothing to run) is replaced first; one that dies later shows at `_receive`."""
        if not self.engine.alive:
            self.engine.stop()
            self._restart()
        released, self._released = self._released, []
        again, self._resend = self._resend, []
        news = [(s.id, s.tokens, s.max_new_tokens, s.sampling) for s in again + admitted]
        ends = (self._context.eos_id, self._context.context_length)
        conn = self.engine.conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send_bytes(pickle.dumps((released, news, self._taken, ends), pickle.HIGHEST_PROTOCOL))

    def _restart(self) -> None:
        """A new child, after the last one died (the sequences it held have ended)."""
        try:
            self.engine.start()
        except Exception as err:
            log.error("generation engine failed to restart", extra={"model": self._context.model}, exc_info=err)
            return
        self._taken, self._released = 0, []

    def _receive(self) -> StepResult:
        """The child's next step, appended to the sequences; a step that failed, or a child that died, ends
        the sequences concerned with the error. A dead child's sequences that had no token yet go to the next
        child instead, once: their text is still the one their seed gives (a child that dies just before they
        reach it fails no request)."""
        reply: tuple[Any, ...]
        conn = self.engine.conn
        try:
            if conn is None:
                raise EOFError
            reply = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            code = self.engine.stop()
            self._resend = [s for s in self._held.values() if s.generated == 0 and s.id not in self._retried]
            self._retried = {i for i in self._retried if i in self._held} | {s.id for s in self._resend}
            lost = [i for i, s in self._held.items() if s not in self._resend]
            reply = ("error", lost, f"the generation engine process exited (code {code})", "")
        self._taken += 1
        self.steps += 1
        if reply[0] == "tokens":
            return self._update_child(reply[1], reply[2], reply[3], reply[4])
        _, ids, message, trace = reply
        log.error("generation step failed", extra={"model": self._context.model, "reason": message, "trace": trace})
        error = InferenceError(f"model '{self._context.model}' failed during generation; the error was logged")
        failed = [self._held.pop(i) for i in ids if i in self._held]
        self.running = list(self._held.values())
        ended: list[Ended] = [(seq, FinishReason.ERROR, error) for seq in failed]
        return StepResult([], ended, len(ids), 0.0, time.monotonic())

    def _update_child(
        self, ids: list[int], tokens: list[int], reasons: list[FinishReason | None], seconds: float
    ) -> StepResult:
        """A step of the child's: each token appended; the sequences that the child ended with it (by the same
        rule as a thread lane, `lanes.ending`, with this lane's end-of-text token and context) leave the lane."""
        out: list[tuple[SequenceState, int, FinishReason | None]] = []
        for seq_id, token, reason in zip(ids, tokens, reasons, strict=True):
            seq = self._held.get(seq_id)
            if seq is None:  # left while the child computed this step
                continue
            seq.tokens.append(token)
            if reason is not None:
                del self._held[seq_id]  # the child has dropped it
            out.append((seq, token, reason))
        self.running = list(self._held.values())
        return StepResult(out, [], len(ids), seconds, time.monotonic())


# ---- the child ----------------------------------------------------------------------------------------
class _Sequence:
    __slots__ = ("max_new_tokens", "prompt", "rng", "sampling", "tokens")

    def __init__(self, tokens: list[int], max_new_tokens: int, sampling: SamplingParams) -> None:
        self.tokens = list(tokens)
        self.prompt = len(self.tokens)
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.rng = np.random.default_rng(sampling.seed)


def serve(conn: Connection) -> None:
    """The child's loop (the module's docstring): its decoder from the first message, then steps while it has
    sequences and credit, taking in the lane's messages between steps, until the connection closes."""
    try:
        decoder: Decoder = pickle.loads(conn.recv_bytes())()
    except Exception as err:  # noqa: BLE001 - the lane reports it as a load failure
        conn.send_bytes(pickle.dumps(("error", f"{type(err).__name__}: {err}")))
        return
    conn.send_bytes(pickle.dumps(("ready",)))
    running: dict[int, _Sequence] = {}
    sent = taken = 0
    ends: tuple[int | None, int] = (None, 0)
    while True:
        while not running or sent - taken >= CHILD_AHEAD or conn.poll():
            try:
                released, news, taken, ends = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            for seq_id in released:
                running.pop(seq_id, None)
            decoder.release(released)
            for seq_id, tokens, max_new_tokens, sampling in news:
                running[seq_id] = _Sequence(tokens, max_new_tokens, sampling)
        try:
            conn.send_bytes(pickle.dumps(_step(decoder, running, *ends), pickle.HIGHEST_PROTOCOL))
        except OSError:  # the server is gone
            return
        sent += 1


def _step(decoder: Decoder, running: dict[int, _Sequence], eos: int | None, context: int) -> tuple[Any, ...]:
    """One step of every running sequence: ("tokens", ids, tokens, why each ends or None, seconds), or
    ("error", ids, message, traceback) with the sequences dropped."""
    ids, batch = list(running), list(running.values())
    start = time.perf_counter()
    try:
        sampled = next_tokens(
            decoder,
            ids,
            [s.tokens for s in batch],
            [s.prompt for s in batch],
            [s.sampling for s in batch],
            [s.rng for s in batch],
        )
    except Exception as err:  # noqa: BLE001 - the step fails, the engine goes on
        running.clear()
        decoder.release(ids)
        return ("error", ids, str(err), traceback.format_exc())
    reasons, ended = [], []
    for seq_id, s, token in zip(ids, batch, sampled, strict=True):
        s.tokens.append(token)
        reason = ending(token, len(s.tokens) - s.prompt, s.max_new_tokens, len(s.tokens), eos, context)
        reasons.append(reason)
        if reason is not None:
            ended.append(seq_id)
            del running[seq_id]
    decoder.release(ended)
    return ("tokens", ids, sampled, reasons, time.perf_counter() - start)


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in a terminal reaches the server, which stops us
    from service.memory import HeapTrimmer, keep_heap_warm

    keep_heap_warm()
    HeapTrimmer().start()
    serve(Connection(fd))
    os._exit(0)  # no waiting for the trimmer's daemon thread or the model's thread pools


if __name__ == "__main__":
    main(int(sys.argv[1]))
