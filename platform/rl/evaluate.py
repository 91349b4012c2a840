"""Held-out evaluation of policies side by side (``hivemem eval``)."""

from __future__ import annotations

from typing import Any

from hivemem.platform.outputs import mean_ci
from hivemem.platform.rl.sim import run_episode, with_controller
from hivemem.platform.scenario import Scenario


def evaluate_policies(
    scenario: Scenario, controller: str, tier: str, names: list[str], seeds: int
) -> dict[str, dict[str, list[float]]]:
    """Score and memory held (mean items on ``tier``) of each policy over ``seeds`` seeds.

    The seeds are ``run.seed .. run.seed + seeds - 1`` of the scenario, the same for every
    policy; training never uses them (it draws from ``TRAIN_SEED_BASE`` up).
    """
    out: dict[str, dict[str, list[float]]] = {}
    for name in names:
        for i in range(seeds):
            s = with_controller(scenario, tier, controller, name, seed=scenario.run.seed + i)
            ep = run_episode(s, tier=tier)
            row = out.setdefault(name, {})
            for key, value in ep.result.summary.items():
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
