"""The built-in learner: evolution strategies over a small scorer, numpy only.

Why ES and not a policy gradient: an eviction or write decision pays off ticks later,
in answers that depend on hundreds of other decisions, so per-decision credit is noisy;
ES scores whole episodes, needs no gradient through the bus, and its rollouts are
independent, so they spread over Ray workers with nothing shared but a parameter vector.
The scorer is small (a linear map: 14 parameters for eviction, 52 for writes), which is
where ES works well.
``docs/rl.md`` has the measurements.

The method (OpenAI-ES, Salimans et al. 2017): antithetic Gaussian perturbations,
centred-rank fitness shaping, Adam on the estimated gradient; every member of a
generation is scored on the same training seeds (common random numbers). Training seeds
come from their own range; evaluation uses other seeds (never the training ones).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.policies.learned import Scorer
from hivemem.platform.outputs import make_folder
from hivemem.platform.rl.sim import controller_tier, policy_tier, run_episode, with_controller
from hivemem.platform.scenario import Scenario, dump_resolved, parse_scenario

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 100_000
"""Training episodes use seeds from here up; evaluation uses the scenario's seeds below."""

STATE_VERSION = 1
STATE_NAME = "train_state.json"
"""The training state in the output folder, saved after every generation for --resume."""

CLOSE_TIMEOUT_S = 30.0
"""How long stopping the rollout workers waits for them to remove their folders."""


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        controller: ``eviction`` or ``write``.
        tier: The tier the policy acts on (None: the first with a capacity).
        hidden: Hidden units of the scorer (0: linear).
        iterations: ES generations.
        pairs: Antithetic pairs per generation (2 * pairs episodes per training seed).
        episodes: Training seeds per generation.
        sigma: Perturbation scale.
        lr: Adam step size.
        memory_cost: Reward subtracted per item held per tick.
        seed: Seeds the perturbations and the choice of training seeds.
        workers: Ray rollout workers (0: roll out in this process).
    """

    controller: str = "eviction"
    tier: str | None = None
    hidden: int = 0
    iterations: int = 30
    pairs: int = 8
    episodes: int = 2
    sigma: float = 0.3
    lr: float = 0.1
    memory_cost: float = 0.0
    seed: int = 0
    workers: int = 2

    def check(self) -> None:
        """Raise ConfigError on a setting that cannot work."""
        if self.controller not in ("eviction", "write"):
            raise ConfigError(f"controller must be eviction or write, got {self.controller!r}")
        for name in ("iterations", "pairs", "episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sigma", "lr"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        if not math.isfinite(self.memory_cost):  # NaN or inf: every return would be too
            raise ConfigError(f"memory_cost must be finite, got {self.memory_cost}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0: in this process), got {self.workers}")
        if self.hidden < 0:
            raise ConfigError(f"hidden must be >= 0, got {self.hidden}")


@dataclass
class TrainState:
    """Everything needed to resume: parameters, optimiser moments, history."""

    params: list[float]
    m: list[float]
    v: list[float]
    iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


# --- rollouts -----------------------------------------------------------------------------


class Evaluator:
    """Scores parameter vectors by running episodes (in this process or a Ray worker)."""

    def __init__(self, scenario_yaml: str, config: dict[str, Any]) -> None:
        self.scenario = parse_scenario(scenario_yaml, "<training scenario>")
        self.config = TrainConfig(**config)
        self.tier = policy_tier(self.scenario, self.config.tier)
        # candidates are served by name, like any checkpoint; the folder goes with the object
        self._tmp = tempfile.TemporaryDirectory(prefix="hivemem-es-")
        self.dir = Path(self._tmp.name)

    def episode_return(self, params: Sequence[float], seed: int) -> float:
        """Return per tick of one episode with the scorer ``params`` serving on the bus."""
        c = self.config
        path = Scorer(c.controller, c.hidden, np.asarray(params)).save(self.dir / "p.json")
        s = with_controller(self.scenario, self.tier, c.controller, f"learned:{path}", seed=seed)
        ep = run_episode(s, tier=self.tier)
        return ep.ret(c.memory_cost) / max(len(ep.rewards), 1)

    def close(self) -> None:
        """Remove the candidates' folder."""
        self._tmp.cleanup()

    def evaluate(self, jobs: list[tuple[list[float], int]]) -> list[float]:
        """Returns of ``(params, seed)`` jobs, in order."""
        return [self.episode_return(p, seed) for p, seed in jobs]


def _remote_evaluators(n: int, scenario_yaml: str, config: dict[str, Any]) -> list[Any]:
    import ray

    cls = ray.remote(num_cpus=1)(Evaluator)
    return [cls.remote(scenario_yaml, config) for _ in range(n)]


