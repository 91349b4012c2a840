"""A host restarted between its step and its commit steps again (as
:class:`~hivemem.platform.host_pool.AgentHosts` has it do): the bus must count the first
step's recalls once, so that LFU evictions are those of an undisturbed run. The restart is
a new :class:`AgentHost` under the same client id; real BusServer on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from hivemem.agents.base import AgentSpec
from hivemem.agents.host import (
    PROMOTION_REQUESTS,
    REQUESTS_PER_TICK,
    STEP_REQUESTS,
    AgentHost,
)
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.scenarios.families import BUILTIN_MODULES

DIM = 64
AGENT = "agent-0"
SPEC = AgentSpec(
    AGENT, "fact_memory", params={"write_tier": "private", "read_tiers": ["private"], "k": 1}
)


def fact(key: str, t: int) -> dict[str, Any]:
    return {"key": key, "value": "v", "text": f"{key} holds v", "t": float(t)}


def ask(key: str) -> dict[str, Any]:
    return {"key": key, "text": f"{key} holds v", "as_of": None}


TICKS = [
    {"facts": [fact("k0", 0), fact("k1", 0), fact("k2", 0)]},
    {"question": ask("k2"), "facts": [fact("k2", 1)]},  # recalls k2, and writes again
    {"question": ask("k1")},
    {"question": ask("k0"), "facts": [fact("k3", 3)]},  # a 4th item: LFU evicts k0
]


def host(server: BusServer) -> AgentHost:
    tokens = {AGENT: server.token(AGENT)}
    return AgentHost(server.address, [SPEC], tokens, DIM, BUILTIN_MODULES, timeout=5.0, client_id=7)


def held(server: BusServer) -> list[tuple[str, int]]:
    return server.inspect(
        lambda st: sorted((i.text, i.hits) for i in st.private.namespaces[AGENT].items.values())
    )


def run(restart_at: int | None, after: str = "step") -> list[tuple[str, int]]:
    """The ticks on one host, which dies at ``restart_at`` after its step (or after its
    commit's writes: ``after="writes"``) and is stepped and committed again."""
    cfg = StoreConfig(dim=DIM, private=TierConfig(capacity=3, eviction="lfu"))
    with BusServer(MemoryStore(cfg)) as server:
        h = host(server)
        try:
            for t, obs in enumerate(TICKS):
                h.step(t, {AGENT: obs})
                if t == restart_at:
                    if after == "writes":
                        h.commit(t, "writes")
                    h.close()  # the process dies; Ray starts a new one
                    h = host(server)
                    h.step(t, {AGENT: obs})
                h.commit(t)
            return held(server)
        finally:
            h.close()


def test_a_step_done_again_counts_its_recalls_once() -> None:
    clean = run(None)
    assert clean == [("k1 holds v", 1), ("k2 holds v", 2), ("k3 holds v", 0)]
    assert run(1) == clean  # same items kept, same hit counts


def test_a_step_done_again_after_the_writes_were_applied_counts_nothing_twice() -> None:
    """The restarted host steps and commits the tick again: its writes are answered from
    the bus's memory (numbered by tick), its reads as looks; neither collides."""
    assert run(1, after="writes") == run(None)


def test_the_phases_of_a_tick_are_numbered_apart() -> None:
    starts = [1, PROMOTION_REQUESTS, STEP_REQUESTS, REQUESTS_PER_TICK + 1]
    assert starts == sorted(set(starts))
