"""check_agent_type: every built-in agent type passes it in the scenarios it plays in,
and each kind of broken agent type fails it, saying what it did.

The broken types are defined here, at the top level, so that the kit can name them
``"module:Class"`` as a scenario would."""

from __future__ import annotations

import random
import re
import threading

import pytest
from hivemem.agents.base import AGENT_TYPES, Action, BaseAgent, Observation, Proposal, Recall
from hivemem.agents.builtin import FactMemoryAgent
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.testing import ContractFailure
from hivemem.platform.testing import check_agent_type
from hivemem.scenarios import families  # noqa: F401  (registers the built-in types)

PLAYS = [
    ("fact_memory", "relay_qa"),
    ("fact_memory", "evolving_facts"),
    ("fact_memory", "capacity_stream"),
    ("no_memory", "capacity_stream"),
    ("team_insights.solver", "team_insights"),
    ("team_insights.random", "team_insights"),
]
"""Every built-in agent type, in the built-in scenarios (their rosters, or their
baselines) it plays in."""


def test_every_built_in_agent_type_is_checked() -> None:
    """Every type hivemem registers (other tests of a worker register types of theirs)."""
    built_in = [
        name
        for name in AGENT_TYPES.names()
        if AGENT_TYPES.factory(name).__module__.startswith("hivemem.")
    ]
    assert len(built_in) >= 4
    assert sorted({name for name, _ in PLAYS}) == built_in


@pytest.mark.parametrize(("name", "scenario"), PLAYS)
def test_the_built_in_agent_types_keep_the_contract(name: str, scenario: str) -> None:
    did = check_agent_type(name, scenario=scenario, ticks=6)
    assert did["answers"] > 0  # the scenario asked it, and it answered
    if name in ("fact_memory", "team_insights.solver"):  # they read and write memory
        assert did["recalls"] > 0 and did["hits"] > 0 and did["writes"] > 0
    if name == "team_insights.solver":
        assert did["promotions"] > 0


def test_the_kit_runs_the_type_with_the_params_given() -> None:
    with pytest.raises(
        ContractFailure,
        match=r"agents\.1\.params: bad parameters for agent type 'fact_memory': invalid k",
    ):
        check_agent_type("fact_memory", {"k": 0}, scenario="relay_qa", roles=["analyst"])


class Remembers(FactMemoryAgent):
    """Stamps its writes with the tick it first acted at: kept in itself, not on the bus."""

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        self.since = getattr(self, "since", t)
        action = super().act(t, obs, recalled)
        action.writes = [
            Proposal(w.tier, w.namespace, w.text, {**w.meta, "since": self.since})
            for w in action.writes
        ]
        return action


class TakesTheQuestion(FactMemoryAgent):
    """Takes the question out of its observation once it has answered it."""

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        action = super().act(t, obs, recalled)
        obs.pop("question", None)
        return action


class Shuffles(FactMemoryAgent):
    """Asks for a random number of hits (Python's unseeded random)."""

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        return [Recall(r.tier, r.namespace, r.query, random.randint(1, 20)) for r in super().plan(t, obs)]  # fmt: skip


class ReadsVectors(FactMemoryAgent):
    """Claims it reads no vector (the built-in's ``hit_vectors = False``), but keeps only
    the hits whose vector it can see."""

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        seen = [[h for h in hits if h.item.vector.size] for hits in recalled]
        return super().act(t, obs, seen)


class PlansDicts(BaseAgent):
    """Plans its reads as dicts, not Recalls."""

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        return [{"tier": "shared", "namespace": "commons", "query": "x"}]  # type: ignore[list-item]


class AnswersLazily(FactMemoryAgent):
    """Answers a generator of values, never drawn from."""

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        action = super().act(t, obs, recalled)
        action.answer = (h.item.meta.get("value") for hits in recalled for h in hits)
        return action


class WritesASet(FactMemoryAgent):
    """Puts a set in the meta of its writes: msgpack cannot carry it."""

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        action = super().act(t, obs, recalled)
        action.writes = [
            Proposal(w.tier, w.namespace, w.text, {**w.meta, "tags": {"fact"}})
            for w in action.writes
        ]
        return action


class WritesForAnother(FactMemoryAgent):
    """Writes its facts into the private namespace of another agent."""

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        action = super().act(t, obs, recalled)
        action.writes = [Proposal("private", "analyst-0", w.text) for w in action.writes]
        return action


TYPE = r"\(type '" + re.escape(__name__) + r":\w+'\)"
BROKEN: list[tuple[type, str]] = [
    (
        Remembers,
        rf"tick 1: agent 'scout-0' {TYPE}: act\.writes\[0\]\.meta\['since'\] was 0 built once, "
        r"1 built again at every tick from its spec sent through cloudpickle \(a restarted host builds its agents again",
    ),
    (
        TakesTheQuestion,
        rf"tick 1: agent 'analyst-0' {TYPE}: act changed its observation, from \{{'question'",
    ),
    (
        Shuffles,
        rf"tick 1: agent 'analyst-0' {TYPE}: plan\[0\]\.k was \d+ the first time, \d+ the "
        "second, for the same tick and inputs",
    ),
    (
        ReadsVectors,
        rf"tick 1: agent 'analyst-0' {TYPE}: act\.answer was None with hits without their "
        r"vectors, '\w+' with every hit's vector \(its type claims hit_vectors = False",
    ),
    (
        PlansDicts,
        rf"tick 0: agent 'scout-0' {TYPE}: plan answered \[\{{'tier'.*; it must return a list "
        "of Recall",
    ),
    (
        AnswersLazily,
        rf"tick 0: agent 'scout-0' {TYPE}: act's answer cannot be pickled .*generator",
    ),
    (
        WritesASet,
        r"tick 0: agent 'scout-0': invalid writes\[0\]\.meta\.tags: cannot be sent: .*'set'",
    ),
    (WritesForAnother, r"tick 0: agent 'scout-0'.* may not write private/analyst-0"),
]


@pytest.mark.parametrize(("kind", "said"), BROKEN, ids=[k.__name__ for k, _ in BROKEN])
def test_an_agent_type_breaking_the_contract_fails_it_saying_how(kind: type, said: str) -> None:
    random.seed(3)
    with pytest.raises(ContractFailure, match=said):
        check_agent_type(kind, scenario="relay_qa", ticks=4)


def test_a_type_no_host_could_import_fails_before_it_runs() -> None:
    class Local(FactMemoryAgent):
        pass

    with pytest.raises(ContractFailure, match=r"cannot be named in a scenario: a host"):
        check_agent_type(Local, scenario="relay_qa")


def test_params_a_host_cannot_be_sent_fail_before_it_runs() -> None:
    with pytest.raises(ContractFailure, match=r"the roster's specs cannot be pickled .*lock"):
        check_agent_type(PlansNothing, {"guard": threading.Lock()}, scenario="relay_qa")


class PlansNothing(BaseAgent):
    """Takes any params, and does nothing."""


def test_a_type_given_as_its_class_is_named_as_a_scenario_names_it() -> None:
    assert check_agent_type(FactMemoryAgent, scenario="relay_qa", ticks=3)["writes"] > 0
