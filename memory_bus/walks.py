"""Walks over a graph namespace's edges, which check no caller: one hop, k hops, PPR.

:class:`~hivemem.memory_bus.graph.GraphTier` checks the caller, its levels and the
request; what is here reads the namespace's networkx graph and edges alone. One hop:
:func:`edges_touching` (the edges that end with a removed node, or that a listing by
node shows) and :func:`linked` (``neighbors``). Retrieval, after the tier seeds nodes
by vector match: :func:`khop_scores` walks ``hops`` from the seeds over the edges
valid at ``as_of``, :func:`ppr_scores` runs personalised PageRank on the row-stochastic
CSR matrix that :class:`Transitions` builds and keeps until the namespace's graph
changes, and :func:`top_hits` turns scores into hits. It is apart from the tier
because the walks are one sub-algorithm, the same whoever asks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import networkx as nx
import numpy as np
import scipy.sparse as sp
from hivemem.memory_bus.config import RetrievalMethod
from hivemem.memory_bus.edges import Edge, personalized_pagerank, valid_neighbours
from hivemem.memory_bus.errors import UnknownNameError
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.item import Item
from hivemem.memory_bus.namespace import Namespace

KHOP_DECAY = 0.5


class Transitions:
    """Each graph namespace's transition matrices, kept until its graph changes.

    The tier counts a namespace's changes (:meth:`touch`: an edge added or ended, a
    node added, updated or removed); a matrix built at an older count is built again.
    """

    def __init__(self) -> None:
        self._csr_cache: dict[
            tuple[str, float | None, Callable[[Item], bool] | None],
            tuple[int, list[int], sp.csr_matrix],
        ] = {}
        self._generation: dict[str, int] = {}

    def touch(self, namespace: str) -> None:
        """Count a change of ``namespace``'s graph: its matrices are out of date."""
        self._generation[namespace] = self._generation.get(namespace, 0) + 1

    def matrix(
        self,
        namespace: str,
        ns: Namespace,
        edges: dict[int, Edge],
        t: float | None,
        keep: Callable[[Item], bool] | None = None,
    ) -> tuple[list[int], sp.csr_matrix]:
        """Nodes (those ``keep`` keeps, valid at ``t``) and the row-stochastic CSR over
        the edges valid at ``t`` between them (both ways), cached per namespace, ``t``
        and ``keep``."""
        gen = self._generation.get(namespace, 0)
        cached = self._csr_cache.get((namespace, t, keep))
        if cached is not None and cached[0] == gen:
            return cached[1], cached[2]
        items = ns.items
        nodes = sorted(
            i
            for i, it in items.items()
            if (keep is None or keep(it)) and (t is None or it.valid_at(t))
        )
        pos = {node: i for i, node in enumerate(nodes)}
        pairs = [
            (pos[e.src], pos[e.dst])
            for e in edges.values()
            if e.valid_at(t) and e.src in pos and e.dst in pos
        ]
        rows = [a for a, b in pairs] + [b for a, b in pairs]
        cols = [b for a, b in pairs] + [a for a, b in pairs]
        adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes), len(nodes)))
        adj.sum_duplicates()
        adj.data[:] = 1.0  # parallel edges count once, as in a simple graph
        out_deg = np.asarray(adj.sum(axis=1)).ravel()
        inv = np.divide(1.0, out_deg, out=np.zeros_like(out_deg), where=out_deg > 0)
        matrix = sp.csr_matrix(sp.diags(inv) @ adj)
        self._csr_cache = {key: v for key, v in self._csr_cache.items() if key[0] != namespace}
        self._csr_cache[(namespace, t, keep)] = (gen, nodes, matrix)
        return nodes, matrix


def edges_touching(
    graph: nx.MultiDiGraph | None, edges: dict[int, Edge], nodes: Iterable[int]
) -> list[Edge]:
    """The edges with one of ``nodes`` at either end, oldest first, from the graph's
    adjacency (it holds every edge, invalidated ones too): not a scan of every edge."""
    if graph is None:
        return []
    keys: set[int] = set()
    for node in nodes:
        if node in graph:
            keys.update(key for _, _, key in graph.in_edges(node, keys=True))
            keys.update(key for _, _, key in graph.out_edges(node, keys=True))
    return [edges[key] for key in sorted(keys)]  # ids grow with time: creation order


