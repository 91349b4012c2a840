"""AgentHost: many agents in one process, one bus request for reads and one for writes a tick.

A tick has two phases, driven by the runner:

1. :meth:`AgentHost.step` — every agent plans its reads; the host embeds all queries in
   one call and sends one ``search_many`` per tier (each entry on behalf of its agent),
   hands each agent its hits, and returns the answers. Proposed writes are kept.
2. :meth:`AgentHost.commit` — the kept writes go out as one ``write_many`` per tier, in
   agent order, then the kept promotions (graph parents above recalled nodes). The
   runner commits hosts one after another in host order, first every host's writes, then
   every host's promotions, and agents are placed on hosts in contiguous blocks, so the
   bus sees the same writes and promotions in the same order whatever the number of
   hosts: a seeded run gives the same results on 1 host or 8.

Hits come without their vectors (``search_many(..., vectors=False)``, several times
less to send and decode) unless one of the host's agents wants them: an agent class
that reads ``hit.item.vector`` keeps the default; one that does not sets the class
attribute ``hit_vectors = False`` (the built-in agents do).

Every message stays under the protocol's limit (16 MiB) however many agents and however
long their texts (``request_batches``): a ``write_many`` is cut where its rows' estimated
bytes (text, vector, meta, names: ``write_bytes``) reach half the limit. A read's reply is
estimated from its ``k`` at a fixed size per hit, which long texts can outgrow: the bus
then refuses the reply (having counted the recalls once) and the host reads those queries
again in halves, as looks without ``now`` that count nothing, so a read neither fails nor
counts a recall twice, even when a restarted host steps the tick again (the details are in
:mod:`~hivemem.agents.recalls`).

The host keeps no state of its own that the bus does not have: a restarted host (Ray
``max_restarts``) rebuilds its agents from their specs and carries on.

One agent's bad request (a text over the limit, a validity window that ends before it
starts) is refused by the bus as a row of the host's batch; the host raises that error,
of the same type, naming the agent and its own field (``agent 'agent-3': invalid
writes[1].text ...``, ``details.agent``; :func:`~hivemem.agents.batches.for_agent`), and
the run stops. What of the batch was applied is the bus's rule, unchanged: on one shard
a ``write_many`` or ``search_many`` is all or nothing, so no agent's write of that request
is applied (writes of the same commit sent in earlier requests, other tiers or chunks,
are); on a sharded bus the rows held by other shards may be, and the error says whose
(``details.agents``: agents by ``applied``/``refused``/``unknown``). A built-in agent's bad
params (``k`` of 0) are refused earlier, as the agent is built, before any request.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hivemem.agents.base import (
    Action,
    Agent,
    AgentSpec,
    Observation,
    Promotion,
)
from hivemem.agents.batches import (
    REQUEST_BUDGET,
    for_agent,
    hit_bytes,
    new_item,
    query_bytes,
    request_batches,
    write_bytes,
)
from hivemem.agents.calls import act_of, build_of, plan_of
from hivemem.agents.metrics import host_metrics
from hivemem.agents.recalls import Recalls
from hivemem.memory_bus.client import (
    LocalTransport,
    MemoryClient,
    OnBehalf,
    WriteEntries,
    encode_write_entries,
)
from hivemem.memory_bus.config import EmbedderConfig, HashingEmbedderConfig
from hivemem.memory_bus.embedder import describe_embedder, embedder_config_of, make_embedder
from hivemem.memory_bus.errors import (
    ConfigError,
    HivememError,
    InvalidInputError,
    ItemNotFoundError,
)
from hivemem.memory_bus.interfaces import Hit, WriteResult
from hivemem.memory_bus.item import DEFAULT_LIMITS, NewItem


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


COMMIT_PHASES = ("writes", "promotions")
"""The parts of :meth:`AgentHost.commit`, in the order a pool of hosts sends them."""

REQUESTS_PER_TICK = 1_000_000
"""Request ids of tick ``t`` are ``t * REQUESTS_PER_TICK + 1`` on: its writes' from there,
then its promotions' (:data:`PROMOTION_REQUESTS`), then its step's (:data:`STEP_REQUESTS`)."""

PROMOTION_REQUESTS = REQUESTS_PER_TICK // 2 + 1
"""Where the promotions' request ids start within a tick's, after the writes'."""

STEP_REQUESTS = 3 * REQUESTS_PER_TICK // 4 + 1
"""Where the step's request ids (its ``search_many``) start within a tick's, after the
promotions'; they run to the next tick's writes. A host has no use for a quarter of a
million requests in one phase of a tick (a step sends one per 4,096 recalls)."""

