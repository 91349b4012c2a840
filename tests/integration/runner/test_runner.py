"""The run loop on a real Ray and a real bus: scores, determinism across hosts, host faults.

Every built-in scenario runs at a small size; its score must clear a bound that its
no-memory baseline does not, so a memory path that silently stops working fails here.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import pytest
from hivemem.platform.host_pool import split
from hivemem.platform.runner import RunResult, run_once
from hivemem.platform.scenario import Scenario, load_scenario

pytestmark = pytest.mark.usefixtures("ray_session")

SMALL = {
    "relay_qa": ["run.ticks=12", "agents.0.count=2", "agents.1.count=4"],
    "evolving_facts": ["run.ticks=14", "agents.1.count=4"],
    "team_insights": ["run.ticks=20", "agents.0.count=3", "agents.1.count=3", "agents.2.count=2"],
    "capacity_stream": ["run.ticks=40", "agents.0.count=6"],
}
"""Overrides that shrink each built-in scenario to a few seconds."""

# (memory must reach at least, baseline must stay below) — the gap is the value of memory
BOUNDS = {
    "relay_qa": (0.9, 0.1),
    "evolving_facts": (0.8, 0.1),
    "team_insights": (0.5, 0.3),
    "capacity_stream": (0.6, 0.1),
}


def small(name: str, *extra: str) -> Scenario:
    return load_scenario(name, [*SMALL[name], *extra])


def comparable(result: RunResult) -> list[dict[str, Any]]:
    """The rows without wall-clock figures."""
    return [{k: v for k, v in row.items()} for row in result.rows]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_memory_beats_the_no_memory_baseline(name: str) -> None:
    s = small(name)
    memory = run_once(s)
    baseline = run_once(s, baseline=True)
    floor, ceiling = BOUNDS[name]
    assert memory.summary["score"] >= floor, memory.summary
    assert baseline.summary["score"] < ceiling, baseline.summary
    assert len(memory.rows) == s.run.ticks
    writes = sum(r["writes"] for r in memory.rows)
    recalls = sum(r["recalls"] for r in memory.rows)
    assert writes > 0 and recalls > 0
    assert sum(r["writes"] for r in baseline.rows) == 0  # the baseline truly has no memory
    assert memory.rows[-1]["score"] == pytest.approx(memory.summary["score"])


@pytest.mark.parametrize("name", ["relay_qa", "capacity_stream", "team_insights"])
def test_same_seed_same_results_on_one_and_three_hosts(name: str) -> None:
    s = small(name)
    one = run_once(s, hosts=1)
    three = run_once(s, hosts=3)
    assert one.hosts == 1 and three.hosts == 3
    assert one.summary == three.summary
    assert comparable(one) == comparable(three)


def test_a_small_graph_evicts_what_promotions_name_and_the_run_goes_on() -> None:
    """At capacity 12 a tick's writes evict events that the same tick's promotions name
    (an insight then links what is left, or none): every tick runs, and every host's
    writes go before any host's promotions, so 1 and 3 hosts give the same rows."""
    s = small("team_insights", "memory.graph.capacity=12")
    one = run_once(s, hosts=1)
    three = run_once(s, hosts=3)
    assert len(one.rows) == s.run.ticks
    assert sum(r["evicted"].get("graph", 0) for r in one.rows) > 0
    assert sum(r["promotions"] for r in one.rows) > 0
    assert comparable(one) == comparable(three)
    # Every node in or out is counted: the writes' ADDs and the promoted parents come in,
    # the evictions (a parent's too: they went uncounted) go out (always_add: no DELETE).
    held = 0
    for row in one.rows:
        came = row["ops"].get("graph.ADD", 0) + row["promotions"]
        assert row["items"]["graph"] - held == came - row["evicted"].get("graph", 0), row
        held = row["items"]["graph"]


