"""Next-token sampling in numpy: repetition penalty, temperature, top-k, top-p, with each request's own
random generator.

A row whose `repetition_penalty` is above 1 first has the logits of the tokens its sequence has generated
so far (`generated`) penalized, as CTRL and Hugging Face `transformers` do: divided by the penalty where
positive, multiplied where negative; greedy rows too.

`sample_batch` draws one token per row of a step's logits, vectorized across the batch: greedy rows take
one argmax; sampled rows are grouped by their top-k, and each group works on its k candidate tokens only
(all tokens at or above the row's k-th largest float32 logit, found by `_top_k` among the few tokens above
a cheap bound, or by `argpartition` on small vocabularies; then temperature, softmax, top-p and the draw on
[rows, k] arrays). Rows without top-k but with top-p look for their nucleus among their most probable tokens
(`_nucleus_heads`), with the softmax's normalizer over the whole vocabulary; rows with neither use the whole
vocabulary. A row whose k-th logit is tied with tokens beyond the k keeps them all, as a threshold on the
logits would.

Each sampled token takes exactly one draw from its request's generator (greedy takes none), and every
operation works row by row, so a seed gives the same tokens whatever else runs in the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.types import SamplingParams


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, generated: Sequence[int] = ()) -> int:
    """One token id from a vector of next-token logits, after the tokens of `generated` so far."""
    return sample_batch(logits[None, :], [params], [rng], [generated])[0]


def sample_batch(
    logits: np.ndarray,
    params: Sequence[SamplingParams],
    rngs: Sequence[np.random.Generator],
    generated: Sequence[Sequence[int]] | None = None,
) -> list[int]:
    """One token id per row of `logits` (batch, vocab), row i with `params[i]`, `rngs[i]` and the tokens its
    sequence generated so far, `generated[i]` (None: none, so no repetition penalty applies)."""
    if generated is not None:
        logits = penalize(logits, params, generated)
    greedy = [p.temperature == 0 for p in params]
    tokens = np.argmax(logits, axis=1) if any(greedy) else np.zeros(len(params), dtype=np.int64)
    for rows, candidates, probs in _groups(logits, params):
        cdf = np.cumsum(probs, axis=1)
        targets = np.array([rngs[i].random() for i in rows]) * cdf[:, -1]
        index = (cdf <= targets[:, None]).sum(axis=1)  # searchsorted(cdf, target, side="right")
        tokens[rows] = candidates[np.arange(len(rows)), np.minimum(index, candidates.shape[1] - 1)]
    return tokens.tolist()


def penalize(logits: np.ndarray, params: Sequence[SamplingParams], generated: Sequence[Sequence[int]]) -> np.ndarray:
    """`logits` with each row's repetition penalty applied to the tokens in `generated[row]` (a copy, when
    any row has one). All rows at once, by flat index: a token generated twice is read twice from the
    unpenalized logits and written twice with the same value, so it is penalized once."""
    rows = [i for i, p in enumerate(params) if p.repetition_penalty != 1.0 and len(generated[i])]
    if not rows:
        return logits
    vocab = logits.shape[1]
    keys = np.concatenate([np.asarray(generated[i], dtype=np.int64) + i * vocab for i in rows])
    penalty = np.array([p.repetition_penalty for p in params], dtype=logits.dtype)[keys // vocab]
    out = np.array(logits, copy=True)
    flat = out.reshape(-1)
    values = flat[keys]
    flat[keys] = np.where(values > 0, values / penalty, values * penalty)
    return out


def _groups(logits: np.ndarray, params: Sequence[SamplingParams]) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """The sampled (temperature > 0) rows in groups of equal candidate count: (rows, candidate token ids
    (rows, k) in increasing order, their probabilities (rows, k))."""
    vocab = logits.shape[1]
    by_k: dict[int, list[int]] = {}
    for i, p in enumerate(params):
        if p.temperature != 0:
            by_k.setdefault(p.top_k if 0 < p.top_k < vocab else vocab, []).append(i)
    groups: list[tuple[list[int], np.ndarray, np.ndarray]] = []
    for k, rows in by_k.items():
        block = logits if len(rows) == len(logits) else logits[rows]  # rows are in order: all of them
        if k < vocab:
            for at, candidates, values in _candidates(block, k):
                chosen = [rows[j] for j in at]
                groups.append((chosen, candidates, _probabilities(values, [params[i] for i in chosen])))
            continue
        nucleus = [j for j, i in enumerate(rows) if params[i].top_p < 1.0] if vocab >= HEAD * 4 else []
        settled: set[int] = set()
        if nucleus:
            heads = block if len(nucleus) == len(rows) else block[nucleus]
            for at, candidates, probs in _nucleus_heads(heads, [params[rows[j]] for j in nucleus]):
                groups.append(([rows[nucleus[j]] for j in at], candidates, probs))
                settled.update(nucleus[j] for j in at)
        if len(settled) < len(rows):  # over the whole vocabulary
            left = [j for j in range(len(rows)) if j not in settled]
            block, rows = (block, rows) if not settled else (block[left], [rows[j] for j in left])
            probs = _probabilities(block, [params[i] for i in rows])
            groups.append((rows, np.broadcast_to(np.arange(vocab), block.shape), probs))
    return groups


def _candidates(block: np.ndarray, k: int, pooled: bool = True) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """Each row's tokens whose logits are at least its k-th largest, in groups of equal count: (the rows of
    `block`, their candidate token ids (rows, count) in increasing order, their logits). A row whose k-th logit
    is tied with tokens beyond the k keeps them all, in a group of its own. `pooled`: try `_top_k` first (it
    pays for a k well below its pools)."""
    vocab = block.shape[1]
    found = _top_k(block, k) if pooled else None
    if found is None:
        top = np.argpartition(block, vocab - k, axis=1)[:, vocab - k :]
        top.sort(axis=1)
        values = block[np.arange(len(block))[:, None], top]
        kth = values.min(axis=1)
        ties = (block >= kth[:, None]).sum(axis=1) > k
        if not ties.any():
            return [(list(range(len(block))), top, values)]
        plain = np.flatnonzero(~ties)
        groups = [(plain.tolist(), top[plain], values[plain])] if len(plain) else []
        for j in np.flatnonzero(ties):
            candidates = np.flatnonzero(block[j] >= kth[j])[None, :]
            groups.append(([int(j)], candidates, block[j, candidates]))
        return groups
    at, tokens, values = found  # each row's candidates, in token order, from at[j] to at[j + 1]
    counts = np.diff(at)
    if (counts == k).all():
        return [(list(range(len(block))), tokens.reshape(-1, k), values.reshape(-1, k))]
    plain = np.flatnonzero(counts == k)
    flat = (at[plain][:, None] + np.arange(k)).ravel()
    groups = [(plain.tolist(), tokens[flat].reshape(-1, k), values[flat].reshape(-1, k))] if len(plain) else []
    for j in np.flatnonzero(counts != k):  # the k-th logit is tied beyond the k: all of them
        groups.append(([int(j)], tokens[None, at[j] : at[j + 1]], values[None, at[j] : at[j + 1]]))
    return groups


HEAD = 64
"""The most probable tokens among which `_nucleus_heads` looks for a top-p nucleus over the whole vocabulary."""


def _nucleus_heads(
    block: np.ndarray, params: Sequence[SamplingParams]
) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """Top-p over the whole vocabulary (no top-k) without a softmax, sort and cumulative sum over all of it:
    the nucleus is a prefix of the tokens in decreasing probability, so it lies among a row's `HEAD` most
    probable tokens whenever they reach top_p (usual at the temperatures used for text; otherwise among four
    times as many, and so on up to a quarter of the vocabulary). Their probabilities are the softmax over the
    whole row: their own exponentials in float64, as `_probabilities` computes them, over a normalizer whose part
    outside the head (the tokens left out, however many) is summed from float32 exponentials, several times
    cheaper. That part is off by about 1e-7 of itself, and it is at most 1 - top_p of the whole once the head
    holds the nucleus, so a cumulative sum moves by less than 1e-7 (1 - top_p): the nucleus changes only where
    its sum lies that close to top_p. Returns the groups it settled: rows of `block`, candidate ids in increasing
    order, the nucleus's probabilities (zero outside it). Rows whose nucleus reaches beyond that are left out:
    the caller takes them over the whole vocabulary."""
    temperatures = np.array([max(p.temperature, 1e-6) for p in params])
    top_p = np.array([p.top_p for p in params])
    peak = block.max(axis=1)
    exps = np.subtract(block, peak[:, None])
    exps *= (1 / temperatures).astype(np.float32)[:, None]
    np.exp(exps, out=exps)
    whole = exps.sum(axis=1, dtype=np.float64)
    flat, vocab = exps.reshape(-1), block.shape[1]
    groups: list[tuple[list[int], np.ndarray, np.ndarray]] = []

    def settle(rows: np.ndarray, candidates: np.ndarray, values: np.ndarray) -> None:
        """Adds the rows whose nucleus lies among their candidates (a prefix in decreasing probability)."""
        t = temperatures[rows][:, None]
        probs = np.exp(values.astype(np.float64) / t - peak[rows].astype(np.float64)[:, None] / t)
        head = flat[rows[:, None] * vocab + candidates].sum(axis=1, dtype=np.float64)
        outside = np.maximum(whole[rows] - head, 0.0)  # the same float32 terms: their sum outside the head
        probs /= (probs.sum(axis=1) + outside)[:, None]
        last, keep = _prefix(probs, top_p[rows])
        inside = np.flatnonzero(last < probs.shape[1])  # the nucleus ends within the candidates
        if len(inside):
            nucleus = np.where(keep, probs, 0.0)[inside]
            groups.append((rows[inside].tolist(), candidates[inside], nucleus / nucleus.sum(axis=1, keepdims=True)))

    pending, size = np.arange(len(block)), HEAD
    while len(pending) and size * 4 <= block.shape[1]:
        settled = len(groups)
        heads = block if len(pending) == len(block) else block[pending]
        for at, candidates, values in _candidates(heads, size, pooled=size == HEAD):
            settle(pending[at], candidates, values)
        pending = np.setdiff1d(pending, [row for rows, _, _ in groups[settled:] for row in rows])
        size *= 4
    return groups


POOLS = 256
"""`_top_k` pools the vocabulary into this many (at least k) disjoint sets to bound the k-th logit from below."""


def _top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each row's tokens whose logits are at least its k-th largest: row j's token ids (in increasing
    order) and logits are `tokens[at[j] : at[j + 1]]` and `values[...]`; k of them, or more on a tie.

    Avoids a partition of the whole vocabulary: the k-th largest of the maxima of `POOLS` disjoint pools
    of tokens is at most the k-th largest logit, and usually leaves few tokens at or above it; the exact
    k-th largest is then found among those. None where this does not apply or does not pay (a single row,
    few tokens per pool, NaN or infinite bounds, logits that are not floats): the caller partitions the
    whole vocabulary instead."""
    rows, vocab = block.shape
    pools = max(POOLS, k)
    size = vocab // pools
    if rows < 2 or size < 4 or block.dtype.kind != "f":  # one row: argpartition is faster
        return None
    maxima = block[:, : size * pools].reshape(rows, size, pools).max(axis=1)
    bound = np.partition(maxima, pools - k, axis=1)[:, pools - k]
    if not np.isfinite(bound).all() or np.isnan(maxima).any() or np.isnan(block[:, size * pools :]).any():
        return None
    flat = np.flatnonzero(block >= bound[:, None])  # a 2-d np.nonzero is many times slower
    row, token = np.divmod(flat, vocab)
    value = block.ravel()[flat]
    counts = np.bincount(row, minlength=rows)
    at = np.zeros(rows + 1, np.int64)
    np.cumsum(counts, out=at[1:])
    width = int(counts.max())
    padded = np.full(rows * width, -np.inf, block.dtype)
    padded[row * width + np.arange(len(flat)) - at[row]] = value
    kth = np.partition(padded.reshape(rows, width), width - k, axis=1)[:, width - k]
    keep = value >= kth[row]
    np.cumsum(np.bincount(row[keep], minlength=rows), out=at[1:])
    return at, token[keep], value[keep]


