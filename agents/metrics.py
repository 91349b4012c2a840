"""Metrics of an agent host (``hivemem_host_*``), exported per node by Ray.

A host runs inside a Ray actor, where no HTTP server of ours runs; ``ray.util.metrics``
hands the values to the node's metrics agent, which serves them with Ray's own on the
node's metrics export port (``ray start --metrics-export-port``; Prometheus finds every
node through Ray's service-discovery file, see ``deploy/observability/prometheus.yml``).
Ray prefixes the names it exports with ``ray_``: ``hivemem_host_agent_steps`` is scraped
as ``ray_hivemem_host_agent_steps_total``. Labels: ``op`` and ``tier`` (the histograms),
never an agent id; Ray adds its own (``WorkerId``: a restarted host is a new series).
"""

from __future__ import annotations

import warnings
from typing import Any

BATCH_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0]
LATENCY_BUCKETS = [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0]


class HostMetrics:
    """Agent-steps, bus batch sizes and latencies, and restarts of the hosts of a node."""

    def __init__(self) -> None:
        from ray.util import metrics as m

        self.agent_steps = m.Counter(
            "hivemem_host_agent_steps", "Agent-steps taken by the hosts of this node"
        )
        self.batch = m.Histogram(
            "hivemem_host_batch_entries",
            "Entries in one search_many or write_many request, by op and tier",
            boundaries=BATCH_BUCKETS,
            tag_keys=("op", "tier"),
        )
        self.latency = m.Histogram(
            "hivemem_host_bus_request_duration_seconds",
            "Time from sending a bus request to having its reply, by op and tier",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("op", "tier"),
        )
        self.restarts = m.Counter(
            "hivemem_host_restarts", "Agent hosts that Ray restarted after their process died"
        )

    def request(self, op: str, tier: str, entries: int, seconds: float) -> None:
        """Record one bus request of ``entries`` entries that took ``seconds``."""
        tags = {"op": op, "tier": tier}
        self.batch.observe(float(entries), tags=tags)
        self.latency.observe(seconds, tags=tags)

    def started(self) -> None:
        """Count a restart if this actor is a reconstruction of one that died."""
        if was_restarted():
            self.restarts.inc()


def was_restarted() -> bool:
    """Whether the current Ray actor was restarted (False outside an actor)."""
    import ray

    if not ray.is_initialized():
        return False
    context: Any = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return False
    with warnings.catch_warnings():  # Ray's own property reads a deprecated attribute
        warnings.simplefilter("ignore")
        return bool(context.was_current_actor_reconstructed)


def host_metrics() -> HostMetrics | None:
    """The node's host metrics when running under Ray, else None (a host in a test)."""
    import ray

    return HostMetrics() if ray.is_initialized() else None
