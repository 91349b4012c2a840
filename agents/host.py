"""AgentHost: many agents in one process, one bus request for reads and one for writes a tick.

A tick has two phases, driven by the runner:

1. :meth:`AgentHost.step` — every agent plans its reads; the host embeds all queries in
   one call and sends one ``search_many`` per tier (each entry on behalf of its agent),
   hands each agent its hits, and returns the answers. Proposed writes are kept.
2. :meth:`AgentHost.commit` — the kept writes go out as one ``write_many`` per tier, in
   agent order. The runner commits hosts one after another in host order, and agents are
   placed on hosts in contiguous blocks, so the bus sees the same writes in the same
   order whatever the number of hosts: a seeded run gives the same results on 1 host or 8.

Hits come without their vectors (``search_many(..., vectors=False)``, several times
less to send and decode) unless one of the host's agents wants them: an agent class
that reads ``hit.item.vector`` keeps the default; one that does not sets the class
attribute ``hit_vectors = False`` (the built-in agents do). Each request is kept under
half the protocol's message limit by an estimate of its reply (``request_batches``).

The host keeps no state of its own that the bus does not have: a restarted host (Ray
``max_restarts``) rebuilds its agents from their specs and carries on.
"""

from __future__ import annotations

import importlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hivemem.agents.base import Action, Agent, AgentSpec, Observation, Proposal, make_agent
from hivemem.agents.metrics import HostMetrics, host_metrics
from hivemem.memory_bus.client import (
    LocalTransport,
    MemoryClient,
    OnBehalf,
    WriteEntries,
    encode_write_entries,
)
from hivemem.memory_bus.config import EmbedderConfig, HashingEmbedderConfig
from hivemem.memory_bus.embedder import describe_embedder, embedder_config_of, make_embedder
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.item import DEFAULT_LIMITS, NewItem
from hivemem.memory_bus.protocol import MAX_MESSAGE_BYTES


@dataclass
class TickStats:
    """What one host did in one phase of a tick (summed by the runner)."""

    recalls: int = 0
    hits: int = 0
    writes: int = 0
    promotions: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    """Write-policy decisions by tier: ``"shared.add"`` -> count."""
    evicted: dict[str, int] = field(default_factory=dict)
    """Evictions by tier."""
    bus_seconds: float = 0.0
    compute_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "recalls": self.recalls,
            "hits": self.hits,
            "writes": self.writes,
            "promotions": self.promotions,
            "ops": dict(self.ops),
            "evicted": dict(self.evicted),
            "bus_seconds": self.bus_seconds,
            "compute_seconds": self.compute_seconds,
        }


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


