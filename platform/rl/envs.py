"""Gymnasium environments over a scenario: ``hivemem/Eviction-v0`` and ``hivemem/WritePolicy-v0``.

Each episode is a run of the scenario (``hivemem.platform.rl.sim``); the tier's policy is
replaced by one that hands every decision to the environment. The run goes on in a
thread of its own and stops at each decision until :meth:`step` gives the action, so
the environment sees exactly the state the bus would show a served policy: the same
feature function, the same candidates, in the same order.

Reward: the task's correct answers (``correct*`` / ``successes*`` of its per-tick parts)
earned after a decision and before the next, minus ``memory_cost`` per item the tier
holds per tick. Those are the answers the kept memories made possible, credited to the
decision that came just before them; the return of an episode is what the scenario
scores.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from hivemem.memory_bus.errors import (
    ConfigError,
    HivememError,
    InvalidInputError,
    NonFiniteError,
    WrongTypeError,
)
from hivemem.memory_bus.features import NUM_FEATURES, WRITE_FEATURE_NAMES, write_features
from hivemem.memory_bus.interfaces import EvictionContext, Hit, WriteDecision
from hivemem.memory_bus.item import Item, check_number
from hivemem.memory_bus.policies.learned import WRITE_OPS, op_decision
from hivemem.platform.rl.learner import TRAIN_SEED_BASE
from hivemem.platform.rl.sim import (
    EpisodeResult,
    controller_tier,
    run_episode,
    with_controller,
)
from hivemem.platform.scenario import Scenario, load_scenario

BOUND = 1e9
"""Observation bounds: features are finite and far inside this (ages in ticks, log counts)."""

_channels: weakref.WeakValueDictionary[str, _Channel] = weakref.WeakValueDictionary()
"""The channel of each live episode thread, by name: how the policy the bus builds from
its name (``ControlledEviction(channel=NAME)``) finds its environment. Weak, so an
environment that is dropped takes its channel with it."""
_ids = itertools.count()


def next_env_name(prefix: str) -> str:
    """A name for an environment's episode thread and channel, unique in this process."""
    return f"{prefix}-{next(_ids)}"


class EpisodeAbortedError(HivememError):
    """The environment was reset or closed while its episode waited for a decision."""

    code = "aborted"


class _Channel:
    """Hand-over between the episode's thread (asks) and the environment (answers)."""

    def __init__(self) -> None:
        self.to_env: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.to_sim: queue.Queue[Any] = queue.Queue()

    def ask(self, obs: Any, info: dict[str, Any]) -> Any:
        self.to_env.put(("decide", obs, info))
        action = self.to_sim.get()
        if action is None:
            raise EpisodeAbortedError("episode aborted")
        return action


