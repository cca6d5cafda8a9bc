"""What one model step costs in bench/generation.py: a full forward pass and a KV-cache decoding step at a few
batch sizes, and a forward pass of fixed cost."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from bench.generation_modes import DecoderFactory
from service.batching.decoders import ForwardFn


def _per_call(run: Callable[[], object]) -> float:
    run()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        run()
        runs += 1
    return (time.perf_counter() - start) / runs


def step_costs(forward: ForwardFn, make_decoder: DecoderFactory | None, length: int, context: int) -> list[str]:
    """One model step at batch 1, 4, 16: a full forward pass of `length` tokens, and a KV-cache decoding step
    (one new token per sequence against `length` and more cached ones)."""
    costs: dict[str, Callable[[int], float]] = {"full forward pass": lambda b: _forward_cost(forward, b, length)}
    if make_decoder is not None:
        costs["KV-cache decoding step"] = lambda b: _decode_cost(make_decoder, b, length, context)
    lines = []
    for label, cost in costs.items():
        ms = {b: cost(b) * 1000 for b in (1, 4, 16)}
        parts = [f"batch {b}: {t:.2f} ms ({t / b:.3f} ms/row)" for b, t in ms.items()]
        lines.append(f"{label} at {length} tokens: " + ", ".join(parts))
    return lines


def _forward_cost(forward: ForwardFn, batch: int, length: int) -> float:
    ids, mask = np.ones((batch, length), np.int64), np.ones((batch, length), np.int64)
    return _per_call(lambda: forward(ids, mask))


def _decode_cost(make_decoder: DecoderFactory, batch: int, length: int, context: int) -> float:
    """Mean decoding step (decoder bookkeeping included) over the 32 tokens after a prefill of `length`."""
    total, steps = 0.0, 0
    while total < 0.5:
        decoder, tokens = make_decoder(batch), [[1] * length for _ in range(batch)]
        decoder.next_logits(range(batch), tokens)
        for _ in range(min(32, context - length - 1)):
            for t in tokens:
                t.append(1)
            start = time.perf_counter()
            decoder.next_logits(range(batch), tokens)
            total, steps = total + time.perf_counter() - start, steps + 1
    return total / steps


def fixed_cost(forward: ForwardFn, seconds: float) -> ForwardFn:
    """The real model's logits, but the call always takes `seconds` more than computing row 0 alone would."""

    def run(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        logits = forward(token_ids[:1], mask[:1])
        return np.broadcast_to(logits, (len(token_ids), *logits.shape[1:]))

    return run
