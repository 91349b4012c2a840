"""PNG plots of a run and of a comparison (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hivemem.platform.runner import RunResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_plots(folder: Path, result: RunResult, baseline: RunResult | None) -> list[Path]:
    """score.png, memory_ops.png and items.png in ``folder``."""
    plt = _pyplot()
    rows = list(result.rows)  # decoded once: TickRows decodes on every read
    base_rows = list(baseline.rows) if baseline is not None else []
    ticks = [r["t"] for r in rows]
    out = []

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ticks, [r["score"] for r in rows], label="memory agents")
    if baseline is not None:
        ax.plot(
            [r["t"] for r in base_rows],
            [r["score"] for r in base_rows],
            "--",
            label="no-memory baseline",
        )
    ax.set(
        xlabel="tick",
        ylabel="score (running)",
        title=f"{result.scenario}: score over time",
        ylim=(0, 1.05),
    )
    ax.legend()
    out.append(_save(fig, folder / "score.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    keys = sorted({k for r in rows for k in r["ops"]})
    for k in keys:
        ax.plot(ticks, _cumulative(rows, "ops", k), label=k)
    ev = sorted({k for r in rows for k in r["evicted"]})
    for k in ev:
        ax.plot(ticks, _cumulative(rows, "evicted", k), ":", label=f"{k}.evicted")
    ax.set(
        xlabel="tick",
        ylabel="cumulative count",
        title="memory ops by tier (write-policy decisions, evictions)",
    )
    if keys or ev:
        ax.legend(fontsize="small")
    out.append(_save(fig, folder / "memory_ops.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for tier in ("private", "shared", "graph"):
        ax.plot(ticks, [r["items"].get(tier, 0) for r in rows], label=tier)
    ax.set(xlabel="tick", ylabel="items", title="items by tier")
    ax.legend()
    out.append(_save(fig, folder / "items.png"))
    return out


def compare_plot(
    path: Path, title: str, labels: list[str], means: list[float], cis: list[float]
) -> Path:
    """A bar chart of mean score ± 95 % CI per setting."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(labels)), 4))
    ax.bar(range(len(labels)), means, yerr=[0 if c != c else c for c in cis], capsize=4)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set(ylabel="score (mean ± 95 % CI)", title=title, ylim=(0, 1.05))
    return _save(fig, path)


def _cumulative(rows: Iterable[dict[str, Any]], field: str, key: str) -> list[float]:
    """Running total of ``row[field][key]`` over the ticks."""
    total, series = 0.0, []
    for r in rows:
        total += r[field].get(key, 0.0)
        series.append(total)
    return series


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path