class AgentHost:
    """Hosts agents and batches their bus traffic.

    Args:
        address: The bus ROUTER address.
        specs: The agents to host, in their global order.
        tokens: Bus token of each agent.
        dim: Embedding dimension (the bus store's).
        imports: Modules to import first, so their agent types are registered.
        timeout: Seconds to wait for one bus reply.
        client_id: Stable bus client id of this host (survives restarts; see commit).
        in_process: Hand requests to the bus server of this process that serves
            ``address`` (:class:`~hivemem.memory_bus.transport.LocalTransport`: no
            socket, no thread hop), as RL episodes do; else a DEALER to ``address``.
        embedder: The store's embedder (``StoreConfig.embedder``; default: hashing), which
            embeds the agents' texts and queries here as the bus would.
    """

    def __init__(
        self,
        address: str,
        specs: list[AgentSpec],
        tokens: dict[str, str],
        dim: int,
        imports: Sequence[str] = (),
        timeout: float = 60.0,
        client_id: int | None = None,
        in_process: bool = False,
        embedder: EmbedderConfig | None = None,
    ) -> None:
        for module in imports:
            importlib.import_module(module)
        self.specs = list(specs)
        self.agents: dict[str, Agent] = {s.agent_id: make_agent(s) for s in self.specs}
        self.behalf = {s.agent_id: OnBehalf(s.agent_id, tokens[s.agent_id]) for s in self.specs}
        self.embed = make_embedder(embedder, dim)
        # A stable client id (from the runner: run and host index) plus request ids
        # numbered by tick make a replayed commit idempotent: a host restarted after the
        # bus applied its writes gets the remembered replies, not a second copy.
        self.client = (
            MemoryClient(transport=LocalTransport.at(address, client_id))
            if in_process
            else MemoryClient(address, timeout=timeout, client_id=client_id)
        )
        if self.specs:
            try:
                self._check_bus(address, dim, embedder or HashingEmbedderConfig())
            except BaseException:
                self.client.close()
                raise
        self.pending: list[tuple[str, Action]] = []
        self.incarnation = f"{os.getpid()}-{time.monotonic_ns()}"
        self.max_batch = DEFAULT_LIMITS.max_batch
        # Hits come without their vectors unless an agent asks for them (hit_vectors).
        self.hit_vectors = any(getattr(a, "hit_vectors", True) for a in self.agents.values())
        self.hit_bytes = hit_bytes(dim, self.hit_vectors)
        self.prepared: list[tuple[str, OnBehalf, WriteEntries]] = []
        self.metrics = host_metrics()
        if self.metrics is not None:
            self.metrics.started()

    def _check_bus(self, address: str, dim: int, embedder: EmbedderConfig) -> None:
        """Refuse a bus that embeds otherwise than this host would: the agents' vectors
        would not compare with the ones it makes of texts (a bus given an embedder object
        says nothing, and is taken on trust)."""
        first = self.specs[0].agent_id
        found = self.client.as_agent(first, self.behalf[first].token).ping()
        theirs = found.get("embedder")
        if found.get("dim") != dim or (theirs is not None and embedder_config_of(theirs) != embedder):  # fmt: skip
            raise ConfigError(
                f"the bus at {address} has dim {found.get('dim')} and embedder "
                f"{describe_embedder(theirs)}; this host was given dim {dim} and embedder "
                f"{describe_embedder(embedder.model_dump(mode='json'))}. Give the bus and the "
                f"hosts one store configuration"
            )

    def info(self) -> dict[str, Any]:
        """Who this host is: its process incarnation and its agents."""
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return {
            "incarnation": self.incarnation,
            "agents": len(self.agents),
            "pid": os.getpid(),
            "node": node,
        }

    def step(self, t: float, observations: dict[str, Observation]) -> dict[str, Any]:
        """Phase 1 of a tick: recall, act, keep the writes; returns answers and stats."""
        self.pending = []  # a repeated step replaces what an interrupted one kept
        self.prepared = []
        stats = TickStats()
        started = time.perf_counter()
        plans = {aid: self.agents[aid].plan(t, obs) for aid, obs in observations.items()}
        flat = [(aid, i, r) for aid, recalls in plans.items() for i, r in enumerate(recalls)]
        recalls = self._send_recalls(t, flat, stats)
        answers: dict[str, Any] = {}
        for aid, obs in observations.items():
            recalled = [recalls.hits((aid, i)) for i in range(len(plans[aid]))]
            action = self.agents[aid].act(t, obs, recalled)
            answers[aid] = action.answer
            if action.writes or action.promotions:
                self.pending.append((aid, action))
        recalls.finish()
        stats.recalls = len(flat)
        if self.metrics is not None and observations:  # ray counters refuse inc(0)
            self.metrics.agent_steps.inc(len(observations))
        self.prepared = self._prepare_writes(self.pending)
        stats.compute_seconds = time.perf_counter() - started - stats.bus_seconds
        return {"answers": answers, "stats": stats.to_dict(), "incarnation": self.incarnation}

    def rewrite_pending(self, rewrite: Callable[[str, Action], Action]) -> None:
        """Change the kept actions between step and commit (``rewrite(agent_id, action)``).

        The writes are prepared again from the result. Training environments use it to
        let a controller decide where an agent's proposals go.
        """
        self.pending = [(aid, rewrite(aid, action)) for aid, action in self.pending]
        self.prepared = self._prepare_writes(self.pending)

    def commit(self, t: float) -> dict[str, Any]:
        """Phase 2 of a tick: send the kept writes (one ``write_many`` per tier)."""
        stats = TickStats()
        started = time.perf_counter()
        self.client.number_requests_from(int(t) * 1_000_000 + 1)
        pending, self.pending = self.pending, []
        prepared, self.prepared = self.prepared, []
        for tier, sender, items in prepared:
            t0 = time.perf_counter()
            results = self._as(sender).write_many_encoded(tier, items, now=t)
            stats.bus_seconds += time.perf_counter() - t0
            if self.metrics is not None:
                self.metrics.request("write_many", tier, len(results), time.perf_counter() - t0)
            for res in results:
                key = f"{tier}.{res.op.value}"
                stats.ops[key] = stats.ops.get(key, 0) + 1
                if res.evicted:
                    stats.evicted[tier] = stats.evicted.get(tier, 0) + len(res.evicted)
            stats.writes += len(results)
        for aid, action in pending:
            for promo in action.promotions:
                parent = promo.parent
                vector = self.embed([parent.text])[0]
                t0 = time.perf_counter()
                self.client.as_agent(aid, self.behalf[aid].token).promote(
                    promo.namespace, list(promo.children), new_item(parent, vector), now=t
                )
                stats.bus_seconds += time.perf_counter() - t0
                stats.promotions += 1
        stats.compute_seconds = time.perf_counter() - started - stats.bus_seconds
        return {"stats": stats.to_dict(), "incarnation": self.incarnation}

    def _send_recalls(
        self, t: float, flat: list[tuple[str, int, Any]], stats: TickStats
    ) -> _Recalls:
        """Send every ``search_many`` of the tick at once; the replies come back in order.

        The bus starts on the first request while the host encodes the next, and the
        host's agents act on the first reply while the bus answers the next.
        """
        recalls = _Recalls(stats, self.metrics)
        if not flat:
            return recalls
        vectors = self._embed([r.query for _, _, r in flat])
        batches = request_batches(
            [(r.tier, p) for p, (_, _, r) in enumerate(flat)],
            self.max_batch,
            cost=lambda p: flat[p][2].k * self.hit_bytes,
        )
        for tier, chunk in batches:
            queries = [
                (r.namespace, vectors[p], r.k, r.as_of, self.behalf[aid])
                for p in chunk
                for aid, _, r in (flat[p],)
            ]
            t0 = time.perf_counter()
            reply = (
                self._as(queries[0][4])
                .nowait()
                .search_many(tier, queries, now=t, vectors=self.hit_vectors)
            )
            stats.bus_seconds += time.perf_counter() - t0
            recalls.expect([(flat[p][0], flat[p][1]) for p in chunk], reply, tier, t0)
        return recalls

    def _prepare_writes(
        self, pending: list[tuple[str, Action]]
    ) -> list[tuple[str, OnBehalf, WriteEntries]]:
        """The proposals' ``write_many`` requests, embedded and encoded, ready for commit.

        Done at the end of step, which runs on every host at once, rather than in
        commit, which runs one host after another while the bus waits.
        """
        writes = [(aid, w) for aid, action in pending for w in action.writes]
        vectors = self._embed([w.text for _, w in writes])
        prepared = []
        for tier, chunk in request_batches([(w.tier, p) for p, (_, w) in enumerate(writes)]):
            entries = [
                (
                    writes[p][1].namespace,
                    new_item(writes[p][1], vectors[p]),
                    self.behalf[writes[p][0]],
                )
                for p in chunk
            ]
            prepared.append((tier, entries[0][2], encode_write_entries(entries)))
        return prepared

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``, each distinct text once (agents often see the same text)."""
        if not texts:
            return np.empty((0, self.embed.dim), dtype=np.float32)
        row = {text: i for i, text in enumerate(dict.fromkeys(texts))}
        if len(row) == len(texts):
            return self.embed(texts)
        return self.embed(list(row))[[row[text] for text in texts]]

    def _as(self, who: OnBehalf) -> MemoryClient:
        """The request itself is sent as one of the batch's agents (each entry as its own)."""
        return self.client.as_agent(who.agent, who.token)

    def close(self) -> None:
        """Close the bus connection."""
        self.client.close()