class EpisodeThread:
    """Runs an episode in a thread that stops at every decision until it is answered.

    Only one side runs at a time (the episode waits for an answer, the environment for
    the next question), so what the episode's callbacks write is safe to read between.
    The episode callable must not hold its environment: the thread would keep it alive,
    and an environment dropped without ``close()`` could never be released.
    """

    def __init__(self, name: str, timeout: float) -> None:
        self.name, self.timeout = name, timeout
        _channels[name] = self.channel = _Channel()
        self._thread: threading.Thread | None = None
        self._aborting = False
        self.last: EpisodeResult | None = None

    @property
    def running(self) -> bool:
        """An episode is under way (waiting for an answer)."""
        return self._thread is not None

    def start(self, episode: Callable[[], EpisodeResult]) -> tuple[str, Any, dict[str, Any]]:
        """Start ``episode`` (after abandoning any running one); wait for its first question."""
        self.abort()
        _channels[self.name] = self.channel  # again, after a close()
        channel = self.channel

        def run() -> None:
            try:
                channel.to_env.put(("done", episode(), {}))
            except BaseException as exc:  # reaches the environment's caller
                channel.to_env.put(("error", exc, {}))

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        return self.next()

    def answer(self, action: Any) -> tuple[str, Any, dict[str, Any]]:
        """Answer the pending question; wait for the next one or the end."""
        if self._thread is None:
            raise HivememError("step() after the episode ended: call reset()")
        self.channel.to_sim.put(action)
        return self.next()

    def next(self) -> tuple[str, Any, dict[str, Any]]:
        """``("decide", question, info)`` or ``("done", EpisodeResult | None, {})``."""
        try:
            kind, payload, info = self.channel.to_env.get(timeout=self.timeout)
        except queue.Empty:
            raise HivememError(f"episode made no decision in {self.timeout} s") from None
        if kind == "error":
            self._thread = None
            if self._aborting:  # the abort surfaces as the bus's error reply
                return "done", None, {}
            raise HivememError(f"the episode failed: {payload}") from payload
        if kind == "done":
            self._thread = None
            self.last = payload
        return kind, payload, info

    def abort(self) -> None:
        """Abandon a running episode."""
        if self._thread is threading.current_thread():
            # (a finalizer run by the collector on the episode's own thread): its next
            # question meets the abort; waiting here for it would wait forever
            self.channel.to_sim.put(None)
            self._thread = None
            return
        self._aborting = True
        try:
            while self._thread is not None:
                self.channel.to_sim.put(None)
                self.next()
        finally:
            self._aborting = False

    def close(self) -> None:
        """Abandon the episode and free the channel (a later ``start`` takes it again)."""
        self.abort()
        if _channels.get(self.name) is self.channel:
            del _channels[self.name]


class ControlledEviction:
    """An eviction policy whose every choice is made by an environment's ``step``."""

    name = "controlled"

    def __init__(self, channel: str) -> None:
        self.channel = _channels[channel]

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        """Ask the environment, one victim at a time."""
        left = list(range(len(candidates)))
        out = []
        for _ in range(n):
            ids = np.asarray([candidates[i].id for i in left], np.int64)
            action = self.channel.ask(features[left], {"ids": ids, "now": ctx.now})
            out.append(left.pop(action % len(left)))  # a padding position: see EvictionEnv
        return out


class ControlledWrite:
    """A write policy whose every ADD / UPDATE / DELETE / NOOP comes from ``step``."""

    name = "controlled"
    needs_neighbours = True

    def __init__(self, channel: str, key_field: str = "key") -> None:
        self.channel, self.key_field = _channels[channel], key_field

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        """Ask the environment."""
        row = write_features(proposal, [(h.score, h.item) for h in neighbours], now, self.key_field)
        action = self.channel.ask(row, {"neighbours": len(neighbours), "now": now})
        return op_decision(int(action), proposal, neighbours, self.key_field)


@dataclass
class _Tally:
    """The reward earned since the last decision (written by the episode's thread)."""

    pending: float = 0.0


@dataclass(frozen=True)
class _DecisionEpisode:
    """What an episode thread runs: one scenario seed with the controlled policy.

    Kept apart from the environment, which the thread must not hold (see
    :class:`EpisodeThread`).
    """

    scenario: Scenario
    tier: str
    controller: str
    policy_class: str
    channel: str
    memory_cost: float
    tally: _Tally

    def __call__(self, seed: int) -> EpisodeResult:
        params = {"channel": self.channel}
        s = with_controller(
            self.scenario, self.tier, self.controller, self.policy_class, params, seed
        )

        def tick(t: int, row: dict[str, Any], reward: float) -> None:
            held = float(row.get("items", {}).get(self.tier, 0))
            self.tally.pending += reward - self.memory_cost * held

        return run_episode(s, tier=self.tier, on_tick=tick)


