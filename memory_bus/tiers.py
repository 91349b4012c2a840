"""The private and shared tiers: namespaces of vector-indexed items behind one interface.

Every public method checks access, then validates *all* of its input, and only then
changes anything: a bad request leaves the tier exactly as it was. The graph tier
(``hivemem.memory_bus.graph``) extends :class:`VectorTier` with edges.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
from hivemem.memory_bus.access import AccessPolicy
from hivemem.memory_bus.batch import (
    BatchResult,
    NewRows,
    Vectors,
    WriteBatch,
    check_metas,
    check_numbers,
    check_texts,
    check_times,
    check_validity,
    column_of,
)
from hivemem.memory_bus.candidates import PoolSlot
from hivemem.memory_bus.config import NamespaceMode, TierConfig
from hivemem.memory_bus.errors import (
    CapacityError,
    InvalidInputError,
    ItemNotFoundError,
    NamespaceNotFoundError,
    TooLargeError,
    VersionConflictError,
)
from hivemem.memory_bus.interfaces import (
    Caller,
    Embedder,
    Hit,
    SearchRequest,
    WriteDecision,
    WritePolicy,
    WriteRequest,
    WriteResult,
)
from hivemem.memory_bus.item import (
    Item,
    Limits,
    NewItem,
    TierName,
    WriteOp,
    check_matrix,
    check_meta,
    check_number,
    check_text,
    check_time,
    check_vector,
    count_tokens,
)
from hivemem.memory_bus.namespace import MemoryEvent, Namespace, NextUse
from hivemem.memory_bus.neighbours import BatchNeighbours
from hivemem.memory_bus.policies import make_eviction_policy, make_write_policy

UPDATABLE = frozenset({"text", "vector", "meta", "importance", "valid_from", "valid_to"})
BATCH_SEARCH_FROM = 2_048
"""Items of a namespace from which a batch's proposals to it are searched together."""
_OP_VALUE = {op: op.value for op in WriteOp}  # an enum's .value is slow on the write path

Defer = Callable[[Callable[[], None]], None]
"""Takes a change whose outcome is already decided, to run it later (see ``write_batch``)."""


@dataclass
class StoreContext:
    """What every tier of one store shares: ids, embedder, access rules, limits, listeners."""

    dim: int
    seed: int
    access: AccessPolicy
    embedder: Embedder | None
    limits: Limits = field(default_factory=Limits)
    next_id: int = 1
    id_stride: int = 1
    """Step between ids: shard ``i`` of ``n`` starts at ``1 + i`` and steps by ``n``, so
    ids stay unique across the shards of a bus."""
    next_use: NextUse | None = None
    listeners: list[Callable[[MemoryEvent], None]] = field(default_factory=list)

    def allocate(self, n: int) -> range:
        """``n`` fresh int64 ids, in order."""
        start = self.next_id
        self.next_id += n * self.id_stride
        return range(start, self.next_id, self.id_stride)

    def emit(self, event: MemoryEvent) -> None:
        """Announce a change to every listener."""
        for listener in self.listeners:
            listener(event)


