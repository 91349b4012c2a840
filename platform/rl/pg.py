"""A policy-gradient learner for eviction (REINFORCE with a baseline), to set beside ES.

The same linear scorer as ES, made stochastic for training: the victim is drawn from
``softmax(scores / temperature)`` over the candidates; served, the policy takes the
argmax. Each decision's gradient of ``log p(victim)`` is ``x_victim - E_p[x]`` (the bias
cancels in a softmax). Returns are discounted sums of the rewards that follow a decision,
the baseline is the mean of the *other* episodes' returns at the same decision index
(leave-one-out: an episode's own return would cancel its advantage, and with one episode
per batch every gradient would be zero), and advantages are normalised per batch.
Episodes come from ``hivemem/Eviction-v0`` (the real run, stopped at each decision), in
Ray workers or, with ``workers=0``, in this process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.features import eviction_inputs
from hivemem.memory_bus.policies.learned import Scorer
from hivemem.platform.rl.learner import TRAIN_SEED_BASE, adam
from hivemem.platform.scenario import Scenario, dump_resolved, parse_scenario


@dataclass
class PGConfig:
    """Settings of the policy-gradient learner (eviction, linear scorer).

    Attributes:
        iterations: Gradient steps.
        episodes: Episodes per step (training seeds).
        lr: Adam step size.
        gamma: Discount of the rewards that follow a decision.
        temperature: Softmax temperature of the sampled victims.
        seed: Seeds the training episodes and the sampling.
        workers: Ray workers (0: episodes in this process).
        tier: The tier the policy acts on (None: the first with a capacity).
        memory_cost: Reward subtracted per item the tier holds per tick.
    """

    iterations: int = 20
    episodes: int = 4
    lr: float = 0.05
    gamma: float = 0.99
    temperature: float = 1.0
    seed: int = 0
    workers: int = 2
    tier: str | None = None
    memory_cost: float = 0.0

    def check(self) -> None:
        """Raise ConfigError on a setting that cannot work."""
        for name in ("iterations", "episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0: in this process), got {self.workers}")
        for name in ("lr", "temperature"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        if not math.isfinite(self.memory_cost):  # NaN or inf: every return would be too
            raise ConfigError(f"memory_cost must be finite, got {self.memory_cost}")
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")


@dataclass
class Trajectory:
    """One episode: per decision the score gradient of log p(action), and the rewards."""

    grads: np.ndarray
    rewards: np.ndarray
    ret: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class PGWorker:
    """Runs Eviction-v0 episodes with a stochastic linear scorer."""

    def __init__(self, scenario_yaml: str, tier: str | None, memory_cost: float = 0.0) -> None:
        from hivemem.platform.rl.envs import EvictionEnv

        scenario = parse_scenario(scenario_yaml, "<training scenario>")
        self.env = EvictionEnv(scenario, tier, memory_cost=memory_cost)

    def close(self) -> None:
        """Stop the environment's episode."""
        self.env.close()

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
    """REINFORCE gradient estimate with a leave-one-out baseline per decision index and
    normalised advantages.

    The baseline of an episode's decision ``i`` is the mean return-to-go at ``i`` of the
    other episodes that reached it (0 when none did: the normalisation then centres it).
    """
    returns = [discounted(t.rewards, gamma) for t in trajs]
    longest = max(len(g) for g in returns)
    padded = np.zeros((len(trajs), longest))
    reached = np.zeros((len(trajs), longest))
    for i, g in enumerate(returns):
        padded[i, : len(g)] = g
        reached[i, : len(g)] = 1.0
    total, count = padded.sum(axis=0), reached.sum(axis=0)
    adv_parts = []
    for g in returns:
        n = len(g)
        others = count[:n] - 1
        mean_others = np.divide(total[:n] - g, others, out=np.zeros(n), where=others > 0)
        adv_parts.append(g - mean_others)
    adv = np.concatenate(adv_parts)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    grads = np.concatenate([t.grads for t in trajs])
    return np.asarray(adv @ grads / len(adv))


class _Workers:
    """The episode collectors: Ray actors, or one in this process (``workers=0``)."""

    def __init__(self, scenario: Scenario, config: PGConfig) -> None:
        text = dump_resolved(scenario)
        args = (text, config.tier, config.memory_cost)
        self.local = PGWorker(*args) if config.workers == 0 else None
        self.remote: list[Any] = []
        if config.workers:
            import ray

            cls = ray.remote(num_cpus=1)(PGWorker)
            self.remote = [cls.remote(*args) for _ in range(config.workers)]

    def collect(
        self, params: list[float], seeds: list[int], temperature: float
    ) -> list[Trajectory]:
        if self.local is not None:
            return [self.local.collect(params, s, temperature) for s in seeds]
        import ray

        n = len(self.remote)
        refs = [
            self.remote[i % n].collect.remote(params, s, temperature) for i, s in enumerate(seeds)
        ]
        return list(ray.get(refs))

    def close(self) -> None:
        if self.local is not None:
            self.local.close()
        if self.remote:
            import ray

            for w in self.remote:
                ray.kill(w)


def train_pg(
    scenario: Scenario, config: PGConfig, on_iteration: Any = None
) -> tuple[Scorer, list[dict[str, float]]]:
    """Train a linear eviction scorer by REINFORCE; returns it and the per-iteration record.

    Raises:
        ConfigError: settings that cannot work.
    """
    config.check()
    workers = _Workers(scenario, config)
    n = Scorer.size("eviction", 0)
    params, m, v = np.zeros(n), np.zeros(n), np.zeros(n)
    history: list[dict[str, float]] = []
    try:
        for it in range(config.iterations):
            rng = np.random.default_rng([config.seed, it, 2])
            seeds = [TRAIN_SEED_BASE + int(s) for s in rng.integers(0, 1_000_000, config.episodes)]
            trajs = workers.collect(list(params), seeds, config.temperature)
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
        workers.close()
    return Scorer("eviction", 0, params, meta={"method": "reinforce"}), history
