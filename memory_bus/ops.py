"""Every bus op, written once, with its arguments and results in wire form.

:class:`Ops` encodes each op's arguments (vectors as raw float32 bytes, items and
batches as ``docs/protocol.md`` lays them out) and names the decoder of its result; a
subclass says how a call is carried out (:class:`~hivemem.memory_bus.client.AsyncMemoryClient`
awaits it, :class:`~hivemem.memory_bus.client.MemoryClient` waits for it or returns a
Future, :class:`~hivemem.memory_bus.sharding.AsyncShardedClient` routes it to a shard).
Nothing here does I/O. :class:`OnBehalf` names the agent one batch entry acts for, and
:func:`encode_write_entries` puts ``write_many`` entries in wire form ahead of sending.

Arguments of the wrong type are refused here, before anything is sent, with an
:class:`~hivemem.memory_bus.errors.InvalidInputError` naming the argument (an item
without ``NewItem``'s fields, an entry or query of the wrong shape). The shapes of a
batch are checked only once encoding it fails, to name the bad entry: a check of every
entry up front cost a fifth of the encoding's time on every batch. A lone str where a
list of names is expected (``groups``, ``topics``) is refused too: ``list("team")`` is
four groups, and a client that quietly registered those is worse than one that says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
from hivemem.memory_bus.codec import (
    decode_hit,
    decode_item,
    decode_scan_page,
    decode_write_result,
    decode_write_results,
    encode_new_item,
    encode_write_columns,
    vector_to_bytes,
)
from hivemem.memory_bus.embedder import embedder_of
from hivemem.memory_bus.errors import InvalidInputError
from hivemem.memory_bus.item import NewItem


@dataclass(frozen=True, slots=True)
class OnBehalf:
    """The agent one batch entry acts for, with its token.

    An agent host batches the reads and writes of many agents into one request; each
    entry then names its own agent, and the server checks access per entry.
    """

    agent: str
    token: str


def _on_behalf(entry: dict[str, Any], who: Any) -> dict[str, Any]:
    if who is not None:
        if not isinstance(who, OnBehalf):
            raise InvalidInputError("on_behalf", f"expected OnBehalf, got {type(who).__name__}")
        entry["agent"], entry["token"] = who.agent, who.token
    return entry


def name_list(value: Any, argument: str) -> list[str]:
    """``value`` (groups, topics) as a list of str.

    Raises:
        InvalidInputError: naming ``argument``, for a lone str (``list("team")`` would
            be its characters) or anything else that is not an iterable of str.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInputError(
            argument, f"must be a list of str, got {type(value).__name__} {value!r:.60}"
        )
    names = list(value)
    bad = next((v for v in names if not isinstance(v, str)), None)
    if bad is not None:
        raise InvalidInputError(argument, f"must hold str only, got {type(bad).__name__}")
    return names


def _new_item(item: Any, argument: str) -> dict[str, Any]:
    """``item`` for the wire, if it has ``NewItem``'s fields (a ``NewItem``, or a caller's
    own dataclass of the same fields); else an error naming ``argument``."""
    try:
        return encode_new_item(item)
    except AttributeError:
        raise InvalidInputError(
            argument, f"must be a NewItem (or have its fields), got {type(item).__name__}"
        ) from None


_ITEM_FIELDS = tuple(f.name for f in fields(NewItem))


def _is_item(value: Any) -> bool:
    """Whether ``value`` can be sent as an item: a ``NewItem``, or has its fields."""
    return isinstance(value, NewItem) or all(hasattr(value, name) for name in _ITEM_FIELDS)


def _as_list(entries: Any, argument: str, shape: str) -> list[Any]:
    """``entries`` (a list, tuple, generator: any iterable but a str) as a list.

    Raises:
        InvalidInputError: naming ``argument``, for a str or what is not iterable.
    """
    if type(entries) is list:
        return entries
    if isinstance(entries, str | bytes) or not isinstance(entries, Iterable):
        raise InvalidInputError(
            argument, f"must be a list of {shape}, got {type(entries).__name__}"
        )
    return list(entries)


_ENCODING_ERRORS = (AttributeError, TypeError, IndexError, KeyError, InvalidInputError)
"""What encoding a batch raises when an entry has the wrong shape (``NewItem`` has no
``[0]``, a str no ``.vector``, a 2-tuple no ``[2]``)."""