def linked(
    graph: nx.MultiDiGraph, edges: dict[int, Edge], node_id: int, t: float | None, direction: str
) -> set[int]:
    """The nodes linked to ``node_id`` by ``edges`` valid at ``t``: the ends of its
    out-edges (``direction`` "out"), the starts of its in-edges ("in"), or both."""
    if node_id not in graph:
        return set()  # a node no edge ever touched
    found: set[int] = set()
    if direction in ("out", "both"):
        found |= {v for _, v, key in graph.out_edges(node_id, keys=True) if edges[key].valid_at(t)}
    if direction in ("in", "both"):
        found |= {u for u, _, key in graph.in_edges(node_id, keys=True) if edges[key].valid_at(t)}
    return found


def walkable(
    ns: Namespace, t: float | None, shown: Callable[[int], bool] | None
) -> Callable[[int], bool] | None:
    """The nodes a walk may pass through: those ``shown`` (the caller may see) and,
    with ``t``, valid then (a node expired at ``t`` is no part of the graph at ``t``:
    walks went through it to nodes only it linked, though it was itself left out of the
    hits)."""
    if t is None:
        return shown

    def walkable(node: int) -> bool:
        item = ns.item(node)
        return item is not None and item.valid_at(t) and (shown is None or shown(node))

    return walkable


def khop_scores(
    graph: nx.MultiDiGraph,
    edges: dict[int, Edge],
    seeds: list[Hit],
    hops: int,
    t: float | None,
    shown: Callable[[int], bool] | None = None,
) -> dict[int, float]:
    """Every node within ``hops`` of a seed over ``edges`` valid at ``t`` (either
    direction, through nodes ``shown`` alone), scored ``seed score * 0.5 ** distance``
    (best over seeds)."""
    best: dict[int, float] = {}
    for seed in seeds:
        frontier, seen = [seed.id], {seed.id: 0}
        for dist in range(1, hops + 1):
            if not frontier:
                break
            nxt = []
            for node in frontier:
                for other in valid_neighbours(graph, edges, node, t):
                    if other not in seen and (shown is None or shown(other)):
                        seen[other] = dist
                        nxt.append(other)
            frontier = nxt
        for node, dist in seen.items():
            best[node] = max(best.get(node, -math.inf), _decayed(seed.score, dist))
    return best


def ppr_scores(
    nodes: list[int], matrix: sp.csr_matrix, seeds: list[Hit], alpha: float
) -> dict[int, float]:
    """Personalised PageRank over ``matrix`` (from :meth:`Transitions.matrix`),
    teleporting to the ``seeds`` in proportion to their (positive) scores."""
    pos = {node: i for i, node in enumerate(nodes)}
    teleport = np.zeros(len(nodes))
    for hit in seeds:
        teleport[pos[hit.id]] += max(hit.score, 0.0)
    if teleport.sum() <= 0:
        teleport[[pos[h.id] for h in seeds]] = 1.0
    rank = personalized_pagerank(matrix, teleport / teleport.sum(), alpha)
    return {node: float(rank[i]) for i, node in enumerate(nodes) if rank[i] > 0}


def top_hits(
    ns: Namespace, scored: dict[int, float], k: int, t: float | None, levels: frozenset[int]
) -> list[Hit]:
    """The best ``k`` of ``scored`` (by score, then the lower id) among the nodes on
    ``levels`` and, with ``t``, valid then."""
    ranked = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))
    visible = [(i, s, ns.item(i)) for i, s in ranked if _visible(ns, i, t, levels)][:k]
    return [Hit(i, float(s), it) for i, s, it in visible if it is not None]


def retrieval_method(name: str | RetrievalMethod) -> RetrievalMethod:
    """The retrieval method called ``name``, or an unknown name with a suggestion."""
    try:
        return RetrievalMethod(name)
    except ValueError:
        raise UnknownNameError(
            "retrieval method", str(name), [m.value for m in RetrievalMethod]
        ) from None


def _decayed(score: float, dist: int) -> float:
    """A node ``dist`` hops from a seed of ``score``: worse with every hop, whatever the
    score's sign (a negative score times 0.5 per hop ranked a seed's neighbours above it)."""
    return score * KHOP_DECAY**dist if score >= 0 else score / KHOP_DECAY**dist


def _visible(ns: Namespace, node: int, t: float | None, levels: frozenset[int]) -> bool:
    item = ns.item(node)
    return item is not None and item.level in levels and (t is None or item.valid_at(t))
