"""The replies of a host's ``search_many`` requests in one step, and what it does with a
reply over the protocol's message limit.

A host sizes its reads by an estimate of their replies (:func:`~.batches.hit_bytes`), and
the texts of the hits can outgrow it: 1,100 agents recalling 8 items of 2,500 characters
made a 21 MB reply, which the bus refused (``too_large``) and the whole step failed. The
bus has run such a read before it refuses its reply, and with ``now`` it has counted its
recalls (it remembers the request's key, so a resend of the same request is a look). So
the host does not resend the request as it was, nor cut with ``now``: it asks for the
same queries again in two halves *without* ``now`` (looks, which count nothing: the
recalls were counted once, by the refused read), halving again while a half is still too
large. One query whose hits alone pass the limit cannot be cut and fails, naming its
agent.

The requests a step first sends depend only on its agents' plans (a fixed estimate, no
size learned from earlier replies), so a host restarted before its commit sends the same
ones under the same request ids (numbered by tick): the bus answers them as looks, too
large as before, and the halves sent after them are looks in any case. The refused read
costs the bus one search and one encoding of its reply; a tier whose texts run that
large asks for it every tick, the price of never failing nor counting twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from hivemem.agents.batches import for_agent
from hivemem.agents.metrics import HostMetrics
from hivemem.memory_bus.errors import HivememError, TooLargeError
from hivemem.memory_bus.interfaces import Hit

if TYPE_CHECKING:
    from hivemem.agents.host import TickStats

Key = tuple[str, int]
"""One recall: (agent, index among the recalls its plan asked for)."""

Look = Callable[[str, list[tuple[Any, ...]]], list[list[Hit]]]
"""``look(tier, queries)``: the hits of ``queries`` read again without ``now`` (blocking)."""


def reply_too_large(exc: HivememError) -> bool:
    """The bus ran the read and refused its reply for its size (the client's refusal of a
    request too large to send names a field, and was never run)."""
    return isinstance(exc, TooLargeError) and "field" not in exc.details


class Recalls:
    """The hits of a tick's ``search_many`` requests, in flight and taken in the order sent."""

    def __init__(self, stats: TickStats, look: Look, metrics: HostMetrics | None = None) -> None:
        self.stats = stats
        self.look = look
        self.metrics = metrics
        self.sent: list[tuple[list[Key], list[tuple[Any, ...]], Future[Any], str, float]] = []
        self.request_of: dict[Key, int] = {}
        self.received: dict[Key, list[Hit]] = {}
        self.done = 0

    def expect(
        self,
        keys: list[Key],
        queries: list[tuple[Any, ...]],
        reply: Future[Any],
        tier: str,
        sent_at: float,
    ) -> None:
        """``reply`` will hold the hits of the recalls ``keys``, asked by ``queries``.

        ``tier`` and ``sent_at`` (``perf_counter``) are for the request's metrics.
        """
        for key in keys:
            self.request_of[key] = len(self.sent)
        self.sent.append((keys, queries, reply, tier, sent_at))

    def hits(self, key: Key) -> list[Hit]:
        """The hits of one recall, waiting for its reply (and the earlier ones) if need be."""
        while self.done <= self.request_of[key]:
            self._take_next()
        return self.received[key]

    def finish(self) -> None:
        """Wait for every reply."""
        while self.done < len(self.sent):
            self._take_next()

    def _take_next(self) -> None:
        keys, queries, reply, tier, sent_at = self.sent[self.done]
        t0 = time.perf_counter()
        try:
            results = reply.result()
        except HivememError as exc:
            if not reply_too_large(exc):
                raise for_agent(exc, [(aid, f"recalls[{i}]") for aid, i in keys]) from None
            results = self._in_halves(tier, keys, queries, exc)
        self.stats.bus_seconds += time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.request("search_many", tier, len(keys), time.perf_counter() - sent_at)
        for key, res in zip(keys, results, strict=True):
            self.received[key] = res
            self.stats.hits += len(res)
        self.done += 1

    def _in_halves(
        self, tier: str, keys: list[Key], queries: list[tuple[Any, ...]], exc: HivememError
    ) -> list[list[Hit]]:
        """The hits of a read whose reply was too large, looked up again in halves."""
        if len(queries) == 1:
            aid, i = keys[0]
            exc.details["row"] = 0
            raise for_agent(exc, [(aid, f"recalls[{i}] (k={queries[0][2]})")]) from None
        half = len(queries) // 2
        out: list[list[Hit]] = []
        for part_keys, part in ((keys[:half], queries[:half]), (keys[half:], queries[half:])):
            try:
                out.extend(self.look(tier, part))
            except HivememError as again:
                if not reply_too_large(again):
                    raise for_agent(again, [(a, f"recalls[{i}]") for a, i in part_keys]) from None
                out.extend(self._in_halves(tier, part_keys, part, again))
        return out
