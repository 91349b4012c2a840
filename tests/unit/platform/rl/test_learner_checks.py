"""What the learners refuse, keep and compute, without Ray or a bus: a resume of other
settings, an eviction tier with no capacity, the policy gradient of one episode, a
checkpoint with non-finite numbers, and the scenario a checkpoint keeps for ``eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.policies.learned import Scorer
from hivemem.platform.rl.evaluate import check_policies, evaluate_policies, trained_scenario
from hivemem.platform.rl.learner import (
    TrainConfig,
    load_state,
    new_state,
    save_state,
    scenario_digest,
    train,
    training_meta,
)
from hivemem.platform.rl.pg import PGConfig, Trajectory, pg_gradient
from hivemem.platform.scenario import load_scenario

TINY = ["run.ticks=20", "agents.0.count=2"]


def _saved(out: Path, config: TrainConfig, scenario: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = new_state(config)
    state.iteration = 1
    save_state(out / "train_state.json", config, state, scenario_digest(scenario))  # type: ignore[arg-type]


def test_resume_refuses_another_memory_cost_or_scenario(tmp_path: Path) -> None:
    s = load_scenario("capacity_stream", TINY)
    base = dict(iterations=3, pairs=2, episodes=1, workers=0, seed=3, tier="private")
    _saved(tmp_path, TrainConfig(**base), s)
    with pytest.raises(ConfigError) as err:
        train(s, TrainConfig(**{**base, "memory_cost": 5.0}), tmp_path, resume=True)
    assert "memory_cost (saved 0.0, now 5.0)" in str(err.value)
    assert "scenario" not in str(err.value).split("settings:")[1]
    other = load_scenario("capacity_stream", [*TINY, "task.params.keys=10"])
    with pytest.raises(ConfigError, match=r"settings: the scenario \(its resolved settings"):
        train(other, TrainConfig(**base), tmp_path, resume=True)


def test_scenario_digest_ignores_what_cannot_change_an_episode() -> None:
    s = load_scenario("capacity_stream", TINY)
    same = load_scenario("capacity_stream", [*TINY, "outputs.dir=elsewhere", "description=x"])
    assert scenario_digest(s) == scenario_digest(same)
    assert scenario_digest(s) != scenario_digest(load_scenario("capacity_stream", ["run.ticks=21"]))


def test_a_state_saved_without_a_scenario_digest_still_resumes(tmp_path: Path) -> None:
    config = TrainConfig(tier="private")
    path = tmp_path / "train_state.json"
    save_state(path, config, new_state(config))
    doc = json.loads(path.read_text())
    del doc["scenario_sha256"]  # as written before digests were kept
    path.write_text(json.dumps(doc))
    assert load_state(path, config, "0" * 64).iteration == 0


def test_eviction_training_refuses_a_tier_without_capacity(tmp_path: Path) -> None:
    s = load_scenario("capacity_stream", TINY)
    config = TrainConfig(tier="shared", iterations=1, pairs=1, episodes=1, workers=0)
    with pytest.raises(ConfigError, match="shared tier of 'capacity_stream' has no capacity"):
        train(s, config, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_eviction_training_on_a_token_budget_says_why_it_needs_a_capacity(tmp_path: Path) -> None:
    """A token budget evicts, so "nothing is ever evicted there" was false: what it lacks
    is a count of items to size the controller's observation."""
    budget = ["memory.shared.mode=token_budget", "memory.shared.token_budget=40"]
    s = load_scenario("capacity_stream", [*TINY, *budget])
    config = TrainConfig(tier="shared", iterations=1, pairs=1, episodes=1, workers=0)
    with pytest.raises(ConfigError, match="one row per item, up to the capacity") as info:
        train(s, config, tmp_path / "out")
    assert "nothing is ever evicted" not in info.value.message


