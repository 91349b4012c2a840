"""Typed edges of a graph namespace, valid over time, and ranking over them.

:class:`Edge` is what :mod:`hivemem.memory_bus.graph` keeps per edge id beside the
namespace's networkx ``MultiDiGraph``; :func:`personalized_pagerank` is its ``ppr``
retrieval, a power iteration on a scipy CSR matrix (``nx.pagerank`` took ~430 ms on
10k nodes and 100k edges here, this ~2 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
from hivemem.memory_bus.item import INF

_PPR_TOL = 1e-10
_PPR_MAX_ITER = 200


@dataclass(slots=True)
class Edge:
    """A typed edge between two nodes of one graph namespace."""

    id: int
    src: int
    dst: int
    type: str
    valid_from: float
    valid_to: float
    created: float
    meta: dict[str, Any]

    def valid_at(self, t: float | None) -> bool:
        """Whether the edge holds at ``t``; with None, whether it is open: never ended
        (``valid_to`` infinite), whatever its ``valid_from``. An edge that begins later is
        open, one written with a finite ``valid_to`` is not, though it holds now: the
        reads without ``as_of`` (``neighbors``, ``retrieve``'s walks, ``stats``'
        ``open_edges``) mean this, and ``as_of=now`` asks for the edges valid now."""
        if t is None:
            return self.valid_to == INF
        return self.valid_from <= t < self.valid_to

    def to_state(self) -> dict[str, Any]:
        """A msgpack-safe dict."""
        return {
            "id": self.id,
            "src": self.src,
            "dst": self.dst,
            "type": self.type,
            "valid_from": self.valid_from,
            "valid_to": self.valid_to,
            "created": self.created,
            "meta": self.meta,
        }


def personalized_pagerank(
    matrix: sp.csr_matrix, teleport: np.ndarray, alpha: float, tol: float = _PPR_TOL
) -> np.ndarray:
    """Power iteration of ``r = alpha * (r P + dangling mass * p) + (1 - alpha) p``.

    Dangling nodes (no valid edge) send their mass back to the teleport distribution,
    as ``networkx.pagerank`` does by default.
    """
    dangling = np.asarray(matrix.sum(axis=1)).ravel() == 0
    rank = teleport.copy()
    transposed = matrix.T.tocsr()
    for _ in range(_PPR_MAX_ITER):
        nxt = alpha * (transposed @ rank + rank[dangling].sum() * teleport) + (1 - alpha) * teleport
        if np.abs(nxt - rank).sum() < tol * len(rank):
            return nxt
        rank = nxt
    return rank


def valid_neighbours(
    graph: nx.MultiDiGraph, edges: dict[int, Edge], node: int, t: float | None
) -> list[int]:
    """The nodes linked to ``node`` by an edge valid at ``t``, out-edges first."""
    if node not in graph:
        return []
    out = [v for _, v, key in graph.out_edges(node, keys=True) if edges[key].valid_at(t)]
    return out + [u for u, _, key in graph.in_edges(node, keys=True) if edges[key].valid_at(t)]


def drop_nodes(graph: nx.MultiDiGraph, edges: dict[int, Edge], nodes: Iterable[int]) -> None:
    """Take evicted ``nodes`` and every edge touching them out of ``graph`` and ``edges``.

    An evicted memory is gone (a deleted node's ended edges stay, for ``as_of`` reads and
    ``history``): kept, they made a namespace of capacity 10 hold 39,999 edges after
    40,000 linked writes, and its snapshots grew with them. Evictions are replayed from
    the journal as they were made, so a restart drops the same.
    """
    for node in nodes:
        if node in graph:
            for _, _, key in [*graph.in_edges(node, keys=True), *graph.out_edges(node, keys=True)]:  # fmt: skip
                edges.pop(key, None)
            graph.remove_node(node)


def ids_in_order(edges: dict[int, Edge], cached: np.ndarray | None) -> np.ndarray:
    """The ids of a namespace's ``edges``, ascending: the dict's own order, since ids
    grow. ``cached``, this function's answer before, stays right while no edge was added
    or taken out (an eviction takes its node's edges out, and drops the cache)."""
    if cached is not None and len(cached) == len(edges):
        return cached
    return np.fromiter(edges, dtype=np.int64, count=len(edges))


def edges_after(edges: dict[int, Edge], ids: np.ndarray, after: int) -> Iterator[Edge]:
    """The ``edges`` with ids above ``after``, in id order (``ids``: :func:`ids_in_order`)."""
    start = int(np.searchsorted(ids, after, side="right"))
    for begin in range(start, len(ids), 1024):
        for edge_id in ids[begin : begin + 1024].tolist():
            yield edges[edge_id]


def listed(
    edges: Iterable[Edge],
    as_of: float | None,
    type: str | None,
    shown: Callable[[int], bool] | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """The states of ``edges`` valid at ``as_of`` (None: every one), of ``type`` (None:
    any), between nodes ``shown`` (None: any), in the order given; at most ``limit``."""
    out = []
    for edge in edges:
        if (
            (as_of is None or edge.valid_at(as_of))
            and (type is None or edge.type == type)
            and (shown is None or (shown(edge.src) and shown(edge.dst)))
        ):
            out.append(edge.to_state())
            if len(out) == limit:
                break
    return out
