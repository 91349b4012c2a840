""":func:`check_agent_type`: an agent type of one's own, run by real agent hosts for a
few ticks of a scenario, and checked for what hosts rely on.

The scenario's agents of the type become :class:`CheckedAgent`\\ s: a host builds one
from its spec, by name, as it builds any agent type, and it builds the agent of the type
under check inside it. The host asks the checking agent to plan and act; it asks the
agent twice, watches the observation, checks the answers and keeps them, and answers the
host with the agent's. The kept answers of one run are compared with another's (the
hosts restarted at every tick; every hit handed with its vector).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from hivemem.agents.base import AGENT_TYPES, Action, AgentSpec, Observation, Recall
from hivemem.agents.calls import act_of, build_of, plan_of, who
from hivemem.agents.host import AgentHost
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.testing.failures import ContractFailure, expect
from hivemem.platform.host_pool import LocalHosts
from hivemem.platform.plugin_runs import (
    ScenarioLike,
    as_scenario,
    pickled,
    promising,
    run_checked,
    said,
    same,
    where_differ,
)
from hivemem.platform.scenario import Scenario, check_meaning

Key = tuple[int, str]
"""A tick and an agent id."""


@dataclass
class _Watch:
    """One run of a check: the type under check, and what its agents planned and did."""

    name: str
    vectors: bool = False
    """Every checking agent asks for its hits' vectors, whatever its type claims."""
    plans: dict[Key, list[Recall]] = field(default_factory=dict)
    actions: dict[Key, Action] = field(default_factory=dict)
    hits: dict[Key, int] = field(default_factory=dict)
    """How many hits each agent was handed."""
    blind: bool = False
    """An agent of the type claims ``hit_vectors = False``."""


_WATCH: ContextVar[_Watch] = ContextVar("the agent check running")


class CheckedAgent:
    """An agent of the type under :func:`check_agent_type`, checked as its host asks it.

    Built by a host from a spec naming this class, while a check runs (it takes the type
    under check from the check); the agent of that type is built inside it from the
    same spec under the type's own name.

    Raises:
        ConfigError: no check is running.
    """

    def __init__(self, spec: AgentSpec) -> None:
        watch = _WATCH.get(None)
        if watch is None:
            raise ConfigError(f"agent type {CHECKED!r} is built only while check_agent_type runs")
        self.watch = watch
        self.spec = dataclasses.replace(spec, type=watch.name)
        self.agent = build_of(self.spec)
        claims = bool(getattr(self.agent, "hit_vectors", True))
        watch.blind |= not claims
        self.hit_vectors = watch.vectors or claims

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        """The agent's plan, asked twice."""
        with promising():
            plan: list[Recall] = self._twice(plan_of, "plan", t, obs)
        self.watch.plans[int(t), self.spec.agent_id] = plan
        return plan

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        """The agent's action, asked twice; its answer sent through cloudpickle."""
        with promising():
            action: Action = self._twice(act_of, "act", t, obs, recalled, first=self._travels)
        key = (int(t), self.spec.agent_id)
        self.watch.actions[key] = action
        self.watch.hits[key] = sum(len(hits) for hits in recalled)
        return action

    def _travels(self, t: float, action: Action) -> None:
        """Check that ``action``'s answer comes back alike through cloudpickle."""
        answer = action.answer
        where = f"tick {t}: {who(self.agent)}"
        back = cloudpickle.loads(pickled(answer, f"{where}: act's answer"))
        expect(
            same(back, answer),
            f"{where}: act answered {answer!r:.200}, {back!r:.200} after cloudpickle (the "
            "host returns answers to the driver so)",
        )

    def _twice(
        self,
        call: Callable[..., Any],
        method: str,
        t: float,
        obs: Observation,
        *args: Any,
        first: Callable[[float, Any], None] = lambda t, answer: None,
    ) -> Any:
        """``call(agent, t, obs, *args)`` (the run's own check), asked twice, checked to
        leave ``obs`` alone and to answer alike; ``first`` checks the first answer."""
        before = copy.deepcopy(obs)
        answer = call(self.agent, t, obs, *args)
        expect(
            same(obs, before),
            f"tick {t}: {who(self.agent)}: {method} changed its observation, from "
            f"{before!r:.200} to {obs!r:.200}: a host's agents may share one",
        )
        first(t, answer)
        differ = where_differ(answer, call(self.agent, t, obs, *args), method)
        expect(
            differ is None,
            f"tick {t}: {who(self.agent)}: {said(differ, 'the first time', 'the second')}, "
            "for the same tick and inputs: a seeded run is the same run only if they agree",
        )
        return answer


CHECKED = f"{CheckedAgent.__module__}:{CheckedAgent.__qualname__}"
"""The name a scenario gives :class:`CheckedAgent`."""


class _ShippedHosts(LocalHosts):
    """Hosts that get their agents' specs as a host actor gets them: through cloudpickle."""

    def _host(self, block: list[AgentSpec]) -> AgentHost:
        shipped: list[AgentSpec] = cloudpickle.loads(cloudpickle.dumps(block))
        return super()._host(shipped)


