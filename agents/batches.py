"""How a host cuts its agents' bus traffic into requests, and the items it writes.

:func:`request_batches` groups ``(tier, entry)`` pairs into one bus request's worth per
chunk, bounded by the protocol's batch limit and by an estimate of the request's bytes
(:func:`write_bytes`, :data:`REQUEST_BUDGET`) or its reply's (:func:`hit_bytes`,
:data:`REPLY_BUDGET`: a reply larger than estimated is read again in halves, see
:mod:`~hivemem.agents.recalls`); :func:`new_item` makes the :class:`NewItem` a
proposal is written as; :func:`for_agent` names the agent of a row the bus refuses. They hold no host state and need no bus, so they live apart from
:class:`~hivemem.agents.host.AgentHost`: the scale benchmark (``benchmarks/scale.py``)
builds the same requests as the host with them, without a host.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hivemem.agents.base import Proposal
from hivemem.memory_bus.client import OnBehalf
from hivemem.memory_bus.errors import HivememError, InvalidInputError
from hivemem.memory_bus.item import DEFAULT_LIMITS, NewItem
from hivemem.memory_bus.protocol import MAX_MESSAGE_BYTES

REPLY_BUDGET = MAX_MESSAGE_BYTES // 2
"""Estimated reply bytes a host asks for in one request: half the protocol's limit."""

HIT_BYTES = 1024
"""A generous estimate of a hit's bytes on the wire without its vector (ids, times, text, meta)."""


def hit_bytes(dim: int, vectors: bool) -> int:
    """Estimated wire bytes of one hit, with or without its ``dim``-d float32 vector."""
    return HIT_BYTES + (4 * dim if vectors else 0)


REQUEST_BUDGET = MAX_MESSAGE_BYTES // 2
"""Estimated bytes of a request a host sends (a ``write_many``'s rows): half the limit."""

ROW_BYTES = 256
"""A generous estimate of a row's wire bytes besides its text, vector, meta and names (the
numbers, the keys of its fields, msgpack's framing)."""


def query_bytes(dim: int) -> int:
    """Estimated wire bytes of one query of a ``search_many``: its vector and the rest."""
    return 4 * dim + ROW_BYTES


def write_bytes(p: Proposal, dim: int, who: OnBehalf) -> int:
    """Estimated wire bytes of one ``write_many`` row: its text (UTF-8), ``dim``-d float32
    vector, meta, namespace and agent credentials, and :data:`ROW_BYTES` for the rest.

    Counted from the lengths, not by encoding the row (it is encoded once, to be sent).
    """
    text = len(p.text) if p.text.isascii() else len(p.text.encode())
    names = len(p.namespace) + len(who.agent) + len(who.token)
    return text + 4 * dim + meta_bytes(p.meta) + names + ROW_BYTES


def meta_bytes(value: Any) -> int:
    """An upper estimate of ``value``'s msgpack bytes (meta: str, numbers, lists, maps)."""
    if isinstance(value, str):
        return 5 + (len(value) if value.isascii() else len(value.encode()))
    if isinstance(value, dict):
        return 5 + sum(meta_bytes(k) + meta_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 5 + sum(meta_bytes(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return 5 + len(value)
    return 9  # None, a bool, an int or a float


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


_ROW = re.compile(r"(?:items|queries|entries)\[(\d+)\]")
_MARKED_ROW = re.compile(r"\((?:items|queries|entries)\[\d+\]\)")
"""A field the bus (or the client's encoder) names in a row of a batch: ``items[3].text``."""


def for_agent(exc: HivememError, rows: Sequence[tuple[str, str]]) -> HivememError:
    """``exc``, raised about one row of a host's batch request, made to name the agent
    whose entry that row is, and the agent's own field: ``items[3].text`` becomes
    ``writes[0].text`` of ``agent-3`` (``rows[i]``: row ``i``'s agent and own field).

    A host sends many agents' entries in one request, so a row number means nothing to
    whoever reads the error; the agent does. The error keeps its type and details
    (``details.row`` is still the batch row, as ``applied``/``refused``/``unknown`` of a
    batch split over shards are); ``details.agent`` is added, and for such a split batch
    ``details.agents`` (the agents of the rows of each outcome). An error about no row
    comes back unchanged.
    """
    field = exc.details.get("field")
    match = _ROW.match(field) if isinstance(field, str) else None
    row = int(match.group(1)) if match else exc.details.get("row")
    if not isinstance(row, int) or not 0 <= row < len(rows) or "agent" in exc.details:
        return exc
    agent, own = rows[row]
    if match is not None and isinstance(field, str):
        named = own + field[match.end() :]
        exc.message = exc.message.replace(field, named, 1)
        exc.details["field"] = named
        if isinstance(exc, InvalidInputError):
            exc.field = named
    else:  # the row in the message's parentheses (the bus's "(queries[0])"), or none
        marked = _MARKED_ROW.sub(f"({own})", exc.message, count=1)
        exc.message = marked if marked != exc.message else f"{exc.message} ({own})"
    if not exc.message.startswith(f"agent {agent!r}"):  # an access refusal names it already
        exc.message = f"agent {agent!r}: {exc.message}"
    exc.details["agent"] = agent
    outcomes = {
        outcome: sorted(
            {rows[r if isinstance(r, int) else r["row"]][0] for r in exc.details[outcome]}
        )
        for outcome in ("applied", "refused", "unknown")
        if isinstance(exc.details.get(outcome), list)
    }
    if outcomes:
        exc.details["agents"] = outcomes
        told = "; ".join(f"{o}: {', '.join(a) or 'none'}" for o, a in outcomes.items())
        exc.message = f"{exc.message} (by agent, {told})"
    exc.args = (exc.message,)
    return exc
