"""Prometheus metrics of the bus server (``hivemem_bus_*``, base units, no agent ids)."""

from __future__ import annotations

from hivemem.memory_bus.namespace import MemoryEvent
from hivemem.memory_bus.store import MemoryStore
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0)


class BusMetrics:
    """The server's metrics, in their own registry (several servers may share a process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        self._policy: dict[str, str] = {}

    def request(self, op: str, code: str, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(op, str(code)).inc()
        self.latency.labels(op).observe(seconds)

    def event(self, event: MemoryEvent) -> None:
        """Count one published event (and evictions by policy)."""
        self.events.labels(event.tier, event.kind).inc()
        if event.kind == "evict":
            self.evictions.labels(event.tier, self._policy.get(event.tier, "unknown")).inc()

    def observe_store(self, store: MemoryStore) -> None:
        """Refresh the gauges from the store (called on the owner thread)."""
        for name, stats in store.stats().items():
            self.items.labels(name).set(stats["items"])
            self.tokens.labels(name).set(stats["tokens"])
            self.bytes.labels(name).set(stats["bytes"])
            self._policy[name] = stats["eviction_policy"]

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``addr:port``."""
        start_http_server(port, addr=addr, registry=self.registry)
