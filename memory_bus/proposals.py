"""How a tier applies the proposals of a checked batch to its namespaces.

Two paths, chosen by :meth:`~hivemem.memory_bus.tiers.VectorTier.write_batch`: a write
policy that adds every proposal unseen (``always_adds``) lets the batch go into each
namespace with room as columns (:func:`add_all`); under any other the proposals are
decided one at a time, in order, each seeing the earlier ones' changes
(:func:`apply_each`). Both take the tier explicitly and change only its namespaces and
its running count of decisions.

A bus with a journal hands the tier a :class:`DecisionTape` for each request it journals:
the decisions made are recorded on it, journaled after the request, and played back on a
replay instead of asking the policy again (see the class).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from hivemem.memory_bus.batch import BatchResult, NewRows, WriteBatch
from hivemem.memory_bus.candidates import PoolSlot
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.interfaces import Hit, WriteDecision, WriteResult
from hivemem.memory_bus.item import WRITE_OP_VALUE, Item, WriteOp
from hivemem.memory_bus.namespace import Namespace
from hivemem.memory_bus.neighbours import BatchNeighbours
from hivemem.memory_bus.registry import plugin_failed

if TYPE_CHECKING:
    from hivemem.memory_bus.store_context import Defer, StoreContext
    from hivemem.memory_bus.tiers import VectorTier

BATCH_SEARCH_FROM = 2_048
"""Items of a namespace from which a batch's proposals to it are searched together."""


class DecisionTape:
    """The write policy's decisions during one journaled request, in order.

    A decision need not be a function of what the journal holds: the neighbours it saw
    may come from an approximate index whose background build was installed at a moment
    timing chose (``IndexBuild.BACKGROUND``: searches before and after it differ), and a
    user's policy may draw from a generator the store does not keep. Replayed by asking
    the policy again, such a request could decide otherwise, and the restarted bus would
    hold other items under the ids its clients were given (measured: ``dedup`` over an
    HNSW namespace of 5,000 items took 5,381 ids live and 5,220 on the replay). So the
    decisions are journaled, after the request's record, and played back.

    Args:
        given: Decisions to play back, as :meth:`to_record` made them (a replay); None
            records them instead (live).
    """

    def __init__(self, given: Sequence[Sequence[Any]] | None = None) -> None:
        self.made: list[WriteDecision] = []
        self._given = None if given is None else deque(given)

    @property
    def playing(self) -> bool:
        """Whether the decisions are played back (a replay) rather than made."""
        return self._given is not None

    def play(self) -> WriteDecision | None:
        """The next decision played back; None when recording, or when none is left (a
        journal whose decisions were not all written: the policy decides again)."""
        if not self._given:
            return None
        op, target = self._given.popleft()
        return WriteDecision(WriteOp(op), int(target))

    def record(self, decision: WriteDecision) -> None:
        """Note a decision the policy made."""
        self.made.append(decision)

    def to_record(self) -> list[list[Any]]:
        """The decisions made, msgpack-safe: ``[op, target]`` each."""
        return [[WRITE_OP_VALUE[d.op], d.target] for d in self.made]


def add_all(tier: VectorTier, batch: WriteBatch, now: float, defer: Defer | None) -> BatchResult:
    """ADD every row: as columns where the namespace has room, item by item where not."""
    n = len(batch)
    tier.decisions[WRITE_OP_VALUE[WriteOp.ADD]] += n
    item_ids: list[int] = [-1] * n
    evicted: dict[int, list[int]] = {}
    for name, rows in _groups(batch.namespaces):
        part = batch if rows is None else batch.rows(rows)
        positions = range(n) if rows is None else rows
        ids = tier.ctx.allocate(len(part))
        rows_of_ns = NewRows(ids, part, now)
        ns = tier.namespace_named(name, create=True)
        if ns.has_room(len(part)):
            if defer is None:
                ns.append(rows_of_ns, tier.ctx.emit)
            else:
                defer(partial(ns.append, rows_of_ns, tier.ctx.emit))
        else:
            victims = ns.add_many(
                rows_of_ns.build(tier.name), now, tier.ctx.next_use, tier.ctx.emit
            )
            evicted.update((pos, v) for pos, v in zip(positions, victims, strict=True) if v)
        if rows is None:
            item_ids = list(ids)
        else:
            for pos, item_id in zip(rows, ids, strict=True):
                item_ids[pos] = item_id
    return BatchResult([WriteOp.ADD] * n, item_ids, evicted)


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


def apply_each(
    tier: VectorTier, namespaces: Sequence[str], proposals: list[Item], now: float
) -> list[WriteResult]:
    """Decide each proposal with the tier's write policy, in order, and apply the decision."""
    results: list[WriteResult] = []
    adds: dict[str, list[tuple[int, Item]]] = defaultdict(list)
    rows_in = Counter(namespaces)
    ahead = _neighbours_ahead(tier, namespaces, rows_in, proposals)
    # eviction candidates per namespace, kept over the write's rows there
    slots = {name: PoolSlot(rows=rows) for name, rows in rows_in.items()}
    for pos, (name, proposal) in enumerate(zip(namespaces, proposals, strict=True)):
        ns = tier.namespace_named(name, create=True)
        nb, slot = ahead.get(name), slots[name]
        if tier.needs_neighbours and adds[name]:
            # Later proposals must see earlier ADDs of the same batch.
            _flush_adds(tier.ctx, ns, adds.pop(name), results, now, nb, slot)
        decision = _decide(tier, ns, proposal, now, nb, pos)
        tier.decisions[WRITE_OP_VALUE[decision.op]] += 1
        results.append(WriteResult(decision.op, decision.target))
        if decision.op is WriteOp.ADD:
            adds[name].append((pos, proposal))
        elif decision.op is WriteOp.UPDATE:
            victims = _update_from(tier, ns, decision.target, proposal, now)
            results[-1].evicted = victims
            if nb is not None:
                nb.changed(decision.target, proposal.vector)
                for victim in victims:
                    nb.changed(victim)
            if slot.pool is not None:
                slot.pool.replace(ns.items[decision.target])
                for victim in victims:
                    slot.pool.remove(victim)
        elif decision.op is WriteOp.DELETE:
            ns.remove(tier.item_in(ns, decision.target).id, now, tier.ctx.emit)
            if nb is not None:
                nb.changed(decision.target)
            if slot.pool is not None:
                slot.pool.remove(decision.target)
    for name, pending in adds.items():
        _flush_adds(tier.ctx, tier.namespaces[name], pending, results, now, slot=slots[name])
    return results


