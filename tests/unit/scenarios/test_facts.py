"""Dealing observations: each fact to one observer, or to several (redundant witnesses)."""

from __future__ import annotations

from hivemem.agents.base import AgentSpec
from hivemem.scenarios.facts import deal


def _observers(n: int) -> list[AgentSpec]:
    return [AgentSpec(f"o{i}", "fact_memory", "observer") for i in range(n)]


def test_each_fact_goes_to_one_observer_by_default() -> None:
    facts = [{"text": f"f{i}"} for i in range(5)]
    obs = deal(facts, _observers(2), {})
    assert [f["text"] for f in obs["o0"]["facts"]] == ["f0", "f2", "f4"]
    assert [f["text"] for f in obs["o1"]["facts"]] == ["f1", "f3"]


def test_copies_send_each_fact_to_that_many_observers() -> None:
    facts = [{"text": f"f{i}"} for i in range(3)]
    obs = deal(facts, _observers(3), {"a": {"q": 1}}, copies=2)
    seen = sorted(f["text"] for o in obs.values() for f in o.get("facts", []))
    assert seen == ["f0", "f0", "f1", "f1", "f2", "f2"]
    assert all(
        len({f["text"] for f in o["facts"]}) == len(o["facts"])
        for o in obs.values()
        if "facts" in o
    )
    assert obs["a"] == {"question": {"q": 1}}
    # more copies than observers: everyone sees everything once
    wide = deal(facts, _observers(2), {}, copies=5)
    assert all(len(o["facts"]) == 3 for o in wide.values())
