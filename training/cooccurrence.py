"""Word vectors from the training texts alone (no pre-trained data): PPMI of windowed co-occurrence, then SVD.

Used to initialise the sentiment model's embedding so the BiLSTM starts from words that already sit near
the words they keep company with; the classifier still learns everything from the training split.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD


def cooccurrence(sequences: list[list[int]], vocab_size: int, window: int = 4) -> sparse.csr_matrix:
    """Symmetric counts of token pairs at most `window` apart, weighted 1/distance."""
    rows, cols, weights = [], [], []
    for seq in sequences:
        ids = np.asarray(seq, dtype=np.int64)
        for distance in range(1, min(window, len(ids) - 1) + 1):
            rows += [ids[:-distance], ids[distance:]]
            cols += [ids[distance:], ids[:-distance]]
            weights += [np.full(2 * (len(ids) - distance), 1.0 / distance)]
    if not rows:
        return sparse.csr_matrix((vocab_size, vocab_size))
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    return sparse.coo_matrix((w, (r, c)), shape=(vocab_size, vocab_size)).tocsr()


def ppmi_svd_vectors(
    sequences: list[list[int]], vocab_size: int, dim: int, seed: int, window: int = 4, scale: float = 0.05
) -> np.ndarray:
    """(vocab_size, dim) float32 vectors; rows of unseen ids (and id 0, padding) are zero.

    Positive PMI with context counts smoothed by ^0.75, reduced by truncated SVD to U * sqrt(S), then scaled
    so the standard deviation is `scale` (about a fresh Keras embedding's).
    """
    counts = cooccurrence(sequences, vocab_size, window).tocoo()
    words = np.asarray(counts.sum(axis=1)).ravel()
    contexts = words**0.75
    pmi = np.log(counts.data * contexts.sum() / (words[counts.row] * contexts[counts.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)
    components = min(dim, vocab_size - 1)
    svd = TruncatedSVD(n_components=components, random_state=seed)
    vectors = svd.fit_transform(ppmi) / np.sqrt(np.maximum(svd.singular_values_, 1e-12))
    out = np.zeros((vocab_size, dim), dtype=np.float32)
    out[:, :components] = vectors
    out[0] = 0.0
    std = out[words > 0].std() or 1.0
    return out * np.float32(scale / std)
