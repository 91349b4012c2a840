"""Episodes for RL: a scenario run in this process, with the same runner and bus code.

Training runs thousands of short episodes, so it keeps the agent hosts in this process
(:class:`~hivemem.platform.host_pool.LocalHosts`, the same
:class:`~hivemem.agents.host.AgentHost` the Ray actors wrap) and the bus embedded, the
hosts handing their requests straight to it
(:class:`~hivemem.memory_bus.local_transport.LocalTransport`); everything else is
:func:`~hivemem.platform.runner.run_once`, so an episode here is a ``hivemem run``
without Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hivemem.memory_bus.config import NamespaceMode
from hivemem.memory_bus.errors import ConfigError, UnknownNameError
from hivemem.platform.host_pool import LocalHosts
from hivemem.platform.runner import RunResult, run_once
from hivemem.platform.scenario import Scenario

TIERS = ("private", "shared", "graph")


def policy_tier(scenario: Scenario, tier: str | None) -> str:
    """The tier a controller acts on: the one named, else the first with a capacity."""
    if tier is not None:
        if tier not in TIERS:
            raise UnknownNameError("tier", tier, TIERS)
        return tier
    for name in TIERS:
        if getattr(scenario.memory, name).capacity:
            return name
    return "shared"


def controller_tier(scenario: Scenario, tier: str | None, controller: str) -> str:
    """:func:`policy_tier`, checked for ``controller``: the environments, ES and REINFORCE
    all take the tier from here.

    Raises:
        UnknownNameError: no such tier.
        ConfigError: an eviction controller on a tier with no capacity: nothing is ever
            evicted there, so there is nothing to learn; or, under a token budget, the
            observation has no size (a row per item, up to the capacity).
    """
    name = policy_tier(scenario, tier)
    tier_cfg = getattr(scenario.memory, name)
    if controller == "eviction" and not tier_cfg.capacity:
        why = (
            "the eviction controller sees one row per item, up to the capacity (its "
            "token budget evicts, but bounds no count of items)"
            if tier_cfg.mode is NamespaceMode.TOKEN_BUDGET
            else "nothing is ever evicted there"
        )
        raise ConfigError(
            f"the {name} tier of {scenario.name!r} has no capacity: {why} (name a tier "
            "with a capacity, or set memory.TIER.capacity)",
            tier=name,
        )
    return name


def with_policy(
    scenario: Scenario,
    tier: str,
    *,
    eviction: str | None = None,
    write: str | None = None,
    params: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Scenario:
    """A copy of ``scenario`` with a tier's eviction or write policy (and seed) replaced."""
    tier_cfg = getattr(scenario.memory, tier)
    update: dict[str, Any] = {}
    if eviction is not None:
        update |= {"eviction": eviction, "eviction_params": params or {}}
    if write is not None:
        update |= {"write_policy": write, "write_params": params or {}}
    memory = scenario.memory.model_copy(update={tier: tier_cfg.model_copy(update=update)})
    run = scenario.run if seed is None else scenario.run.model_copy(update={"seed": seed})
    return scenario.model_copy(update={"memory": memory, "run": run})


def with_controller(
    scenario: Scenario,
    tier: str,
    controller: str,
    name: str,
    params: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Scenario:
    """:func:`with_policy` for a controller named as a string (``eviction`` or ``write``)."""
    if controller == "eviction":
        return with_policy(scenario, tier, eviction=name, params=params, seed=seed)
    return with_policy(scenario, tier, write=name, params=params, seed=seed)


@dataclass
class EpisodeResult:
    """What an episode earned: per-tick rewards (RL's view) and the run's own result."""

    rewards: list[float]
    result: RunResult
    items: list[float] = field(default_factory=list)

    def ret(self, memory_cost: float = 0.0) -> float:
        """The episode return: rewards minus ``memory_cost`` per item held per tick."""
        return sum(self.rewards) - memory_cost * sum(self.items)


def run_episode(
    scenario: Scenario,
    *,
    tier: str,
    on_tick: Callable[[int, dict[str, Any], float], None] | None = None,
    after_step: Callable[[int, LocalHosts], None] | None = None,
) -> EpisodeResult:
    """Run ``scenario`` in this process and collect the task's reward per tick.

    Args:
        scenario: The scenario, policies already set.
        tier: The tier whose items count as memory held (the memory cost).
        on_tick: Called after each tick with ``(t, row, reward)``.
        after_step: Called between step and commit with the hosts (to edit their writes).
    """
    task_reward: list[float] = []
    items: list[float] = []
    hosts_made: list[LocalHosts] = []

    def pool(*args: Any, **kwargs: Any) -> LocalHosts:
        hosts = LocalHosts(*args, **kwargs)
        hosts.after_step = after_step
        hosts_made.append(hosts)
        return hosts

    def tick(t: int, row: dict[str, Any]) -> None:
        reward = reward_of(row)
        task_reward.append(reward)
        items.append(float(row.get("items", {}).get(tier, 0)))
        if on_tick is not None:
            on_tick(t, row, reward)

    result = run_once(scenario, on_tick=tick, host_pool=pool)
    return EpisodeResult(task_reward, result, items)


def reward_of(row: dict[str, Any]) -> float:
    """A tick's reward: the task's answers that came out right (``correct*``/``successes*``)."""
    return float(
        sum(v for k, v in row.items() if k.startswith(("correct", "successes")) and k != "score")
    )
