"""The private and shared tiers: namespaces of vector-indexed items behind one interface.

Every public method checks access, then validates *all* of its input, and only then
changes anything: a bad request leaves the tier exactly as it was. The column checks
live in :mod:`hivemem.memory_bus.batch`; how a checked batch is applied, in
:mod:`hivemem.memory_bus.proposals`. The checks of a call's input are in
:mod:`hivemem.memory_bus.validation`; the grouping of searches and the paging of scans, in
:mod:`hivemem.memory_bus.queries`. The graph tier (``hivemem.memory_bus.graph``)
extends :class:`VectorTier` with edges.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from hivemem.memory_bus.batch import BatchResult, NewRows, WriteBatch
from hivemem.memory_bus.columns import column_of
from hivemem.memory_bus.config import NamespaceMode, TierConfig
from hivemem.memory_bus.errors import (
    CapacityError,
    ConfigError,
    HivememError,
    InvalidInputError,
    ItemNotFoundError,
    NamespaceNotFoundError,
    TooLargeError,
    VersionConflictError,
    as_single,
)
from hivemem.memory_bus.interfaces import (
    Caller,
    EvictionPolicy,
    Hit,
    ScanPage,
    SearchRequest,
    WritePolicy,
    WriteRequest,
    WriteResult,
)
from hivemem.memory_bus.item import Item, NewItem, TierName, check_number
from hivemem.memory_bus.namespace import Namespace
from hivemem.memory_bus.placement import check_placement
from hivemem.memory_bus.policies import make_eviction_policy, make_write_policy
from hivemem.memory_bus.proposals import add_all, apply_each
from hivemem.memory_bus.queries import group_queries, page
from hivemem.memory_bus.store_context import Defer, StoreContext
from hivemem.memory_bus.validation import as_id, as_int, checked_batch, checked_changes


class VectorTier:
    """A tier of namespaces created on first write (``private`` or ``shared``)."""

    def __init__(self, name: TierName, config: TierConfig, ctx: StoreContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        # Built once (a learned checkpoint read once: a file changed or moved since
        # must not make namespaces evict two ways); each namespace gets its own copy.
        self._eviction = make_eviction_policy(config.eviction, **config.eviction_params)
        self.write_policy: WritePolicy = make_write_policy(
            config.write_policy, **config.write_params
        )
        self.namespaces: dict[str, Namespace] = {}
        self.decisions: Counter[str] = Counter()
        # each namespace's eviction scope during a write (evicting_for); None: any item
        self._evictable: Callable[[str], Callable[[Item], bool] | None] | None = None

    @property
    def needs_neighbours(self) -> bool:
        """Whether the write policy decides on a proposal's neighbours.

        Read from the policy each time, as ``always_adds`` is: a policy may be swapped on
        a live tier.
        """
        return bool(getattr(self.write_policy, "needs_neighbours", True))

    # --- namespaces -------------------------------------------------------------------

    def namespace_named(self, name: str, create: bool = False) -> Namespace:
        """The namespace called ``name``; made empty if ``create``.

        Raises:
            NamespaceNotFoundError: None by that name, and not ``create``.
        """
        ns = self.namespaces.get(name)
        if ns is None:
            if not create:
                raise NamespaceNotFoundError(self.name.value, name)
            ns = self.namespaces[name] = self._new_namespace(name)
        return ns

    def item_in(self, ns: Namespace, item_id: int) -> Item:
        """The item ``item_id`` of ``ns``.

        Raises:
            ItemNotFoundError: ``ns`` holds no such item.
        """
        item = ns.item(item_id)
        if item is None:
            raise ItemNotFoundError(self.name.value, ns.name, item_id)
        return item

    def _new_namespace(self, name: str) -> Namespace:
        ns = Namespace(
            self.name, name, self.config, self.ctx.dim, self._eviction_copy(), self._rng_for(name)
        )
        ns.eviction_scope = partial(self._eviction_scope, name)
        return ns

    def _eviction_scope(self, namespace: str) -> Callable[[Item], bool] | None:
        """Which items of ``namespace`` the write under way may evict (None: any): see
        :meth:`evicting_for`."""
        return None if self._evictable is None else self._evictable(namespace)

    def evict_scope(self, callers: Iterable[Caller]) -> Callable[[Item], bool] | None:
        """Which items a write by ``callers`` may evict (None: any): any, here."""
        return None

    def evicting_for(
        self, callers: Sequence[Caller], namespaces: Sequence[str] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Let the evictions made meanwhile choose only among the items ``callers`` may
        touch (:meth:`evict_scope`): in each of ``namespaces`` (a batch's, row by row),
        those its own rows' callers may touch. Where they may evict any (every tier but a
        graph with a level-limited writer), a no-op: every write passes here.

        Per namespace: a level-limited writer's row in one namespace limited the
        evictions of the batch's rows in every other namespace too, so one bus evicted
        other nodes than a sharded bus, whose shards each saw their own rows' callers.
        """
        scope = self.evict_scope(callers)
        if scope is None:  # nor then of any subset of them
            return contextlib.nullcontext()
        if namespaces is None or len(set(namespaces)) == 1:
            return self._evicting(lambda name: scope)
        writers: dict[str, list[Caller]] = {}
        for caller, name in zip(callers, namespaces, strict=True):
            writers.setdefault(name, []).append(caller)
        scopes = {name: self.evict_scope(who) for name, who in writers.items()}
        return self._evicting(lambda name: scopes.get(name, scope))

    @contextlib.contextmanager
    def _evicting(self, scope_of: Callable[[str], Callable[[Item], bool] | None]) -> Iterator[None]:
        self._evictable = scope_of
        try:
            yield
        finally:
            self._evictable = None

    def _eviction_copy(self) -> EvictionPolicy:
        """A namespace's own eviction policy: a copy of the tier's (a learned one's
        checkpoint is not read again), or, for a policy that cannot be copied (one that
        holds a lock, say: an RL environment's), one made anew by name."""
        try:
            return copy.deepcopy(self._eviction)
        except (TypeError, copy.Error):
            return make_eviction_policy(self.config.eviction, **self.config.eviction_params)

    def _rng_for(self, namespace: str) -> np.random.Generator:
        # A seed per namespace from hashlib, so the same namespace draws the same numbers in
        # any process whatever order namespaces were created in.
        digest = hashlib.blake2b(
            f"{self.ctx.seed}/{self.name.value}/{namespace}".encode(), digest_size=8
        )
        return np.random.default_rng(int.from_bytes(digest.digest(), "little"))

    def _check(self, caller: Caller, namespace: str, action: str, level: int | None = None) -> None:
        """Refuse a request about ``namespace`` that ``caller`` may not make, or that this
        shard of a bus cannot answer: a namespace it does not hold and another shard owns
        would otherwise read as empty here (see :func:`check_placement`)."""
        if not isinstance(namespace, str) or not namespace:
            raise InvalidInputError("namespace", "expected a non-empty str")
        self.ctx.access.check(caller, self.name, namespace, action, level)
        if self.ctx.shard[1] > 1 and namespace not in self.namespaces:
            check_placement(namespace, self.ctx.shard)

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
        try:
            result = self.write_batch(
                WriteBatch.of_item(caller, namespace, item), now=now, defer=defer
            )
        except HivememError as exc:  # named as the one row of a batch
            raise as_single(exc, "items[0]", "item") from None
        evicted = result.evicted.get(0)
        return WriteResult(result.ops[0], result.item_ids[0], list(evicted) if evicted else [])

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
        self._refuse_without_future()
        batch = checked_batch(batch, now, self.ctx, self.config, self._check, self._check_levels)
        if not len(batch):
            return BatchResult([], [])
        with self.evicting_for(batch.callers, batch.namespaces):
            if getattr(self.write_policy, "always_adds", False):
                return add_all(self, batch, now, defer)
            proposals = NewRows([-1] * len(batch), batch, now).build(self.name)
            return BatchResult.from_results(apply_each(self, batch.namespaces, proposals, now))

    def _refuse_without_future(self) -> None:
        """Refuse a change that may evict before anything of it is made, if the eviction
        policy needs the future and there is none: an eviction failing after its write
        had gone in left the item stored under a refusal the journal took back."""
        if getattr(self._eviction, "needs_future", False) and self.ctx.next_use is None:
            raise ConfigError(
                f"the {self.name.value} tier evicts by {self.config.eviction!r}, which needs "
                "the future access sequence: only a simulation run's embedded bus has it"
            )

    def _check_levels(self, levels: Any, n: int) -> list[int] | None:
        """Every row's level (only 0 outside the graph tier); None: no level column needed."""
        if levels is not None:
            for level in column_of(levels, n, "level"):
                if level != 0:
                    self._check_level(level)
        return None

    def _check_level(self, level: Any) -> int:
        if level != 0:
            raise InvalidInputError("level", f"only the graph tier has levels, got {level!r}")
        return 0

    # --- reads ------------------------------------------------------------------------

    def get(
        self, caller: Caller, namespace: str, item_id: int, *, now: float | None = None
    ) -> Item:
        """One item by id; with ``now`` the read counts as a recall."""
        self._check(caller, namespace, "read")
        item = self.item_in(self.namespace_named(namespace), as_id(item_id))
        if now is not None:
            recall(item, check_number(now, "now"))
        return item

    def scan(
        self,
        caller: Caller,
        namespace: str,
        *,
        after: int = 0,
        limit: int = 100,
        as_of: float | None = None,
    ) -> ScanPage:
        """Up to ``limit`` items of ``namespace`` with ids above ``after``, in id order
        (only those valid at ``as_of``, if given); listing them is not a recall.

        Page through a namespace with ``after=page.next`` until it is None. Items written
        meanwhile have larger ids, so a later page lists them; one deleted meanwhile is
        not listed. A namespace nothing was written to has no items (as for ``search``).

        Raises:
            AccessDeniedError: the caller may not read ``namespace``.
            InvalidInputError: ``after`` is not an int >= 0, ``limit`` not in
                1..``max_batch``, or ``as_of`` not a finite number.
        """
        self._check(caller, namespace, "read")
        after = as_int(after, "after", low=0)
        limit = as_int(limit, "limit", low=1, high=self.ctx.limits.max_batch)
        keep = self._listed(caller, None if as_of is None else check_number(as_of, "as_of"))
        ns = self.namespaces.get(namespace)
        return ScanPage([], None) if ns is None else page(ns, after, limit, keep)

    def _listed(self, caller: Caller, as_of: float | None) -> Callable[[Item], bool] | None:
        """Which items ``scan`` lists to ``caller`` (None: all)."""
        if as_of is None:
            return None
        return lambda item: item.valid_at(as_of)

    def search(
        self,
        caller: Caller,
        namespace: str,
        vector: np.ndarray,
        k: int = 10,
        *,
        now: float | None,
        as_of: float | None = None,
    ) -> list[Hit]:
        """The ``k`` most similar items of ``namespace``, best first; with a ``now`` each
        counts as recalled (hits, accessed), with None none does (a look, as ``scan``)."""
        try:
            return self.search_many([SearchRequest(caller, namespace, vector, k, as_of)], now=now)[
                0
            ]
        except HivememError as exc:  # named as the one query of a batch
            raise as_single(exc, "queries[0].", "") from None

    def search_many(
        self, requests: Sequence[SearchRequest], *, now: float | None
    ) -> list[list[Hit]]:
        """Batched search: requests are grouped by namespace, one index call per group.
        The hits count as recalled at ``now`` unless it is None."""
        if now is not None:
            now = check_number(now, "now")
        out = self._found(requests)
        if now is not None:
            for hits in out:
                for hit in hits:
                    item = hit.item
                    item.hits += 1
                    item.accessed = max(item.accessed, now)  # recall(item, now), inlined
        return out

    @property
    def eviction_name(self) -> str:
        """The policy that evicts here: a window's is FIFO, whatever the config names."""
        return "fifo" if self.config.mode is NamespaceMode.WINDOW else self.config.eviction

    def merge_scope(self, proposal: Item) -> Callable[[Item], bool] | None:
        """Which items the write policy may merge ``proposal`` into (its neighbours are
        searched among those; None: every item of the namespace, here)."""
        return None

    def _visible_to(self, caller: Caller) -> Callable[[Item], bool] | None:
        """Which items of a namespace it may read ``caller`` may see (None: all, here)."""
        return None

    def _found(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        if len(requests) > self.ctx.limits.max_batch:
            raise TooLargeError("batch", self.ctx.limits.max_batch, len(requests))
        groups = group_queries(requests, self._check, self._visible_to, self.ctx.dim)
        out: list[list[Hit]] = [[] for _ in requests]
        for (namespace, k, as_of, keep), (positions, vectors) in groups.items():
            ns = self.namespaces.get(namespace)
            if ns is None:
                continue
            for pos, hits in zip(positions, ns.search(vectors, k, as_of, keep), strict=True):
                out[pos] = hits
        return out

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
        ns = self.namespace_named(namespace)
        old = self.item_in(ns, as_id(item_id))
        if old.version != expected_version:
            raise VersionConflictError(old.id, expected_version, old.version)
        new = replace(
            old, version=old.version + 1, accessed=now, **checked_changes(old, changes, self.ctx)
        )
        if ns.config.mode is NamespaceMode.TOKEN_BUDGET:  # more tokens may evict others
            self._refuse_without_future()
        if not ns.fits(new):
            raise CapacityError(
                f"{new.tokens} tokens can never fit a budget of {ns.config.token_budget}",
                tokens=new.tokens,
            )
        with self.evicting_for([caller]):  # evictions go out as events
            ns.replace(old, new, now, self.ctx.emit, self.ctx.next_use)
        return new

    def delete(self, caller: Caller, namespace: str, item_id: int, *, now: float) -> None:
        """Remove an item; :meth:`history` keeps its versions and a deletion marker."""
        self._check(caller, namespace, "delete")
        now = check_number(now, "now")
        ns = self.namespace_named(namespace)
        ns.remove(self.item_in(ns, as_id(item_id)).id, now, self.ctx.emit)

    def history(self, caller: Caller, namespace: str, item_id: int) -> list[dict[str, Any]]:
        """Every kept version of an item, oldest first."""
        self._check(caller, namespace, "read")
        records = self.namespace_named(namespace).history_of(as_id(item_id))
        if not records:
            raise ItemNotFoundError(self.name.value, namespace, item_id)
        return records

    # --- monitoring and state ---------------------------------------------------------

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        """Counts for monitoring (one pass over the namespaces: the runner asks every tick).

        With ``caller``, over the namespaces it may read alone, and without the tier's
        write decisions (counted over every namespace): an agent learns nothing of the
        others' memories from them.
        """
        items = tokens = nbytes = evictions = builds = 0
        namespaces = self.readable_namespaces(caller)
        for ns in namespaces:
            counted = self._counts(ns, caller)
            items += counted[0]
            tokens += counted[1]
            nbytes += counted[2]
            evictions += ns.evictions
            builds += ns.index.building
        return {
            "tier": self.name.value,
            "namespaces": len(namespaces),
            "items": items,
            "tokens": tokens,
            "bytes": nbytes,
            "evictions": evictions,
            "index_builds": builds,
            "eviction_policy": self.eviction_name,
            "write_policy": self.config.write_policy,
            "decisions": dict(self.decisions) if caller is None else {},
        }

    def readable_namespaces(self, caller: Caller | None) -> list[Namespace]:
        """The namespaces ``caller`` may read (None: every one)."""
        if caller is None:
            return list(self.namespaces.values())
        may = self.ctx.access.may
        return [ns for name, ns in self.namespaces.items() if may(caller, self.name, name)]

    def _counts(self, ns: Namespace, caller: Caller | None) -> tuple[int, int, int]:
        """Items, tokens and bytes of ``ns`` that ``caller`` may read (None: all)."""
        return len(ns), ns.tokens, ns.nbytes

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


def recall(item: Item, now: float) -> None:
    """Count a read of ``item`` at ``now`` (hits and last access)."""
    item.hits += 1
    item.accessed = max(item.accessed, now)
