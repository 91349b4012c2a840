"""The hierarchical graph tier: nodes on levels, typed edges valid over time.

Nodes are items (``level`` 0 events, 1 entities/tasks, 2 insights by default) kept by
the inherited :class:`VectorTier` machinery, so write, search, update, delete and history
work as on any tier. Each graph namespace adds a networkx ``MultiDiGraph`` of edges keyed
by edge id. An edge holds from ``valid_from`` until ``valid_to``: invalidating it sets
``valid_to`` and keeps it, so "what was true at time t" (``as_of=t``) stays answerable,
as in Zep/graphiti. ``promote`` links children to a parent one level up, as G-Memory
turns interactions into tasks and tasks into insights.

Retrieval seeds nodes by vector match, then ranks:

- ``vector``: the seeds alone;
- ``khop``: every node within ``hops`` of a seed over edges valid at ``as_of`` (either
  direction), scored ``seed score * 0.5 ** distance`` (best over seeds);
- ``ppr``: personalised PageRank, teleporting to the seeds in proportion to their
  (positive) scores, over the valid edges taken both ways. It runs as a power iteration
  on a scipy CSR matrix cached per namespace and ``as_of``; networkx stays the model.

With ``as_of``, a node not valid then is no part of the graph: no walk passes through it.
Without it, the walks follow the open edges (never ended, whatever their ``valid_from``:
:meth:`Edge.valid_at`), not the edges valid now; ``as_of=now`` asks for those.
A role limited to some levels retrieves from the graph of those levels alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import networkx as nx
import numpy as np
from hivemem.memory_bus.config import MAX_HOPS, GraphConfig, RetrievalMethod
from hivemem.memory_bus.edges import Edge, drop_nodes, edges_after, ids_in_order, listed
from hivemem.memory_bus.errors import EdgeNotFoundError, InvalidInputError, ItemNotFoundError
from hivemem.memory_bus.interfaces import Caller, Hit, MemoryEvent
from hivemem.memory_bus.item import (
    INF,
    Item,
    NewItem,
    TierName,
    check_meta,
    check_number,
    check_time,
    check_vector,
)
from hivemem.memory_bus.levels import LevelScope
from hivemem.memory_bus.namespace import Namespace
from hivemem.memory_bus.promotion import promote
from hivemem.memory_bus.store_context import StoreContext
from hivemem.memory_bus.tiers import VectorTier, recall
from hivemem.memory_bus.validation import as_int, as_k
from hivemem.memory_bus.walks import (
    Transitions,
    edges_touching,
    khop_scores,
    linked,
    ppr_scores,
    retrieval_method,
    top_hits,
    walkable,
)

_NO_EDGES = nx.MultiDiGraph()  # what a namespace with no edge reads as (never written to)


class GraphTier(VectorTier):
    """Graph namespaces of leveled nodes and time-valid edges."""

    def __init__(self, config: GraphConfig, ctx: StoreContext) -> None:
        super().__init__(TierName.GRAPH, config, ctx)
        self.graph_config = config
        self.graphs: dict[str, nx.MultiDiGraph] = {}
        self.edge_index: dict[str, dict[int, Edge]] = {}
        self._transitions = Transitions()  # (ppr), cached until a namespace's graph changes
        self._edge_ids: dict[str, np.ndarray] = {}  # each namespace's, for paging (edges)
        self.level_scope = LevelScope(config, ctx.access)
        self._sparing: frozenset[int] = frozenset()  # (promote) children no eviction takes
        ctx.listeners.append(self._on_event)

    # --- levels (hooks of VectorTier) ---------------------------------------------------

    def _check_levels(self, levels: Any, n: int) -> list[int] | None:
        return self.level_scope.check_levels(levels, n)

    def _check_level(self, level: Any) -> int:
        return self.level_scope.check_level(level)

    # --- reads, within the levels of the caller's role --------------------------------

    def get(
        self, caller: Caller, namespace: str, item_id: int, *, now: float | None = None
    ) -> Item:
        """One node by id, if its level is one the caller's role may read."""
        self._node(caller, namespace, item_id, "read")
        return super().get(caller, namespace, item_id, now=now)

    def history(self, caller: Caller, namespace: str, item_id: int) -> list[dict[str, Any]]:
        """Every kept version of a node whose level the caller's role may read.

        A deleted node's versions hold no level, so only a role that may read every
        level may read them (a role limited to some levels read the texts of a hidden
        node once it was deleted); to any other, a deleted node is no node, as a hidden
        or absent one (``item_not_found`` for all three, so the answer tells it nothing).
        Namespace access is checked first: an outsider's request builds nothing.
        """
        self._check(caller, namespace, "read")
        ns = self.namespace_named(namespace)
        if isinstance(item_id, int) and ns.item(item_id) is not None:
            self._node(caller, namespace, item_id, "read")
        elif not self.reads_every_level(caller):
            raise ItemNotFoundError(self.name.value, ns.name, as_int(item_id, "item_id"))
        return super().history(caller, namespace, item_id)

    def reads_every_level(self, caller: Caller) -> bool:
        """Whether ``caller``'s role may read every level of this tier's graphs."""
        return self.level_scope.reads_every_level(caller)

    def _visible_to(self, caller: Caller) -> Callable[[Item], bool] | None:
        return self.level_scope.visible_to(caller)

    def evict_scope(self, callers: Iterable[Caller]) -> Callable[[Item], bool] | None:
        """A write by roles limited to some levels evicts only nodes of the levels they
        all may touch: before, a worker's event evicted the team's insights, and its
        reply named their ids. None where every caller's role touches every level.

        Where no such node is left, the write goes in and the namespace holds more than
        its capacity until a write that may evict makes room.

        During :meth:`promote`, its children are no candidates either: the parent's
        write evicted the very nodes it was to be linked to.
        """
        scope = self.level_scope.evict_scope(callers)
        sparing = self._sparing
        if not sparing:
            return scope
        if scope is None:
            return lambda item: item.id not in sparing
        return lambda item: item.id not in sparing and scope(item)

    def merge_scope(self, proposal: Item) -> Callable[[Item], bool] | None:
        """A node merges only into a node of its own level: an event is no insight, and
        the caller, who may write the proposal's level, may write that one (a merge
        across levels overwrote a node of a level the caller may not touch, and let
        ``promote`` merge a parent into one of its children)."""
        return self.level_scope.merge_scope(proposal)

    def _shown(self, caller: Caller, namespace: str) -> Callable[[int], bool] | None:
        return self.level_scope.shown(caller, self.namespaces.get(namespace))

    def update(
        self,
        caller: Caller,
        namespace: str,
        item_id: int,
        *,
        expected_version: int,
        now: float,
        **changes: Any,
    ) -> Item:
        """Change a node whose level the caller's role may write (see VectorTier.update)."""
        self._node(caller, namespace, item_id, "update")
        return super().update(
            caller, namespace, item_id, expected_version=expected_version, now=now, **changes
        )

    def delete(self, caller: Caller, namespace: str, item_id: int, *, now: float) -> None:
        """Remove a node whose level the caller's role may write; its edges end with it."""
        self._node(caller, namespace, item_id, "delete")
        super().delete(caller, namespace, item_id, now=now)

    def _listed(self, caller: Caller, as_of: float | None) -> Callable[[Item], bool] | None:
        """``scan`` lists only the nodes on levels the caller's role may read."""
        return self.level_scope.listed(caller, super()._listed(caller, as_of))

    def _readable(self, caller: Caller, hits: list[Hit]) -> list[Hit]:
        return self.level_scope.readable(caller, hits)

    # --- edges --------------------------------------------------------------------------

    def _graph_read(self, namespace: str) -> nx.MultiDiGraph:
        """The namespace's graph to read, without making one: a read must change nothing
        (an empty graph made by a read, with no edge index beside it, once failed the
        namespace's next eviction, and a replay of the journal would not make it)."""
        return self.graphs.get(namespace, _NO_EDGES)

    def _node(
        self, caller: Caller, namespace: str, node_id: Any, action: str, field: str = "node"
    ) -> Item:
        """A node of ``namespace`` whose level ``caller`` may touch (``field`` names the
        argument that gave its id, in an error; see :meth:`LevelScope.check_node`)."""
        self._check(caller, namespace, action)
        ns = self.namespace_named(namespace)
        item = self.item_in(ns, as_int(node_id, field))
        return self.level_scope.check_node(caller, namespace, item, action)

    def add_edge(
        self,
        caller: Caller,
        namespace: str,
        src: int,
        dst: int,
        type: str,
        *,
        now: float,
        valid_from: float | None = None,
        valid_to: float = INF,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Link ``src`` to ``dst`` with a typed edge; returns the edge id."""
        now = check_number(now, "now")
        self._node(caller, namespace, src, "link", "src")
        self._node(caller, namespace, dst, "link", "dst")
        self.check_edge_type(type, "type")
        start = now if valid_from is None else check_number(valid_from, "valid_from")
        end = check_time(valid_to, "valid_to")
        if end <= start:
            raise InvalidInputError("valid_to", "must be after valid_from")
        checked = dict(check_meta(meta or {}, self.ctx.limits))  # before an id is drawn
        edge = Edge(self.ctx.allocate(1)[0], int(src), int(dst), type, start, end, now, checked)
        self._store_edge(namespace, edge)
        self._announce_edge(namespace, "edge", edge, now)
        return edge.id

    def check_edge_type(self, type: Any, field: str) -> str:
        limit = self.ctx.limits.max_meta_str_chars
        if not isinstance(type, str) or not type or len(type) > limit:
            raise InvalidInputError(field, f"expected a non-empty str of at most {limit} chars")
        return type

    def _announce_edge(self, namespace: str, kind: str, edge: Edge, now: float) -> None:
        """Announce an edge added or invalidated, numbered among the namespace's events."""
        fields = {"src": edge.src, "dst": edge.dst, "type": edge.type,
                  "valid_from": edge.valid_from, "valid_to": edge.valid_to}  # fmt: skip
        self.namespace_named(namespace).announce(self.ctx.emit, kind, (edge.id,), 0, now, fields)

    def _store_edge(self, namespace: str, edge: Edge) -> None:
        self.edge_index.setdefault(namespace, {})[edge.id] = edge
        graph = self.graphs.setdefault(namespace, nx.MultiDiGraph())
        graph.add_edge(edge.src, edge.dst, key=edge.id, type=edge.type)
        self._transitions.touch(namespace)

    def invalidate_edge(self, caller: Caller, namespace: str, edge_id: int, *, at: float) -> None:
        """End an edge's validity at ``at``; it stays for as-of queries before ``at``.

        An edge that ends later (written with a ``valid_to``, or invalidated before at a
        later time) is cut short; one that ends at ``at`` or before is refused.
        """
        at = check_number(at, "at")
        edge = self._edge(caller, namespace, edge_id)
        if at >= edge.valid_to:
            raise InvalidInputError(
                "at", f"edge {edge_id} already ends at {edge.valid_to}, before {at}"
            )
        if at <= edge.valid_from:
            raise InvalidInputError("at", f"must be after the edge's valid_from {edge.valid_from}")
        edge.valid_to = at
        self._transitions.touch(namespace)
        self._announce_edge(namespace, "invalidate", edge, at)

    def _edge(self, caller: Caller, namespace: str, edge_id: Any) -> Edge:
        """An edge whose ends ``caller`` may both link (an end deleted since: only a role
        that may read every level, as with the deleted node's ``history``)."""
        self._check(caller, namespace, "link")
        edge = self.edge_index.get(namespace, {}).get(as_int(edge_id, "edge_id"))
        if edge is None:
            raise EdgeNotFoundError(namespace, int(edge_id))
        shown = self._shown(caller, namespace)
        if shown is not None and not (shown(edge.src) and shown(edge.dst)):
            # an end on a hidden level, or deleted: an edge the caller cannot list either
            raise EdgeNotFoundError(namespace, int(edge_id))
        return edge

    def edges(
        self,
        caller: Caller,
        namespace: str,
        *,
        as_of: float | None = None,
        node: int | None = None,
        type: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Edges (every one kept, ended or not; or those valid at ``as_of``), optionally
        touching ``node`` or of ``type``, in id order; with ``limit``, the first that many
        with ids above ``after`` (page on with ``after`` = the last one's id, until a
        page is short).

        Raises:
            InvalidInputError: ``as_of`` not a time, ``after`` not an int >= 0, or
                ``limit`` not in 1..``max_batch``.
        """
        self._check(caller, namespace, "read")
        shown = self._shown(caller, namespace)
        t = None if as_of is None else check_number(as_of, "as_of")
        after = as_int(after, "after", low=0)
        if limit is not None:
            limit = as_int(limit, "limit", low=1, high=self.ctx.limits.max_batch)
        edges: Iterable[Edge] = ()
        if node is None and namespace in self.edge_index:  # (a read makes no entry)
            found = self.edge_index[namespace]
            ids = self._edge_ids[namespace] = ids_in_order(found, self._edge_ids.get(namespace))
            edges = edges_after(found, ids, after)
        elif node is not None:
            edges = (e for e in self._edges_touching(namespace, (node,)) if e.id > after)
        return listed(edges, t, type, shown, limit)

    def _edges_touching(self, namespace: str, nodes: Iterable[int]) -> list[Edge]:
        return edges_touching(self.graphs.get(namespace), self.edge_index.get(namespace, {}), nodes)

    def neighbors(
        self,
        caller: Caller,
        namespace: str,
        node_id: int,
        *,
        as_of: float | None = None,
        direction: str = "both",
    ) -> list[int]:
        """Ids of nodes linked to ``node_id`` by edges valid at ``as_of``; without it, by
        open edges (never ended, whatever their ``valid_from``: :meth:`Edge.valid_at`).
        Pass ``as_of=now`` for the edges valid now."""
        self._node(caller, namespace, node_id, "read")
        if direction not in ("in", "out", "both"):
            raise InvalidInputError("direction", "expected 'in', 'out' or 'both'")
        t = None if as_of is None else check_number(as_of, "as_of")
        edges = self.edge_index.get(namespace, {})
        found = linked(self._graph_read(namespace), edges, node_id, t, direction)
        shown = self._shown(caller, namespace)
        return sorted(found if shown is None else filter(shown, found))

    def promote(
        self,
        caller: Caller,
        namespace: str,
        children: Sequence[int],
        parent: NewItem,
        *,
        now: float,
        edge_type: str = "abstracts",
    ) -> int:
        """Write ``parent`` above ``children`` and link it to each (see
        :func:`hivemem.memory_bus.promotion.promote`); returns the parent's node id."""
        done = promote(self, caller, namespace, children, parent, now=now, edge_type=edge_type)
        return done.item_id

    @contextlib.contextmanager
    def sparing(self, nodes: frozenset[int]) -> Iterator[None]:
        """While in it, no write evicts ``nodes`` (see :meth:`evict_scope`)."""
        self._sparing = nodes
        try:
            yield
        finally:
            self._sparing = frozenset()

    def check_node(
        self, caller: Caller, namespace: str, node_id: Any, action: str, field: str = "node"
    ) -> Item:
        """A node of ``namespace`` whose level ``caller`` may touch (see :meth:`_node`)."""
        return self._node(caller, namespace, node_id, action, field)

    # --- retrieval ----------------------------------------------------------------------

    def retrieve(
        self,
        caller: Caller,
        namespace: str,
        vector: np.ndarray,
        k: int = 10,
        *,
        now: float | None,
        method: str | RetrievalMethod | None = None,
        hops: int | None = None,
        as_of: float | None = None,
    ) -> list[Hit]:
        """Seed nodes by vector match, then rank by ``method``; the results count as
        recalled at ``now`` (None: not recalled, a look).

        ``k`` bounds the hits. ``vector`` seeds ``max(k, GraphConfig.seeds)`` nodes and
        answers the best k; ``khop`` and ``ppr`` seed ``GraphConfig.seeds`` and answer
        the k best of the nodes they reach from them (fewer where fewer are reached:
        with no edge, the seeds alone).

        Without ``as_of``, the walks follow the open edges (``valid_to`` infinite,
        whatever their ``valid_from``: one that begins later is walked, one that ends
        later is not); pass ``as_of=now`` for the edges valid now.
        """
        self._check(caller, namespace, "read")
        k = as_k(k)
        if now is not None:
            now = check_number(now, "now")
        how = retrieval_method(method or self.graph_config.retrieval)
        hops = self.graph_config.hops if hops is None else as_int(hops, "hops", 0, MAX_HOPS)
        t = None if as_of is None else check_number(as_of, "as_of")
        query = check_vector(vector, self.ctx.dim)  # before any answer, as search does
        ns = self.namespaces.get(namespace)
        if ns is None or not len(ns):
            return []
        # A role limited to some levels retrieves from the graph of those alone: seeds,
        # walks and PageRank never pass through a node it may not read.
        keep = self._visible_to(caller)
        # ``vector`` answers its seeds: k of them (it gave at most ``seeds`` whatever k).
        # The walks rank what they reach from the configured ``seeds`` best matches.
        n_seeds = self.graph_config.seeds
        if how is RetrievalMethod.VECTOR:
            n_seeds = max(k, n_seeds)
        seeds = ns.search(query[None, :], n_seeds, t, keep)[0]
        edges = self.edge_index.get(namespace, {})
        if how is RetrievalMethod.VECTOR:
            scored = {h.id: h.score for h in seeds}
        elif how is RetrievalMethod.KHOP:
            shown = walkable(ns, t, self._shown(caller, ns.name))
            scored = khop_scores(self._graph_read(namespace), edges, seeds, hops, t, shown)
        elif not seeds:  # nothing valid at t matched: nothing to rank (and no 0 / 0)
            scored = {}
        else:  # ppr
            nodes, matrix = self._transitions.matrix(namespace, ns, edges, t, keep)
            scored = ppr_scores(nodes, matrix, seeds, self.graph_config.ppr_alpha)
        hits = top_hits(ns, scored, k, t, self.ctx.access.levels(caller))
        if now is not None:
            for hit in hits:
                recall(hit.item, now)
        return hits

    # --- node removal, stats, state -----------------------------------------------------

    def _on_event(self, event: MemoryEvent) -> None:
        if event.tier != self.name.value:
            return
        if event.kind in ("add", "update"):
            self._transitions.touch(event.namespace)
        if event.kind in ("delete", "evict"):
            for edge in self._edges_touching(event.namespace, event.item_ids):
                # An edge that would only have begun after its node went never holds:
                # it ends where it begins (an empty interval, valid at no time).
                end = max(event.now, edge.valid_from)
                if edge.valid_to > end:  # the edge ends with its node
                    edge.valid_to = end
                    self._announce_edge(event.namespace, "invalidate", edge, event.now)
            if event.kind == "evict":
                self._drop_nodes(event.namespace, event.item_ids)
            self._transitions.touch(event.namespace)

    def _drop_nodes(self, namespace: str, nodes: Iterable[int]) -> None:
        """Take evicted ``nodes`` and their edges out (:func:`~.edges.drop_nodes`)."""
        graph = self.graphs.get(namespace)
        if graph is not None:
            drop_nodes(graph, self.edge_index[namespace], nodes)
            self._edge_ids.pop(namespace, None)  # (ids_in_order: cached while none left)

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        """Tier counts plus edges and nodes per level; with ``caller``, of what it may
        read alone (the nodes of its levels, the edges between them)."""
        out = super().stats(caller)
        namespaces = self.readable_namespaces(caller)
        keep = None if caller is None else self._visible_to(caller)
        if keep is not None:  # counted over every level: not for a role limited to some
            out["evictions"] = out["index_builds"] = None
        all_edges: list[Edge] = []
        for ns in namespaces:
            shown = None if caller is None else self._shown(caller, ns.name)
            all_edges.extend(
                e
                for e in self.edge_index.get(ns.name, {}).values()
                if shown is None or (shown(e.src) and shown(e.dst))
            )
        out["edges"] = len(all_edges)
        out["open_edges"] = sum(e.valid_to == INF for e in all_edges)
        out["nodes_by_level"] = self.level_scope.nodes_by_level(namespaces, caller, keep)
        return out

    def _counts(self, ns: Namespace, caller: Caller | None) -> tuple[int, int, int]:
        keep = None if caller is None else self._visible_to(caller)
        if keep is None:
            return super()._counts(ns, caller)
        shown = [it for it in ns.items.values() if keep(it)]
        return len(shown), sum(it.tokens for it in shown), sum(it.nbytes for it in shown)

    def get_state(self) -> dict[str, Any]:
        """Inherited state plus every edge."""
        state = super().get_state()
        state["edges"] = {
            ns: [e.to_state() for e in edges.values()] for ns, edges in self.edge_index.items()
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore namespaces and edges."""
        super().set_state(state)
        self.graphs, self.edge_index, self._transitions = {}, {}, Transitions()
        self._edge_ids = {}
        for namespace, edges in state["edges"].items():
            self.edge_index[namespace] = {}
            for raw in edges:
                self._store_edge(namespace, Edge(**raw))