class Rollouts:
    """Spreads episode jobs over Ray workers (or runs them here with ``workers=0``)."""

    def __init__(self, scenario: Scenario, config: TrainConfig) -> None:
        text = dump_resolved(scenario)
        self.local = Evaluator(text, asdict(config)) if config.workers == 0 else None
        self.remote = (
            _remote_evaluators(config.workers, text, asdict(config)) if config.workers else []
        )

    def run(self, jobs: list[tuple[list[float], int]]) -> list[float]:
        """Returns of the jobs, in order."""
        if self.local is not None:
            return self.local.evaluate(jobs)
        import ray

        n = len(self.remote)
        chunks = [jobs[i::n] for i in range(n)]
        parts = ray.get([w.evaluate.remote(c) for w, c in zip(self.remote, chunks, strict=True)])
        out = [0.0] * len(jobs)
        for i, part in enumerate(parts):
            for j, value in enumerate(part):
                out[i + j * n] = value
        return out

    def close(self) -> None:
        """Remove the candidates' folders, then stop the workers.

        A killed worker runs no finalizer, so each is asked to remove its folder first;
        one that cannot answer within ``CLOSE_TIMEOUT_S`` is killed all the same.
        """
        if self.local is not None:
            self.local.close()
        if self.remote:
            import ray

            try:
                ray.get([w.close.remote() for w in self.remote], timeout=CLOSE_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError) as exc:
                log.warning("rollout workers did not remove their folders: %s", exc)
            for w in self.remote:
                ray.kill(w)


# --- ES -----------------------------------------------------------------------------------


def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Fitness shaping: ranks mapped to [-0.5, 0.5] (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):  # ties: same shaped fitness
        same = x == value
        ranks[same] = ranks[same].mean()
    return ranks / max(len(x) - 1, 1) - 0.5


