"""The RL environments: Gymnasium/PettingZoo API checks, and the live bus deciding as the env."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("env_id", ["hivemem/Eviction-v0", "hivemem/WritePolicy-v0"])
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


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
