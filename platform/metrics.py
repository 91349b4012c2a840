"""Prometheus metrics of the driver (``hivemem_driver_*``, base units, no agent ids).

The driver is the process that runs the tick loop. With an embedded bus, the bus's own
metrics (``hivemem_bus_*``) go into the same registry, so one ``/metrics`` endpoint on
the scenario's ``metrics_port`` shows both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hivemem.memory_bus.metrics import BusMetrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

TICK_BUCKETS = (1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DriverMetrics:
    """Run-loop metrics, labelled by scenario name only."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._bus: BusMetrics | None = None
        r = self.registry
        self.ticks = Counter("hivemem_driver_ticks", "Ticks completed", ["scenario"], registry=r)
        self.tick_seconds = Histogram(
            "hivemem_driver_tick_duration_seconds",
            "Wall time of one tick (observe, step, commit, score)",
            ["scenario"],
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.agent_steps = Counter(
            "hivemem_driver_agent_steps", "Agent-steps completed", ["scenario"], registry=r
        )
        self.agents = Gauge("hivemem_driver_agents", "Agents in the run", ["scenario"], registry=r)
        self.score = Gauge(
            "hivemem_driver_score_ratio", "Task score so far (0..1)", ["scenario"], registry=r
        )
        self.progress = Gauge(
            "hivemem_driver_progress_ratio",
            "Share of the run's ticks done",
            ["scenario"],
            registry=r,
        )
        self.restarts = Counter(
            "hivemem_driver_host_restarts", "Agent host restarts seen", ["scenario"], registry=r
        )
        self.outcomes = Counter(
            "hivemem_driver_task_outcomes",
            "The task's summable score parts (e.g. asked, correct), by kind",
            ["scenario", "kind"],
            registry=r,
        )
        self.questions = Counter(
            "hivemem_driver_questions",
            "Questions the task asked: the denominator of its score",
            ["scenario"],
            registry=r,
        )
        self.correct = Counter(
            "hivemem_driver_correct",
            "Questions answered right: the numerator of the task's score",
            ["scenario"],
            registry=r,
        )
        self.recalls = Counter(
            "hivemem_driver_recalls", "Recalls the agents asked for", ["scenario"], registry=r
        )
        self.recall_hits = Counter(
            "hivemem_driver_recall_hits",
            "Items the agents' recalls returned",
            ["scenario"],
            registry=r,
        )

    def record_memory(
        self,
        scenario: str,
        outcomes: Mapping[str, float],
        row: Mapping[str, Any],
        *,
        correct: float,
        questions: float,
    ) -> None:
        """Count a tick's score parts, answers, and its agents' recalls and hits.

        Args:
            scenario: The scenario's name (the only label but ``kind``).
            outcomes: The tick's score parts under bounded names
                (:meth:`~hivemem.scenarios.base.Task.outcome_kinds`).
            row: The tick's row (its ``recalls`` and ``hits``).
            correct: The tick's correct answers and ``questions`` its questions, as the
                task's headline score counts them (:meth:`~hivemem.scenarios.base.Task.headline`):
                parts cannot be summed by name into these (some are subsets of others).
            questions: See ``correct``.

        Correct answers per question (the score over a window), per recall, and hits
        per recall are ratios of these counters (the dashboard's "memory quality"
        panels); a task scores answers in aggregate, so which recall fed which correct
        answer is not known here.
        """
        for kind, value in outcomes.items():
            self.outcomes.labels(scenario, kind).inc(float(value))
        self.questions.labels(scenario).inc(float(questions))
        self.correct.labels(scenario).inc(float(correct))
        self.recalls.labels(scenario).inc(row.get("recalls", 0))
        self.recall_hits.labels(scenario).inc(row.get("hits", 0))

    def bus(self) -> BusMetrics:
        """The embedded bus's series (``hivemem_bus_*``) in this registry, made on first
        use and then the same for every run: a series registers once per registry, so a
        second run that made its own would fail with ``Duplicated timeseries``."""
        if self._bus is None:
            self._bus = BusMetrics(self.registry)
        return self._bus

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` over HTTP on ``addr:port`` (loopback unless told otherwise;
        port 0: any free port); returns the port, which with 0 only the server knows."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)
