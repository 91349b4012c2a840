"""A bus sharded by namespace: the client half (routing, splitting, merging).

Each namespace lives on exactly one of ``n`` bus servers, chosen by a stable hash of
its name (:func:`shard_of`: BLAKE2b, never Python's salted ``hash()``), so every process
of a run agrees on it. Everything a tier does is per namespace (capacity, eviction, the
index, a graph's subtrees and edges), so a sharded bus answers every op as one server
would: k-hop and PageRank retrieval never need two shards, and eviction stays exact.

One thing differs: a ``write_many`` whose entries live on several shards is not atomic.
One server checks a whole batch before it applies any of it and refuses it whole; here
each shard does so for its own part only, so when one shard refuses its part the
others' parts may be applied already, and a part whose reply never came (a timeout, a
transport error) may be applied or not. The error then gives every part's outcome, in
the caller's numbering and as plain data (msgpack- and JSON-safe): the refused row
(``details["row"]``, ``items[i]``, if a shard refused), the rows applied with their
results (``details["applied"]``, ``{"row", "op", "item_id", "evicted"}`` each), the rows
refused and so not applied (``details["refused"]``: safe to send again once fixed), the
rows of unknown outcome (``details["unknown"]``: look before sending them again), and
each part's shard, rows, outcome and error (``details["parts"]``). It is the error of
the first refused row if any shard refused, else the first part's that failed. No
check by the client could make the batch whole: what a shard refuses (access from its
registry, values against its config, capacity, a full disk) only that shard knows when
it applies, and all-or-nothing across servers would need two-phase commit in the
protocol.

A ``search_many`` is split alike: a refused query refuses its shard's part only, and the
other shards' queries were answered, their hits recalled with ``now``; the error names
them (``details["answered"]``, with ``refused``, ``unknown`` and ``parts``). A batch
the client cannot split by row, or an empty one, goes whole to shard 0, which refuses
it (or answers ``[]``) as one bus would (:meth:`AsyncShardedClient._unsplit`).

:class:`AsyncShardedClient` has the interface of
:class:`~hivemem.memory_bus.client.AsyncMemoryClient` (it shares its :class:`Ops`):
single ops go to their namespace's shard; ``write_many`` and ``search_many`` are split
by shard, the parts sent at once and the replies merged back in the caller's order;
``register`` goes to every shard (they share one secret, so tokens are the same on all);
``stats`` sums over shards. :class:`~hivemem.memory_bus.client.MemoryClient` given
several addresses (a list, or one string with commas) runs this core.

Example:
    >>> shard_of("team-a", 4) == shard_of("team-a", 4)
    True
    >>> client = MemoryClient("tcp://10.0.0.1:7777,tcp://10.0.0.2:7777")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

from hivemem.memory_bus.arguments import split_topic
from hivemem.memory_bus.client import AsyncMemoryClient
from hivemem.memory_bus.codec import take_columns
from hivemem.memory_bus.errors import HivememError, InvalidInputError
from hivemem.memory_bus.ops import AsyncClosing, Ops, name_list
from hivemem.memory_bus.placement import shard_of
from hivemem.memory_bus.shard_parts import (
    BATCH_KEYS,
    CHECKED_AFTER_ACCESS,
    Part,
    failure,
    uncut_column,
)

EVERY_SHARD = {"ping", "register", "stats", "subscribe"}
"""Ops that concern the whole bus rather than one namespace."""


class ShardError(HivememError):
    """Shards that disagree, or a request no shard can take."""

    code = "shard_error"


def split_addresses(address: str | Sequence[str]) -> list[str]:
    """Shard addresses from a list or one comma-separated string, in shard order."""
    parts = address.split(",") if isinstance(address, str) else list(address)
    found = [a.strip() for a in parts if a.strip()]
    if not found:
        raise ValueError(f"no bus address in {address!r}")
    return found


def merge_stats(parts: list[Any]) -> Any:
    """One ``stats`` reply from the shards': numbers summed, maps merged, the rest kept."""
    first = parts[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for part in parts for k in part)
        return {k: merge_stats([p[k] for p in parts if k in p]) for k in keys}
    if isinstance(first, int | float) and not isinstance(first, bool):
        return sum(parts)
    return first