def check_agent_type(
    agent_type: str | type,
    params: dict[str, Any] | None = None,
    *,
    scenario: ScenarioLike,
    roles: Sequence[str] | None = None,
    ticks: int = 10,
) -> dict[str, int]:
    """Raise ``ContractFailure`` unless the agent type, playing ``roles`` in
    ``scenario``, keeps what a host relies on, tick after tick.

    The scenario's agents of those roles become agents of the type (with ``params``),
    and the scenario runs for ``ticks`` ticks in this process, each agent on an agent
    host of its own (so that it is handed its hits as its own type asks), three times
    over: once; once with every host restarted before every tick, as Ray restarts a
    host actor; and, if the type claims ``hit_vectors = False``, once with every hit
    handed with its vector.

    Checked: the type is named so that a host in another process can build it (a
    registered name, or ``"module:Class"`` importable there), its spec survives
    cloudpickle (Ray ships the specs to the hosts that way; the hosts here get theirs
    so) and the scenario with it validates (``check_params`` accepts the params); every
    ``plan`` and ``act`` answers in protocol (the run's own checks), the same when asked
    the same twice, without changing the observation (the agents of a host may share
    it); every answer survives cloudpickle (the host returns it to the driver); the bus
    takes every read and write its host sends for it (what it refuses stops a run); and
    the agents answer alike built once or built again at every tick, and, if they claim
    ``hit_vectors = False``, with hits without their vectors or with them.

    Args:
        agent_type: The type: its registered name, ``"module:Class"``, or the class.
        params: Its params (None: each replaced agent keeps the scenario's own).
        scenario: Where the agents act (a built-in name, a file, or a
            :class:`~hivemem.platform.scenario.Scenario`).
        roles: The roles it plays (None: every role the scenario's agents have).
        ticks: Ticks run.

    Returns:
        What the agents of the type did over the run (``recalls``, ``hits``,
        ``writes``, ``promotions``, ``answers`` other than None): how much of the type
        the scenario exercised.
    """
    name = _agent_type_name(agent_type)
    s = _as_agents(as_scenario(scenario, ticks), name, params, roles)
    pickled(s.roster(), "the roster's specs")
    entries = [e.model_copy(update={"type": CHECKED}) if e.type == name else e for e in s.agents]
    checked = s.model_copy(update={"agents": entries})
    once = _watched(checked, _Watch(name))
    _compare(once, _watched(checked, _Watch(name), restart=True), _REBUILT)
    if once.blind:
        _compare(once, _watched(checked, _Watch(name, vectors=True)), _VECTORS)
    return _exercised(once)


def _agent_type_name(agent_type: str | type) -> str:
    """The name a scenario gives the type, checked to build the type in a host."""
    if isinstance(agent_type, str):
        try:
            AGENT_TYPES.factory(agent_type)
        except ConfigError as exc:
            raise ContractFailure(f"agent type {agent_type!r}: {exc}") from exc
        return agent_type
    name = f"{agent_type.__module__}:{agent_type.__qualname__}"
    expect(
        agent_type.__module__ != "__main__" and "<locals>" not in agent_type.__qualname__,
        f"agent type {name!r} cannot be named in a scenario: a host (another process) "
        "imports a type by 'module:Class', so define it at the top level of a module",
    )
    return _agent_type_name(name)


def _as_agents(
    s: Scenario, name: str, params: dict[str, Any] | None, roles: Sequence[str] | None
) -> Scenario:
    """``s`` with its agents of ``roles`` of type ``name`` (and ``params``), validated."""
    roles = sorted({e.role for e in s.agents}) if roles is None else list(roles)
    entries = [
        e.model_copy(update={"type": name, "params": e.params if params is None else params})
        if e.role in roles
        else e
        for e in s.agents
    ]
    expect(
        any(e.role in roles for e in s.agents),
        f"scenario {s.name!r} has no agent of the roles {roles} (its agents' roles: "
        f"{sorted({e.role for e in s.agents})})",
    )
    s = s.model_copy(update={"agents": entries})
    problems = check_meaning(s)
    expect(
        not problems,
        f"scenario {s.name!r} with agents of type {name!r} is refused: "
        + "; ".join(f"{p.path}: {p.message}" for p in problems),
    )
    return s


def _watched(s: Scenario, watch: _Watch, restart: bool = False) -> _Watch:
    """``watch``, after a run of ``s`` (its agents under check are ``CheckedAgent``\\ s)
    with every agent on a host of its own."""
    running = _WATCH.set(watch)
    try:
        run_checked(s, hosts=len(s.roster()), pool=_ShippedHosts, restart=restart)
    finally:
        _WATCH.reset(running)
    return watch


_REBUILT = (
    "built once",
    "built again at every tick from its spec sent through cloudpickle",
    "a restarted host builds its agents again: an agent keeps what it knows on the bus, "
    "not in itself",
)
_VECTORS = (
    "with hits without their vectors",
    "with every hit's vector",
    "its type claims hit_vectors = False, so a host asks the bus for hits without them",
)


def _compare(want: _Watch, got: _Watch, how: tuple[str, str, str]) -> None:
    """Raise unless the agents under check planned and acted alike in both runs."""
    for t, aid in sorted(want.actions):
        for method, x, y in (
            ("plan", want.plans[t, aid], got.plans.get((t, aid))),
            ("act", want.actions[t, aid], got.actions.get((t, aid))),
        ):
            differ = where_differ(x, y, method)
            expect(
                differ is None,
                f"tick {t}: agent {aid!r} (type {want.name!r}): "
                f"{said(differ, how[0], how[1])} ({how[2]})",
            )


def _exercised(watch: _Watch) -> dict[str, int]:
    out = {"recalls": 0, "hits": 0, "writes": 0, "promotions": 0, "answers": 0}
    for key, action in watch.actions.items():
        out["recalls"] += len(watch.plans[key])
        out["hits"] += watch.hits[key]
        out["writes"] += len(action.writes)
        out["promotions"] += len(action.promotions)
        out["answers"] += action.answer is not None
    return out
