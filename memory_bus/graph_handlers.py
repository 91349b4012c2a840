"""What each graph op does: decode arguments, call the graph tier, encode the result.

The graph tier's part of :mod:`hivemem.memory_bus.handlers` (whose ``HANDLERS`` table
names these): edges added, invalidated and read, neighbours, promotion, retrieval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hivemem.memory_bus.arguments import field, now_of, recall_time
from hivemem.memory_bus.codec import decode_item_arg, encode_hit, encode_write_result
from hivemem.memory_bus.item import TierName
from hivemem.memory_bus.promotion import promote as promoted
from hivemem.memory_bus.protocol import NUMBER

if TYPE_CHECKING:
    from hivemem.memory_bus.handlers import Context


def add_edge(ctx: Context, args: dict[str, Any]) -> Any:
    return ctx.store.graph.add_edge(
        ctx.caller,
        field(args, "namespace", str),
        field(args, "src", int),
        field(args, "dst", int),
        field(args, "type", str),
        now=now_of(args),
        valid_from=field(args, "valid_from", NUMBER, None),
        valid_to=field(args, "valid_to", NUMBER, float("inf")),
        meta=field(args, "meta", dict, None),
    )


def invalidate_edge(ctx: Context, args: dict[str, Any]) -> Any:
    ctx.store.graph.invalidate_edge(
        ctx.caller,
        field(args, "namespace", str),
        field(args, "edge_id", int),
        at=float(field(args, "at", NUMBER)),
    )
    return None


def edges(ctx: Context, args: dict[str, Any]) -> Any:
    return ctx.store.graph.edges(
        ctx.caller,
        field(args, "namespace", str),
        as_of=field(args, "as_of", NUMBER, None),
        node=field(args, "node", int, None),
        type=field(args, "type", str, None),
        after=field(args, "after", int, 0),
        limit=field(args, "limit", int, None),
    )


def neighbors(ctx: Context, args: dict[str, Any]) -> Any:
    return ctx.store.graph.neighbors(
        ctx.caller,
        field(args, "namespace", str),
        field(args, "node_id", int),
        as_of=field(args, "as_of", NUMBER, None),
        direction=field(args, "direction", str, "both"),
    )


def promote(ctx: Context, args: dict[str, Any]) -> Any:
    """The parent's id; with ``detail``, the parent's write as a ``write`` answers it
    (``op``, ``item_id`` and the nodes it ``evicted``)."""
    children = field(args, "children", list)
    detail = field(args, "detail", bool, False)
    done = promoted(
        ctx.store.graph,
        ctx.caller,
        field(args, "namespace", str),
        children,
        decode_item_arg(args, "parent"),
        now=now_of(args),
        edge_type=field(args, "edge_type", str, "abstracts"),
    )
    return encode_write_result(done) if detail else done.item_id


def retrieve(ctx: Context, args: dict[str, Any]) -> Any:
    hits = ctx.store.graph.retrieve(
        ctx.caller,
        field(args, "namespace", str),
        ctx.query_vector(args),
        field(args, "k", int, 10),
        now=recall_time(args),
        method=field(args, "method", str, None),
        hops=field(args, "hops", int, None),
        as_of=field(args, "as_of", NUMBER, None),
    )
    ctx.recalled(TierName.GRAPH, recall_time(args), [hits])
    return [encode_hit(h) for h in hits]
