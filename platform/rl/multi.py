"""A multi-agent environment in the PettingZoo Parallel API shape: what to share.

Every agent that writes decides, each tick, whether this tick's proposals to the shared
tier go there (its group sees them) or stay in its private namespace (its writes to
other tiers go where they were headed). Sharing is what
lets other agents answer, but the shared tier has a budget (its capacity: over it, the
eviction policy drops items) and each shared item costs ``share_cost``. The reward of
every agent is the team's correct answers of the tick minus the cost of what *it* shared.

Observations, actions, rewards, terminations, truncations and infos are dicts keyed by
agent id (``reset`` -> ``(obs, infos)``, ``step(actions)`` -> the five dicts), as in
``pettingzoo.ParallelEnv``; pettingzoo itself is not needed to use it.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces
from hivemem.memory_bus.errors import ConfigError
from hivemem.platform.host_pool import LocalHosts
from hivemem.platform.rl.envs import (
    BOUND,
    EpisodeThread,
    check_action,
    env_number,
    next_env_name,
    scenario_seed_of,
)
from hivemem.platform.rl.learner import TRAIN_SEED_BASE
from hivemem.platform.rl.sim import EpisodeResult, run_episode
from hivemem.platform.scenario import Scenario, load_scenario

KEEP, SHARE = 0, 1
OBS_NAMES = ("proposals", "mean_importance", "shared_fill", "progress", "bias")


@dataclass
class _SharingEpisode:
    """What the episode thread runs and writes: the agents' routing and the tick's tallies.

    Kept apart from the environment, which the thread must not hold (see
    :class:`~hivemem.platform.rl.envs.EpisodeThread`).
    """

    scenario: Scenario
    possible_agents: list[str]
    episode: EpisodeThread
    reward: float = 0.0
    shared_items: float = 0.0
    shared_by: dict[str, int] = field(default_factory=dict)

    def after_step(self, t: int, hosts: LocalHosts) -> None:
        obs = {}
        for host in hosts.hosts:
            for aid, action in host.pending:
                if aid in self.possible_agents:
                    obs[aid] = [p.importance for p in action.writes if p.tier == "shared"]
        actions = self.episode.channel.ask((t, obs), {})
        for host in hosts.hosts:
            host.rewrite_pending(lambda aid, action: self.route(aid, action, actions))

    def route(self, aid: str, action: Any, actions: dict[str, int]) -> Any:
        """``action`` with its shared-tier proposals kept private if ``aid`` chose so.

        Only proposals to the shared tier are the agent's to route: one to the graph
        tier (a node on its level, a promotion's child) is no candidate for a private
        namespace, which has no levels.
        """
        if aid not in self.possible_agents:
            return action
        if actions.get(aid, SHARE) == SHARE:
            self.shared_by[aid] = sum(p.tier == "shared" for p in action.writes)
            return action
        writes = [
            dataclasses.replace(p, tier="private", namespace=aid) if p.tier == "shared" else p
            for p in action.writes
        ]
        return dataclasses.replace(action, writes=writes)

    def __call__(self, seed: int) -> EpisodeResult:
        s = self.scenario.model_copy(
            update={"run": self.scenario.run.model_copy(update={"seed": seed})}
        )

        def tick(t: int, row: dict[str, Any], reward: float) -> None:
            self.reward += reward
            self.shared_items = float(row.get("items", {}).get("shared", 0))

        return run_episode(s, tier="shared", on_tick=tick, after_step=self.after_step)


class SharingEnv:
    """Each writing agent chooses, per tick, to share its proposals or keep them private.

    Args:
        scenario: A scenario (name or path) whose agents write to the shared tier.
        share_cost: Reward subtracted from an agent per item it shares.
        overrides: ``--set`` style overrides of the scenario.
        timeout: Seconds to wait for the episode's next tick.
    """

    metadata: dict[str, Any] = {"render_modes": [], "name": "hivemem_sharing_v0"}  # noqa: RUF012

    def __init__(
        self,
        scenario: str | Scenario = "relay_qa",
        share_cost: float = 0.02,
        overrides: tuple[str, ...] = (),
        timeout: float = 600.0,
    ) -> None:
        self.scenario = (
            scenario if isinstance(scenario, Scenario) else load_scenario(scenario, list(overrides))
        )
        roster = self.scenario.make_task().roster
        self.possible_agents = [
            s.agent_id for s in roster if s.params.get("write_tier", "shared") == "shared"
        ]
        if not self.possible_agents:
            raise ConfigError(f"no agent of {self.scenario.name!r} writes to the shared tier")
        self.capacity = float(self.scenario.memory.shared.capacity or 0) or float("inf")
        self.share_cost = env_number("share_cost", share_cost)
        self.timeout = env_number("timeout", timeout, positive=True)
        self.agents: list[str] = []
        self.episode = EpisodeThread(next_env_name("sharing"), self.timeout)
        self._run = _SharingEpisode(self.scenario, self.possible_agents, self.episode)
        self._t = 0
        self.summary: dict[str, float | None] = {}
        self.np_random = np.random.default_rng()
        # one space object per agent, as PettingZoo expects (per instance: a cache on the
        # class would keep every environment alive)
        self._observation_space = spaces.Box(-BOUND, BOUND, (len(OBS_NAMES),), np.float32)
        self._action_space: spaces.Discrete = spaces.Discrete(2)
        # an environment dropped without close(): its episode stops when it is collected
        weakref.finalize(self, self.episode.close)

    def observation_space(self, agent: str) -> spaces.Box:
        """What an agent sees: ``OBS_NAMES``."""
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Discrete:
        """0 keep private, 1 share."""
        return self._action_space

    # --- the parallel API ----------------------------------------------------------------

    def _fill(self) -> float:
        return self._run.shared_items / self.capacity

    def _observe(self, t: int, proposals: dict[str, list[float]]) -> dict[str, np.ndarray]:
        self._t = t
        out = {}
        for aid in self.agents:
            imps = proposals.get(aid, [])
            out[aid] = np.asarray(
                [
                    len(imps),
                    float(np.mean(imps)) if imps else 0.0,
                    self._fill(),
                    t / self.scenario.run.ticks,
                    1.0,
                ],
                np.float32,
            )
        return out

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode; returns observations and infos keyed by agent."""
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._run.reward, self._run.shared_items = 0.0, 0.0
        drawn = TRAIN_SEED_BASE + int(self.np_random.integers(0, 1_000_000))
        episode_seed = scenario_seed_of(options, drawn)
        kind, payload, _ = self.episode.start(functools.partial(self._run, episode_seed))
        if kind != "decide":
            raise ConfigError(f"scenario {self.scenario.name!r} ended before its first tick")
        t, proposals = payload
        return self._observe(t, proposals), {
            a: {"scenario_seed": episode_seed} for a in self.agents
        }

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        """Apply every agent's choice for this tick; run to the next tick.

        Raises:
            ConfigError: an action for an agent not in the episode.
            InvalidInputError: an action not in the agent's action space.
        """
        unknown = set(actions) - set(self.agents)
        if unknown:
            raise ConfigError(f"actions for agents not in the episode: {sorted(unknown)}")
        for aid, action in actions.items():
            check_action(self.action_space(aid), action, aid)
        self._run.shared_by = {}
        self._run.reward = 0.0
        kind, payload, _ = self.episode.answer({a: int(v) for a, v in actions.items()})
        agents = self.agents
        shared = self._run.shared_by
        rewards = {a: self._run.reward - self.share_cost * shared.get(a, 0) for a in agents}
        done = kind != "decide"
        terms = {a: done for a in agents}
        truncs = {a: False for a in agents}
        if done:
            self.summary = self.episode.last.result.summary if self.episode.last else {}
            obs = {a: np.zeros(len(OBS_NAMES), np.float32) for a in agents}
            infos: dict[str, dict[str, Any]] = {a: {"summary": self.summary} for a in agents}
            self.agents = []
        else:
            t, proposals = payload
            obs = self._observe(t, proposals)
            infos = {a: {} for a in agents}
        return obs, rewards, terms, truncs, infos

    @property
    def unwrapped(self) -> SharingEnv:
        """This environment (no wrappers)."""
        return self

    @property
    def num_agents(self) -> int:
        """Agents live now."""
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        """Agents that can take part."""
        return len(self.possible_agents)

    def state(self) -> np.ndarray:
        """A global view: the shared tier's fill (items held / capacity, 0 without a
        capacity) and the episode's progress (tick / ticks), as in every observation."""
        return np.asarray([self._fill(), self._t / self.scenario.run.ticks], np.float32)

    def close(self) -> None:
        """Abandon a running episode."""
        self.episode.close()

    def render(self) -> None:
        """Nothing to render."""
        return None
