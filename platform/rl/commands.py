"""``hivemem train`` and ``hivemem eval``: the RL commands of the command line.

Every setting is checked, and the output folder made, before Ray starts: a bad one is
one ``error:`` line on stderr and exit status 2, as for any bad input of the command line;
a training that fails once started exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from hivemem.platform.bus_connect import BAD_INPUT, fail

METHODS = ("es", "reinforce")


def _scenario(name: str, overrides: list[str]):  # type: ignore[no-untyped-def]
    from hivemem.platform.scenario import load_scenario
    from hivemem.platform.scenario_problems import ScenarioError

    try:
        return load_scenario(name, overrides)
    except ScenarioError as exc:
        fail(exc, BAD_INPUT)


def train_command(
    scenario: str = typer.Argument(..., help="A scenario file or a built-in name."),
    controller: str = typer.Option("eviction", help="eviction | write"),
    method: str = typer.Option(
        "es", help="es (evolution strategies) | reinforce (policy gradient; eviction, linear)"
    ),
    tier: str | None = typer.Option(
        None, help="Tier the policy acts on (default: one with a capacity)."
    ),
    workers: int = typer.Option(2, help="Ray rollout workers (0: roll out in this process)."),
    iterations: int = typer.Option(30, help="ES generations (reinforce: gradient steps)."),
    pairs: int | None = typer.Option(None, help="Antithetic pairs per generation (ES; 8)."),
    episodes: int = typer.Option(2, help="Training seeds per generation (reinforce: per step)."),
    hidden: int = typer.Option(0, help="Hidden units of the scorer (0: linear; ES only)."),
    sigma: float | None = typer.Option(None, help="ES perturbation scale (ES; 0.3)."),
    lr: float = typer.Option(0.1, help="Adam step size."),
    memory_cost: float = typer.Option(0.0, help="Reward subtracted per item held per tick."),
    seed: int = typer.Option(0, help="Training seed (perturbations, training episodes)."),
    out: Path | None = typer.Option(
        None, help="Output folder (default runs/train-NAME-CONTROLLER)."
    ),
    resume: bool = typer.Option(False, help="Continue from OUT/train_state.json (ES)."),
    address: str | None = typer.Option(None, help="Ray cluster address."),
    set_: list[str] = typer.Option([], "--set", help="Override any scenario field (repeatable)."),
) -> None:
    """Train a learned write or eviction policy; writes policy.json and curve.png (and, with
    ES, train_state.json)."""
    from hivemem.memory_bus.errors import HivememError
    from hivemem.platform.rl.learner import TrainConfig
    from hivemem.platform.runner import ensure_ray

    s = _scenario(scenario, list(set_))
    config = TrainConfig(
        controller=controller,
        tier=tier,
        hidden=hidden,
        iterations=iterations,
        episodes=episodes,
        lr=lr,
        memory_cost=memory_cost,
        seed=seed,
        workers=workers,
    )
    folder = out or Path("runs") / f"train-{s.name}-{controller}"
    try:
        if address is not None and not workers:  # it was ignored without a word
            raise HivememError(
                f"--address {address} needs rollout workers: --workers 0 trains in this "
                "process, not on the cluster"
            )
        if method == "es":
            job = _es_job(s, config, folder, pairs=pairs, sigma=sigma, resume=resume)
        elif method == "reinforce":
            job = _reinforce_job(s, config, folder, pairs=pairs, sigma=sigma, resume=resume)
        else:
            raise HivememError(f"unknown method {method!r} ({', '.join(METHODS)})")
    except HivememError as exc:
        fail(exc, BAD_INPUT)
    try:
        if workers:  # no cluster at --address: exit 1, as run's (it may come up)
            ensure_ray(address, max(s.run.num_cpus, workers))
        job()
    except HivememError as exc:  # or a rollout failed
        fail(exc)
    typer.echo(str(folder / "policy.json"))


def _es_job(  # type: ignore[no-untyped-def]
    s, config, folder: Path, *, pairs: int | None, sigma: float | None, resume: bool
) -> Callable[[], Any]:
    """Check the ES settings and make the folder; the training, to run once Ray is up."""
    from functools import partial

    from hivemem.platform.outputs import make_folder
    from hivemem.platform.rl.learner import check_resumable, train
    from hivemem.platform.rl.sim import controller_tier

    if pairs is not None:
        config.pairs = pairs
    if sigma is not None:
        config.sigma = sigma
    config.check()
    config.tier = controller_tier(s, config.tier, config.controller)
    if resume:
        check_resumable(folder, config, s)
    make_folder(folder, "--out")

    def show(r: dict[str, float]) -> None:
        typer.echo(
            f"generation {int(r['iteration']) + 1}/{config.iterations}: return/tick "
            f"{r['centre']:.3f} (population {r['population_mean']:.3f}), {r['seconds']:.0f} s",
            err=True,
        )

    return partial(train, s, config, folder, resume=resume, on_iteration=show)


def _reinforce_job(  # type: ignore[no-untyped-def]
    s, config, folder: Path, *, pairs: int | None, sigma: float | None, resume: bool
) -> Callable[[], Any]:
    """Check the REINFORCE settings and make the folder; the training, to run once Ray is
    up. It uses ``iterations``, ``episodes``, ``lr``, ``memory_cost``, ``seed``, ``tier``
    and ``workers``; the ES-only flags are refused rather than ignored."""
    from functools import partial

    from hivemem.memory_bus.errors import ConfigError
    from hivemem.platform.outputs import make_folder
    from hivemem.platform.rl.pg import PGConfig
    from hivemem.platform.rl.sim import controller_tier

    if config.controller != "eviction" or config.hidden:
        raise ConfigError("reinforce trains linear eviction policies only")
    es_only = [
        flag
        for flag, given in (
            ("--pairs", pairs is not None),
            ("--sigma", sigma is not None),
            ("--resume", resume),
        )
        if given
    ]
    if es_only:
        raise ConfigError(f"--method reinforce does not use {', '.join(es_only)} (ES only)")
    pg = PGConfig(
        iterations=config.iterations,
        episodes=config.episodes,
        lr=config.lr,
        seed=config.seed,
        workers=config.workers,
        tier=controller_tier(s, config.tier, "eviction"),
        memory_cost=config.memory_cost,
    )
    pg.check()
    make_folder(folder, "--out")
    return partial(_train_reinforce, s, pg, folder)


def _train_reinforce(s, pg, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """REINFORCE on Eviction-v0; writes policy.json and curve.png (no training state)."""
    from dataclasses import asdict

    from hivemem.memory_bus.policies.learned import Scorer
    from hivemem.platform.rl.learner import curve_plot, training_meta
    from hivemem.platform.rl.pg import train_pg

    def show(r: dict[str, float]) -> None:
        typer.echo(
            f"iteration {int(r['iteration']) + 1}/{pg.iterations}: sampled return/tick "
            f"{r['return_per_tick']:.3f}",
            err=True,
        )

    trained, history = train_pg(s, pg, on_iteration=show)
    meta = training_meta(s, pg.tier, "reinforce", iterations=pg.iterations, config=asdict(pg))
    Scorer("eviction", 0, trained.params, meta=meta).save(folder / "policy.json")
    curve = [
        {
            "iteration": h["iteration"],
            "centre": h["return_per_tick"],
            "population_mean": h["return_per_tick"],
        }
        for h in history
    ]
    curve_plot(folder / "curve.png", s.name, "eviction (REINFORCE)", curve)


def eval_command(
    checkpoint: Path = typer.Argument(..., help="A policy.json written by `hivemem train`."),
    scenario: str | None = typer.Option(
        None, help="Scenario (default: the one it was trained on, as trained, --set included)."
    ),
    against: str | None = typer.Option(
        None, help="Comma-separated policies to run beside it (default: the scenario's)."
    ),
    seeds: int = typer.Option(10, help="Held-out seeds: run.seed, run.seed+1, ..."),
    set_: list[str] = typer.Option([], "--set", help="Override any scenario field (repeatable)."),
) -> None:
    """Score a learned policy on held-out seeds beside heuristics (in this process)."""
    from hivemem.memory_bus.errors import HivememError
    from hivemem.memory_bus.policies.learned import Scorer
    from hivemem.platform.rl.evaluate import (
        check_evaluation,
        evaluate_policies,
        results_table,
        trained_scenario,
    )
    from hivemem.platform.rl.sim import controller_tier

    try:
        scorer = Scorer.load(checkpoint)
        if scenario is not None:
            s = _scenario(scenario, list(set_))
        else:
            s = trained_scenario(scorer.meta, str(checkpoint), list(set_))
        tier = controller_tier(s, str(scorer.meta.get("tier") or "shared"), scorer.controller)
        field = "eviction" if scorer.controller == "eviction" else "write_policy"
        names = [f"learned:{checkpoint}"]
        default = getattr(getattr(s.memory, tier), field)
        names += (default if against is None else against).split(",")  # "": a bad name
        check_evaluation(s, scorer.controller, tier, names, seeds)
    except HivememError as exc:  # ScenarioError too
        fail(exc, BAD_INPUT)
    try:
        results = evaluate_policies(s, scorer.controller, tier, names, seeds)
    except HivememError as exc:  # in the middle of the episodes: a failure, not bad input
        fail(exc)
    results_table(f"{s.name}: {scorer.controller} on the {tier} tier", results)
    typer.echo(json.dumps({k: v["score"] for k, v in results.items()}))
