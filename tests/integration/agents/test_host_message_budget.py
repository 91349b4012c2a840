"""A host's requests and replies stay under the bus's 16 MiB message limit whatever its
agents' texts: writes are cut by their estimated bytes, a read whose reply the bus finds
too large is looked up again in halves, counting each recall once. Real sizes (the
protocol's limit is a constant) with few agents and long texts; real BusServer on
127.0.0.1, the host in-process."""

from __future__ import annotations

from typing import Any

import pytest
from hivemem.agents.base import AGENT_TYPES, Action, AgentSpec, BaseAgent, Proposal, Recall
from hivemem.agents.host import AgentHost
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import TooLargeError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import MAX_MESSAGE_BYTES
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 16
LONG = 32_000
"""Characters of a long text (the bus takes up to 32,768)."""


@AGENT_TYPES.register("test_budget_reader")
class _Reader(BaseAgent):
    hit_vectors = False

    def plan(self, t: float, obs: Any) -> list[Recall]:
        return [Recall("shared", "team", "what did the team learn", self.spec.params.get("k", 8))]

    def act(self, t: float, obs: Any, recalled: list[Any]) -> Action:
        return Action(answer=sorted(h.item.id for h in recalled[0]))


@AGENT_TYPES.register("test_budget_noter")
class _Noter(BaseAgent):
    hit_vectors = False

    def act(self, t: float, obs: Any, recalled: list[Any]) -> Action:
        notes = [f"{self.agent_id} note {j}: " + "n" * LONG for j in range(6)]
        return Action(writes=[Proposal("shared", "team", text) for text in notes])


def readers(server: BusServer, n: int, **params: Any) -> tuple[list[AgentSpec], dict[str, str]]:
    specs = [
        AgentSpec(f"a{i}", "test_budget_reader", groups=("team",), params=params) for i in range(n)
    ]
    return specs, {s.agent_id: server.register(s.agent_id, ["team"]) for s in specs}


def hits(server: BusServer) -> list[int]:
    return server.inspect(
        lambda st: sorted(i.hits for i in st.shared.namespaces["team"].items.values())
    )


def test_a_reply_over_the_limit_is_read_again_in_halves_counting_each_recall_once() -> None:
    agents = 70  # 70 x 8 hits of 32,000 characters: an 18 MB reply
    assert agents * 8 * LONG > MAX_MESSAGE_BYTES
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, shared=TierConfig(capacity=100))))
    specs, tokens = readers(server, agents)
    with server, MemoryClient(server.address, "a0", tokens["a0"], timeout=10.0) as c:
        seeded = c.write_many(
            "shared", [("team", NewItem(f"lesson {i}: " + "x" * LONG)) for i in range(8)], now=0.0
        )
        ids = sorted(r.item_id for r in seeded)
        obs = {s.agent_id: {} for s in specs}
        host = AgentHost(server.address, specs, tokens, DIM, timeout=10.0, client_id=3)
        try:
            out = host.step(1, obs)
        finally:
            host.close()
        assert out["answers"] == {s.agent_id: ids for s in specs}
        assert out["stats"]["hits"] == agents * 8
        assert hits(server) == [agents] * 8  # one recall each, not two
        again = AgentHost(server.address, specs, tokens, DIM, timeout=10.0, client_id=3)
        try:  # restarted before its commit: it steps the tick again
            assert again.step(1, obs)["answers"] == out["answers"]
        finally:
            again.close()
        assert hits(server) == [agents] * 8


def test_writes_are_cut_by_their_bytes_and_a_read_too_large_alone_names_its_agent() -> None:
    agents = 100  # 600 notes of 32,000 characters: 19 MB of write_many
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, shared=TierConfig(capacity=1000))))
    specs = [AgentSpec(f"n{i}", "test_budget_noter", groups=("team",)) for i in range(agents)]
    tokens = {s.agent_id: server.register(s.agent_id, ["team"]) for s in specs}
    big_readers, big_tokens = readers(server, 2, k=1000)
    with server:
        host = AgentHost(server.address, specs, tokens, DIM, timeout=10.0)
        try:
            host.step(1, {s.agent_id: {} for s in specs})
            stats = host.commit(1)["stats"]
        finally:
            host.close()
        assert stats["writes"] == 600
        assert server.inspect(lambda st: len(st.shared.namespaces["team"].items)) == 600
        # 1,000 hits of 32,000 characters: no half of one query is smaller
        host = AgentHost(server.address, big_readers, big_tokens, DIM, timeout=10.0)
        try:
            with pytest.raises(TooLargeError, match=r"^agent 'a0': reply of \d+ bytes") as caught:
                host.step(2, {s.agent_id: {} for s in big_readers})
        finally:
            host.close()
        assert caught.value.details["agent"] == "a0"
