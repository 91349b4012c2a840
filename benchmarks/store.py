"""Store throughput against raw faiss and numpy brute force, measured in the same run.

For each size it measures
  - writes/s: numpy (append to a matrix), raw faiss (``add`` to the same structure the
    store uses at that size), the store (``write_many`` in batches of 1,024 items);
  - batched search queries/s (batches of 64 queries, k=10) for the same three;
  - the first search of a namespace written in batches of 64, against the next one;
  - recall@10 of the approximate path (HNSW) against exact search, on clustered and on
    uniform random vectors;
and prints the store's figures as ratios of raw faiss. Headline figures come last, one
``name: value`` line each.

    python benchmarks/store.py --quick      # < 1 minute
    python benchmarks/store.py              # 10k and 100k
    python benchmarks/store.py --full-1m    # adds 1M (HNSW build takes several minutes)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import numpy as np
from hivemem.memory_bus.config import IndexConfig, IndexKind, StoreConfig, TierConfig
from hivemem.memory_bus.interfaces import Caller, SearchRequest, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore

K = 10
QUERY_BATCH = 64
WRITE_BATCH = 1024
CALLER = Caller("bench", frozenset({"g"}))


def clustered(
    n: int, dim: int, rng: np.random.Generator, clusters: int = 200, intrinsic: int = 32
) -> np.ndarray:
    """Unit vectors around cluster centres, varying along a few directions.

    Sentence embeddings occupy a subspace of low intrinsic dimension (a few tens) inside
    their 384 coordinates; this mimics that. The basis comes from a fixed generator, so
    data and queries of one run share it.
    """
    basis = np.random.default_rng(12345).standard_normal((intrinsic, dim)).astype(np.float32)
    centres = rng.standard_normal((clusters, intrinsic)).astype(np.float32)
    z = centres[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, intrinsic)).astype(
        np.float32
    )
    x = z @ basis + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def uniform(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors with no structure at all: the hard case for approximate search."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rate(count: int, fn: Callable[[], object]) -> float:
    """``count`` divided by the seconds ``fn`` took."""
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def index_config(approximate: bool) -> IndexConfig:
    return IndexConfig(kind=IndexKind.HNSW if approximate else IndexKind.FLAT, build_batch=1 << 30)


def raw_faiss(dim: int, cfg: IndexConfig, approximate: bool) -> faiss.Index:
    if not approximate:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = cfg.hnsw_ef_construction
    index.hnsw.efSearch = cfg.hnsw_ef_search
    return faiss.IndexIDMap2(index)


def search_batches(queries: np.ndarray, fn: Callable[[np.ndarray], object]) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, len(queries), QUERY_BATCH):
            fn(queries[start : start + QUERY_BATCH])

    return run


def numpy_search(data: np.ndarray) -> Callable[[np.ndarray], object]:
    def search(q: np.ndarray) -> np.ndarray:
        scores = q @ data.T
        return np.argpartition(-scores, K, axis=1)[:, :K]

    return search


def store_write(store: MemoryStore, data: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, len(data), WRITE_BATCH):
            chunk = data[start : start + WRITE_BATCH]
            store.shared.write_many(
                [WriteRequest(CALLER, "g", NewItem(vector=v)) for v in chunk], now=0.0
            )
        store.shared.namespaces["g"].index.flush()

    return run


def store_search(store: MemoryStore) -> Callable[[np.ndarray], object]:
    def search(q: np.ndarray) -> object:
        return store.shared.search_many([SearchRequest(CALLER, "g", v, K) for v in q], now=1.0)

    return search


def measure(n: int, dim: int, approximate: bool, n_queries: int, seed: int) -> dict[str, float]:
    """Every figure for one size and one structure."""
    rng = np.random.default_rng(seed)
    data, queries = clustered(n, dim, rng), clustered(n_queries, dim, rng)
    ids = np.arange(1, n + 1, dtype=np.int64)
    cfg = index_config(approximate)
    out: dict[str, float] = {}
    matrix = np.empty((n, dim), dtype=np.float32)
    out["numpy_write"] = rate(n, lambda: matrix.__setitem__(slice(None), data))
    raw = raw_faiss(dim, cfg, approximate)
    out["faiss_write"] = rate(n, lambda: raw.add_with_ids(data, ids))
    store = MemoryStore(StoreConfig(dim=dim, shared=TierConfig(index=cfg)), embed=False)
    out["store_write"] = rate(n, store_write(store, data))
    store.shared.namespaces["g"].items  # noqa: B018 -- built before the clock: search alone is timed
    out["numpy_search"] = rate(n_queries, search_batches(queries, numpy_search(data)))
    out["faiss_search"] = rate(n_queries, search_batches(queries, lambda q: raw.search(q, K)))
    out["store_search"] = rate(n_queries, search_batches(queries, store_search(store)))
    return out


def written_in_batches(n: int, dim: int, batch: int, rng: np.random.Generator) -> MemoryStore:
    """A store whose namespace ``g`` holds ``n`` uniform vectors written in batches of
    ``batch`` (the bus's shape), none of them read yet (exact index)."""
    data = uniform(n, dim, rng)
    store = MemoryStore(StoreConfig(dim=dim, shared=TierConfig(index=index_config(False))))
    for start in range(0, n, batch):
        chunk = data[start : start + batch]
        store.shared.write_many(
            [WriteRequest(CALLER, "g", NewItem(vector=v)) for v in chunk], now=0.0
        )
    return store


def first_searches(n: int, dim: int, batch: int, seed: int) -> tuple[float, float]:
    """Seconds of the first search of a namespace written in batches of ``batch``, and of
    the next one (exact index, one query, k=10).

    Written in columns, items are built when first read. Since 2026-12-06 a search builds
    the batches its hits are in; before, the first read built every item.
    """
    rng = np.random.default_rng(seed)
    store, queries = written_in_batches(n, dim, batch, rng), uniform(2, dim, rng)
    times = []
    for q in queries:
        started = time.perf_counter()
        store.shared.search(CALLER, "g", q, K, now=1.0)
        times.append(time.perf_counter() - started)
    return times[0], times[1]


def first_deletes(n: int, dim: int, batch: int, seed: int) -> tuple[float, float]:
    """Seconds of the first delete in a namespace written in batches of ``batch``, and of
    building every item left afterwards (what the delete used to do; ids start at 1).

    Since ba83f6e a delete (or update) of an item not yet built builds its batch alone;
    before, it built every item of the namespace.
    """
    store = written_in_batches(n, dim, batch, np.random.default_rng(seed))
    started = time.perf_counter()
    store.shared.delete(CALLER, "g", n // 2, now=1.0)
    deleted = time.perf_counter()
    assert len(store.shared.namespaces["g"].items) == n - 1
    return deleted - started, time.perf_counter() - deleted


def recall_at_k(
    n: int, dim: int, make: Callable[..., np.ndarray], n_queries: int, seed: int
) -> float:
    """Recall@10 of the store's HNSW path against exact search, on ``make``'s vectors."""
    rng = np.random.default_rng(seed)
    data, queries = make(n, dim, rng), make(n_queries, dim, rng)
    store = MemoryStore(
        StoreConfig(dim=dim, shared=TierConfig(index=index_config(True))), embed=False
    )
    store_write(store, data)()
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :K] + 1  # store ids start at 1
    got = store.shared.search_many([SearchRequest(CALLER, "g", q, K) for q in queries], now=1.0)
    found = [
        len(set(t.tolist()) & {h.id for h in hits}) for t, hits in zip(truth, got, strict=True)
    ]
    return float(np.sum(found)) / (K * n_queries)


def many_namespaces(count: int, per: int, dim: int, seed: int) -> dict[str, float]:
    """Private-tier shape: many small namespaces, each query of a batch to another one."""
    rng = np.random.default_rng(seed)
    data = clustered(count * per, dim, rng).reshape(count, per, dim)
    callers = [Caller(f"a{i}") for i in range(count)]
    store = MemoryStore(StoreConfig(dim=dim), embed=False)
    requests = [
        WriteRequest(c, c.agent_id, NewItem(vector=v))
        for c, block in zip(callers, data, strict=True)
        for v in block
    ]
    out = {
        "store_write": rate(
            len(requests),
            lambda: [
                store.private.write_many(requests[i : i + WRITE_BATCH], now=0.0)
                for i in range(0, len(requests), WRITE_BATCH)
            ],
        )
    }
    indexes = []
    for block in data:
        index = faiss.IndexFlatIP(dim)
        index.add(block)
        indexes.append(index)
    targets = rng.integers(count, size=2048)
    queries = clustered(len(targets), dim, rng)

    def run_faiss() -> None:
        for t, q in zip(targets, queries, strict=True):
            indexes[t].search(q[None, :], K)

    def run_store() -> None:
        for start in range(0, len(targets), QUERY_BATCH):
            batch = zip(
                targets[start : start + QUERY_BATCH],
                queries[start : start + QUERY_BATCH],
                strict=True,
            )
            store.private.search_many(
                [SearchRequest(callers[t], callers[t].agent_id, q, K) for t, q in batch], now=1.0
            )

    out["faiss_search"] = rate(len(targets), run_faiss)
    out["store_search"] = rate(len(targets), run_store)
    return out


def report(label: str, figures: dict[str, float]) -> None:
    print(f"\n== {label}")
    for what in ("write", "search"):
        unit = "items/s" if what == "write" else "queries/s"
        row = {src: figures[f"{src}_{what}"] for src in ("numpy", "faiss", "store")}
        print(f"  {what:6s} ({unit}): " + "  ".join(f"{k}={v:,.0f}" for k, v in row.items()))
        print(
            f"    store/faiss = {row['store'] / row['faiss']:.2f}   store/numpy = {row['store'] / row['numpy']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--full-1m", action="store_true", help="also 1,000,000 items")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    exact_n, approx_n = (10_000, 20_000) if args.quick else (10_000, 100_000)
    n_queries = 512 if args.quick else 1024
    print(
        f"store benchmark: dim={args.dim}, k={K}, query batches of {QUERY_BATCH}, faiss {faiss.__version__}"
    )
    headline: dict[str, float] = {}
    sizes = [(exact_n, False), (approx_n, True)] + ([(1_000_000, True)] if args.full_1m else [])
    for n, approximate in sizes:
        figures = measure(n, args.dim, approximate, n_queries, args.seed)
        label = f"{n // 1000}k"
        report(f"{n:,} items, {'HNSW' if approximate else 'exact'}", figures)
        headline[f"store_search_vs_faiss_{label}"] = (
            figures["store_search"] / figures["faiss_search"]
        )
        headline[f"store_write_vs_faiss_{label}"] = figures["store_write"] / figures["faiss_write"]
        headline[f"store_search_queries_per_s_{label}"] = figures["store_search"]
    first, second = first_searches(approx_n, args.dim, 64, args.seed)
    print(
        f"\n== first search of {approx_n:,} items written in batches of 64 (the bus's shape):"
        f" {first * 1e3:.2f} ms, the next: {second * 1e3:.2f} ms"
    )
    headline[f"first_search_vs_next_{approx_n // 1000}k"] = first / second
    delete, build = first_deletes(approx_n, args.dim, 64, args.seed)
    print(
        f"== first delete there: {delete * 1e3:.2f} ms; building every item: {build * 1e3:.2f} ms"
    )
    headline[f"first_delete_vs_building_all_{approx_n // 1000}k"] = delete / build
    count = 1_000 if args.quick else 10_000
    small = many_namespaces(count, 100, args.dim, args.seed)
    print(
        f"\n== {count:,} namespaces x 100 items (private-tier shape), queries spread over namespaces"
    )
    print(
        f"  store writes/s={small['store_write']:,.0f}  search q/s: store={small['store_search']:,.0f}"
        f"  faiss (one IndexFlatIP per namespace, one call per query)={small['faiss_search']:,.0f}"
    )
    headline[f"small_namespaces_{count // 1000}k_store_search_vs_faiss"] = (
        small["store_search"] / small["faiss_search"]
    )
    recall_n = approx_n
    for name, make in (("clustered", clustered), ("uniform", uniform)):
        headline[f"recall_at_10_{name}_{recall_n // 1000}k"] = recall_at_k(
            recall_n, args.dim, make, 256, args.seed + 1
        )
    print()
    for name, value in headline.items():
        print(f"{name}: {value:.3f}" if value < 100 else f"{name}: {value:,.0f}")


if __name__ == "__main__":
    main()
