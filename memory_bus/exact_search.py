"""Exact top-k search over a matrix of rows, and the merge of partial results.

Score contract (as :mod:`hivemem.memory_bus.index`): the inner product, higher is more
similar, ties broken by the lower id; missing places hold score ``-inf`` and id ``-1``.

**The same bits whatever the batch.** A float32 matrix product rounds each score in a
way that depends on the product's shape: OpenBLAS picks its kernels and blocking by it,
so the same query and row scored 0.882441998 alone and 0.882441938 in a batch of three
(and a matrix-vector product over a subset of the rows differs again from one over all).
Two rows whose products are equal then got different scores, ranked by that noise. A
run's hosts each send their agents' queries in one batch, so the results of a seeded run
depended on how many hosts it had. Here the float32 product only *chooses*: every row
whose float32 score is within twice the product's error bound of the k-th best is a
candidate, so the true top k are among them. Each candidate is then scored on its own by
:func:`pair_scores` (float64, rounded to float32), which gives the same bits for the
same query and row whichever path, batch or subset computes it, and the candidates are
ranked by that score, then by id. Equal products then get equal scores, and the lower id
wins, as the contract says. (Two float64 sums of equal value round apart only when the
value lies within ~1e-14 of a float32 rounding point.)
"""

from __future__ import annotations

import numpy as np

_UNIT = 2.0**-24  # float32's unit roundoff
_CHUNK = 1 << 16  # candidates scored at a time (bounds the float64 copies)


def empty_hits(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` rows of ``k`` missing places."""
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


def error_bound(dim: int) -> float:
    """``g`` with ``|float32 dot(q, v) - dot(q, v)| <= g * |q| * |v|`` for vectors of
    ``dim`` floats, whatever the order of the sum (Higham's gamma_dim)."""
    du = dim * _UNIT
    return du / (1.0 - du)


def pair_scores(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``queries[i] . rows[i]`` for each ``i`` (a single query: against every row), in
    float64, rounded to float32.

    Each pair is summed on its own, by the same loop whatever else is computed with it
    (``np.vecdot``; a one-dimensional query broadcast gives the same bits as the query
    repeated): the score every search path reports.
    """
    return np.vecdot(queries.astype(np.float64), rows.astype(np.float64)).astype(np.float32)


def best(
    ids: np.ndarray, vecs: np.ndarray, queries: np.ndarray, k: int, norm: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ``min(k, n)`` best rows per query, best first: (scores, ids) of shape (m, min(k, n)).

    Args:
        ids: The rows' ids.
        vecs: The (n, dim) float32 rows.
        queries: The (m, dim) float32 queries.
        k: How many per query.
        norm: An upper bound on the rows' L2 norms (it sets the candidates' margin).
    """
    m, n = len(queries), len(ids)
    if n == 0:
        return empty_hits(m, 0)
    rough = queries @ vecs.T
    if m == 1:
        return _best_of_one(ids, vecs, queries[0], rough[0], k, norm)
    if n <= k:
        rows, cols = np.divmod(np.arange(m * n), n)
    else:
        kth = np.partition(rough, n - k, axis=1)[:, n - k]
        margin = 2.0 * error_bound(vecs.shape[1]) * norm * np.linalg.norm(queries, axis=1)
        rows, cols = np.nonzero(rough >= (kth - margin)[:, None])
    scores = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), _CHUNK):
        part = slice(start, start + _CHUNK)
        scores[part] = pair_scores(queries[rows[part]], vecs[cols[part]])
    found = ids[cols]
    order = np.lexsort((found, -scores, rows))  # by query, then score, then id
    rows, scores, found = rows[order], scores[order], found[order]
    starts = np.searchsorted(rows, np.arange(m))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < k
    width = min(k, n)  # every query has at least that many candidates
    out_scores, out_ids = empty_hits(m, width)
    out_scores[rows[keep], rank[keep]] = scores[keep]
    out_ids[rows[keep], rank[keep]] = found[keep]
    return out_scores, out_ids


def _best_of_one(
    ids: np.ndarray, vecs: np.ndarray, query: np.ndarray, rough: np.ndarray, k: int, norm: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best` of one query (``rough``: its float32 scores), in fewer numpy calls."""
    n = len(ids)
    if n <= k:
        cols = np.arange(n)
    else:
        kth = np.partition(rough, n - k)[n - k]
        margin = 2.0 * error_bound(len(query)) * norm * float(np.sqrt(query @ query))
        cols = np.flatnonzero(rough >= kth - margin)
    scores, found = pair_scores(query, vecs[cols]), ids[cols]
    order = np.lexsort((found, -scores))[:k]
    return scores[order][None], found[order][None]


def search_small(
    ids: np.ndarray, vecs: np.ndarray, queries: np.ndarray, k: int, norm: float
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted top ``k`` of a few rows, padded to ``k`` places (see :func:`best`)."""
    scores, found = best(ids, vecs, queries, k, norm)
    if scores.shape[1] == k:
        return scores, found
    pad_s, pad_i = empty_hits(len(queries), k - scores.shape[1])
    return np.hstack([scores, pad_s]), np.hstack([found, pad_i])


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
