"""Exact search gives the same hits, to the bit, whatever batch a query comes in.

A run's hosts each send their agents' queries as one batch, so a seeded run gives the
same results on 1 host or 3 only if a query's hits do not depend on the other queries
of its batch (see hivemem.memory_bus.exact_search).
"""

from __future__ import annotations

import numpy as np
import pytest
from hivemem.memory_bus.config import (
    IndexBuild,
    IndexConfig,
    IndexKind,
    StoreConfig,
    TierConfig,
)
from hivemem.memory_bus.index import VectorIndex
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.tiers import SearchRequest

EXACT = IndexConfig(kind=IndexKind.FLAT)


def gaussian(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.mark.parametrize("rows", [5, 32, 300, 3000])
def test_a_query_scores_the_same_bits_alone_and_in_any_batch(rows: int) -> None:
    """Alone (the tiny path for a few rows), or among 2, 7 or 20 other queries (a float32
    matrix product of another shape, which rounds differently), a query gets the same
    ids and the same score bits."""
    dim = 384
    index = VectorIndex(dim, EXACT)
    index.add(np.arange(rows, dtype=np.int64), gaussian(rows, dim, 0))
    queries = gaussian(20, dim, 1)
    k = 5
    alone = [index.search(queries[i : i + 1], k) for i in range(len(queries))]
    for size in (2, 7, 20):
        for start in range(0, len(queries), size):
            scores, ids = index.search(queries[start : start + size], k)
            for i in range(len(scores)):
                want_scores, want_ids = alone[start + i]
                assert np.array_equal(ids[i], want_ids[0])
                assert scores[i].tobytes() == want_scores[0].tobytes()
    if rows <= 32:  # the private tier's path for one query and a tiny index
        for i in range(len(queries)):
            tiny = index.top_tiny(queries[i : i + 1], k)
            assert tiny is not None
            assert [item_id for _, item_id in tiny] == alone[i][1][0].tolist()
            assert np.float32([s for s, _ in tiny]).tobytes() == alone[i][0][0].tobytes()


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(kind=IndexKind.HNSW, build=IndexBuild.INLINE, build_batch=64),
        IndexConfig(
            kind=IndexKind.IVF, ivf_nlist=16, ivf_nprobe=2, build=IndexBuild.INLINE, build_batch=64
        ),
    ],
    ids=["hnsw", "ivf"],
)
def test_an_approximate_namespace_answers_a_query_alike_in_any_batch(
    config: IndexConfig,
) -> None:
    """The approximate part too: 40 queries at once (above faiss's BLAS threshold, where
    IVF's coarse quantizer scores the centroids with a matrix product), 7 or alone give
    a query the same hits. At faiss's default threshold the centroid scores of a batch
    differ in their last bits from a lone query's; the lists chosen, and the hits, do not."""
    dim = 384
    index = VectorIndex(dim, config.model_copy(update={"approx_threshold": 1}))
    index.add(np.arange(2000, dtype=np.int64), gaussian(2000, dim, 2))
    index.add(np.arange(2000, 2010, dtype=np.int64), gaussian(10, dim, 4))  # exact rows too
    assert index.kind == config.kind.value
    queries = gaussian(40, dim, 3)
    alone = [index.search(queries[i : i + 1], 5) for i in range(len(queries))]
    for size in (7, 40):
        for start in range(0, len(queries), size):
            scores, ids = index.search(queries[start : start + size], 5)
            for i in range(len(scores)):
                assert np.array_equal(ids[i], alone[start + i][1][0])
                assert scores[i].tobytes() == alone[start + i][0][0].tobytes()


def test_equal_products_tie_and_the_lower_id_wins() -> None:
    """Rows whose products with the query are equal (the query's weights are the same on
    the coordinates they swap) get equal scores, ranked by id, in every batch; rounded in
    float32 they came out apart and ranked by that noise."""
    dim = 384
    rng = np.random.default_rng(3)
    query = rng.standard_normal(dim).astype(np.float32)
    query[dim // 2 :] = query[: dim // 2]  # the same weight on i and i + dim/2
    base = rng.standard_normal((40, dim)).astype(np.float32)
    swapped = np.concatenate([base[:, dim // 2 :], base[:, : dim // 2]], axis=1)
    rows = np.empty((80, dim), dtype=np.float32)
    rows[0::2], rows[1::2] = swapped, base  # each pair: the swapped copy gets the lower id
    index = VectorIndex(dim, EXACT)
    index.add(np.arange(80, dtype=np.int64), rows)
    others = rng.standard_normal((6, dim)).astype(np.float32)
    for batch in (query[None], np.vstack([others[:2], query, others[2:]])):
        scores, ids = index.search(batch, 80)
        row = 0 if len(batch) == 1 else 2
        pairs = ids[row].reshape(-1, 2)
        assert (pairs[:, 0] % 2 == 0).all() and (pairs[:, 1] == pairs[:, 0] + 1).all()
        assert (scores[row][0::2] == scores[row][1::2]).all()


def test_shared_memory_searched_in_one_batch_or_three_answers_alike() -> None:
    """The store's search_many, as a run's hosts call it: three agents' queries on their
    group's namespace in one batch (1 host) or one each (3 hosts) get the same hits."""
    store = MemoryStore(StoreConfig(dim=384, shared=TierConfig(capacity=50)))
    agents = [Caller(f"a{i}", groups=frozenset({"g"})) for i in range(3)]
    texts = [f"stream item k{k} holds {v}" for k in range(12) for v in ("harbor", "juniper")]
    for text in texts:
        store.shared.write(agents[0], "g", NewItem(text), now=0.0)
    queries = [store.embed([f"stream item k{k} holds"])[0] for k in (3, 7, 3)]
    requests = [SearchRequest(a, "g", q, 4, None) for a, q in zip(agents, queries, strict=True)]

    def seen(hits: list) -> list[tuple[int, bytes]]:
        return [(h.item.id, np.float32(h.score).tobytes()) for h in hits]

    together = [seen(hits) for hits in store.shared.search_many(requests, now=None)]
    apart = [seen(store.shared.search_many([r], now=None)[0]) for r in requests]
    assert together == apart