def _neighbours_ahead(
    tier: VectorTier, namespaces: Sequence[str], rows_in: Counter[str], proposals: list[Item]
) -> dict[str, BatchNeighbours]:
    """Neighbours of the batch's proposals searched together, per namespace large
    enough for a search per proposal to cost (see :mod:`.neighbours`); ``rows_in``
    counts the batch's rows per namespace."""
    tape = tier.ctx.tape
    if not tier.needs_neighbours or len(proposals) < 2 or (tape is not None and tape.playing):
        return {}
    if tier.merge_scope(proposals[0]) is not None:  # (the graph's levels: searched row by row)
        return {}
    wanted = {
        name
        for name, count in rows_in.items()
        if count > 1
        and (ns := tier.namespaces.get(name)) is not None
        and len(ns) >= BATCH_SEARCH_FROM
    }
    if not wanted:  # the usual case: no namespace large and written more than once
        return {}
    rows: dict[str, list[int]] = defaultdict(list)
    for pos, name in enumerate(namespaces):
        if name in wanted:
            rows[name].append(pos)
    return {
        name: BatchNeighbours(
            tier.namespaces[name],
            np.stack([proposals[pos].vector for pos in positions]),
            tier.config.neighbours,
            positions,
        )
        for name, positions in rows.items()
    }


def _decide(
    tier: VectorTier,
    ns: Namespace,
    proposal: Item,
    now: float,
    nb: BatchNeighbours | None,
    pos: int,
) -> WriteDecision:
    tape = tier.ctx.tape
    if tape is not None:
        played = tape.play()
        if played is not None:
            return played
    neighbours: list[Hit] = []
    if tier.needs_neighbours:
        found = None if nb is None else nb.hits(pos, proposal.vector, ns)
        if found is None:
            scope = tier.merge_scope(proposal)
            found = ns.search(proposal.vector[None, :], tier.config.neighbours, None, scope)[0]
        neighbours = found
    try:
        decision = tier.write_policy.decide(proposal, neighbours, now)
    except Exception as exc:
        name = tier.config.write_policy
        plugin_failed(f"write policy {name!r}", exc, policy=name)
    _check_decision(tier, decision, ns)
    if tape is not None:
        tape.record(decision)
    return decision


def _check_decision(tier: VectorTier, decision: Any, ns: Namespace) -> None:
    """Refuse a plug-in's answer that is not a :class:`WriteDecision` of a
    :class:`WriteOp` and an int target, naming the policy (it failed the write as an
    ``internal`` error), or an UPDATE or DELETE whose target is not an item of ``ns``
    (it failed as ``not_found``, as if the writer had named that id). Raised before the
    decision is journaled; a batch's earlier rows that changed the store keep the
    request's record, and a replay meets the same answer."""
    name = tier.config.write_policy
    if not (
        isinstance(decision, WriteDecision)
        and isinstance(decision.op, WriteOp)
        and isinstance(decision.target, int)
        and not isinstance(decision.target, bool)
    ):
        raise ConfigError(
            f"write policy {name!r} answered {decision!r}: decide must return a "
            "WriteDecision(WriteOp, target id)",
            policy=name,
        )
    if decision.op in (WriteOp.UPDATE, WriteOp.DELETE) and ns.item(decision.target) is None:
        raise ConfigError(
            f"write policy {name!r} answered {decision!r}: {decision.op.value}'s target "
            f"must be an item of {tier.name.value}/{ns.name} (a neighbour's id)",
            policy=name,
        )


def _flush_adds(
    ctx: StoreContext,
    ns: Namespace,
    pending: list[tuple[int, Item]],
    results: list[WriteResult],
    now: float,
    nb: BatchNeighbours | None = None,
    slot: PoolSlot | None = None,
) -> None:
    ids = ctx.allocate(len(pending))
    items = []
    for (pos, proposal), item_id in zip(pending, ids, strict=True):
        proposal.id = item_id
        results[pos].item_id = item_id
        items.append(proposal)
    evicted = ns.add_many(items, now, ctx.next_use, ctx.emit, slot)
    for (pos, item), victims in zip(pending, evicted, strict=True):
        results[pos].evicted = victims
        if nb is not None:
            nb.added(item.id, item.vector)
            for victim in victims:
                nb.changed(victim)


def _update_from(
    tier: VectorTier, ns: Namespace, target_id: int, proposal: Item, now: float
) -> list[int]:
    """Make ``proposal`` the next version of the item ``target_id``; the ids it evicted
    (a token budget the new text takes over: :meth:`Namespace.replace`)."""
    old = tier.item_in(ns, target_id)
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
    return ns.replace(old, new, now, tier.ctx.emit, tier.ctx.next_use)