class AsyncShardedClient(Ops, AsyncClosing):
    """The asyncio client of a sharded bus (see the module docstring).

    Args:
        addresses: One ROUTER address per shard, in shard order (the order decides
            which shard owns which namespace, so every client must use the same; each
            shard's place is checked by a ping before its first request).
        agent: Default agent id for requests.
        token: That agent's token.
        **kw: Passed to each shard's :class:`AsyncMemoryClient` (timeout, retries, curve,
            client_id). Each shard numbers its requests on its own, so a replay after a
            crash carries the same ids on every shard.
    """

    def __init__(self, addresses: Sequence[str], agent: str = "", token: str = "", **kw: Any):
        self.agent, self.token = agent, token
        self.shards = [AsyncMemoryClient(a, agent, token, **kw) for a in addresses]
        self._addresses = list(addresses)
        self._placed = [len(self.shards) < 2] * len(self.shards)  # shared with as_agent's

    def _to(
        self, s: int, op: str, args: dict[str, Any], decode: Any, check: bool = True
    ) -> Awaitable[Any]:
        """``op`` sent to shard ``s``; before its first request a ``ping`` checks that the
        server there is the shard at place ``s`` (:func:`_misplaced`): a client listing
        the shards in another order than the others routed every namespace by the wrong
        hash, its writes going where no other client looks. Once per shard, so a shard
        that does not answer fails only the requests that go to it."""
        if self._placed[s] or not check:
            return self.shards[s]._call(op, args, decode)
        return self._placed_then(s, op, args, decode)

    async def _placed_then(self, s: int, op: str, args: dict[str, Any], decode: Any) -> Any:
        _misplaced({s: await self.shards[s]._call("ping", {})}, self._addresses)
        self._placed[s] = True
        return await self.shards[s]._call(op, args, decode)

    def _call(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None = None
    ) -> Any:
        return self._routed(op, args, decode)

    async def _routed(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None
    ) -> Any:
        if op == "write_many" and isinstance(args.get("columns"), dict):
            return await self._split_columns(args, decode)
        if op in BATCH_KEYS:
            return await self._split(op, BATCH_KEYS[op], args, decode)
        if op in EVERY_SHARD:  # decoded once combined: the shards' replies are raw maps
            ping = op == "ping"  # checks its own replies
            n = len(self.shards)
            replies = await asyncio.gather(
                *(self._to(s, op, args, None, not ping) for s in range(n))
            )
            if ping:
                _misplaced(dict(enumerate(replies)), self._addresses)
                self._placed[:] = [True] * n
            combined = _combine(op, replies)
            if op == "subscribe":
                combined["seqs"] = self._owners_seqs(args.get("topics"), replies)
            return decode(combined) if decode is not None else combined
        if "namespace" not in args:
            raise ShardError(f"op {op!r} names no namespace, so no shard can take it", op=op)
        return await self._to(shard_of(str(args["namespace"]), len(self.shards)), op, args, decode)

    def _owners_seqs(self, topics: Any, replies: list[Any]) -> list[Any]:
        """Each topic's last event number as the shard that holds its namespace says
        (shard 0's answered for all of them); None for a whole tier."""
        seqs: list[Any] = []
        for i, topic in enumerate(topics if isinstance(topics, list) else []):
            namespace = split_topic(topic)[1] if isinstance(topic, str) else ""
            owner = replies[shard_of(namespace, len(self.shards))] if namespace else None
            seqs.append(None if owner is None else owner["seqs"][i])
        return seqs

    async def _split(
        self, op: str, key: str, args: dict[str, Any], decode: Callable[[Any], Any] | None
    ) -> list[Any]:
        """Send each shard its entries of the batch at once; the replies in entry order."""
        entries = args.get(key)
        if not isinstance(entries, list):
            return await self._unsplit(op, args, decode)
        found = [e.get("namespace") if isinstance(e, dict) else None for e in entries]
        namespaces = [namespace for namespace in found if isinstance(namespace, str)]
        if len(namespaces) < len(found):
            return await self._unsplit(op, args, decode)
        return await self._scatter(
            op, namespaces, lambda rows: {**args, key: [entries[i] for i in rows]}, decode
        )

    def _unsplit(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None
    ) -> Awaitable[Any]:
        """A batch the client cannot split by shard (an entry that names no namespace, a
        column not of one value per row), or an empty one, sent whole to shard 0: a
        server reads a batch's shape, its arguments (tier, ``now``) and every entry
        before it places any row, so shard 0 refuses it (or answers ``[]``) as one bus
        would."""
        return self._to(0, op, args, decode)

    async def _scatter(
        self,
        op: str,
        namespaces: Sequence[str],
        args_of: Callable[[list[int]], dict[str, Any]],
        decode: Callable[[Any], Any] | None,
    ) -> list[Any]:
        """Each shard's rows of a batch (``args_of(rows)``) at once; the (decoded) replies
        in row order.

        Raises:
            HivememError: what a shard raised (the first refused row's error, else the
                first failed part's), numbering its row as the caller did; of a
                ``write_many`` on several shards, with every part's outcome (module
                docstring).
        """
        if not namespaces:
            return cast(list[Any], await self._unsplit(op, args_of([]), decode))
        rows_of: dict[int, list[int]] = {}
        for i, namespace in enumerate(namespaces):
            rows_of.setdefault(shard_of(namespace, len(self.shards)), []).append(i)
        order = sorted(rows_of)
        # every part's outcome, not only the first failure: what the others applied
        # must be known when one refuses
        replies = await asyncio.gather(
            *(self._to(s, op, args_of(rows_of[s]), decode) for s in order),
            return_exceptions=True,
        )
        merged: list[Any] = [None] * len(namespaces)
        parts: list[Part] = []
        for s, reply in zip(order, replies, strict=True):
            if isinstance(reply, BaseException) and not isinstance(reply, Exception):
                raise reply  # cancelled, interrupted: no outcome to report
            parts.append(Part(s, rows_of[s], reply if isinstance(reply, Exception) else None))
            if parts[-1].error is None:
                for i, value in zip(rows_of[s], reply, strict=True):
                    merged[i] = value
        if any(part.error is not None for part in parts):
            raise failure(op, parts, merged)
        return merged

    async def _split_columns(
        self, args: dict[str, Any], decode: Callable[[Any], Any] | None
    ) -> Any:
        """A columnar ``write_many``: each shard gets its rows, the results in row order."""
        columns = args["columns"]
        texts, namespaces = columns.get("text"), columns.get("namespace")
        if isinstance(namespaces, str):
            shard = shard_of(namespaces, len(self.shards))
            return await self._to(shard, "write_many", args, decode)
        n = len(texts) if isinstance(texts, list) else -1
        uncut = uncut_column(columns, n)
        if uncut in CHECKED_AFTER_ACCESS:  # whole on one shard, it would be refused as placed
            raise InvalidInputError(f"items[].{uncut}", f"{len(columns[uncut])} values for {n} rows")  # fmt: skip
        if uncut is not None:
            return await self._unsplit("write_many", args, decode)
        return await self._scatter(
            "write_many",
            [str(ns) for ns in namespaces],
            lambda rows: {**args, "columns": take_columns(columns, rows, n)},
            decode,
        )

    async def events(self, topics: list[str]) -> AsyncIterator[dict[str, Any]]:
        """Memory events of ``topics`` from every shard they live on, in one stream.

        A namespace's topic goes to its shard, a whole tier's or everything (the
        admin's) to every shard; see :meth:`AsyncMemoryClient.events`. Events of one
        namespace keep their order (one shard sends them); across shards, whichever
        arrives first comes first. A refused topic raises at the first ``__anext__``
        (and ``topics`` given as a str, not a list: :class:`InvalidInputError`).
        """
        topics = name_list(topics, "topics")
        per_shard: dict[int, list[str]] = {}
        for topic in topics:
            namespace = split_topic(topic)[1]
            n = len(self.shards)
            for shard in [shard_of(namespace, n)] if namespace else range(n):
                per_shard.setdefault(shard, []).append(topic)
        streams = [self.shards[s].events(t) for s, t in sorted(per_shard.items())]
        queue: asyncio.Queue[tuple[dict[str, Any] | None, BaseException | None]]
        queue = asyncio.Queue()

        async def pump(stream: AsyncIterator[dict[str, Any]]) -> None:
            try:
                async for event in stream:
                    await queue.put((event, None))
            except Exception as exc:  # a refused topic, a closed client: the reader raises it
                await queue.put((None, exc))

        pumps = [asyncio.ensure_future(pump(stream)) for stream in streams]
        try:
            while True:
                event, error = await queue.get()
                if error is not None:
                    raise error
                if event is not None:
                    yield event
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    def number_requests_from(self, start: int) -> None:
        """Each shard's next requests carry ids ``start``, ``start + 1``, ..."""
        for shard in self.shards:
            shard.number_requests_from(start)

    def as_agent(self, agent: str, token: str) -> AsyncShardedClient:
        """A handle on the same connections that acts as ``agent`` (closing it does
        nothing: the connections stay this client's)."""
        handle = object.__new__(AsyncShardedClient)
        handle.agent, handle.token = agent, token
        handle.shards = [s.as_agent(agent, token) for s in self.shards]
        handle._placed, handle._addresses = self._placed, self._addresses
        return handle

    def close(self) -> None:
        """Close every shard's socket (call from the loop that used them)."""
        for shard in self.shards:
            shard.close()


