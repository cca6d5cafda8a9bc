"""KV-cache decoding with a model's `generation.step_model`: the scheduler's `Decoder` on ONNX Runtime.

The decoder owns one cache buffer per layer for keys and one for values, each [rows, heads, span,
head_dim] with a row per active sequence (rows = max_active_sequences). Active sequences occupy rows
0..n-1: when one leaves, the last row moves into its place. So a decoding step in which every cached
sequence takes part (the usual case) feeds the graph views `buffer[:n]` of the buffers, with no copy, and
only the new keys and values (one position per sequence) are written back.

The span is the number of cache positions fed to the graph: the smallest power of two (at least
`min_span`, at most the context) that holds the longest cached sequence. Attention over positions past a
row's length is masked out, so a shorter span gives the same logits for less work: on the committed model a
9-row step takes 0.64 ms at span 64 and 1.43 ms at the full context of 256. The buffers are reallocated
(the cached positions copied) when the longest sequence needs a larger span, or, after it leaves, fits a
smaller one.

- A sequence the decoder has not seen is prefilled: all its tokens in one run (several new sequences
  together, right-padded; causal attention keeps padding out of the real positions), written to a fresh row.
- A known sequence that grew by one token is decoded: that token, at its position, against its row.
- Anything else (a sequence whose tokens do not follow its cache) is dropped and prefilled again.

The graph's contract is documented on `service.config.Generation.step_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from service.errors import InferenceError

MIN_SPAN = 32
"""The shortest span of cache positions fed to the step graph."""

RunFn = Callable[[dict[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]
"""`ModelSession.run(feed, output_names) -> {name: array}` of the step model."""


class KVCacheDecoder:
    """Implements `service.batching.decoders.Decoder`; called from one worker thread at a time."""

    def __init__(
        self,
        run: RunFn,
        layers: int,
        heads: int,
        head_dim: int,
        rows: int,
        context: int,
        pad_id: int = 0,
        min_span: int = MIN_SPAN,
    ) -> None:
        self._run = run
        self._context = context
        self._pad_id = pad_id
        self._min_span = max(1, min(min_span, context))
        self._shape = (rows, heads, head_dim)
        names = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
        self._cache = {name: self._buffer(self._min_span) for name in names}
        self._outputs = ["logits", *(name.replace("past_", "new_") for name in self._cache)]
        self._no_past = (heads, 0, head_dim)
        self._mask = np.zeros((rows, self._min_span), np.int64)
        """past_mask of each row: 1 for its cached positions."""
        self._ids: list[int] = []
        """Sequence id in each occupied row, in row order."""
        self._row: dict[int, int] = {}
        self._length = np.zeros(rows, np.int64)
        """Tokens cached in each row."""

    @property
    def active(self) -> int:
        return len(self._ids)

    @property
    def span(self) -> int:
        """The cache positions per row that the next graph run is fed."""
        return int(self._mask.shape[1])

    def _buffer(self, span: int) -> np.ndarray:
        rows, heads, head_dim = self._shape
        return np.zeros((rows, heads, span, head_dim), np.float32)

    def _fit(self, longest: int) -> None:
        """Buffers of the span that holds `longest` positions per row, keeping what the rows have cached."""
        span = self._min_span
        while span < longest:
            span *= 2
        span = min(span, self._context)
        if span == self.span:
            return
        count, keep = len(self._ids), min(span, self.span)
        for name, old in self._cache.items():
            self._cache[name] = new = self._buffer(span)
            new[:count, :, :keep] = old[:count, :, :keep]
        mask = np.zeros((len(self._mask), span), np.int64)
        mask[:count, :keep] = self._mask[:count, :keep]
        self._mask = mask

    def release(self, seq_ids: Iterable[int]) -> None:
        for seq_id in seq_ids:
            row = self._row.pop(seq_id, None)
            if row is None:
                continue
            last, moved = len(self._ids) - 1, self._ids.pop()
            if row != last:
                self._ids[row], self._row[moved] = moved, row
                length = self._length[last]
                for buffer in self._cache.values():
                    buffer[row, :, :length] = buffer[last, :, :length]
                self._length[row] = length
                self._mask[row] = self._mask[last]
            self._length[last] = 0
            self._mask[last] = 0

    def next_logits(self, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        stale = [
            s
            for s, t in zip(seq_ids, tokens, strict=True)
            if s in self._row and self._length[self._row[s]] != len(t) - 1
        ]
        self.release(stale)
        cached = int(self._length[: len(self._ids)].max(initial=0))
        self._fit(max(cached, max((len(t) for t in tokens), default=0)))
        decode = [i for i, s in enumerate(seq_ids) if s in self._row]
        prefill = [i for i, s in enumerate(seq_ids) if s not in self._row]
        parts = []
        if decode:
            parts.append((decode, self._decode([seq_ids[i] for i in decode], [tokens[i][-1] for i in decode])))
        if prefill:
            parts.append((prefill, self._prefill([seq_ids[i] for i in prefill], [tokens[i] for i in prefill])))
        logits = np.empty((len(seq_ids), parts[0][1].shape[-1]), np.float32)
        for rows, values in parts:
            logits[rows] = values
        return logits

    def _decode(self, seq_ids: list[int], last_tokens: list[int]) -> np.ndarray:
        rows = np.array([self._row[s] for s in seq_ids])
        contiguous = len(rows) == len(self._ids)
        if contiguous:  # every cached sequence takes part: rows 0..n-1, fed as views in row order
            feed_rows, token_ids = np.arange(len(rows)), np.empty(len(rows), np.int64)
            token_ids[rows] = last_tokens
            past = {name: buffer[: len(rows)] for name, buffer in self._cache.items()}
            mask = self._mask[: len(rows)]
        else:  # some sit this step out: gather their rows (a copy)
            feed_rows, token_ids = rows, np.array(last_tokens, np.int64)
            past = {name: buffer[rows] for name, buffer in self._cache.items()}
            mask = self._mask[rows]
        positions = self._length[feed_rows]
        feed: dict[str, np.ndarray] = {
            "token_ids": token_ids[:, None],
            "positions": positions[:, None],
            "past_mask": mask,
        }
        feed |= past
        out = self._checked(self._run(feed, self._outputs), len(rows), 1)
        for name, buffer in self._cache.items():
            buffer[feed_rows, :, positions] = out[name.replace("past_", "new_")][:, :, 0]
        self._length[feed_rows] += 1
        self._mask[feed_rows, positions] = 1
        logits = out["logits"][:, 0]
        return logits[rows] if contiguous else logits

    def _prefill(self, seq_ids: list[int], sequences: list[Sequence[int]]) -> np.ndarray:
        lengths = np.array([len(s) for s in sequences])
        count, longest = len(sequences), int(lengths.max())
        first = len(self._ids)
        if first + count > len(self._length) or longest > self._context:
            raise InferenceError(
                f"KV cache: {count} new sequences (up to {longest} tokens) do not fit beside "
                f"{first} of {len(self._length)} rows of {self._context} positions"
            )
        token_ids = np.full((count, longest), self._pad_id, np.int64)
        for i, sequence in enumerate(sequences):
            token_ids[i, : lengths[i]] = sequence
        positions = np.tile(np.arange(longest), (count, 1))
        feed = {"token_ids": token_ids, "positions": positions, "past_mask": np.zeros((count, 0), np.int64)}
        feed |= dict.fromkeys(self._cache, np.zeros((count, *self._no_past), np.float32))
        out = self._checked(self._run(feed, self._outputs), count, longest)
        for i, (seq_id, length) in enumerate(zip(seq_ids, lengths, strict=True)):
            row = first + i
            for name, buffer in self._cache.items():
                buffer[row, :, :length] = out[name.replace("past_", "new_")][i, :, :length]
            self._length[row] = length
            self._mask[row, :length] = 1
            self._ids.append(seq_id)
            self._row[seq_id] = row
        return out["logits"][np.arange(count), lengths - 1]

    def _checked(self, out: dict[str, np.ndarray], batch: int, new: int) -> dict[str, np.ndarray]:
        logits = out["logits"]
        if logits.ndim != 3 or logits.shape[:2] != (batch, new):
            raise InferenceError(f"step model returned logits of shape {logits.shape} for ({batch}, {new}) tokens")
        return out