class VectorTier:
    """A tier of namespaces created on first write (``private`` or ``shared``)."""

    def __init__(self, name: TierName, config: TierConfig, ctx: StoreContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        # Built once to fail early on unknown names; namespaces get their own instances.
        make_eviction_policy(config.eviction, **config.eviction_params)
        self.write_policy: WritePolicy = make_write_policy(
            config.write_policy, **config.write_params
        )
        self._needs_neighbours = bool(getattr(self.write_policy, "needs_neighbours", True))
        self.namespaces: dict[str, Namespace] = {}
        self.decisions: Counter[str] = Counter()

    # --- namespaces -------------------------------------------------------------------

    def _namespace(self, name: str, create: bool = False) -> Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            if not create:
                raise NamespaceNotFoundError(self.name.value, name)
            ns = self.namespaces[name] = self._new_namespace(name)
        return ns

    def _new_namespace(self, name: str) -> Namespace:
        eviction = make_eviction_policy(self.config.eviction, **self.config.eviction_params)
        return Namespace(self.name, name, self.config, self.ctx.dim, eviction, self._rng_for(name))

    def _rng_for(self, namespace: str) -> np.random.Generator:
        # A seed per namespace from hashlib, so the same namespace draws the same numbers in
        # any process whatever order namespaces were created in.
        digest = hashlib.blake2b(
            f"{self.ctx.seed}/{self.name.value}/{namespace}".encode(), digest_size=8
        )
        return np.random.default_rng(int.from_bytes(digest.digest(), "little"))

    def _check(self, caller: Caller, namespace: str, action: str, level: int | None = None) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise InvalidInputError("namespace", "expected a non-empty str")
        self.ctx.access.check(caller, self.name, namespace, action, level)

    # --- writes -----------------------------------------------------------------------

    def write(
        self,
        caller: Caller,
        namespace: str,
        item: NewItem,
        *,
        now: float,
        defer: Defer | None = None,
    ) -> WriteResult:
        """Propose one item; the namespace's write policy decides what happens."""
        return self.write_many([WriteRequest(caller, namespace, item)], now=now, defer=defer)[0]

    def write_many(
        self, requests: Sequence[WriteRequest], *, now: float, defer: Defer | None = None
    ) -> list[WriteResult]:
        """Propose many items; every one is checked before any is applied.

        Raises:
            AccessDeniedError, InvalidInputError, CapacityError: nothing was written.
        """
        if len(requests) > self.ctx.limits.max_batch:
            raise TooLargeError("batch", self.ctx.limits.max_batch, len(requests))
        batch = WriteBatch.from_requests(requests)
        return self.write_batch(batch, now=now, defer=defer).results()

    def write_batch(
        self, batch: WriteBatch, *, now: float, defer: Defer | None = None
    ) -> BatchResult:
        """Propose the rows of a columnar batch; every row is checked before any is applied.

        A write policy that adds every proposal unseen (``always_adds``) lets the batch go
        into each namespace with room as columns (:meth:`Namespace.append`). Otherwise
        the rows are decided one at a time, in order, each seeing the earlier rows' ADDs.

        ``defer``, if given, takes those column appends instead of running them: their
        outcome (the ids) is already known, and the bus server runs them right after it
        has sent the reply, before it reads the next request (see
        :mod:`hivemem.memory_bus.server`). Everything else is applied at once.

        Raises:
            AccessDeniedError, InvalidInputError, CapacityError: nothing was written.
        """
        now = check_number(now, "now")
        if len(batch) > self.ctx.limits.max_batch:
            raise TooLargeError("batch", self.ctx.limits.max_batch, len(batch))
        batch = self._checked(batch, now)
        if not len(batch):
            return BatchResult([], [])
        if getattr(self.write_policy, "always_adds", False):
            return self._add_all(batch, now, defer)
        proposals = NewRows([-1] * len(batch), batch, now).build(self.name)
        return BatchResult.from_results(self._apply(batch.namespaces, proposals, now))

    def _checked(self, batch: WriteBatch, now: float) -> WriteBatch:
        """The batch with every column checked (access first, then the values)."""
        n, limits = len(batch), self.ctx.limits
        callers = column_of(batch.callers, n, "agent")
        namespaces = column_of(batch.namespaces, n, "namespace")
        levels = self._check_levels(batch.levels, n)
        self._check_writers(callers, namespaces, levels)
        texts = check_texts(batch.texts, n, limits)
        vectors = self._batch_vectors(batch.vectors, texts)
        if self.config.mode is NamespaceMode.VECTOR and any(texts):
            raise InvalidInputError("text", "this tier holds vector-only slots: text must be empty")
        valid_from = check_times(batch.valid_from, n, "valid_from", none_ok=True)
        valid_to = check_times(batch.valid_to, n, "valid_to", none_ok=False)
        check_validity(valid_from, valid_to, now)
        checked = WriteBatch(
            callers,
            namespaces,
            texts,
            vectors,
            check_metas(batch.metas, n, limits),
            check_numbers(batch.importance, n, "importance"),
            valid_from,
            valid_to,
            levels,
        )
        self._check_budget(texts)
        return checked

    def _check_levels(self, levels: Any, n: int) -> list[int] | None:
        """Every row's level (only 0 outside the graph tier); None: no level column needed."""
        if levels is not None:
            for level in column_of(levels, n, "level"):
                if level != 0:
                    self._check_level(level)
        return None

    def _check_writers(
        self, callers: list[Caller], namespaces: list[str], levels: list[int] | None
    ) -> None:
        """Access of every distinct (caller, namespace, level) of a batch, checked once."""
        if set(map(type, namespaces)) - {str}:
            bad = next(ns for ns in namespaces if type(ns) is not str)
            raise InvalidInputError(
                "namespace", f"expected a non-empty str, got {type(bad).__name__}"
            )
        n = len(callers)
        if not n:
            return
        if levels is None and callers.count(callers[0]) == namespaces.count(namespaces[0]) == n:
            self._check(callers[0], namespaces[0], "write")  # one writer, one namespace
            return
        rows = zip(callers, namespaces, levels or [-1] * n, strict=True)
        seen: set[tuple[int, str, int]] = set()
        for caller, namespace, level in rows:
            key = (id(caller), namespace, level)
            if key not in seen:
                seen.add(key)
                self._check(caller, namespace, "write", None if levels is None else level)

    def _check_budget(self, texts: list[str]) -> None:
        budget = self.config.token_budget
        if self.config.mode is not NamespaceMode.TOKEN_BUDGET or budget is None:
            return
        for text in texts:
            tokens = count_tokens(text)
            if tokens > budget:
                raise CapacityError(
                    f"{tokens} tokens can never fit a budget of {budget}", tokens=tokens
                )

    def _batch_vectors(self, vectors: Vectors, texts: list[str]) -> np.ndarray:
        """The batch's (n, dim) float32 matrix, embedding the texts of rows without a vector."""
        n, dim = len(texts), self.ctx.dim
        if isinstance(vectors, np.ndarray):
            if vectors.ndim == 2 and len(vectors) != n:
                raise InvalidInputError("items[].vector", f"{len(vectors)} vectors for {n} rows")
            return check_matrix(vectors, dim, "items[].vector")
        given: list[Any] = column_of(vectors, n, "vector") if vectors is not None else [None] * n
        if not given:
            return np.empty((0, dim), dtype=np.float32)
        if n == 1 and isinstance(given[0], np.ndarray) and given[0].ndim == 1:
            return check_matrix(given[0].reshape(1, -1), dim, "items[0].vector")
        if all(v is not None for v in given):
            try:  # the common case, checked in one pass over a matrix
                return check_matrix(np.array(given, dtype=np.float32), dim, "items[].vector")
            except (TypeError, ValueError, InvalidInputError):
                pass  # the rows below name the first bad one
        return np.stack(self._vectors(given, texts))

    def _vectors(self, given: list[Any], texts: list[str]) -> list[np.ndarray]:
        """Each row's vector (checked), embedding in one batch those that came without one."""
        out: list[np.ndarray | None] = [None] * len(given)
        missing = []
        for i, vector in enumerate(given):
            if vector is not None:
                out[i] = check_vector(vector, self.ctx.dim, f"items[{i}].vector")
            else:
                missing.append(i)
        if missing:
            if self.ctx.embedder is None or self.config.mode is NamespaceMode.VECTOR:
                raise InvalidInputError(
                    f"items[{missing[0]}].vector", "required: no embedder for this tier"
                )
            embedded = check_matrix(
                self.ctx.embedder([texts[i] for i in missing]), self.ctx.dim, "embedder output"
            )
            for row, i in enumerate(missing):
                out[i] = embedded[row]
        return [v for v in out if v is not None]

    def _check_level(self, level: Any) -> int:
        if level != 0:
            raise InvalidInputError("level", f"only the graph tier has levels, got {level!r}")
        return 0

    def _add_all(self, batch: WriteBatch, now: float, defer: Defer | None) -> BatchResult:
        """ADD every row: as columns where the namespace has room, item by item where not."""
        n = len(batch)
        self.decisions[_OP_VALUE[WriteOp.ADD]] += n
        item_ids: list[int] = [-1] * n
        evicted: dict[int, list[int]] = {}
        for name, rows in _groups(batch.namespaces):
            part = batch if rows is None else batch.rows(rows)
            positions = range(n) if rows is None else rows
            ids = self.ctx.allocate(len(part))
            rows_of_ns = NewRows(ids, part, now)
            ns = self._namespace(name, create=True)
            if ns.has_room(len(part)):
                if defer is None:
                    ns.append(rows_of_ns, self.ctx.emit)
                else:
                    defer(partial(ns.append, rows_of_ns, self.ctx.emit))
            else:
                victims = ns.add_many(
                    rows_of_ns.build(self.name), now, self.ctx.next_use, self.ctx.emit
                )
                evicted.update((pos, v) for pos, v in zip(positions, victims, strict=True) if v)
            if rows is None:
                item_ids = list(ids)
            else:
                for pos, item_id in zip(rows, ids, strict=True):
                    item_ids[pos] = item_id
        return BatchResult([WriteOp.ADD] * n, item_ids, evicted)

    def _apply(
        self, namespaces: Sequence[str], proposals: list[Item], now: float
    ) -> list[WriteResult]:
        results: list[WriteResult] = []
        adds: dict[str, list[tuple[int, Item]]] = defaultdict(list)
        ahead = self._neighbours_ahead(namespaces, proposals)
        slots: dict[str, PoolSlot] = defaultdict(PoolSlot)  # eviction candidates per namespace
        for pos, (name, proposal) in enumerate(zip(namespaces, proposals, strict=True)):
            ns = self._namespace(name, create=True)
            nb, slot = ahead.get(name), slots[name]
            if self._needs_neighbours and adds[name]:
                # Later proposals must see earlier ADDs of the same batch.
                self._flush_adds(ns, adds.pop(name), results, now, nb, slot)
            decision = self._decide(ns, proposal, now, nb, pos)
            self.decisions[_OP_VALUE[decision.op]] += 1
            results.append(WriteResult(decision.op, decision.target))
            if decision.op is WriteOp.ADD:
                adds[name].append((pos, proposal))
            elif decision.op is WriteOp.UPDATE:
                self._update_from(ns, decision.target, proposal, now)
                if nb is not None:
                    nb.changed(decision.target, proposal.vector)
                if slot.pool is not None:
                    slot.pool.replace(ns.items[decision.target])
            elif decision.op is WriteOp.DELETE:
                ns.remove(self._target(ns, decision.target).id, now, self.ctx.emit)
                if nb is not None:
                    nb.changed(decision.target)
                if slot.pool is not None:
                    slot.pool.remove(decision.target)
        for name, pending in adds.items():
            self._flush_adds(self.namespaces[name], pending, results, now, slot=slots[name])
        return results

    def _neighbours_ahead(
        self, namespaces: Sequence[str], proposals: list[Item]
    ) -> dict[str, BatchNeighbours]:
        """Neighbours of the batch's proposals searched together, per namespace large
        enough for a search per proposal to cost (see :mod:`.neighbours`)."""
        if not self._needs_neighbours or len(proposals) < 2:
            return {}
        rows: dict[str, list[int]] = defaultdict(list)
        for pos, name in enumerate(namespaces):
            rows[name].append(pos)
        ahead = {}
        for name, positions in rows.items():
            ns = self.namespaces.get(name)
            if len(positions) > 1 and ns is not None and len(ns) >= BATCH_SEARCH_FROM:
                vectors = np.stack([proposals[pos].vector for pos in positions])
                ahead[name] = BatchNeighbours(ns, vectors, self.config.neighbours, positions)
        return ahead

    def _decide(
        self, ns: Namespace, proposal: Item, now: float, nb: BatchNeighbours | None, pos: int
    ) -> WriteDecision:
        if not self._needs_neighbours:
            return self.write_policy.decide(proposal, [], now)
        neighbours = None if nb is None else nb.hits(pos, proposal.vector, ns)
        if neighbours is None:
            neighbours = ns.search(proposal.vector[None, :], self.config.neighbours, None)[0]
        return self.write_policy.decide(proposal, neighbours, now)

    def _flush_adds(
        self,
        ns: Namespace,
        pending: list[tuple[int, Item]],
        results: list[WriteResult],
        now: float,
        nb: BatchNeighbours | None = None,
        slot: PoolSlot | None = None,
    ) -> None:
        ids = self.ctx.allocate(len(pending))
        items = []
        for (pos, proposal), item_id in zip(pending, ids, strict=True):
            proposal.id = item_id
            results[pos].item_id = item_id
            items.append(proposal)
        evicted = ns.add_many(items, now, self.ctx.next_use, self.ctx.emit, slot)
        for (pos, item), victims in zip(pending, evicted, strict=True):
            results[pos].evicted = victims
            if nb is not None:
                nb.added(item.id, item.vector)
                for victim in victims:
                    nb.changed(victim)

    def _target(self, ns: Namespace, item_id: int) -> Item:
        item = ns.items.get(item_id)
        if item is None:
            raise ItemNotFoundError(self.name.value, ns.name, item_id)
        return item

    def _update_from(self, ns: Namespace, target_id: int, proposal: Item, now: float) -> None:
        old = self._target(ns, target_id)
        new = replace(
            old,
            text=proposal.text,
            vector=proposal.vector,
            meta={**old.meta, **proposal.meta},
            importance=max(old.importance, proposal.importance),
            version=old.version + 1,
            valid_from=proposal.valid_from,
            valid_to=proposal.valid_to,
            accessed=now,
        )
        ns.replace(old, new, now, self.ctx.emit)

    # --- reads ------------------------------------------------------------------------

    def get(
        self, caller: Caller, namespace: str, item_id: int, *, now: float | None = None
    ) -> Item:
        """One item by id; with ``now`` the read counts as a recall."""
        self._check(caller, namespace, "read")
        item = self._target(self._namespace(namespace), _as_id(item_id))
        if now is not None:
            recall(item, check_number(now, "now"))
        return item

    def search(
        self,
        caller: Caller,
        namespace: str,
        vector: np.ndarray,
        k: int = 10,
        *,
        now: float,
        as_of: float | None = None,
    ) -> list[Hit]:
        """The ``k`` most similar items of ``namespace``, best first; each counts as recalled."""
        return self.search_many([SearchRequest(caller, namespace, vector, k, as_of)], now=now)[0]

    def search_many(self, requests: Sequence[SearchRequest], *, now: float) -> list[list[Hit]]:
        """Batched search: requests are grouped by namespace, one index call per group."""
        now = check_number(now, "now")
        if len(requests) > self.ctx.limits.max_batch:
            raise TooLargeError("batch", self.ctx.limits.max_batch, len(requests))
        groups = self._group_queries(requests)
        out: list[list[Hit]] = [[] for _ in requests]
        for (namespace, k, as_of), (positions, vectors) in groups.items():
            ns = self.namespaces.get(namespace)
            if ns is None:
                continue
            for pos, hits in zip(positions, ns.search(vectors, k, as_of), strict=True):
                out[pos] = hits
        for hits in out:
            for hit in hits:
                item = hit.item
                item.hits += 1
                item.accessed = max(item.accessed, now)  # recall(item, now), inlined
        return out

    def _group_queries(
        self, requests: Sequence[SearchRequest]
    ) -> dict[tuple[str, int, float | None], tuple[list[int], np.ndarray]]:
        groups: dict[tuple[str, int, float | None], tuple[list[int], list[Any]]] = {}
        for pos, req in enumerate(requests):
            if not isinstance(req, SearchRequest):
                raise InvalidInputError(
                    "requests", f"expected SearchRequest, got {type(req).__name__}"
                )
            self._check(req.caller, req.namespace, "read")
            k = _as_k(req.k)
            as_of = None if req.as_of is None else check_time(req.as_of, "as_of")
            positions, vectors = groups.setdefault((req.namespace, k, as_of), ([], []))
            positions.append(pos)
            vectors.append(req.vector)
        stacked = self._all_queries([req.vector for req in requests])
        if stacked is not None:
            return {
                key: (positions, _rows(stacked, positions))
                for key, (positions, _) in groups.items()
            }
        return {
            key: (positions, self._query_matrix(positions, vectors))
            for key, (positions, vectors) in groups.items()
        }

    def _all_queries(self, vectors: list[Any]) -> np.ndarray | None:
        """Every query as one checked matrix, or None if one is bad (the groups name it)."""
        try:
            return check_matrix(np.stack(vectors), self.ctx.dim, "queries")
        except (ValueError, TypeError, InvalidInputError):
            return None

    def _query_matrix(self, positions: list[int], vectors: list[Any]) -> np.ndarray:
        """The group's queries as one checked matrix; a bad one is named by its position."""
        try:
            return check_matrix(np.stack(vectors), self.ctx.dim, "queries")
        except (ValueError, TypeError, InvalidInputError):
            for pos, vec in zip(positions, vectors, strict=True):
                check_vector(vec, self.ctx.dim, f"queries[{pos}].vector")
            raise

    # --- update / delete / history ----------------------------------------------------

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
        """Change fields of an item if it is still at ``expected_version``.

        Raises:
            VersionConflictError: the item moved on; re-read and retry.
        """
        self._check(caller, namespace, "update")
        now = check_number(now, "now")
        ns = self._namespace(namespace)
        old = self._target(ns, _as_id(item_id))
        if old.version != expected_version:
            raise VersionConflictError(old.id, expected_version, old.version)
        new = replace(old, version=old.version + 1, accessed=now, **self._changes(old, changes))
        ns.replace(old, new, now, self.ctx.emit)
        return new

    def _changes(self, old: Item, changes: dict[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidInputError(
                "changes", f"cannot update {sorted(unknown)}; allowed: {sorted(UPDATABLE)}"
            )
        out: dict[str, Any] = {}
        if "text" in changes:
            out["text"] = check_text(changes["text"], self.ctx.limits)
            if "vector" not in changes and self.ctx.embedder is not None:
                out["vector"] = check_vector(self.ctx.embedder([out["text"]])[0], self.ctx.dim)
        if "vector" in changes:
            out["vector"] = check_vector(changes["vector"], self.ctx.dim)
        if "meta" in changes:
            out["meta"] = dict(check_meta(changes["meta"], self.ctx.limits))
        if "importance" in changes:
            out["importance"] = check_number(changes["importance"], "importance")
        for key in ("valid_from", "valid_to"):
            if key in changes:
                out[key] = check_time(changes[key], key)
        if out.get("valid_to", old.valid_to) < out.get("valid_from", old.valid_from):
            raise InvalidInputError("valid_to", "ends before valid_from")
        return out

    def delete(self, caller: Caller, namespace: str, item_id: int, *, now: float) -> None:
        """Remove an item; :meth:`history` keeps its versions and a deletion marker."""
        self._check(caller, namespace, "delete")
        now = check_number(now, "now")
        ns = self._namespace(namespace)
        ns.remove(self._target(ns, _as_id(item_id)).id, now, self.ctx.emit)

    def history(self, caller: Caller, namespace: str, item_id: int) -> list[dict[str, Any]]:
        """Every kept version of an item, oldest first."""
        self._check(caller, namespace, "read")
        records = self._namespace(namespace).history_of(_as_id(item_id))
        if not records:
            raise ItemNotFoundError(self.name.value, namespace, item_id)
        return records

    # --- monitoring and state ---------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for monitoring (one pass over the namespaces: the runner asks every tick)."""
        items = tokens = nbytes = evictions = builds = 0
        for ns in self.namespaces.values():
            items += len(ns)
            tokens += ns.tokens
            nbytes += ns.nbytes
            evictions += ns.evictions
            builds += ns.index.building
        return {
            "tier": self.name.value,
            "namespaces": len(self.namespaces),
            "items": items,
            "tokens": tokens,
            "bytes": nbytes,
            "evictions": evictions,
            "index_builds": builds,
            "eviction_policy": self.config.eviction,
            "write_policy": self.config.write_policy,
            "decisions": dict(self.decisions),
        }

    def get_state(self) -> dict[str, Any]:
        """A msgpack-safe snapshot of every namespace."""
        return {
            "namespaces": {name: ns.get_state() for name, ns in self.namespaces.items()},
            "decisions": dict(self.decisions),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace every namespace with those of a snapshot."""
        namespaces = {}
        for name, ns_state in state["namespaces"].items():
            ns = self._new_namespace(name)
            ns.set_state(ns_state)
            namespaces[name] = ns
        self.namespaces = namespaces
        self.decisions = Counter(state["decisions"])


def _groups(namespaces: list[str]) -> list[tuple[str, list[int] | None]]:
    """Rows by namespace, in order of first appearance; None stands for every row."""
    if not namespaces:
        return []
    if namespaces.count(namespaces[0]) == len(namespaces):
        return [(namespaces[0], None)]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(namespaces):
        groups.setdefault(name, []).append(i)
    return list(groups.items())


def _rows(matrix: np.ndarray, positions: list[int]) -> np.ndarray:
    """The rows of ``matrix`` at ``positions``, as a contiguous matrix (a view for one row)."""
    if len(positions) == 1:
        return matrix[positions[0] : positions[0] + 1]
    return matrix[positions]


def recall(item: Item, now: float) -> None:
    """Count a read of ``item`` at ``now`` (hits and last access)."""
    item.hits += 1
    item.accessed = max(item.accessed, now)


def _as_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError("item_id", f"expected an int, got {type(value).__name__}")
    return int(value)


def _as_k(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= 1000:
        raise InvalidInputError("k", f"expected an int in 1..1000, got {value!r}")
    return int(value)