def _embedding(ping: dict[str, Any]) -> tuple[Any, Any]:
    return ping.get("dim"), ping.get("embedder")


def _combine(op: str, replies: list[Any]) -> Any:
    if op == "stats":
        return merge_stats(replies)
    if op == "register" and any(r != replies[0] for r in replies):
        raise ShardError("the shards gave different tokens: they do not share one secret")
    if op == "ping" and any(_embedding(r) != _embedding(replies[0]) for r in replies):
        raise ShardError(
            "the shards embed differently: "
            + "; ".join(f"shard {i}: {_embedding(r)}" for i, r in enumerate(replies))
        )
    if op in ("ping", "subscribe"):  # each shard has its event socket, and its epoch
        return {
            **{k: v for k, v in replies[0].items() if k != "shard"},  # shard 0's alone
            "shards": len(replies),
            "pubs": [r.get("pub") for r in replies],
            "epochs": [r.get("epoch") for r in replies],
        }
    return replies[0]


def _misplaced(pings: dict[int, Any], addresses: list[str]) -> None:
    """Refuse (:class:`ShardError`) the shards whose ``ping`` (``pings`` by place listed)
    says another place, ``shard``: ``[index, count]`` (a server from before: as listed)."""
    n = len(addresses)
    says = {i: p.get("shard", [i, n]) if isinstance(p, dict) else p for i, p in pings.items()}
    wrong = [(i, " of ".join(map(str, p)) if isinstance(p, list) else repr(p))
             for i, p in says.items() if p != [i, n]]  # fmt: skip
    if not wrong:
        return
    told = "; ".join(f"place {i} ({addresses[i]}) is shard {p}" for i, p in wrong)
    places = {str(i): p for i, p in says.items()}
    if any(isinstance(p, list) and len(p) == 2 and p[1] != n for p in says.values()):
        raise ShardError(  # no order helps: these are not the shards of one bus of n
            f"these {n} addresses are not the shards of one bus: {told}. An unsharded bus "
            "(`hivemem bus serve`) says 0 of 1; a sharded one is started by a run "
            "(run.bus_shards) or start_bus_shards, whose shards say i of n",
            places=places,
        )
    raise ShardError(
        f"the shards are listed out of their order: {told}. List the {n} shards of the "
        "bus in shard order, as its other clients do (a namespace's shard is found by its "
        "place in the list)",
        places=places,
    )