def test_as_of_changed_scores_as_of_recall_alone() -> None:
    """A shared tier that keeps only each key's newest value (dedup UPDATEs it in place)
    still answers the as-of questions about keys unchanged since; ``as_of_changed``
    counts only the others, and only a memory of every version answers them."""
    unbounded = ["memory.shared.capacity=null"]
    newest = run_once(small("evolving_facts", *unbounded, "memory.shared.write_policy=dedup"))
    every = run_once(small("evolving_facts", *unbounded, "memory.shared.write_policy=always_add"))
    assert newest.summary["current"] == every.summary["current"] == 1.0
    assert newest.summary["as_of"] is not None and newest.summary["as_of"] > 0.5
    assert newest.summary["as_of_changed"] == 0.0
    assert every.summary["as_of_changed"] is not None and every.summary["as_of_changed"] > 0.9


def test_another_seed_gives_another_run() -> None:
    a = run_once(small("capacity_stream", "run.seed=1"))
    b = run_once(small("capacity_stream", "run.seed=2"))
    assert comparable(a) != comparable(b)


@pytest.mark.parametrize(
    ("name", "hook"),
    [
        ("capacity_stream", "before_tick"),
        ("capacity_stream", "before_commit"),
        ("team_insights", "before_commit"),
        ("team_insights", "between_commit_phases"),
    ],
)
def test_a_killed_host_restarts_and_the_run_ends_as_if_nothing_happened(
    name: str, hook: str
) -> None:
    """Killed between ticks, between its step and its commit (its kept writes die with
    it), or after its writes and before its promotions: the restarted host steps again
    and commits what it had not, and the results are equal."""
    import ray

    s = small(name)
    clean = run_once(s, hosts=2)
    killed: list[int] = []
    redone: list[str] = []  # the calls made again on the restarted host

    def kill(pool: Any) -> None:
        killed.append(ray.get(pool.handles[0].info.remote())["pid"])
        ray.kill(pool.handles[0], no_restart=False)
        call = pool._call
        pool._call = lambda i, method, *args: redone.append(method) or call(i, method, *args)

    def kill_at_tick_10(t: int, pool: Any) -> None:
        if t == 10:
            kill(pool)

    def kill_before_the_promotions_at_tick_10(t: int, pool: Any) -> None:
        if t != 10:
            return
        commit_phase = pool._commit_phase

        def phase(i: int, t: int, phase: str) -> Any:
            # the first promotions host 0 sends from tick 10 on (a host with none kept
            # is not called for that phase)
            if (i, phase) == (0, "promotions") and not killed:
                kill(pool)
                restarted(pool.handles[0], killed[0])  # else the commit may beat the kill
            return commit_phase(i, t, phase)

        pool._commit_phase = phase

    hooks = (
        {"before_commit": kill_before_the_promotions_at_tick_10}
        if hook == "between_commit_phases"
        else {hook: kill_at_tick_10}
    )
    faulty = run_once(s, hosts=2, hooks=hooks)
    assert killed, "the hook never ran"
    assert faulty.timing["host_restarts"] >= 1
    assert redone.count("step") == 1  # once, not once per commit phase
    assert faulty.summary == clean.summary
    assert comparable(faulty) == comparable(clean)