Prepared = tuple[str, OnBehalf, WriteEntries, list[tuple[str, str]]]
"""One ``write_many`` made ready in step: tier, sender, entries, and each row's agent and
its own field (``writes[j]``), to name the agent of a row the bus refuses."""


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
            ``address`` (:class:`~hivemem.memory_bus.local_transport.LocalTransport`: no
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
        self.agents: dict[str, Agent] = {s.agent_id: build_of(s) for s in self.specs}
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
        self.query_bytes = query_bytes(dim)
        self.prepared: list[Prepared] = []
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
        if found.get("dim") != dim or (
            theirs is not None and embedder_config_of(theirs) != embedder
        ):
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
        plans = {aid: plan_of(self.agents[aid], t, obs) for aid, obs in observations.items()}
        flat = [(aid, i, r) for aid, recalls in plans.items() for i, r in enumerate(recalls)]
        # Numbered by tick, as commit's are: a host restarted before its commit steps
        # again, and the bus answers each read it already counted (same key, same bytes)
        # as a look, recording no second recall (LFU and LRU evictions stay the same).
        self.client.number_requests_from(int(t) * REQUESTS_PER_TICK + STEP_REQUESTS)
        recalls = self._send_recalls(t, flat, stats)
        answers: dict[str, Any] = {}
        for aid, obs in observations.items():
            recalled = [recalls.hits((aid, i)) for i in range(len(plans[aid]))]
            action = act_of(self.agents[aid], t, obs, recalled)
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

    def commit(self, t: float, phase: str = "all") -> dict[str, Any]:
        """Phase 2 of a tick: send the kept writes (one ``write_many`` per tier), then
        the kept promotions (one ``promote`` each).

        Args:
            t: The tick.
            phase: ``"writes"`` or ``"promotions"`` sends only those; ``"all"`` both. A
                pool of several hosts commits every host's writes before any host's
                promotions (:data:`COMMIT_PHASES`), so that the bus sees the writes and
                promotions of all agents in one order whatever the number of hosts.

        Returns:
            The tick's stats, the host's process incarnation, and ``promoting``: whether
            promotions are kept for a later ``"promotions"`` phase (a pool calls that
            phase only on hosts that have some).
        """
        if phase not in ("all", *COMMIT_PHASES):
            raise ValueError(f"unknown commit phase {phase!r}")
        stats = TickStats()
        started = time.perf_counter()
        if phase != "promotions":
            self._commit_writes(t, stats)
        if phase != "writes":
            self._commit_promotions(t, stats)
        stats.compute_seconds = time.perf_counter() - started - stats.bus_seconds
        promoting = any(action.promotions for _, action in self.pending)
        return {"stats": stats.to_dict(), "incarnation": self.incarnation, "promoting": promoting}

    def _commit_writes(self, t: float, stats: TickStats) -> None:
        """Send the writes prepared in step, one ``write_many`` per tier (and chunk)."""
        self.client.number_requests_from(int(t) * REQUESTS_PER_TICK + 1)
        prepared, self.prepared = self.prepared, []
        for tier, sender, items, rows in prepared:
            t0 = time.perf_counter()
            try:
                results = self._as(sender).write_many_encoded(tier, items, now=t)
            except HivememError as exc:
                raise for_agent(exc, rows) from None
            stats.bus_seconds += time.perf_counter() - t0
            if self.metrics is not None:
                self.metrics.request("write_many", tier, len(results), time.perf_counter() - t0)
            for res in results:
                _count_write(stats, tier, res)

    def _commit_promotions(self, t: float, stats: TickStats) -> None:
        """Send the promotions kept in step, agent by agent."""
        self.client.number_requests_from(int(t) * REQUESTS_PER_TICK + PROMOTION_REQUESTS)
        pending, self.pending = self.pending, []
        for aid, action in pending:
            for promo in action.promotions:
                sender = self.client.as_agent(aid, self.behalf[aid].token)
                self._promote(sender, promo, t, stats)

    def _promote(self, client: MemoryClient, promo: Promotion, t: float, stats: TickStats) -> None:
        """Write ``promo``'s parent above those of its children that are still there.

        A child recalled during step may be gone by now: this tick's writes, sent before
        the promotions (and other agents' promotions, before this one), can have evicted
        it. The bus refuses a promotion naming a missing node, saying which, before it
        writes anything; that child is dropped and the promotion sent again. A parent
        left with no child is written as a plain node on its level, as an agent that
        recalled no child writes it. A parent the write policy does not store (a
        duplicate insight: NOOP) links nothing, as a plain write of it would store
        nothing. The commit order is fixed, so which children are gone is too: the
        results stay those of any number of hosts.
        """
        item = new_item(promo.parent, self.embed([promo.parent.text])[0])
        children = list(dict.fromkeys(promo.children))
        t0 = time.perf_counter()
        try:
            while children:
                outcome = _try_promote(client, promo.namespace, children, item, t)
                if isinstance(outcome, WriteResult):
                    stats.promotions += 1
                    _count_evicted(stats, "graph", outcome)  # (not a write: no op counted)
                if isinstance(outcome, WriteResult | str):
                    return
                children.remove(outcome)
            _count_write(stats, "graph", client.write("graph", promo.namespace, item, now=t))
        finally:
            stats.bus_seconds += time.perf_counter() - t0

    def _send_recalls(
        self, t: float, flat: list[tuple[str, int, Any]], stats: TickStats
    ) -> Recalls:
        """Send every ``search_many`` of the tick at once; the replies come back in order.

        The bus starts on the first request while the host encodes the next, and the
        host's agents act on the first reply while the bus answers the next.
        """
        recalls = Recalls(stats, self._look, self.metrics)
        if not flat:
            return recalls
        vectors = self._embed([r.query for _, _, r in flat])
        batches = request_batches(
            [(r.tier, p) for p, (_, _, r) in enumerate(flat)],
            self.max_batch,
            cost=lambda p: flat[p][2].k * self.hit_bytes + self.query_bytes,
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
            recalls.expect([(flat[p][0], flat[p][1]) for p in chunk], queries, reply, tier, t0)
        return recalls

    def _look(self, tier: str, queries: list[tuple[Any, ...]]) -> list[list[Hit]]:
        """``queries`` read again without ``now``: looks, which count no recall (see
        :mod:`~hivemem.agents.recalls`: the part of a read whose reply was too large)."""
        return self._as(queries[0][4]).search_many(
            tier, queries, now=None, vectors=self.hit_vectors
        )

    def _prepare_writes(self, pending: list[tuple[str, Action]]) -> list[Prepared]:
        """The proposals' ``write_many`` requests, embedded and encoded, ready for commit.

        Done at the end of step, which runs on every host at once, rather than in
        commit, which runs one host after another while the bus waits.
        """
        writes = [(aid, j, w) for aid, action in pending for j, w in enumerate(action.writes)]
        vectors = self._embed([w.text for _, _, w in writes])
        prepared = []
        dim = self.embed.dim
        batches = request_batches(
            [(w.tier, p) for p, (_, _, w) in enumerate(writes)],
            self.max_batch,
            cost=lambda p: write_bytes(writes[p][2], dim, self.behalf[writes[p][0]]),
            budget=REQUEST_BUDGET,
        )
        for tier, chunk in batches:
            entries = [
                (
                    writes[p][2].namespace,
                    new_item(writes[p][2], vectors[p]),
                    self.behalf[writes[p][0]],
                )
                for p in chunk
            ]
            rows = [(writes[p][0], f"writes[{writes[p][1]}]") for p in chunk]
            try:
                encoded = encode_write_entries(entries)
            except HivememError as exc:
                raise for_agent(exc, rows) from None
            prepared.append((tier, entries[0][2], encoded, rows))
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


def _try_promote(
    client: MemoryClient, namespace: str, children: list[int], item: NewItem, t: float
) -> WriteResult | int | str:
    """Send one promotion: the parent's write (with the nodes it evicted);
    ``"not stored"`` if the write policy stored no parent (nothing to link); or the id of
    a child the bus found gone (nothing written)."""
    try:
        return client.promote(namespace, children, item, now=t, detail=True)
    except ItemNotFoundError as exc:
        gone = exc.details.get("item_id")
        if exc.details.get("namespace") != namespace or gone not in children:
            raise
        return int(gone)
    except InvalidInputError as exc:
        if exc.details.get("field") != "parent":
            raise
        return "not stored"


def _count_write(stats: TickStats, tier: str, result: WriteResult) -> None:
    """Count one write's decision and evictions in ``stats``."""
    key = f"{tier}.{result.op.value}"
    stats.ops[key] = stats.ops.get(key, 0) + 1
    _count_evicted(stats, tier, result)
    stats.writes += 1


def _count_evicted(stats: TickStats, tier: str, result: WriteResult) -> None:
    """Count the items ``result``'s write evicted from ``tier`` in ``stats``."""
    if result.evicted:
        stats.evicted[tier] = stats.evicted.get(tier, 0) + len(result.evicted)


class _HostActor(AgentHost):
    """:class:`AgentHost` as Ray runs it: an error of hivemem's raised while it is built
    (an agent's bad ``params``, a bus that embeds otherwise) is kept and raised by its
    first call, :meth:`info`. Ray keeps only the text of an error raised in an actor's
    constructor (the driver gets an ``ActorDiedError`` holding the whole traceback), but
    passes a method's error on as itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.build_error: HivememError | None = None
        try:
            super().__init__(*args, **kwargs)
        except HivememError as exc:
            self.build_error = exc

    def info(self) -> dict[str, Any]:
        if self.build_error is not None:
            raise self.build_error
        return super().info()

    def close(self) -> None:
        if self.build_error is None:  # else there is no client to close
            super().close()


def host_actor_class(max_restarts: int = -1) -> Any:
    """:class:`AgentHost` as a Ray actor class that restarts when its process dies."""
    import ray

    # SPREAD: hosts go to different nodes of a cluster where they can
    return ray.remote(
        num_cpus=0, max_restarts=max_restarts, max_task_retries=0, scheduling_strategy="SPREAD"
    )(_HostActor)
