"""The RL environments: Gymnasium/PettingZoo API checks, and the live bus deciding as the env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hivemem.memory_bus.policies.learned import Scorer, eviction_choice
from hivemem.platform.rl import envs  # registers the environments
from hivemem.platform.rl.multi import SharingEnv
from hivemem.platform.rl.sim import run_episode, with_policy
from hivemem.platform.runner import run_once
from hivemem.platform.scenario import load_scenario

SMALL_STREAM = ["run.ticks=25", "agents.0.count=4"]

CATALOGUE: dict[str, dict[str, Any]] = {
    "hivemem/Eviction-v0": {"overrides": SMALL_STREAM},
    "hivemem/WritePolicy-v0": {"overrides": ["run.ticks=10"]},
}
"""Every environment hivemem registers, with the settings of a short episode."""


def test_the_catalogue_holds_every_registered_env() -> None:
    """An environment registered without a catalogue entry would skip the checks below."""
    assert sorted(i for i in gym.registry if i.startswith("hivemem/")) == sorted(CATALOGUE)


@pytest.mark.parametrize("env_id", sorted(CATALOGUE))
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def _episode(env: gym.Env[Any, Any], seed: int) -> list[tuple[Any, ...]]:
    """A whole episode from ``reset(seed=seed)`` with actions drawn from ``seed`` (an
    eviction among the real candidates): each step's observation, reward and flags."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    steps: list[tuple[Any, ...]] = []
    done = False
    while not done:
        assert env.observation_space.contains(obs) and isinstance(info, dict)
        space: Any = env.action_space
        choices = int(obs["mask"].sum()) if isinstance(obs, dict) else space.n
        obs, reward, done, truncated, info = env.step(int(rng.integers(choices)))
        arrays = obs.values() if isinstance(obs, dict) else [obs]
        steps.append((*(a.tobytes() for a in arrays), reward, done, truncated))
        assert not truncated  # the scenario's last tick ends the episode: terminated
    assert env.observation_space.contains(obs) and isinstance(info, dict)
    return steps


@pytest.mark.parametrize("env_id", sorted(CATALOGUE))
def test_a_seed_replays_its_whole_episode(env_id: str) -> None:
    """Same seed, same observations and rewards to the end; another seed, another episode.
    Made through ``gym.make``, so the passive checker sees every step too."""
    env = gym.make(env_id, **CATALOGUE[env_id])
    first, again, other = (_episode(env, seed) for seed in (7, 7, 8))
    env.close()
    assert len(first) > 5 and first == again and first != other


def test_parallel_api() -> None:
    from pettingzoo.test import parallel_api_test

    env = SharingEnv("relay_qa", overrides=("run.ticks=8",))
    parallel_api_test(env, num_cycles=20)
    env.close()


def test_sharing_matters() -> None:
    """Keeping everything private starves the analysts; sharing feeds them."""
    env = SharingEnv("relay_qa", overrides=("run.ticks=10",))
    totals = {}
    for choice in (0, 1):
        env.reset(seed=0, options={"scenario_seed": 0})
        total = 0.0
        while env.agents:
            _, rewards, _, _, infos = env.step({a: choice for a in env.agents})
            total += sum(rewards.values())
        totals[choice] = (total, next(iter(infos.values()))["summary"]["score"])
    assert totals[0][1] == 0.0 and totals[1][1] > 0.5
    assert totals[1][0] > totals[0][0]
    env.close()


def test_rewards_add_up_to_the_run() -> None:
    """The episode return is the scenario's count of correct answers (no memory cost)."""
    env = gym.make("hivemem/Eviction-v0", overrides=SMALL_STREAM).unwrapped
    env.reset(seed=1)
    total, done = 0.0, False
    while not done:
        _, reward, done, _, _ = env.step(0)
        total += reward
    rows = env.last_episode.result.rows
    assert total == sum(r["correct"] for r in rows) > 0
    env.close()


def test_live_bus_decides_as_the_env(tmp_path: Path, ray_session: None) -> None:
    """One scorer, two paths: choosing from the env's observations gives the same run as
    `learned:PATH` served by the bus (in-process hosts and Ray hosts alike)."""
    scorer = Scorer.init("eviction", 4, np.random.default_rng(11), scale=1.0)
    path = scorer.save(tmp_path / "policy.json")
    env = gym.make("hivemem/Eviction-v0", overrides=SMALL_STREAM).unwrapped
    obs, info = env.reset(options={"scenario_seed": 5})
    done, decisions = False, 0
    while not done:
        n = int(obs["mask"].sum())
        action = eviction_choice(scorer, obs["features"][:n].astype(np.float64), info["ids"])
        obs, _, done, _, info = env.step(action)
        decisions += 1
    env_rows = env.last_episode.result.rows
    env.close()
    assert decisions > 20

    s = with_policy(
        load_scenario("capacity_stream", SMALL_STREAM),
        "private",
        eviction=f"learned:{path}",
        seed=5,
    )
    local = run_episode(s, tier="private").result.rows
    ray_rows = run_once(s).rows
    keys = ("correct", "asked", "score", "items", "evicted")
    for rows in (local, ray_rows):
        assert [{k: r[k] for k in keys} for r in rows] == [
            {k: r[k] for k in keys} for r in env_rows
        ]
    # and the scorer matters: LRU on the same seed gives another run
    lru = run_episode(with_policy(s, "private", eviction="lru"), tier="private").result.rows
    assert [r["correct"] for r in lru] != [r["correct"] for r in env_rows]


def test_env_registered_with_kwargs() -> None:
    assert isinstance(
        gym.make("hivemem/WritePolicy-v0", memory_cost=0.01).unwrapped, envs.WritePolicyEnv
    )


@pytest.mark.parametrize("freeze", [True, False])
def test_an_episode_freezes_old_objects_as_its_scenario_says(freeze: bool) -> None:
    from hivemem.memory_bus.collector import OLD_OBJECT_FREEZER

    assert OLD_OBJECT_FREEZER._holders == 0, "a bus server of another test is still running"
    held: list[int] = []
    scenario = load_scenario(
        "capacity_stream",
        ["run.ticks=3", "agents.0.count=2", f"run.freeze_old_objects={str(freeze).lower()}"],
    )
    run_episode(
        scenario, tier="private", on_tick=lambda *_: held.append(OLD_OBJECT_FREEZER._holders)
    )
    assert held == [2 * freeze] * 3 and OLD_OBJECT_FREEZER._holders == 0  # the run, its bus
