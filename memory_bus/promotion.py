"""``promote``: a parent node written above its children and linked to each.

G-Memory turns interactions into tasks and tasks into insights; here a caller names the
children and gives the parent, and the graph tier writes the parent one level or more
above them and links it to each. It is apart from :mod:`hivemem.memory_bus.graph`
because of what it must check before anything is written: the children, the level, the
edge type, and whether the parent's write can make room without evicting the children
(it once evicted the very child it was to be linked to, and answered success).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hivemem.memory_bus.config import NamespaceMode
from hivemem.memory_bus.errors import CapacityError, InvalidInputError
from hivemem.memory_bus.interfaces import Caller, WriteResult
from hivemem.memory_bus.item import NewItem, WriteOp, count_tokens

if TYPE_CHECKING:
    from hivemem.memory_bus.graph import GraphTier


def promote(
    tier: GraphTier,
    caller: Caller,
    namespace: str,
    children: Sequence[int],
    parent: NewItem,
    *,
    now: float,
    edge_type: str = "abstracts",
) -> WriteResult:
    """Write ``parent`` one level or more above every child and link it to each child.

    The parent's write never evicts a child (:meth:`GraphTier.sparing`): in a full
    namespace it makes room with other nodes. If the write policy neither adds nor
    updates the parent, the request is refused after the policy's decision was counted
    (the journal keeps such a refusal, see
    :data:`~hivemem.memory_bus.handlers.REFUSED_AFTER_A_CHANGE`).

    Returns:
        The parent's write: its node id (an existing node if the write policy merged it),
        ADD or UPDATE, and the nodes its write evicted.

    Raises:
        InvalidInputError: No child, a parent level not above every child's, a bad
            edge type; or the write policy neither added nor updated the parent.
        CapacityError: The namespace is full and only the children could make room for
            the parent (checked before anything is written, as if the parent were
            added: a parent the write policy would merge is refused too).
    """
    if not children:
        raise InvalidInputError("children", "promote needs at least one child")
    kids = [
        tier.check_node(caller, namespace, child, "link", f"children[{i}]")
        for i, child in enumerate(children)
    ]
    kids = list({kid.id: kid for kid in kids}.values())  # a child given twice: one edge
    level = tier.level_scope.check_level(parent.level)
    if level <= max(k.level for k in kids):
        raise InvalidInputError("level", f"parent level {level} must be above its children's")
    # Refused before anything is written (the parent, then no links, once was).
    tier.check_edge_type(edge_type, "edge_type")
    tier.ctx.access.check(caller, tier.name, namespace, "link", level)
    spared = frozenset(kid.id for kid in kids)
    check_room_besides(tier, caller, namespace, spared, parent)
    with tier.sparing(spared):
        result = tier.write(caller, namespace, parent, now=now)
    if result.op not in (WriteOp.ADD, WriteOp.UPDATE):
        raise InvalidInputError(
            "parent", f"the write policy decided {result.op.value}; nothing to link"
        )
    for kid in kids:
        tier.add_edge(caller, namespace, result.item_id, kid.id, edge_type, now=now)
    return result


def check_room_besides(
    tier: GraphTier, caller: Caller, namespace: str, spared: frozenset[int], parent: NewItem
) -> None:
    """Refuse a ``promote`` whose parent needs room that only its children (those
    ``spared``) could make. Where the caller may evict no node at all, its write goes in
    over the bound, as any write of a role limited to some levels does.

    Raises:
        CapacityError: Naming the namespace and the children.
    """
    ns = tier.namespaces.get(namespace)
    if ns is None:
        return
    scope = tier.level_scope.evict_scope([caller])
    evictable = [it for it in ns.items.values() if scope is None or scope(it)]
    others = [it for it in evictable if it.id not in spared]
    if len(others) == len(evictable):
        return  # no child could be evicted: nothing changes for the write
    config = tier.graph_config
    short = config.capacity is not None and len(ns) + 1 - len(others) > config.capacity
    if config.token_budget is not None and config.mode is NamespaceMode.TOKEN_BUDGET:
        text = parent.text if isinstance(parent.text, str) else ""  # (the write checks it)
        tokens = ns.tokens + count_tokens(text) - sum(it.tokens for it in others)
        short = short or tokens > config.token_budget
    if short:
        raise CapacityError(
            f"graph/{namespace} is full and only the children of this promote could be"
            " evicted to make room for its parent (they are never evicted for it)",
            namespace=namespace,
            children=sorted(spared),
        )
