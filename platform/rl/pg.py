"""A policy-gradient learner for eviction (REINFORCE with a baseline), to set beside ES.

The same linear scorer as ES, made stochastic for training: the victim is drawn from
``softmax(scores / temperature)`` over the candidates; served, the policy takes the
argmax. Each decision's gradient of ``log p(victim)`` is ``x_victim - E_p[x]`` (the bias
cancels in a softmax). Returns are discounted sums of the rewards that follow a decision,
the baseline is the batch mean of the returns at the same decision index, and advantages
are normalised per batch. Episodes come from ``hivemem/Eviction-v0`` (the real run,
stopped at each decision), in Ray workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hivemem.memory_bus.features import eviction_inputs
from hivemem.memory_bus.policies.learned import Scorer
from hivemem.platform.rl.learner import TRAIN_SEED_BASE, adam
from hivemem.platform.scenario import Scenario, dump_resolved, parse_scenario


@dataclass
class PGConfig:
    """Settings of the policy-gradient learner (eviction, linear scorer)."""

    iterations: int = 20
    episodes: int = 4
    lr: float = 0.05
    gamma: float = 0.99
    temperature: float = 1.0
    seed: int = 0
    workers: int = 2
    tier: str | None = None


@dataclass
class Trajectory:
    """One episode: per decision the score gradient of log p(action), and the rewards."""

    grads: np.ndarray
    rewards: np.ndarray
    ret: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class PGWorker:
    """Runs Eviction-v0 episodes with a stochastic linear scorer."""

    def __init__(self, scenario_yaml: str, tier: str | None) -> None:
        from hivemem.platform.rl.envs import EvictionEnv

        self.env = EvictionEnv(parse_scenario(scenario_yaml, "<training scenario>"), tier)

    def collect(self, params: list[float], seed: int, temperature: float) -> Trajectory:
        """One episode on scenario seed ``seed``."""
        scorer = Scorer("eviction", 0, np.asarray(params))
        w = scorer.blocks()[0][:, 0]
        rng = np.random.default_rng(seed)
        obs, _ = self.env.reset(options={"scenario_seed": seed})
        grads, rewards, done = [], [], False
        while not done:
            n = int(obs["mask"].sum())
            x = eviction_inputs(obs["features"][:n].astype(np.float64))
            z = x @ w / temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            a = int(rng.choice(n, p=p))
            grads.append((x[a] - p @ x) / temperature)
            obs, reward, done, _, _ = self.env.step(a)
            rewards.append(reward)
        # the reward after the last decision belongs to it
        r = np.asarray(rewards, np.float64)
        return Trajectory(np.asarray(grads), r, float(r.sum()))


def discounted(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Return-to-go of every step."""
    out = np.empty_like(rewards)
    acc = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return out


def pg_gradient(trajs: list[Trajectory], gamma: float) -> np.ndarray:
    """REINFORCE gradient estimate with a per-index mean baseline and normalised advantages."""
    returns = [discounted(t.rewards, gamma) for t in trajs]
    longest = max(len(g) for g in returns)
    padded = np.full((len(trajs), longest), np.nan)
    for i, g in enumerate(returns):
        padded[i, : len(g)] = g
    baseline = np.nanmean(padded, axis=0)
    adv = np.concatenate([g - baseline[: len(g)] for g in returns])
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    grads = np.concatenate([t.grads for t in trajs])
    return np.asarray(adv @ grads / len(adv))


def train_pg(
    scenario: Scenario, config: PGConfig, on_iteration: Any = None
) -> tuple[Scorer, list[dict[str, float]]]:
    """Train a linear eviction scorer by REINFORCE; returns it and the per-iteration record."""
    import ray

    text = dump_resolved(scenario)
    cls = ray.remote(num_cpus=1)(PGWorker)
    workers: list[Any] = [cls.remote(text, config.tier) for _ in range(max(config.workers, 1))]
    n = Scorer.size("eviction", 0)
    params, m, v = np.zeros(n), np.zeros(n), np.zeros(n)
    history: list[dict[str, float]] = []
    try:
        for it in range(config.iterations):
            rng = np.random.default_rng([config.seed, it, 2])
            seeds = [TRAIN_SEED_BASE + int(s) for s in rng.integers(0, 1_000_000, config.episodes)]
            refs = [
                workers[i % len(workers)].collect.remote(list(params), s, config.temperature)
                for i, s in enumerate(seeds)
            ]
            trajs: list[Trajectory] = ray.get(refs)
            g = pg_gradient(trajs, config.gamma)
            w_grad = np.zeros(n)
            w_grad[: len(g)] = g  # the weights; the bias (last) cancels in the softmax
            step, m, v = adam(w_grad, m, v, it + 1, config.lr)
            params = params + step
            record = {
                "iteration": float(it),
                "return_per_tick": float(np.mean([t.ret for t in trajs])) / scenario.run.ticks,
            }
            history.append(record)
            if on_iteration is not None:
                on_iteration(record)
    finally:
        for w in workers:
            ray.kill(w)
    return Scorer("eviction", 0, params, meta={"method": "reinforce"}), history