def _not_encoded(
    exc: Exception, entries: list[Any], argument: str, shape: str, fits: Callable[..., bool]
) -> InvalidInputError:
    """The error for a batch whose encoding raised ``exc``: naming its first entry of the
    wrong shape if there is one, else ``exc`` itself (or as an ``InvalidInputError``)."""
    for i, entry in enumerate(entries):
        if not (isinstance(entry, tuple | list) and fits(entry)):
            return InvalidInputError(f"{argument}[{i}]", f"must be {shape}, got {_shape(entry)}")
    if isinstance(exc, InvalidInputError):
        return exc
    return InvalidInputError(argument, f"cannot be encoded: {exc}")


def _shape(value: Any) -> str:
    """What ``value`` is, for an error: its type, or a tuple's types (``(int, NewItem)``)."""
    if isinstance(value, tuple | list):
        return "(" + ", ".join(type(v).__name__ for v in value[:6]) + ")"
    return type(value).__name__


_ENTRY = "(namespace, NewItem) or (namespace, NewItem, OnBehalf)"
_QUERY = "(namespace, vector or text, k[, as_of[, OnBehalf]])"


def _fits_entry(entry: Sequence[Any]) -> bool:
    return (
        len(entry) in (2, 3)
        and isinstance(entry[0], str)
        and _is_item(entry[1])
        and (len(entry) == 2 or entry[2] is None or isinstance(entry[2], OnBehalf))
    )


def _fits_query(query: Sequence[Any]) -> bool:
    return (
        3 <= len(query) <= 5
        and isinstance(query[0], str)
        and (len(query) < 5 or query[4] is None or isinstance(query[4], OnBehalf))
    )


WriteEntries = dict[str, Any] | list[dict[str, Any]]
"""``write_many`` entries in wire form: columns (a map), or rows (a list of maps)."""


def encode_write_entries(entries: list[tuple[Any, ...]]) -> WriteEntries:
    """``write_many`` entries in wire form, for :meth:`Ops.write_many_encoded`.

    Columns (one list per field, every vector in one float32 blob: see
    ``docs/protocol.md``) whenever the entries allow it, which the server stores a
    batch at a time; rows otherwise (some items with a vector and some without, or
    some entries on behalf of an agent and some not). Encoding thousands of items takes
    milliseconds; a caller with time to spare before it must send (an agent host, while
    the other hosts step) can do it then.

    Raises:
        InvalidInputError: ``entries`` is not an iterable of such tuples (naming the
            first bad one, ``entries[i]``).
    """
    entries = _as_list(entries, "entries", _ENTRY)
    try:
        return _encoded_entries(entries)
    except _ENCODING_ERRORS as exc:
        raise _not_encoded(exc, entries, "entries", _ENTRY, _fits_entry) from exc


def _encoded_entries(entries: list[tuple[Any, ...]]) -> WriteEntries:
    """:func:`encode_write_entries` of entries not checked (a bad one raises anything)."""
    behalf = [_nth(e, 2) for e in entries]
    acting = sum(who is not None for who in behalf)
    columns = None
    if acting in (0, len(entries)):
        columns = encode_write_columns([e[0] for e in entries], [e[1] for e in entries])
    if columns is None:
        return [
            _on_behalf({"namespace": e[0], "item": encode_new_item(e[1])}, who)
            for e, who in zip(entries, behalf, strict=True)
        ]
    if acting:
        columns["agent"] = [who.agent for who in behalf]
        columns["token"] = [who.token for who in behalf]
    return columns


