"""An agent host's promotions on a real bus, when what the agent recalled is gone by the
commit (evicted by the tick's writes, or by other agents' promotions before it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hivemem.agents.base import AgentSpec
from hivemem.agents.host import AgentHost
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import GraphConfig, StoreConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.scenarios.families import BUILTIN_MODULES

DIM = 64
SOLVER = "solver-0"
SUCCESS = {SOLVER: {"feedback": {"type": 3, "option": 4, "success": True}}}
"""Tick 1 tells the solver that option 4 worked for task type 3: it writes that event and
promotes the events of task type 3 it recalls to an insight."""


@contextmanager
def solver_on_a_bus(write_policy: str = "always_add") -> Iterator[tuple[AgentHost, MemoryClient]]:
    """A ``team_insights.solver`` on its host, and a client of the same agent, on a bus
    whose graph holds three failed events of task type 3."""
    graph = GraphConfig(write_policy=write_policy, retrieval="vector")
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, graph=graph)))
    token = server.register(SOLVER, ["red"], role="solver")
    spec = AgentSpec(SOLVER, "team_insights.solver", "solver", ("red",))
    with server, MemoryClient(server.address, SOLVER, token, timeout=5.0) as client:
        for option in (0, 1, 2):
            meta = {"kind": "event", "task_type": 3, "option": option, "success": False}
            text = f"task type t3 needs the right option: option {option} failed"
            client.write("graph", "red", NewItem(text, meta=meta, level=0), now=0.0)
        host = AgentHost(server.address, [spec], {SOLVER: token}, DIM, BUILTIN_MODULES)
        try:
            yield host, client
        finally:
            host.close()


def events(client: MemoryClient) -> list[int]:
    return [i.id for i in client.scan("graph", "red").items if i.level == 0]


def insights(client: MemoryClient) -> list[Any]:
    return [i for i in client.scan("graph", "red").items if i.level == 2]


def test_a_promotion_links_the_children_still_there() -> None:
    with solver_on_a_bus() as (host, client):
        seeded = events(client)
        host.step(1, SUCCESS)
        client.delete("graph", "red", seeded[1], now=1.0)  # as an eviction would
        stats = host.commit(1)["stats"]
        [insight] = insights(client)
        linked = sorted(e["dst"] for e in client.edges("red", node=insight.id))
        assert linked == [seeded[0], seeded[2]]
        assert insight.meta == {"kind": "insight", "task_type": 3, "option": 4}
        assert stats["promotions"] == 1


def test_a_parent_whose_children_are_all_gone_is_written_without_them() -> None:
    with solver_on_a_bus() as (host, client):
        seeded = events(client)
        host.step(1, SUCCESS)
        for item_id in seeded:
            client.delete("graph", "red", item_id, now=1.0)
        stats = host.commit(1)["stats"]
        [insight] = insights(client)
        assert client.edges("red") == []
        assert insight.meta["option"] == 4
        assert stats["promotions"] == 0
        assert stats["writes"] == 2 and stats["ops"] == {"graph.ADD": 2}  # event, insight


def test_a_parent_the_write_policy_does_not_store_links_nothing() -> None:
    """Under ``dedup`` an insight another agent wrote first is a NOOP: the bus refuses to
    link it, and the commit goes on."""
    with solver_on_a_bus("dedup") as (host, client):
        host.step(1, SUCCESS)
        text = "task type t3 needs the right option: insight, use option 4"
        client.write("graph", "red", NewItem(text, level=2), now=1.0)
        stats = host.commit(1)["stats"]
        assert len(insights(client)) == 1
        assert client.edges("red") == []
        assert stats["promotions"] == 0