def adam(
    grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, lr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam step for *ascent*: the parameter change and the new moments."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    step = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return step, m, v


def train_seeds(config: TrainConfig, iteration: int) -> list[int]:
    """The training seeds of one generation (a function of the seed and the generation)."""
    rng = np.random.default_rng([config.seed, iteration, 1])
    return [TRAIN_SEED_BASE + int(s) for s in rng.integers(0, 1_000_000, config.episodes)]


def es_generation(config: TrainConfig, state: TrainState, rollouts: Rollouts) -> dict[str, float]:
    """One ES generation: perturb, roll out, step. Mutates ``state``; returns its record."""
    it = state.iteration
    rng = np.random.default_rng([config.seed, it, 0])
    theta = np.asarray(state.params)
    eps = rng.standard_normal((config.pairs, theta.size))
    seeds = train_seeds(config, it)
    members = [theta + config.sigma * e for e in eps] + [theta - config.sigma * e for e in eps]
    jobs = [(list(p), s) for p in [theta, *members] for s in seeds]
    returns = np.asarray(rollouts.run(jobs)).reshape(1 + 2 * config.pairs, len(seeds)).mean(1)
    centre, fit = float(returns[0]), returns[1:]
    shaped = centered_ranks(fit)
    grad = (
        (shaped[: config.pairs] - shaped[config.pairs :]) @ eps / (2 * config.pairs * config.sigma)
    )
    step, m, v = adam(grad, np.asarray(state.m), np.asarray(state.v), it + 1, config.lr)
    state.params = list(theta + step)
    state.m, state.v = list(m), list(v)
    state.iteration = it + 1
    record = {
        "iteration": float(it),
        "centre": centre,
        "population_mean": float(fit.mean()),
        "population_best": float(fit.max()),
    }
    state.history.append(record)
    return record


def new_state(config: TrainConfig) -> TrainState:
    """Zero parameters (all scores equal: ties fall to the oldest item / the first op)."""
    n = Scorer.size(config.controller, config.hidden)
    if config.hidden:
        params = np.random.default_rng([config.seed, 7]).normal(0, 0.1, n)
    else:
        params = np.zeros(n)
    return TrainState(list(params), [0.0] * n, [0.0] * n)


RESUME_SETTINGS = (
    "controller",
    "tier",
    "hidden",
    "pairs",
    "episodes",
    "sigma",
    "lr",
    "memory_cost",
    "seed",
)
"""What a resumed run must share with the saved one (besides the scenario): everything
that changes the parameters it ends with. ``iterations`` is the new target; ``workers``
changes nothing."""


def scenario_digest(scenario: Scenario) -> str:
    """SHA-256 of the resolved scenario, leaving out what cannot change an episode (its
    description, outputs and metrics port)."""
    doc = scenario.model_dump(mode="json", exclude={"description", "outputs", "metrics_port"})
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def training_meta(scenario: Scenario, tier: str, method: str, **facts: Any) -> dict[str, Any]:
    """A checkpoint's ``meta``: what it was trained on, so that ``hivemem eval`` can run it
    again without the scenario file (``resolved_scenario``: the scenario as trained, every
    ``--set`` applied) and ``facts`` (iterations, settings)."""
    return {
        "scenario": scenario.name,
        "tier": tier,
        "method": method,
        "train_seed_base": TRAIN_SEED_BASE,
        "resolved_scenario": scenario.model_dump(mode="json"),
        **facts,
    }


def save_state(path: Path, config: TrainConfig, state: TrainState, scenario: str = "") -> None:
    """The resumable training state (JSON, beside the checkpoint); ``scenario`` is the
    :func:`scenario_digest` of the scenario trained on."""
    doc = {
        "version": STATE_VERSION,
        "config": asdict(config),
        "scenario_sha256": scenario,
        "state": asdict(state),
    }
    path.write_text(json.dumps(doc) + "\n", encoding="utf-8")


def load_state(path: Path, config: TrainConfig, scenario: str = "") -> TrainState:
    """Read a training state written by :func:`save_state` for the same configuration
    and scenario (``scenario``: its :func:`scenario_digest`; a state saved before
    digests were kept is not compared on it).

    Raises:
        ConfigError: unreadable, another version, or settings or a scenario that differ
            (each named, with the saved and the new value).
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        state = TrainState(**doc["state"])
        saved = TrainConfig(**doc["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot resume from {path}: {exc}", path=str(path)) from exc
    if doc.get("version") != STATE_VERSION:
        raise ConfigError(f"{path} has training-state version {doc.get('version')!r}")
    differ = [
        f"{k} (saved {getattr(saved, k)!r}, now {getattr(config, k)!r})"
        for k in RESUME_SETTINGS
        if getattr(saved, k) != getattr(config, k)
    ]
    saved_scenario = doc.get("scenario_sha256")
    if saved_scenario and scenario and saved_scenario != scenario:
        differ.append("the scenario (its resolved settings, --set included, are not the same)")
    if differ:
        raise ConfigError(
            f"cannot resume {path}: it was trained with other settings: {'; '.join(differ)}",
            path=str(path),
        )
    return state


def train(
    scenario: Scenario,
    config: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
) -> Scorer:
    """Train a scorer; write ``policy.json``, ``train_state.json`` and ``curve.png`` to ``out``.

    Returns:
        The trained scorer (also saved as ``out/policy.json``).

    Raises:
        ConfigError: settings that cannot work, an eviction controller on a tier with no
            capacity, an output folder that cannot be made, or (``resume``) no saved state
            in ``out``, or one of other settings or another scenario.
    """
    config.check()
    tier = controller_tier(scenario, config.tier, config.controller)
    config = replace(config, tier=tier)  # the caller's stays as it was
    if resume:
        check_resumable(out, config, scenario)
    make_folder(out)
    state_path = out / STATE_NAME
    digest = scenario_digest(scenario)
    state = load_state(state_path, config, digest) if resume else new_state(config)
    rollouts = Rollouts(scenario, config)
    started = time.perf_counter()
    try:
        while state.iteration < config.iterations:
            record = es_generation(config, state, rollouts)
            record["seconds"] = time.perf_counter() - started
            save_state(state_path, config, state, digest)
            if on_iteration is not None:
                on_iteration(record)
    finally:
        rollouts.close()
    scorer = Scorer(
        config.controller,
        config.hidden,
        np.asarray(state.params),
        meta=training_meta(scenario, tier, "es", iterations=state.iteration, config=asdict(config)),
    )
    scorer.save(out / "policy.json")
    curve_plot(out / "curve.png", scenario.name, config.controller, state.history)
    return scorer


def check_resumable(out: Path, config: TrainConfig, scenario: Scenario) -> None:
    """Check that ``out`` holds a training state that ``config`` (its tier resolved) may
    resume on ``scenario``: the command line checks it before Ray starts.

    Raises:
        ConfigError: it holds none (resuming into a mistyped folder would otherwise train
            from scratch without a word), or one of other settings or another scenario.
    """
    if not (out / STATE_NAME).is_file():
        raise ConfigError(
            f"nothing to resume: {out} has no {STATE_NAME} (leave out --resume to start afresh)",
            path=str(out),
        )
    load_state(out / STATE_NAME, config, scenario_digest(scenario))


def curve_plot(path: Path, name: str, controller: str, history: list[dict[str, float]]) -> None:
    """The learning curve: return per tick of the current policy and of its perturbations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [h["centre"] for h in history], label="current policy")
    ax.plot(x, [h["population_mean"] for h in history], label="population mean", alpha=0.6)
    ax.set_xlabel("ES generation")
    ax.set_ylabel("return per tick (training seeds)")
    ax.set_title(f"{name}: learned {controller} policy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