def restarted(host: Any, pid: int) -> None:
    """Wait until ``host`` answers from a process other than ``pid``."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(RayActorError, GetTimeoutError):
            if ray.get(host.info.remote(), timeout=5)["pid"] != pid:
                return
        time.sleep(0.1)
    raise AssertionError("the killed host was not restarted")


def test_a_replayed_commit_is_not_applied_twice() -> None:
    """The bus remembers a host's commit by (client id, request id): a host process that
    replays a commit it already made (as after a crash) gets the same replies and the
    store does not change."""
    from hivemem.agents.base import AgentSpec
    from hivemem.agents.host import AgentHost
    from hivemem.memory_bus.server import BusServer
    from hivemem.memory_bus.store import MemoryStore

    s = small("capacity_stream", "memory.private.write_policy=always_add")
    server = BusServer(MemoryStore(s.memory)).start()
    try:
        spec = AgentSpec("agent-0", "fact_memory", "agent", (), {"write_tier": "private"})
        tokens = {"agent-0": server.token("agent-0")}
        obs = {"agent-0": {"facts": [{"key": "k1", "value": "v", "text": "k1 holds v", "t": 0.0}]}}
        first = AgentHost(server.address, [spec], tokens, s.memory.dim, client_id=77)
        first.step(0, obs)
        done = first.commit(0)
        first.close()
        again = AgentHost(server.address, [spec], tokens, s.memory.dim, client_id=77)
        again.step(0, obs)
        replay = again.commit(0)
        again.close()
        other = AgentHost(server.address, [spec], tokens, s.memory.dim, client_id=78)
        other.step(0, obs)
        other.commit(0)
        other.close()
        assert done["stats"]["ops"] == replay["stats"]["ops"] == {"private.ADD": 1}
        items = server.inspect(lambda store: len(store.private.namespaces["agent-0"]))
        assert items == 2  # the replay added nothing; a different client did
    finally:
        server.stop()


def test_hosts_embed_with_the_store_embedder() -> None:
    """A host embeds its agents' texts itself and sends the vectors: with the store's
    embedder, so they match what the bus would make of the same texts."""
    from hivemem.agents.base import AgentSpec
    from hivemem.agents.host import AgentHost
    from hivemem.memory_bus.embedder import make_embedder
    from hivemem.memory_bus.errors import ConfigError
    from hivemem.memory_bus.interfaces import Caller
    from hivemem.memory_bus.server import BusServer
    from hivemem.memory_bus.store import MemoryStore

    s = small("capacity_stream", "memory.embedder.hashes=1", "memory.embedder.bigrams=false")
    server = BusServer(MemoryStore(s.memory)).start()
    try:
        spec = AgentSpec("agent-0", "fact_memory", "agent", (), {"write_tier": "private"})
        tokens = {"agent-0": server.token("agent-0")}
        obs = {"agent-0": {"facts": [{"key": "k1", "value": "v", "text": "k1 holds v", "t": 0.0}]}}
        host = AgentHost(server.address, [spec], tokens, s.memory.dim, embedder=s.memory.embedder)
        host.step(0, obs)
        host.commit(0)
        host.close()
        agent = Caller("agent-0")
        [item] = server.inspect(lambda store: store.private.scan(agent, "agent-0").items)
        assert item.text == "k1 holds v"
        assert np.array_equal(item.vector, server.store.embed([item.text])[0])
        assert not np.allclose(item.vector, make_embedder(None, s.memory.dim)([item.text])[0])
        with pytest.raises(ConfigError, match=r"hashes=1\).*this host was given .*hashes=4\)"):
            AgentHost(server.address, [spec], tokens, s.memory.dim)  # the default embedder
    finally:
        server.stop()


def test_oracle_eviction_is_the_ceiling_on_capacity_stream() -> None:
    lru = run_once(small("capacity_stream", "memory.private.eviction=lru"))
    fifo = run_once(small("capacity_stream", "memory.private.eviction=fifo"))
    oracle = run_once(small("capacity_stream", "memory.private.eviction=oracle"))
    assert oracle.summary["score"] >= max(lru.summary["score"], fifo.summary["score"])
    assert oracle.summary["score"] > lru.summary["score"]


def test_split_keeps_agents_in_order_in_contiguous_blocks() -> None:
    specs = load_scenario("relay_qa").roster()
    for hosts in (1, 2, 3, 5, len(specs)):
        blocks = split(specs, hosts)
        assert len(blocks) == hosts
        assert [s for b in blocks for s in b] == specs
        sizes = [len(b) for b in blocks]
        assert max(sizes) - min(sizes) <= 1
