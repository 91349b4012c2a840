"""The environments' edges: a dropped environment, reset after close, actions outside the
space, the write rule shared with the served policy, and the tier an eviction controller
needs. Every episode is a real run of a tiny scenario on the embedded bus."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hivemem.memory_bus.errors import ConfigError, InvalidInputError
from hivemem.memory_bus.policies.learned import WRITE_OPS, Scorer
from hivemem.platform.rl import envs
from hivemem.platform.rl.multi import SharingEnv
from hivemem.platform.rl.sim import run_episode, with_policy
from hivemem.platform.scenario import load_scenario

SMALL_STREAM = ["run.ticks=20", "agents.0.count=2"]
FACTS = ["run.ticks=10"]


def _threads_back_to(before: set[int], timeout: float = 10.0) -> set[str]:
    """Names of the threads started since ``before`` still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        extra = {t.name for t in threading.enumerate() if t.ident not in before}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


def test_a_dropped_env_releases_its_episode() -> None:
    """Dropped mid-episode without close(): its thread, embedded bus and channel go."""
    before = {t.ident for t in threading.enumerate()}
    env = gym.make("hivemem/Eviction-v0", overrides=SMALL_STREAM)
    env.reset(seed=0)
    env.step(0)
    name = env.unwrapped.episode.name  # type: ignore[attr-defined]
    assert name in {t.name for t in threading.enumerate()}
    ref = weakref.ref(env.unwrapped)
    del env
    gc.collect()
    assert ref() is None
    assert _threads_back_to(before) == set()
    assert name not in envs._channels


def test_a_dropped_sharing_env_releases_its_episode() -> None:
    before = {t.ident for t in threading.enumerate()}
    env = SharingEnv("relay_qa", overrides=("run.ticks=6",))
    env.reset(seed=0)
    env.step({a: 1 for a in env.agents})
    ref = weakref.ref(env)
    del env
    gc.collect()
    assert ref() is None
    assert _threads_back_to(before) == set()


def test_reset_after_close_starts_a_new_episode() -> None:
    env = envs.EvictionEnv(overrides=SMALL_STREAM)
    env.reset(seed=0)
    env.close()
    obs, info = env.reset(seed=1)
    assert obs["mask"].sum() == len(info["ids"]) > 0
    _, _, done, _, _ = env.step(0)
    assert not done
    env.close()
    env.close()  # twice is fine


def _refused(step: Any, action: Any) -> None:
    with pytest.raises(InvalidInputError) as err:
        step(action)
    assert repr(action) in str(err.value) and "Discrete(" in str(err.value)


def test_eviction_refuses_actions_outside_its_space() -> None:
    env = envs.EvictionEnv(overrides=SMALL_STREAM)
    env.reset(seed=0)
    assert env.action_space == gym.spaces.Discrete(12)
    for bad in (12, 100, -1, 2.7, "3", np.array([3])):
        _refused(env.step, bad)
    # the episode still waits for a valid action; numpy integers are valid
    for good in (np.int64(3), np.array(2), 0):
        _, _, done, _, _ = env.step(good)
        assert not done
    env.close()


def test_write_env_refuses_actions_outside_its_space() -> None:
    env = envs.WritePolicyEnv(overrides=FACTS)
    env.reset(seed=0)
    for bad in (4, -1, -4, 3.9):
        _refused(env.step, bad)
    _, _, done, _, _ = env.step(np.int32(3))
    assert not done
    env.close()


def test_sharing_env_refuses_actions_outside_its_space() -> None:
    env = SharingEnv("relay_qa", overrides=("run.ticks=6",))
    env.reset(seed=0)
    agent = env.agents[0]
    for bad in (2, -1, 7):
        with pytest.raises(InvalidInputError) as err:
            env.step({**{a: 1 for a in env.agents}, agent: bad})
        assert agent in str(err.value) and "Discrete(2)" in str(err.value)
    env.step({a: np.int64(1) for a in env.agents})
    env.close()