class _Recalls:
    """The hits of a tick's ``search_many`` requests, in flight and taken in the order sent."""

    def __init__(self, stats: TickStats, metrics: HostMetrics | None = None) -> None:
        self.stats = stats
        self.metrics = metrics
        self.sent: list[tuple[list[tuple[str, int]], Future[Any], str, float]] = []
        self.request_of: dict[tuple[str, int], int] = {}
        self.received: dict[tuple[str, int], list[Hit]] = {}
        self.done = 0

    def expect(
        self, keys: list[tuple[str, int]], reply: Future[Any], tier: str, sent_at: float
    ) -> None:
        """``reply`` will hold the hits of the recalls ``keys`` ((agent, recall index)).

        ``tier`` and ``sent_at`` (``perf_counter``) are for the request's metrics.
        """
        for key in keys:
            self.request_of[key] = len(self.sent)
        self.sent.append((keys, reply, tier, sent_at))

    def hits(self, key: tuple[str, int]) -> list[Hit]:
        """The hits of one recall, waiting for its reply (and the earlier ones) if need be."""
        while self.done <= self.request_of[key]:
            self._take_next()
        return self.received[key]

    def finish(self) -> None:
        """Wait for every reply."""
        while self.done < len(self.sent):
            self._take_next()

    def _take_next(self) -> None:
        keys, reply, tier, sent_at = self.sent[self.done]
        t0 = time.perf_counter()
        results = reply.result()
        self.stats.bus_seconds += time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.request("search_many", tier, len(keys), time.perf_counter() - sent_at)
        for key, res in zip(keys, results, strict=True):
            self.received[key] = res
            self.stats.hits += len(res)
        self.done += 1


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


def host_actor_class(max_restarts: int = -1) -> Any:
    """:class:`AgentHost` as a Ray actor class that restarts when its process dies."""
    import ray

    # SPREAD: hosts go to different nodes of a cluster where they can
    return ray.remote(
        num_cpus=0, max_restarts=max_restarts, max_task_retries=0, scheduling_strategy="SPREAD"
    )(AgentHost)