class Ops:
    """Every bus op, written once; subclasses say how a call is carried out."""

    agent: str
    token: str

    def _call(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None = None
    ) -> Any:
        raise NotImplementedError

    def ping(self) -> Any:
        """The server's protocol version, who it thinks you are, and how it embeds."""
        return self._call("ping", {})

    def embedder(self) -> Any:
        """An ``Embedder`` that makes the vectors the bus makes of the same texts, as its
        ``ping`` describes it: embed queries with it, and writes sent with vectors.

        Raises:
            ConfigError: the bus does not say how it embeds (it was given an embedder
                object), or it needs what this process lacks (the ``embed`` extra).
        """
        return self._call("ping", {}, _embedder_of_ping)

    def register(self, agent_id: str, groups: list[str] | None = None, role: str = "agent") -> Any:
        """Admin only: register an agent; returns ``{"token": ...}``.

        ``groups`` is a list: one group is ``["team-a"]`` (a lone str is refused).
        """
        groups = [] if groups is None else name_list(groups, "groups")
        return self._call("register", {"agent_id": agent_id, "groups": groups, "role": role})

    def write(self, tier: str, namespace: str, item: NewItem, *, now: float) -> Any:
        """Propose one item; returns the write policy's WriteResult."""
        args = {"tier": tier, "namespace": namespace, "item": _new_item(item, "item"), "now": now}
        return self._call("write", args, decode_write_result)

    def write_many(self, tier: str, entries: list[tuple[Any, ...]], *, now: float) -> Any:
        """Propose items in one message; returns a WriteResult each, in order.

        ``entries`` is a list (or any iterable but a str); each entry is ``(namespace,
        item)`` or ``(namespace, item, OnBehalf(agent, token))``, the item a ``NewItem``
        or anything with its fields.
        """
        return self.write_many_encoded(tier, encode_write_entries(entries), now=now)

    def write_many_encoded(self, tier: str, items: WriteEntries, *, now: float) -> Any:
        """:meth:`write_many` of entries already in wire form (:func:`encode_write_entries`)."""
        key = "columns" if isinstance(items, dict) else "items"
        return self._call(
            "write_many", {"tier": tier, key: items, "now": now}, decode_write_results
        )

    def get(self, tier: str, namespace: str, item_id: int, *, now: float | None = None) -> Any:
        """One item; with ``now`` the read counts as a recall."""
        args = {"tier": tier, "namespace": namespace, "item_id": item_id, "now": now}
        return self._call("get", args, decode_item)

    def search(
        self,
        tier: str,
        namespace: str,
        vector: np.ndarray | str,
        k: int = 10,
        *,
        now: float | None,
        as_of: float | None = None,
        vectors: bool = True,
    ) -> Any:
        """The ``k`` nearest items as Hits, best first; they count as recalled at ``now``
        (None: a look, which changes no item's hits or access time).

        ``vector`` is the query's vector, or a text for the bus to embed (with its
        embedder, as it embeds texts written without a vector). With ``vectors=False``
        the hits' items come without their vectors (an empty array), which makes the
        reply several times smaller.
        """
        args = {
            "tier": tier,
            "namespace": namespace,
            **_query(vector),
            "k": k,
            "now": now,
            "as_of": as_of,
            "compact": True,
        }
        if not vectors:
            args["vectors"] = False
        return self._call("search", args, _each(decode_hit))

    def search_many(
        self,
        tier: str,
        queries: list[tuple[Any, ...]],
        *,
        now: float | None,
        vectors: bool = True,
    ) -> Any:
        """Queries in one message; one Hit list each, in order (recalled at ``now``, as
        for :meth:`search`).

        ``queries`` is a list (or any iterable but a str) of queries. Each query is
        ``(namespace, vector, k)``, optionally followed by ``as_of`` (None:
        no validity filter) and ``OnBehalf(agent, token)``; a text in place of the vector
        is embedded by the bus. With ``vectors=False`` the hits' items come without their
        vectors (an empty array).
        """
        queries = _as_list(queries, "queries", _QUERY)
        try:
            raw = [
                _on_behalf(
                    {"namespace": q[0], **_query(q[1]), "k": q[2], "as_of": _nth(q, 3)},
                    _nth(q, 4),
                )
                for q in queries
            ]
        except _ENCODING_ERRORS as exc:
            raise _not_encoded(exc, queries, "queries", _QUERY, _fits_query) from exc
        args: dict[str, Any] = {"tier": tier, "queries": raw, "now": now, "compact": True}
        if not vectors:
            args["vectors"] = False
        return self._call("search_many", args, _each(_each(decode_hit)))

    def scan(
        self,
        tier: str,
        namespace: str,
        *,
        after: int = 0,
        limit: int = 100,
        as_of: float | None = None,
        vectors: bool = True,
    ) -> Any:
        """A page of ``namespace``'s items in id order, as a ``ScanPage``; not a recall.

        Pass ``after=page.next`` for the next page, until ``next`` is None. ``limit`` is
        at most the bus's ``max_batch`` (4,096); ``as_of`` lists only the items valid
        then; ``vectors=False`` leaves the vectors out (an empty array).

        Example:
            >>> page = client.scan("private", "alice")  # doctest: +SKIP
            >>> while page.next is not None:  # doctest: +SKIP
            ...     page = client.scan("private", "alice", after=page.next)
        """
        args: dict[str, Any] = {"tier": tier, "namespace": namespace, "after": after}
        args |= {"limit": limit, "as_of": as_of, "vectors": vectors}
        return self._call("scan", args, decode_scan_page)

    def update(
        self,
        tier: str,
        namespace: str,
        item_id: int,
        *,
        expected_version: int,
        now: float,
        **changes: Any,
    ) -> Any:
        """Change an item if it is still at ``expected_version``."""
        if "vector" in changes:
            changes["vector"] = vector_to_bytes(changes["vector"])
        args = {
            "tier": tier,
            "namespace": namespace,
            "item_id": item_id,
            "expected_version": expected_version,
            "now": now,
            "changes": changes,
        }
        return self._call("update", args, decode_item)

    def delete(self, tier: str, namespace: str, item_id: int, *, now: float) -> Any:
        """Remove an item."""
        return self._call(
            "delete", {"tier": tier, "namespace": namespace, "item_id": item_id, "now": now}
        )

    def history(self, tier: str, namespace: str, item_id: int) -> Any:
        """Every kept version of an item."""
        return self._call("history", {"tier": tier, "namespace": namespace, "item_id": item_id})

    def stats(self) -> Any:
        """Per-tier counts."""
        return self._call("stats", {})

    def subscribe(self, topics: list[str]) -> Any:
        """Whether this agent may receive the events of ``topics`` (raises if not).

        Returns the event socket's address and each topic's prefix there; ``events``
        (on the clients) subscribes with them. See ``docs/protocol.md``, "Events".
        ``topics`` is a list: one topic is ``["private/alice"]`` (a lone str is refused).
        """
        return self._call("subscribe", {"topics": name_list(topics, "topics")})

    def add_edge(
        self, namespace: str, src: int, dst: int, type: str, *, now: float, **kw: Any
    ) -> Any:
        """Link two graph nodes; returns the edge id."""
        return self._call(
            "add_edge",
            {"namespace": namespace, "src": src, "dst": dst, "type": type, "now": now, **kw},
        )

    def invalidate_edge(self, namespace: str, edge_id: int, *, at: float) -> Any:
        """End an edge's validity."""
        return self._call("invalidate_edge", {"namespace": namespace, "edge_id": edge_id, "at": at})

    def edges(self, namespace: str, **kw: Any) -> Any:
        """Edges in id order, optionally ``as_of``, ``node``, ``type``; a page of them
        with ``limit`` (and ``after``: the last id of the page before)."""
        return self._call("edges", {"namespace": namespace, **kw})

    def neighbors(self, namespace: str, node_id: int, **kw: Any) -> Any:
        """Linked node ids."""
        return self._call("neighbors", {"namespace": namespace, "node_id": node_id, **kw})

    def promote(
        self, namespace: str, children: list[int], parent: NewItem, *, now: float, **kw: Any
    ) -> Any:
        """Write a parent above ``children`` and link them; returns its id, or with
        ``detail=True`` its :class:`WriteResult` (with the nodes its write evicted)."""
        args = {
            "namespace": namespace,
            "children": children,
            "parent": _new_item(parent, "parent"),
            "now": now,
            **kw,
        }
        return self._call("promote", args, decode_write_result if kw.get("detail") else None)

    def retrieve(
        self,
        namespace: str,
        vector: np.ndarray | str,
        k: int = 10,
        *,
        now: float | None,
        **kw: Any,
    ) -> Any:
        """Graph retrieval (vector seeds, then k-hop or PPR); a text query is embedded by
        the bus. The hits count as recalled at ``now`` (None: a look)."""
        args = {"namespace": namespace, **_query(vector), "k": k, "now": now, **kw}
        return self._call("retrieve", args, _each(decode_hit))


def _query(vector: np.ndarray | str) -> dict[str, Any]:
    """A query's field: its vector as float32 bytes, or its text for the bus to embed."""
    return {"text": vector} if isinstance(vector, str) else {"vector": vector_to_bytes(vector)}


def _nth(entry: tuple[Any, ...], n: int) -> Any:
    return entry[n] if len(entry) > n else None


def _each(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda values: [decode(v) for v in values]


class AsyncClosing:
    """``async with client:`` for the asyncio clients: ``close()`` at the end."""

    def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _embedder_of_ping(found: dict[str, Any]) -> Any:
    return embedder_of(found.get("embedder"), int(found["dim"]))