def test_sharing_state_is_fill_and_progress() -> None:
    env = SharingEnv("relay_qa", overrides=("run.ticks=5",))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.state(), [0.0, 0.0])
    obs, *_ = env.step({a: 1 for a in env.agents})
    some = next(iter(obs.values()))
    np.testing.assert_allclose(env.state(), some[2:4])  # fill, progress
    assert env.state()[1] == pytest.approx(1 / 5) and 0 < env.state()[0] <= 1
    env.close()


def test_write_env_takes_its_scenario_by_position() -> None:
    env = envs.WritePolicyEnv("relay_qa", overrides=["run.ticks=5"])
    assert env.scenario.name == "relay_qa" and env.tier == "shared"
    assert envs.WritePolicyEnv(overrides=["run.ticks=5"]).scenario.name == "evolving_facts"


def test_eviction_needs_a_tier_with_a_capacity() -> None:
    with pytest.raises(ConfigError, match="shared tier of 'capacity_stream' has no capacity"):
        envs.EvictionEnv(tier="shared", overrides=SMALL_STREAM)


def _write_env_and_served(scorer: Scorer, seed: int, tmp_path: Path) -> tuple[Any, ...]:
    """An evolving_facts episode decided by ``scorer`` from the write environment's
    observations, and the same seed with ``learned:PATH`` served by the bus: the rows of
    each (ops, items, score), the actions taken and the proposals without a neighbour."""
    path = scorer.save(tmp_path / "w.json")
    env = envs.WritePolicyEnv(overrides=FACTS)
    obs, info = env.reset(options={"scenario_seed": seed})
    actions, alone, done = [], 0, False
    while not done:
        alone += info["neighbours"] == 0
        actions.append(int(np.argmax(scorer.scores(obs[None, :].astype(np.float64))[0])))
        obs, _, done, _, info = env.step(actions[-1])
    env_rows = env.last_episode.result.rows  # type: ignore[union-attr]
    env.close()

    s = with_policy(load_scenario("evolving_facts", FACTS), "shared", write=f"learned:{path}")
    served = run_episode(with_policy(s, "shared", seed=seed), tier="shared").result.rows
    keys = ("ops", "items", "score")
    rows = [[{k: r[k] for k in keys} for r in run] for run in (env_rows, served)]
    return rows[0], rows[1], actions, alone


def test_write_env_and_served_policy_apply_one_rule(tmp_path: Path) -> None:
    """A scorer that ranks UPDATE > NOOP > ADD on every row: on proposals with no
    neighbour the environment and `learned:PATH` on the bus make the same decision."""
    scorer = Scorer("write", 0, np.zeros(Scorer.size("write", 0)))
    scorer.blocks()[1][:] = [0.0, 2.0, -1.0, 1.0]  # ADD, UPDATE, DELETE, NOOP (bias)
    env_rows, served, actions, alone = _write_env_and_served(scorer, 5, tmp_path)
    assert {WRITE_OPS[a].value for a in actions} == {"UPDATE"} and alone > 0
    assert served == env_rows
    assert sum(r["items"]["shared"] for r in served) > 0  # no-neighbour UPDATEs were ADDs


def test_write_env_observes_the_row_the_served_policy_scores(tmp_path: Path) -> None:
    """A scorer reading every feature: its choices from the environment's observations
    make the same run as `learned:PATH` on the bus, so the two compute one row."""
    scorer = Scorer.init("write", 0, np.random.default_rng(31), scale=1.0)
    env_rows, served, actions, _ = _write_env_and_served(scorer, 1, tmp_path)
    assert len(set(actions)) >= 3  # the features, not the bias alone, decide
    assert served == env_rows


def test_keeping_private_moves_only_shared_tier_proposals() -> None:
    """team_insights' solvers write graph nodes with levels: keeping private routes none
    of them (a private namespace has no levels; the episode failed on its first KEEP)."""
    env = SharingEnv("team_insights", overrides=("run.ticks=6", "agents.0.count=2"))
    graph_items = {}
    for choice in (0, 1):
        env.reset(seed=0, options={"scenario_seed": 0})
        total = 0.0
        while env.agents:
            obs, rewards, _, _, _ = env.step({a: choice for a in env.agents})
            total += sum(rewards.values())
            assert all(o[0] == 0 for o in obs.values())  # no shared-tier proposal seen
        rows = env.episode.last.result.rows  # type: ignore[union-attr]
        graph_items[choice] = ([r["items"]["graph"] for r in rows], total)
    env.close()
    assert graph_items[0] == graph_items[1] and graph_items[0][0][-1] > 0