def _probabilities(logits: np.ndarray, params: Sequence[SamplingParams]) -> np.ndarray:
    """Temperature, softmax and top-p over each row of candidate logits (float64)."""
    temperatures = np.array([max(p.temperature, 1e-6) for p in params])
    scaled = logits.astype(np.float64) / temperatures[:, None]
    probs = np.exp(scaled - np.max(scaled, axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    top_p = np.array([p.top_p for p in params])
    if np.all(top_p >= 1.0):
        return probs
    if probs.shape[1] > WIDE:
        for row in np.flatnonzero(top_p < 1.0):
            probs[row] = _nucleus_wide(probs[row], top_p[row])
        return probs
    return np.where((top_p < 1.0)[:, None], _nucleus(probs, top_p), probs)


WIDE = 256
"""Candidate counts above this take `_nucleus_wide`, row by row."""


def _nucleus_wide(probs: np.ndarray, top_p: float) -> np.ndarray:
    """`_nucleus` of one row over many candidates: sorts only the most probable ones, widening the set
    (all tokens at or above a threshold, so ties stay in token order) until they reach top_p."""
    size = 64
    while True:
        if size >= len(probs):
            head = np.arange(len(probs))
        else:
            head = np.flatnonzero(probs >= np.partition(probs, len(probs) - size)[len(probs) - size])
        order = head[np.argsort(-probs[head], kind="stable")]
        cumulative = np.cumsum(probs[order])
        if cumulative[-1] >= top_p or len(head) == len(probs):
            break
        size *= 4
    keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
    nucleus = np.zeros_like(probs)
    nucleus[keep] = probs[keep]
    return nucleus / nucleus.sum()


def _nucleus(probs: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    """Per row, the most probable tokens whose probabilities reach top_p (ties in token order), renormalized."""
    nucleus = np.where(_prefix(probs, top_p)[1], probs, 0.0)
    return nucleus / nucleus.sum(axis=1, keepdims=True)


def _prefix(probs: np.ndarray, top_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, how many of the most probable tokens (ties in token order) sum to less than top_p, and which
    tokens those are with the next one: (counts, mask). A count equal to the row's length: they never reach it."""
    rows = np.arange(len(probs))[:, None]
    order = np.argsort(-probs, axis=1, kind="stable")
    last = (np.cumsum(probs[rows, order], axis=1) < top_p[:, None]).sum(axis=1)  # searchsorted(cumulative, top_p)
    keep = np.empty(probs.shape, dtype=bool)
    keep[rows, order] = np.arange(probs.shape[1]) <= last[:, None]
    return last, keep
