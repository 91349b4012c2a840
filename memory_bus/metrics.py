"""Prometheus metrics of the bus server (``hivemem_bus_*``, base units, no agent ids).

Besides requests and latencies, the memory itself: items, namespaces, tokens and bytes
by tier; write-policy decisions (ADD/UPDATE/DELETE/NOOP) by tier and policy; evictions
by tier and policy; the staleness of what reads return (the age of each recalled
item in the clients' clock, ticks for ``hivemem run``); and the pauses of Python's
garbage collector, which stop the owner thread (and every client) while they run.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from hivemem.memory_bus.interfaces import Hit, MemoryEvent
from hivemem.memory_bus.store import MemoryStore
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hivemem.memory_bus.durability import Durability

LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0)
GC_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS = (
    0.0,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1e3,
    2e3,
    5e3,
    1e4,
    2e4,
    5e4,
    1e5,
)
"""Ages in ticks, to the README's 100,000-tick run: the shared tier keeps facts for the
whole run, and in a 1,500-tick relay_qa run a third of recalled items were over 1,000
ticks old (so over 10,000 in a 100,000-tick one, where the buckets used to stop)."""


class BusMetrics:
    """The server's metrics, in their own registry (several servers may share a process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._http: list[Any] = []  # the /metrics servers of serve()
        r = self.registry
        self.requests = Counter(
            "hivemem_bus_requests",
            "Requests answered, by op and result code",
            ["op", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "hivemem_bus_request_duration_seconds",
            "Time to answer a request, by op",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.items = Gauge("hivemem_bus_items", "Items held, by tier", ["tier"], registry=r)
        self.tokens = Gauge(
            "hivemem_bus_tokens", "Whitespace tokens of text held, by tier", ["tier"], registry=r
        )
        self.bytes = Gauge(
            "hivemem_bus_item_bytes",
            "Payload bytes held (text and vectors), by tier",
            ["tier"],
            registry=r,
        )
        self.clients = Gauge(
            "hivemem_bus_connected_clients", "Client connections open now", registry=r
        )
        self.events = Counter(
            "hivemem_bus_events",
            "Memory events published, by tier and kind",
            ["tier", "kind"],
            registry=r,
        )
        self.evictions = Counter(
            "hivemem_bus_evictions",
            "Items evicted, by tier and policy",
            ["tier", "policy"],
            registry=r,
        )
        self.namespaces = Gauge(
            "hivemem_bus_namespaces", "Namespaces, by tier", ["tier"], registry=r
        )
        self.index_builds = Gauge(
            "hivemem_bus_index_builds",
            "Namespaces whose approximate index is being built in the background, by tier",
            ["tier"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "hivemem_bus_event_subscriptions",
            "Event subscriptions granted and held now (one per subscriber and topic)",
            registry=r,
        )
        self.subscriptions_refused = Counter(
            "hivemem_bus_event_subscriptions_refused",
            "Signed event subscriptions refused: a bad token, a topic not readable, malformed",
            registry=r,
        )
        self.gc_pauses = Histogram(
            "hivemem_bus_gc_pause_seconds",
            "Pauses of the process's cyclic garbage collector while the server runs, by "
            "generation (2: a full collection)",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=r,
        )
        self._gc_children = [self.gc_pauses.labels(str(g)) for g in range(3)]
        self._gc_started = 0.0
        self._policy: dict[str, str] = {}
        # children by label values: labels() costs microseconds a call, a dict lookup not
        self._requests: dict[tuple[str, ...], Any] = {}
        self._latency: dict[tuple[str, ...], Any] = {}
        self._events: dict[tuple[str, ...], Any] = {}
        self.memory = _MemoryCollector()
        r.register(self.memory)
        self.busy = _BusyCollector()
        r.register(self.busy)
        self.durability = _DurabilityCollector()
        r.register(self.durability)

    def request(self, op: str, code: str, seconds: float) -> None:
        """Count one answered request."""
        _child(self._requests, self.requests, op, str(code)).inc()
        _child(self._latency, self.latency, op).observe(seconds)

    def event(self, event: MemoryEvent) -> None:
        """Count the items of one event (and evictions by policy)."""
        count = len(event.item_ids)
        _child(self._events, self.events, event.tier, event.kind).inc(count)
        if event.kind == "evict":
            self.evictions.labels(event.tier, self._policy.get(event.tier, "unknown")).inc(count)

    def name_policies(self, store: MemoryStore) -> None:
        """Learn each tier's eviction policy, which labels its evictions (before any is
        counted; :meth:`observe_store` keeps it up to date)."""
        self._policy = {name.value: tier.eviction_name for name, tier in store.tiers.items()}

    def observe_store(self, store: MemoryStore) -> None:
        """Refresh the gauges from the store (called on the owner thread)."""
        by_tier = store.stats()
        for name, stats in by_tier.items():
            self.items.labels(name).set(stats["items"])
            self.tokens.labels(name).set(stats["tokens"])
            self.bytes.labels(name).set(stats["bytes"])
            self.namespaces.labels(name).set(stats["namespaces"])
            self.index_builds.labels(name).set(stats["index_builds"])
            self._policy[name] = stats["eviction_policy"]
        self.memory.decisions = {
            (name, stats["write_policy"], decision): count
            for name, stats in by_tier.items()
            for decision, count in stats["decisions"].items()
        }

    def watch_collector(self) -> None:
        """Time every garbage collection from now on (until :meth:`unwatch_collector`)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_collector(self) -> None:
        """Stop timing garbage collections."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never overlap (each holds the interpreter lock): one start time will do.
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_children[info["generation"]].observe(time.perf_counter() - self._gc_started)

    def recalled(self, tier: str, now: float, results: Sequence[Sequence[Hit]]) -> None:
        """Count the ages (``now - created``) of the items that reads of ``tier`` returned."""
        self.memory.recalled(tier, now, results)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` over HTTP on ``addr:port`` (0: any free port) until
        :meth:`stop_serving`; returns the port."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        self._http.append(server)
        return int(server.server_port)

    def stop_serving(self) -> None:
        """Close every ``/metrics`` endpoint :meth:`serve` opened: a stopped bus must not
        go on answering scrapes, or Prometheus counts it up."""
        while self._http:
            server = self._http.pop()
            server.shutdown()
            server.server_close()


def _child(cache: dict[tuple[str, ...], Any], metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, found once and then kept in ``cache``."""
    child = cache.get(labels)
    if child is None:
        child = cache[labels] = metric.labels(*labels)
    return child


class _BusyCollector(Collector):
    """``hivemem_bus_busy_seconds_total``: the wall time the server spent answering
    requests (receiving, deciding, replying, applying), on its owner thread or through
    :meth:`~hivemem.memory_bus.server.BusServer.handle`.

    Its rate is the share of the time the store was busy: near 1, the bus is saturated
    and requests queue (add shards). The server adds to :attr:`seconds` while it holds
    the store, a float add per request (a ``Counter`` takes a lock each time); a scrape
    reads it. Time spent polling or spinning idle is not in it.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "hivemem_bus_busy_seconds",
            "Wall time spent answering requests (a rate near 1: the bus is saturated)",
            value=self.seconds,
        )


class _DurabilityCollector(Collector):
    """What a restart would read, for a server with a data directory (nothing without one).

    ``hivemem_bus_journal_bytes`` is the log since the last snapshot and
    ``hivemem_bus_snapshot_bytes`` that snapshot's size: a restart reads both, and a
    snapshot is due once the first outgrows the second (and 64 MiB). Also the snapshots
    completed and failed, and how long the last start's recovery took. Read at scrape time from
    :attr:`source` (the server's ``Durability``), so nothing is added to a request.
    """

    def __init__(self) -> None:
        self.source: Durability | None = None
        self.recovery_seconds = 0.0

    def collect(self) -> Iterator[Metric]:
        source = self.source
        if source is None or source.journal is None:
            return
        journal = source.journal
        yield GaugeMetricFamily(
            "hivemem_bus_journal_bytes",
            "Bytes of journal since the last snapshot (what a restart replays)",
            value=journal.bytes_since_snapshot,
        )
        yield GaugeMetricFamily(
            "hivemem_bus_snapshot_bytes",
            "Bytes of the last snapshot (what a restart loads first)",
            value=journal.snapshot_bytes,
        )
        yield CounterMetricFamily(
            "hivemem_bus_snapshots", "Snapshots completed", value=source.snapshots
        )
        yield CounterMetricFamily(
            "hivemem_bus_snapshot_failures",
            "Snapshots begun and not completed (a full disk?); the journal kept every record",
            value=source.snapshot_failures,
        )
        yield GaugeMetricFamily(
            "hivemem_bus_recovery_seconds",
            "How long this server's recovery from its data directory took when it started",
            value=self.recovery_seconds,
        )


class _MemoryCollector(Collector):
    """Write decisions and recalled-item ages, counted where the hot path can afford it.

    Decisions are the tiers' own running counts (kept in snapshots, so they survive a
    restart), copied on the owner thread with the gauges. Ages go into numpy bucket
    counts a read at a time: a ``search_many`` returns hundreds of hits, and observing
    them one by one on a prometheus ``Histogram`` would take a lock per hit.
    """

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str, str], int] = {}
        self.edges = np.asarray(AGE_BUCKETS)
        # tier -> counts per bucket (the last one is over every edge), sum of ages
        self.ages: dict[str, tuple[np.ndarray, list[float]]] = {}
        self.lock = threading.Lock()  # reads count on the owner thread, scrapes elsewhere

    def recalled(self, tier: str, now: float, results: Sequence[Sequence[Hit]]) -> None:
        created = [hit.item.created for hits in results for hit in hits]
        if not created:
            return
        ages = now - np.asarray(created, dtype=np.float64)
        slots = np.bincount(np.searchsorted(self.edges, ages), minlength=len(self.edges) + 1)
        with self.lock:
            counts, total = self.ages.setdefault(
                tier, (np.zeros(len(self.edges) + 1, np.int64), [0.0])
            )
            counts += slots
            total[0] += float(ages.sum())

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "hivemem_bus_write_decisions",
            "Write-policy decisions (add, update, delete, noop) by tier and policy",
            labels=["tier", "policy", "decision"],
        )
        for (tier, policy, decision), count in sorted(self.decisions.items()):
            decisions.add_metric([tier, policy, decision], count)
        yield decisions
        ages = HistogramMetricFamily(
            "hivemem_bus_recalled_item_age_ticks",
            "Age (now - created, in the clients' clock) of each item a read returned, by tier",
            labels=["tier"],
        )
        with self.lock:
            snapshot = {
                tier: (counts.copy(), total[0]) for tier, (counts, total) in self.ages.items()
            }
        for tier, (counts, total) in sorted(snapshot.items()):
            cumulative = np.cumsum(counts)
            buckets: list[tuple[str, Any]] = [
                (repr(float(edge)), float(c))
                for edge, c in zip(self.edges, cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            ages.add_metric([tier], buckets, total)
        yield ages