BOOLS = [True, False, np.True_, np.array(False)]


@pytest.mark.parametrize("env_id", ["hivemem/Eviction-v0", "hivemem/WritePolicy-v0", "sharing"])
def test_no_env_takes_a_bool_for_an_action(env_id: str) -> None:
    """``True`` was action 1 and ``False`` action 0 (a bool is an int to Python, and to
    ``Discrete.contains``); numpy's were refused as any value outside the space. Each
    is refused as a bool now, and the episode still waits for a valid action."""
    if env_id == "sharing":
        env: Any = SharingEnv("relay_qa", overrides=("run.ticks=6",))
        env.reset(seed=0)
        agent = env.agents[0]

        def step(action: Any) -> Any:
            return env.step({**{a: 1 for a in env.agents}, agent: action})

        field = f"action of {agent}"
    else:
        env = gym.make(env_id, overrides=SMALL_STREAM if "Eviction" in env_id else FACTS)
        env.reset(seed=0)
        step, field = env.step, "action"
    for bad in BOOLS:
        with pytest.raises(InvalidInputError) as err:
            step(bad)
        assert str(err.value) == (
            f"invalid {field}: {bad!r} is a bool, not an action of the action space "
            f"{env.unwrapped.action_space(agent) if env_id == 'sharing' else env.action_space}"
        )
        assert err.value.field == field
    step(0)
    env.close()


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("memory_cost", True, "memory_cost must be a number, got True"),
        ("memory_cost", float("nan"), "memory_cost must be finite, got nan"),
        ("memory_cost", "0.1", "memory_cost must be a number, got '0.1'"),
        ("timeout", 0, "timeout must be finite and > 0, got 0"),
        ("timeout", np.True_, "timeout must be a number, got {!r}"),
    ],
)
def test_env_arguments_refuse_what_is_no_number(argument: str, value: Any, message: str) -> None:
    """``memory_cost=True`` was a cost of 1 per item and tick, ``"0.1"`` a cost of 0.1 and
    NaN made every reward NaN; a timeout of 0 failed the first decision's wait."""
    message = message.format(value)
    with pytest.raises(ConfigError) as err:
        gym.make("hivemem/WritePolicy-v0", overrides=FACTS, **{argument: value})
    assert str(err.value) == message
    with pytest.raises(ConfigError) as err:
        SharingEnv("relay_qa", overrides=("run.ticks=6",), **{
            ("share_cost" if argument == "memory_cost" else argument): value
        })  # fmt: skip
    assert str(err.value) == message.replace("memory_cost", "share_cost")


@pytest.mark.parametrize("seed", [True, 3.7, "5", np.bool_(False)])
def test_reset_refuses_a_scenario_seed_that_is_no_int(seed: Any) -> None:
    """``options={"scenario_seed": True}`` ran seed 1 and ``3.7`` seed 3, unsaid; an int
    (numpy's too) is the episode's seed as before."""
    env = gym.make("hivemem/WritePolicy-v0", overrides=FACTS)
    sharing = SharingEnv("relay_qa", overrides=("run.ticks=6",))
    try:
        for reset in (env.reset, sharing.reset):
            with pytest.raises(ConfigError) as err:
                reset(seed=0, options={"scenario_seed": seed})
            assert str(err.value) == f"options['scenario_seed'] must be an int, got {seed!r}"
        _, info = env.reset(seed=0, options={"scenario_seed": np.int64(41)})
        assert info["scenario_seed"] == 41
        _, infos = sharing.reset(seed=0, options={"scenario_seed": 42})
        assert {i["scenario_seed"] for i in infos.values()} == {42}
    finally:
        env.close()
        sharing.close()
