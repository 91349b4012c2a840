"""Cost growth: search latency against items (10k -> 1M) and the plots of both curves.

One shared-tier namespace grows to each size in turn (HNSW from the first item, M 32,
efConstruction 100, efSearch 256, dimension 384, the clustered vectors of
``benchmarks/store.py``); at each size 200 queries are timed one at a time, through the
store (``MemoryStore.shared.search``: access check, validation, recall bookkeeping,
``Hit`` objects) and through raw faiss on **the same index** (the namespace's own
``IndexHNSWFlat``, called directly), with recall@10 of both against exact search.
The baseline is that raw faiss call, measured in the same run: the store's p50 and p99
are printed as ratios of it.

``--plot`` draws ``docs/img/search_latency_vs_items.png`` from this run's JSON and
``docs/img/cost_per_agent_step.png`` from ``benchmarks/scale.py --json`` results.

    python benchmarks/growth.py --quick                  # 10k, 30k, 100k (~2 min)
    python benchmarks/growth.py --json growth.json       # up to 1,000,000 (HNSW build: long)
    python benchmarks/growth.py --plot --json growth.json --scale-json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.store import MemoryStore
from store import CALLER, K, clustered, index_config, store_write

SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
QUICK_SIZES = (10_000, 30_000, 100_000)
QUERIES = 200
IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def exact_top(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Ids (row + 1, as the store numbers them) of the exact top-k, in chunks of rows."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(data), 200_000):
        scores = queries @ data[start : start + 200_000].T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, top, 1)])
        best_ids = np.hstack([best_ids, top + start + 1])
        keep = np.argsort(-best_scores, axis=1)[:, :K]
        best_scores = np.take_along_axis(best_scores, keep, 1)
        best_ids = np.take_along_axis(best_ids, keep, 1)
    return best_ids


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    us = 1e6 * np.asarray(seconds)
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def measure(store: MemoryStore, data: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """Latency and recall@10 of one query at a time: store, then raw faiss (same index)."""
    index = store.shared.namespaces["g"].index
    raw = index._approx
    labels = index._labels
    truth = exact_top(data, queries)
    store_s, faiss_s, store_found, faiss_found = [], [], 0, 0
    for q, t in zip(queries, truth, strict=True):
        want = set(t.tolist())
        t0 = time.perf_counter()
        hits = store.shared.search(CALLER, "g", q, k=K, now=1.0)
        t1 = time.perf_counter()
        _, found = raw.search(q[None, :], K)
        t2 = time.perf_counter()
        store_s.append(t1 - t0)
        faiss_s.append(t2 - t1)
        store_found += len(want & {h.id for h in hits})
        faiss_found += len(want & set(labels[found[0][found[0] >= 0]].tolist()))
    (sp50, sp99), (fp50, fp99) = percentiles(store_s), percentiles(faiss_s)
    return {
        "store_p50_us": sp50,
        "store_p99_us": sp99,
        "faiss_p50_us": fp50,
        "faiss_p99_us": fp99,
        "store_recall": store_found / (K * len(queries)),
        "faiss_recall": faiss_found / (K * len(queries)),
    }


def latency_curve(sizes: list[int], dim: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    data = clustered(max(sizes), dim, rng)
    queries = clustered(QUERIES, dim, rng)
    store = MemoryStore(
        StoreConfig(dim=dim, shared=TierConfig(index=index_config(True))), embed=False
    )
    rows, have = [], 0
    print(f"search latency against items: dim {dim}, k {K}, {QUERIES} queries one at a time")
    print(f"{'items':>9} {'build s':>8} {'store p50':>9} {'p99':>7} {'faiss p50':>9} {'p99':>7}"
          f" {'p50 ratio':>9} {'p99 ratio':>9} {'recall store':>12} {'faiss':>6}")  # fmt: skip
    for n in sizes:
        t0 = time.perf_counter()
        store_write(store, data[have:n])()
        have = n
        row: dict[str, Any] = {"items": n, "build_s": time.perf_counter() - t0}
        row.update(measure(store, data[:n], queries))
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        print(f"{n:9,d} {row['build_s']:8.1f} {row['store_p50_us']:9.0f} {row['store_p99_us']:7.0f}"
              f" {row['faiss_p50_us']:9.0f} {row['faiss_p99_us']:7.0f}"
              f" {row['store_p50_us'] / row['faiss_p50_us']:9.2f}"
              f" {row['store_p99_us'] / row['faiss_p99_us']:9.2f}"
              f" {row['store_recall']:12.3f} {row['faiss_recall']:6.3f}", flush=True)  # fmt: skip
    print()
    for row in rows:
        label = f"{row['items'] // 1000}k"
        print(f"store_p50_vs_faiss_{label}: {row['store_p50_us'] / row['faiss_p50_us']:.2f}")
        print(f"store_p99_vs_faiss_{label}: {row['store_p99_us'] / row['faiss_p99_us']:.2f}")
        print(f"recall_at_10_store_{label}: {row['store_recall']:.3f}")
    return rows


def plot(growth: list[dict[str, Any]], scale: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """The two cost-growth PNGs in docs/img/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    out = []
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    items = [r["items"] for r in growth]
    sources = (("store", "store (shared tier)", "C0"), ("faiss", "raw faiss, same index", "C1"))
    for key, label, color in sources:
        ax.plot(
            items, [r[f"{key}_p50_us"] for r in growth], "o-", color=color, label=f"{label} p50"
        )
        ax.plot(
            items, [r[f"{key}_p99_us"] for r in growth], "o--", color=color, label=f"{label} p99"
        )
    ax.set(xscale="log", yscale="log", xlabel="items in the namespace (HNSW, dim 384)",
           ylabel="one search, microseconds", title="Search latency against items")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(IMG / "search_latency_vs_items.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, rows in sorted(scale.items()):
        name = "1 node, embedded bus" if label == "embedded" else f"{label[7:]}-node cluster"
        if label.startswith("cluster"):
            name += f", {rows[0]['shards']} bus shards"
        ax.plot([r["agents"] for r in rows], [r["us_per_step"] for r in rows], "o-", label=name)
    ax.set(xscale="log", xlabel="agents", ylabel="wall microseconds per agent-step",
           title="Cost per agent-step against agents (2 cores)")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(IMG / "cost_per_agent_step.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k, 30k and 100k items")
    parser.add_argument("--sizes", help="comma-separated item counts")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write (or, with --plot, read) the curve")
    parser.add_argument("--plot", action="store_true", help="draw the PNGs from JSON files")
    parser.add_argument("--scale-json", type=Path, help="benchmarks/scale.py --json output")
    args = parser.parse_args()
    if args.plot:
        if args.json is None or args.scale_json is None:
            parser.error("--plot needs --json and --scale-json")
        growth = json.loads(args.json.read_text())
        for path in plot(growth, json.loads(args.scale_json.read_text())):
            print(f"wrote {path}")
        return
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else list(QUICK_SIZES if args.quick else SIZES)
    )
    rows = latency_curve(sizes, args.dim, args.seed)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
