"""Exact top-k search over a matrix of rows, and the merge of partial results.

Score contract (as :mod:`hivemem.memory_bus.index`): the inner product, higher is more
similar, ties broken by the lower id; missing places hold score ``-inf`` and id ``-1``.
"""

from __future__ import annotations

import numpy as np


def empty_hits(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` rows of ``k`` missing places."""
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


def search_small(
    ids: np.ndarray, vecs: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted top ``k`` of a few rows: one product and one sort, no partition or merge."""
    n = len(ids)
    if n == 0:
        return empty_hits(len(queries), k)
    scores = queries @ vecs.T
    order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]
    top_scores, top_ids = scores[np.arange(len(scores))[:, None], order], ids[order]
    if n >= k:
        return top_scores, top_ids
    pad_s, pad_i = empty_hits(len(queries), k - n)
    return np.hstack([top_scores, pad_s]), np.hstack([top_ids, pad_i])


def search_exact(
    ids: np.ndarray, vecs: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of the rows per query, unsorted (:func:`top_k` sorts and merges)."""
    if len(ids) == 0:
        return empty_hits(len(queries), 0)
    scores = queries @ vecs.T
    ids = np.broadcast_to(ids, scores.shape)
    if scores.shape[1] > k:
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, keep, axis=1)
        ids = np.take_along_axis(ids, keep, axis=1)
    return scores.astype(np.float32, copy=False), np.ascontiguousarray(ids)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (-score, id) and keep ``k``, padding with (-inf, -1)."""
    m = len(scores)
    if scores.shape[1] < k:
        pad_s, pad_i = empty_hits(m, k - scores.shape[1])
        scores, ids = np.hstack([scores, pad_s]), np.hstack([ids, pad_i])
    # Missing entries (id -1) sort last whatever their score.
    missing = ids < 0
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, ids), -scores, missing), axis=1)
    order = order[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
