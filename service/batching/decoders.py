"""What the generation scheduler asks of a model: next-token logits for a batch of running sequences.

A `Decoder` may keep state per sequence between steps (a KV cache) — the scheduler tells it which
sequences left. Two implementations:

- `RecomputeDecoder` wraps a full-sequence `forward(token_ids, attention_mask) -> logits` and recomputes
  every sequence in full each step (right-padded batch, logits read at each last real token). Keeps no
  state, so it also serves models exported without a KV cache.
- `KVCacheDecoder` (`kv_cache.py`): keeps each sequence's keys and values for a step model (the contract on
  `service.config.Generation.step_model`), and feeds the model only the new token.

No ONNX Runtime, gRPC or tokenizer in here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from service.batching.sampling import sample_batch
from service.batching.sequences import collate
from service.errors import InferenceError
from service.types import SamplingParams

ForwardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(token_ids int64 (batch, length), attention_mask int64 (batch, length)) → logits (batch, length, vocab)."""


@runtime_checkable
class Decoder(Protocol):
    def next_logits(self, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits (batch, vocab) of the token that follows each sequence.

        `seq_ids[i]` names the sequence whose tokens so far are `tokens[i]`. A sequence seen for the first
        time is new (prefill); one seen before has grown by the one token sampled from its last logits.
        Runs in a worker thread, one call at a time.
        """
        ...

    def release(self, seq_ids: Iterable[int]) -> None:
        """Forget these sequences (finished, cancelled or failed). Called before the next `next_logits`,
        from the same thread; ids the decoder does not know are ignored."""
        ...


def next_tokens(
    decoder: Decoder,
    ids: Sequence[int],
    tokens: Sequence[list[int]],
    prompts: Sequence[int],
    sampling: Sequence[SamplingParams],
    rngs: Sequence[np.random.Generator],
) -> list[int]:
    """One generation step on `decoder`: the logits of every sequence and each one's next token (the tokens
    after its `prompts[i]` prompt tokens feed its repetition penalty). A lane runs it in its thread, or an
    engine process (`engine_process.py`) in its own."""
    logits = decoder.next_logits(ids, tokens)
    if logits.ndim != 2 or len(logits) != len(ids):
        raise InferenceError(f"the decoder returned logits of shape {logits.shape} for {len(ids)} sequences")
    rows = zip(tokens, prompts, sampling, strict=True)
    generated = [t[p:] if s.repetition_penalty != 1.0 else () for t, p, s in rows]
    return sample_batch(logits, sampling, rngs, generated)


class RecomputeDecoder:
    """Every step runs `forward` over whole sequences (no cache)."""

    def __init__(self, forward: ForwardFn, pad_id: int = 0) -> None:
        self._forward = forward
        self._pad_id = pad_id

    def next_logits(self, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        token_ids, mask, lengths = collate(tokens, self._pad_id)
        logits = np.asarray(self._forward(token_ids, mask))
        if logits.ndim != 3 or logits.shape[:2] != token_ids.shape:
            raise InferenceError(f"model returned logits of shape {logits.shape} for a batch of {token_ids.shape}")
        return logits[np.arange(len(tokens)), lengths - 1]

    def release(self, seq_ids: Iterable[int]) -> None:
        pass
