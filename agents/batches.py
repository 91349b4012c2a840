"""How a host cuts its agents' bus traffic into requests, and the items it writes.

:func:`request_batches` groups ``(tier, entry)`` pairs into one bus request's worth per
chunk, bounded by the protocol's batch limit and by an estimate of the reply's bytes
(:func:`hit_bytes`, :data:`REPLY_BUDGET`); :func:`new_item` makes the :class:`NewItem` a
proposal is written as. They hold no host state and need no bus, so they live apart from
:class:`~hivemem.agents.host.AgentHost`: the scale benchmark (``benchmarks/scale.py``)
builds the same requests as the host with them, without a host.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hivemem.agents.base import Proposal
from hivemem.memory_bus.item import DEFAULT_LIMITS, NewItem
from hivemem.memory_bus.protocol import MAX_MESSAGE_BYTES

REPLY_BUDGET = MAX_MESSAGE_BYTES // 2
"""Estimated reply bytes a host asks for in one request: half the protocol's limit."""

HIT_BYTES = 1024
"""A generous estimate of a hit's bytes on the wire without its vector (ids, times, text, meta)."""


def hit_bytes(dim: int, vectors: bool) -> int:
    """Estimated wire bytes of one hit, with or without its ``dim``-d float32 vector."""
    return HIT_BYTES + (4 * dim if vectors else 0)


def request_batches(
    entries: Sequence[tuple[str, Any]],
    max_batch: int = DEFAULT_LIMITS.max_batch,
    cost: Callable[[Any], int] | None = None,
    budget: int = REPLY_BUDGET,
) -> list[tuple[str, list[Any]]]:
    """``(tier, entry)`` pairs as one bus request's worth per chunk: by tier, in order.

    Each tier's entries keep their order and go out in chunks of at most ``max_batch``
    entries and, with ``cost`` (an entry's estimated reply bytes), at most ``budget``
    bytes of reply, so a reply never passes the protocol's message limit.
    """
    by_tier: dict[str, list[Any]] = defaultdict(list)
    for tier, entry in entries:
        by_tier[tier].append(entry)
    out: list[tuple[str, list[Any]]] = []
    for tier, items in by_tier.items():
        chunk: list[Any] = []
        spent = 0
        for entry in items:
            size = cost(entry) if cost is not None else 0
            if chunk and (len(chunk) == max_batch or spent + size > budget):
                out.append((tier, chunk))
                chunk, spent = [], 0
            chunk.append(entry)
            spent += size
        if chunk:
            out.append((tier, chunk))
    return out


def new_item(p: Proposal, vector: np.ndarray) -> NewItem:
    return NewItem(
        text=p.text,
        vector=vector,
        meta=dict(p.meta),
        importance=p.importance,
        valid_from=p.valid_from,
        valid_to=p.valid_to,
        level=p.level,
    )
