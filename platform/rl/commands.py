"""``hivemem train`` and ``hivemem eval``: the RL commands of the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _scenario(name: str, overrides: list[str]):  # type: ignore[no-untyped-def]
    from hivemem.platform.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(name, overrides)
    except ScenarioError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


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
    iterations: int = typer.Option(30, help="ES generations."),
    pairs: int = typer.Option(8, help="Antithetic pairs per generation."),
    episodes: int = typer.Option(2, help="Training seeds per generation."),
    hidden: int = typer.Option(0, help="Hidden units of the scorer (0: linear)."),
    sigma: float = typer.Option(0.3, help="ES perturbation scale."),
    lr: float = typer.Option(0.1, help="Adam step size."),
    memory_cost: float = typer.Option(0.0, help="Reward subtracted per item held per tick."),
    seed: int = typer.Option(0, help="Training seed (perturbations, training episodes)."),
    out: Path | None = typer.Option(
        None, help="Output folder (default runs/train-NAME-CONTROLLER)."
    ),
    resume: bool = typer.Option(False, help="Continue from OUT/train_state.json."),
    address: str | None = typer.Option(None, help="Ray cluster address."),
    set_: list[str] = typer.Option([], "--set", help="Override any scenario field (repeatable)."),
) -> None:
    """Train a learned write or eviction policy; writes policy.json and curve.png."""
    from hivemem.memory_bus.errors import HivememError
    from hivemem.platform.rl.learner import TrainConfig, train
    from hivemem.platform.runner import ensure_ray

    s = _scenario(scenario, list(set_))
    config = TrainConfig(
        controller=controller,
        tier=tier,
        hidden=hidden,
        iterations=iterations,
        pairs=pairs,
        episodes=episodes,
        sigma=sigma,
        lr=lr,
        memory_cost=memory_cost,
        seed=seed,
        workers=workers,
    )
    folder = out or Path("runs") / f"train-{s.name}-{controller}"
    if workers or method == "reinforce":
        ensure_ray(address, max(s.run.num_cpus, workers))

    def show(r: dict[str, float]) -> None:
        typer.echo(
            f"generation {int(r['iteration']) + 1}/{iterations}: return/tick "
            f"{r['centre']:.3f} (population {r['population_mean']:.3f}), {r['seconds']:.0f} s",
            err=True,
        )

    try:
        if method == "reinforce":
            _train_reinforce(s, config, folder)
        elif method == "es":
            train(s, config, folder, resume=resume, on_iteration=show)
        else:
            raise HivememError(f"unknown method {method!r} (es, reinforce)")
    except HivememError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(str(folder / "policy.json"))


def _train_reinforce(s, config, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """REINFORCE on Eviction-v0: ``iterations`` × ``episodes`` episodes, lr, seed, workers."""
    from hivemem.memory_bus.errors import ConfigError
    from hivemem.platform.rl.learner import curve_plot
    from hivemem.platform.rl.pg import PGConfig, train_pg
    from hivemem.platform.rl.sim import policy_tier

    if config.controller != "eviction" or config.hidden:
        raise ConfigError("reinforce trains linear eviction policies only")
    tier = policy_tier(s, config.tier)
    pg = PGConfig(
        iterations=config.iterations,
        episodes=config.episodes,
        lr=config.lr,
        seed=config.seed,
        workers=max(config.workers, 1),
        tier=tier,
    )

    def show(r: dict[str, float]) -> None:
        typer.echo(
            f"iteration {int(r['iteration']) + 1}/{pg.iterations}: sampled return/tick "
            f"{r['return_per_tick']:.3f}",
            err=True,
        )

    scorer, history = train_pg(s, pg, on_iteration=show)
    scorer.meta.update({"scenario": s.name, "tier": tier, "iterations": pg.iterations})
    folder.mkdir(parents=True, exist_ok=True)
    scorer.save(folder / "policy.json")
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
        None, help="Scenario (default: the one it was trained on)."
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
    from hivemem.platform.rl.evaluate import evaluate_policies, results_table

    try:
        scorer = Scorer.load(checkpoint)
    except HivememError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    s = _scenario(scenario or str(scorer.meta.get("scenario")), list(set_))
    tier = str(scorer.meta.get("tier") or "shared")
    field = "eviction" if scorer.controller == "eviction" else "write_policy"
    names = [f"learned:{checkpoint}"]
    names += (against or getattr(getattr(s.memory, tier), field)).split(",")
    results = evaluate_policies(s, scorer.controller, tier, names, seeds)
    results_table(f"{s.name}: {scorer.controller} on the {tier} tier", results)
    typer.echo(json.dumps({k: v["score"] for k, v in results.items()}))