def test_train_leaves_the_callers_config_as_it_was(tmp_path: Path) -> None:
    """It wrote the tier it resolved into the caller's config."""
    s = load_scenario("capacity_stream", TINY)
    config = TrainConfig(iterations=1, pairs=1, episodes=1, workers=0)
    train(s, config, tmp_path / "out")
    assert config.tier is None
    assert json.loads((tmp_path / "out" / "policy.json").read_text())["meta"]["tier"] == "private"


def test_train_names_an_output_folder_it_cannot_make(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    s = load_scenario("capacity_stream", TINY)
    with pytest.raises(ConfigError, match="cannot create the output folder"):
        train(s, TrainConfig(iterations=1, workers=0), tmp_path / "file" / "out")


def test_one_episode_gives_a_gradient() -> None:
    """The baseline leaves the episode out: its own return would cancel every advantage."""
    rng = np.random.default_rng(0)
    one = Trajectory(rng.normal(size=(30, 13)), rng.normal(size=30))
    assert np.abs(pg_gradient([one], 0.99)).max() > 0.05
    # two episodes: each one's baseline is the other's return
    a = Trajectory(np.array([[1.0], [0.0]]), np.array([1.0, 0.0]))
    b = Trajectory(np.array([[-1.0], [0.0]]), np.array([0.0, 0.0]))
    assert pg_gradient([a, b], 0.0)[0] > 0.5  # towards the choice that paid


@pytest.mark.parametrize(
    ("field", "value"),
    [("iterations", 0), ("episodes", 0), ("workers", -1), ("lr", 0.0), ("gamma", 1.5)],
)
def test_pg_config_refuses_what_cannot_work(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        PGConfig(**{field: value}).check()  # type: ignore[arg-type]


def test_a_checkpoint_with_non_finite_numbers_is_a_config_error(tmp_path: Path) -> None:
    doc = Scorer("eviction", 0, np.zeros(Scorer.size("eviction", 0))).to_json()
    for bad in (float("nan"), float("inf")):
        doc["params"][0] = bad
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(doc))  # NaN / Infinity, which json.loads reads back
        with pytest.raises(ConfigError, match="not finite"):
            Scorer.load(path)


def test_a_checkpoint_keeps_the_scenario_it_was_trained_on(tmp_path: Path) -> None:
    """A scenario from a file, with --set: eval finds it in the checkpoint, file gone."""
    text = (Path(__file__).parents[4] / "scenarios" / "capacity_stream.yaml").read_text()
    path = tmp_path / "mine.yaml"
    path.write_text(text.replace("name: capacity_stream", "name: mine"))
    s = load_scenario(str(path), TINY)
    meta = training_meta(s, "private", "es", iterations=1)
    scorer = Scorer("eviction", 0, np.zeros(Scorer.size("eviction", 0)), meta=meta)
    saved = scorer.save(tmp_path / "policy.json")
    path.unlink()
    back = trained_scenario(Scorer.load(saved).meta, str(saved), [])
    assert back == s and back.run.ticks == 20
    assert trained_scenario(meta, "x", ["run.ticks=7"]).run.ticks == 7  # eval --set on top
    # a checkpoint from before: its scenario by name
    old = trained_scenario({"scenario": "capacity_stream"}, "old.json", ["run.ticks=9"])
    assert old.name == "capacity_stream" and old.run.ticks == 9


def test_eval_checks_its_settings_before_any_episode() -> None:
    s = load_scenario("capacity_stream", TINY)
    with pytest.raises(ConfigError, match="seeds must be >= 1"):
        evaluate_policies(s, "eviction", "private", ["lru"], 0)
    with pytest.raises(ConfigError, match="unknown eviction policy 'nosuchpolicy'"):
        check_policies(s, "eviction", "private", ["lru", "nosuchpolicy"])
    with pytest.raises(ConfigError, match="no capacity"):
        evaluate_policies(s, "eviction", "shared", ["lru"], 1)
    with pytest.raises(ConfigError, match="policy 'lru' named more than once"):
        evaluate_policies(s, "eviction", "private", ["lru", "fifo", "lru"], 1)
