"""The learners' numerical parts, without Ray or a bus."""

from __future__ import annotations

import numpy as np
from hivemem.platform.rl.learner import TrainConfig, adam, centered_ranks, train_seeds
from hivemem.platform.rl.pg import Trajectory, discounted, pg_gradient


def test_centered_ranks_shape_fitness_and_share_ties() -> None:
    shaped = centered_ranks(np.array([3.0, -10.0, 3.0, 100.0]))
    assert shaped.min() == -0.5 and shaped.max() == 0.5
    assert shaped[0] == shaped[2]  # ties
    assert shaped[1] < shaped[0] < shaped[3]


def test_adam_ascends() -> None:
    x, m, v = np.array([0.0]), np.zeros(1), np.zeros(1)
    for t in range(1, 200):
        step, m, v = adam(-2 * (x - 3.0), m, v, t, 0.1)  # gradient of -(x-3)^2
        x = x + step
    assert abs(x[0] - 3.0) < 0.1


def test_training_seeds_are_disjoint_from_evaluation_seeds() -> None:
    config = TrainConfig(episodes=50)
    seeds = {s for it in range(20) for s in train_seeds(config, it)}
    assert min(seeds) >= 100_000  # evaluation uses the scenario's seeds, 0 up
    assert train_seeds(config, 3) == train_seeds(TrainConfig(episodes=50), 3)


def test_discounted_returns() -> None:
    np.testing.assert_allclose(discounted(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])


def test_policy_gradient_points_to_what_paid() -> None:
    """Decisions whose feature 0 was high were followed by reward: the gradient says more."""
    rng = np.random.default_rng(0)
    trajs = []
    for _ in range(8):
        grads = rng.normal(size=(50, 3))
        rewards = np.where(grads[:, 0] > 0, 1.0, 0.0)
        trajs.append(Trajectory(grads, rewards))
    g = pg_gradient(trajs, gamma=0.0)
    assert g[0] > 0.3 and abs(g[1]) < 0.15 and abs(g[2]) < 0.15


def test_relative_checkpoint_paths_become_absolute(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The bus may run elsewhere (a Ray actor): it gets the absolute path."""
    from hivemem.memory_bus.policies.learned import Scorer
    from hivemem.platform.scenario import load_scenario

    Scorer.init("eviction", 0, np.random.default_rng(0)).save(tmp_path / "p.json")
    monkeypatch.chdir(tmp_path)
    s = load_scenario("capacity_stream", ["memory.private.eviction=learned:p.json"])
    assert s.memory.private.eviction == f"learned:{tmp_path / 'p.json'}"
    assert s.memory.shared.eviction == load_scenario("capacity_stream").memory.shared.eviction