class _DecisionEnv(gym.Env[Any, np.int64]):
    """An episode of a scenario, stopped at each decision of one tier's policy.

    Args:
        scenario: A scenario, or its name or file (default: the class's ``default_scenario``).
        tier: The tier whose policy the environment replaces (default: the first with a
            capacity).
        memory_cost: Reward subtracted per item the tier holds per tick.
        overrides: ``--set`` style overrides of a scenario given by name or file.
        timeout: Seconds to wait for the episode's next decision.

    Raises:
        ConfigError: the controller cannot act on the tier (an eviction controller on a
            tier with no capacity).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium declares it an instance field
    controller = ""
    policy_class = ""
    default_scenario = ""

    def __init__(
        self,
        scenario: str | Scenario | None = None,
        tier: str | None = None,
        memory_cost: float = 0.0,
        overrides: Sequence[str] = (),
        timeout: float = 600.0,
    ) -> None:
        scenario = self.default_scenario if scenario is None else scenario
        self.scenario = (
            scenario if isinstance(scenario, Scenario) else load_scenario(scenario, list(overrides))
        )
        self.tier = controller_tier(self.scenario, tier, self.controller)
        self.memory_cost = env_number("memory_cost", memory_cost)
        self.timeout = env_number("timeout", timeout, positive=True)
        self.episode = EpisodeThread(next_env_name(type(self).__name__), self.timeout)
        self._tally = _Tally()
        # an environment dropped without close(): its episode stops when it is collected
        weakref.finalize(self, self.episode.close)

    @property
    def last_episode(self) -> EpisodeResult | None:
        """The result of the last finished episode."""
        return self.episode.last

    # --- gymnasium ----------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode; its scenario seed comes from ``seed`` (training range)."""
        super().reset(seed=seed)
        episode = _DecisionEpisode(
            self.scenario,
            self.tier,
            self.controller,
            self.policy_class,
            self.episode.name,
            self.memory_cost,
            self._tally,
        )
        for _ in range(10):
            drawn = TRAIN_SEED_BASE + int(self.np_random.integers(0, 1_000_000))
            episode_seed = scenario_seed_of(options, drawn)
            self._tally.pending = 0.0
            kind, payload, info = self.episode.start(functools.partial(episode, episode_seed))
            if kind == "decide":
                return self._observe(payload, info), {"scenario_seed": episode_seed, **info}
        raise ConfigError(f"scenario {self.scenario.name!r} never asks the {self.tier} policy")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Give the decision; run on to the next one (or the end of the episode).

        Raises:
            InvalidInputError: ``action`` is not in the action space (the episode still
                waits for a valid one).
        """
        check_action(self.action_space, action)
        kind, payload, info = self.episode.answer(int(action))
        reward, self._tally.pending = self._tally.pending, 0.0
        if kind == "decide":
            return self._observe(payload, info), reward, False, False, info
        summary = self.last_episode.result.summary if self.last_episode else {}
        return self._empty(), reward, True, False, {"summary": summary}

    def close(self) -> None:
        """Abandon a running episode and free the channel (``reset`` starts anew)."""
        self.episode.close()

    def _observe(self, payload: Any, info: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _empty(self) -> Any:
        raise NotImplementedError


def env_number(name: str, value: Any, positive: bool = False) -> float:
    """``value`` (an environment's argument) as a float: finite, and > 0 if ``positive``.

    A bool is no number here (``memory_cost=True`` was a cost of 1), nor is NaN (every
    return would be NaN) or a str.

    The store's own check of a number (:func:`~hivemem.memory_bus.item.check_number`)
    decides; its refusal is a configuration error here, said as one.

    Raises:
        ConfigError: naming the argument and what it was given.
    """
    bound = " and > 0" if positive else ""
    try:
        number = check_number(value, name)
    except WrongTypeError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    except NonFiniteError:
        raise ConfigError(f"{name} must be finite{bound}, got {value!r}") from None
    if positive and number <= 0:
        raise ConfigError(f"{name} must be finite{bound}, got {value!r}")
    return number


def scenario_seed_of(options: dict[str, Any] | None, default: int) -> int:
    """The episode's scenario seed: ``options["scenario_seed"]`` if given, else ``default``.

    An int (numpy's too), never a bool or a float: ``int(3.7)`` would run seed 3 unsaid.

    Raises:
        ConfigError: the option is not an int.
    """
    if not options or "scenario_seed" not in options:
        return default
    seed = options["scenario_seed"]
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"options['scenario_seed'] must be an int, got {seed!r}")
    return int(seed)


def check_action(space: spaces.Space[Any], action: Any, agent: str | None = None) -> None:
    """Raise unless ``action`` is in ``space`` (numpy integers are; floats, strings,
    bools and out-of-range values are not: taking them modulo or truncated would hide a
    bug, and ``True`` is an int to Python and to ``Discrete.contains``).

    Raises:
        InvalidInputError: naming the action and the space.
    """
    field = "action" if agent is None else f"action of {agent}"
    if isinstance(action, bool | np.bool_) or getattr(action, "dtype", None) == np.bool_:
        raise InvalidInputError(
            field, f"{action!r} is a bool, not an action of the action space {space}"
        )
    if not space.contains(action):
        raise InvalidInputError(field, f"{action!r} is not in the action space {space}")


class EvictionEnv(_DecisionEnv):
    """Choose the victim among a full namespace's candidates (``hivemem/Eviction-v0``).

    Observation: ``features`` (capacity × NUM_FEATURES, ``candidate_features`` rows, zero
    padding) and ``mask`` (1 for a real candidate). Action: a candidate's position, in
    ``Discrete(capacity)``; a padding position (a namespace with fewer candidates than
    its capacity) is taken modulo the number of candidates. ``info["ids"]`` holds the
    candidates' item ids.
    """

    controller = "eviction"
    policy_class = "hivemem.platform.rl.envs:ControlledEviction"
    default_scenario = "capacity_stream"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_candidates = int(getattr(self.scenario.memory, self.tier).capacity)
        self.observation_space = spaces.Dict(
            {
                "features": spaces.Box(
                    -BOUND, BOUND, (self.max_candidates, NUM_FEATURES), np.float32
                ),
                "mask": spaces.MultiBinary(self.max_candidates),
            }
        )
        self.action_space = spaces.Discrete(self.max_candidates)

    def _observe(self, payload: Any, info: dict[str, Any]) -> Any:
        n = min(len(payload), self.max_candidates)
        obs = self._empty()
        obs["features"][:n] = payload[:n]
        obs["mask"][:n] = 1
        return obs

    def _empty(self) -> Any:
        return {
            "features": np.zeros((self.max_candidates, NUM_FEATURES), np.float32),
            "mask": np.zeros(self.max_candidates, np.int8),
        }


class WritePolicyEnv(_DecisionEnv):
    """ADD / UPDATE / DELETE / NOOP for each proposed write (``hivemem/WritePolicy-v0``).

    Observation: the ``write_features`` row of the proposal and its nearest neighbours.
    Action: an index into ``WRITE_OPS``, applied by ``learned.op_decision`` (the rule a
    served ``learned:PATH`` policy follows too): UPDATE/DELETE act on the neighbour with
    the proposal's key (or the nearest one) and become ADD when there is no neighbour.
    """

    controller = "write"
    policy_class = "hivemem.platform.rl.envs:ControlledWrite"
    default_scenario = "evolving_facts"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observation_space = spaces.Box(-BOUND, BOUND, (len(WRITE_FEATURE_NAMES),), np.float32)
        self.action_space = spaces.Discrete(len(WRITE_OPS))

    def _observe(self, payload: Any, info: dict[str, Any]) -> Any:
        return np.asarray(payload, np.float32)

    def _empty(self) -> Any:
        return np.zeros(len(WRITE_FEATURE_NAMES), np.float32)


def register() -> None:
    """Register the environments with Gymnasium (idempotent)."""
    for env_id, entry in (
        ("hivemem/Eviction-v0", "hivemem.platform.rl.envs:EvictionEnv"),
        ("hivemem/WritePolicy-v0", "hivemem.platform.rl.envs:WritePolicyEnv"),
    ):
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry)


register()
