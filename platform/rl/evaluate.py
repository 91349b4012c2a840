"""Held-out evaluation of policies side by side (``hivemem eval``)."""

from __future__ import annotations

import json
from typing import Any

from hivemem.memory_bus.errors import ConfigError
from hivemem.platform.outputs import mean_ci
from hivemem.platform.rl.sim import controller_tier, run_episode, with_controller
from hivemem.platform.scenario import (
    Scenario,
    absolute_checkpoints,
    check_meaning,
    load_scenario,
    parse_scenario,
)


def trained_scenario(meta: dict[str, Any], where: str, overrides: list[str]) -> Scenario:
    """The scenario a checkpoint was trained on, with ``overrides`` applied.

    A checkpoint keeps the resolved scenario it was trained on (every ``--set`` of
    training applied), so it evaluates without the file it came from; an older one
    names its scenario only, which is loaded by that name.

    Raises:
        ScenarioError: the stored scenario (or the named one) with ``overrides`` is not valid.
        ConfigError: the checkpoint names no scenario at all.
    """
    resolved = meta.get("resolved_scenario")
    if isinstance(resolved, dict):
        text = json.dumps(resolved)
        return absolute_checkpoints(
            parse_scenario(text, f"the scenario stored in {where}", overrides)
        )
    name = meta.get("scenario")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} names no scenario: give one with --scenario", path=where)
    return load_scenario(name, overrides)


def check_policies(scenario: Scenario, controller: str, tier: str, names: list[str]) -> None:
    """Raise before any episode runs if a policy name cannot serve on ``tier``.

    Raises:
        ConfigError: an unknown name (with the closest known ones), a checkpoint that
            cannot be read, or an oracle on a task without one.
    """
    field = "eviction" if controller == "eviction" else "write_policy"
    for name in names:
        s = with_controller(scenario, tier, controller, name)
        problems = [p for p in check_meaning(s) if p.path == f"memory.{tier}.{field}"]
        if problems:
            raise ConfigError("; ".join(p.message for p in problems), name=name)


def check_evaluation(
    scenario: Scenario, controller: str, tier: str, names: list[str], seeds: int
) -> str:
    """What :func:`evaluate_policies` checks before any episode runs; the tier it acts on.

    Raises:
        ConfigError: ``seeds`` < 1, no policy, a policy named twice (its runs would be
            pooled as twice the seeds), a tier the controller cannot act on, or a policy
            name that cannot serve.
    """
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    if not names:
        raise ConfigError("no policy to evaluate")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"policy {', '.join(map(repr, twice))} named more than once")
    tier = controller_tier(scenario, tier, controller)
    check_policies(scenario, controller, tier, names)
    return tier


def evaluate_policies(
    scenario: Scenario, controller: str, tier: str, names: list[str], seeds: int
) -> dict[str, dict[str, list[float]]]:
    """Score and memory held (mean items on ``tier``) of each policy over ``seeds`` seeds.

    The seeds are ``run.seed .. run.seed + seeds - 1`` of the scenario, the same for every
    policy; training never uses them (it draws from ``TRAIN_SEED_BASE`` up).

    Raises:
        ConfigError: what :func:`check_evaluation` refuses, before any episode runs.
    """
    tier = check_evaluation(scenario, controller, tier, names, seeds)
    out: dict[str, dict[str, list[float]]] = {}
    for name in names:
        for i in range(seeds):
            s = with_controller(scenario, tier, controller, name, seed=scenario.run.seed + i)
            ep = run_episode(s, tier=tier)
            row = out.setdefault(name, {})
            for key, value in ep.result.summary.items():
                if value is not None:  # None: nothing was asked this episode
                    row.setdefault(key, []).append(float(value))
            row.setdefault("memory", []).append(sum(ep.items) / max(len(ep.items), 1))
    return out


def results_table(title: str, results: dict[str, dict[str, Any]]) -> None:
    """Print mean ± 95 % CI of every measure, one row per policy."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title} (mean ± 95 % CI)")
    table.add_column("policy")
    keys = list(next(iter(results.values())))
    for key in keys:
        table.add_column(key, justify="right")
    for name, row in results.items():
        cells = []
        for key in keys:
            m, c = mean_ci(row[key])
            cells.append(f"{m:.3f} ± {c:.3f}" if c == c else f"{m:.3f}")
        table.add_row(name, *cells)
    Console().print(table)
