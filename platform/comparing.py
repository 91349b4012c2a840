"""``hivemem compare``'s grid: its runs one after another, the table of mean ± 95 % CI
per setting, and what it saves (``compare.json``, ``compare.png``, ``runs.jsonl``).

A run that fails is recorded with its setting, seed and error, and the others go on
(the command then exits 1); a signal stops the grid where it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hivemem.platform.outputs import NOTHING_ASKED

if TYPE_CHECKING:
    from hivemem.platform.outputs import RunStopped


def comparison_folder(out: Path, name: str) -> Path:
    """Make and return ``compare-<name>-<date>-<time>-<4 hex>/`` under ``out``: a new
    folder, as a run's is, so that a comparison started in the same second as another
    (a script starting several) never writes into the other's."""
    import time
    import uuid

    folder = out / f"compare-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def save_setup(
    folder: Path, scenario: Any, tier: str, seeds: int, grid: list[tuple[str, list[str], bool]]
) -> None:
    """What the comparison runs, written before its first run: ``scenario.yaml`` (the
    scenario as loaded, ``--set`` applied, every default filled in) and ``settings.json``
    (the tier compared, the seeds, and each setting's label, its ``--set`` overrides of
    that scenario and whether it is the no-memory baseline). A setting's run of seed
    ``s`` is that scenario with those overrides and ``run.seed=s`` (the baseline's: its
    no-memory part, as ``run.baseline`` runs beside a run)."""
    import json

    from hivemem.platform.scenario import dump_resolved

    (folder / "scenario.yaml").write_text(dump_resolved(scenario), encoding="utf-8")
    first = scenario.run.seed
    setup = {
        "tier": tier,
        "seeds": list(range(first, first + seeds)),
        "settings": [
            {"setting": label, "set": extra, "baseline": base} for label, extra, base in grid
        ],
    }
    text = json.dumps(setup, indent=2)
    (folder / "settings.json").write_text(text, encoding="utf-8")


def save_comparison(
    folder: Path,
    name: str,
    labels: list[str],
    results: dict[str, dict[str, list[float | None]]],
    failed: list[dict[str, Any]],
) -> None:
    """``compare.json`` (with ``failed`` if a run failed) and ``compare.png`` (the mean
    score of each setting that has one) in ``folder``."""
    import json

    from hivemem.platform.outputs import mean_ci
    from hivemem.platform.plots import compare_plot

    saved: dict[str, Any] = {**results, "failed": failed} if failed else dict(results)
    text = json.dumps(saved, indent=2, sort_keys=True)
    (folder / "compare.json").write_text(text, encoding="utf-8")
    scores = {label: numbers_of(results.get(label, {}).get("score", [])) for label in labels}
    scored = [label for label in labels if scores[label]]
    if scored:
        stats = [mean_ci(scores[label]) for label in scored]
        means, cis = [m for m, _ in stats], [c for _, c in stats]
        compare_plot(folder / "compare.png", f"{name}: score by setting", scored, means, cis)


def numbers_of(values: list[float | None]) -> list[float]:
    """The values of a measure that were measured (a score with nothing asked is None)."""
    return [v for v in values if v is not None]


def failed_seeds(failed: list[dict[str, Any]], label: str) -> list[int]:
    """The seeds of setting ``label`` whose run failed."""
    return [f["seed"] for f in failed if f["setting"] == label]


def compare_table(
    title: str,
    labels: list[str],
    results: dict[str, dict[str, list[float | None]]],
    failed: list[dict[str, Any]],
) -> Any:
    """Mean ± 95 % CI of every measure per setting; with a ``failed`` column (the seeds
    whose run failed) if any did."""
    from rich.table import Table

    keys = list(dict.fromkeys(k for label in labels for k in results.get(label, {})))
    table = Table(title=title)
    table.add_column("setting")
    for k in keys:
        table.add_column(k, justify="right")
    if failed:
        table.add_column("failed seeds", justify="right")
    for label in labels:
        cells = [label]
        for k in keys:
            cells.append(mean_ci_cell(results.get(label, {}).get(k, [])))
        if failed:
            cells.append(", ".join(map(str, failed_seeds(failed, label))))
        table.add_row(*cells)
    return table


def mean_ci_cell(values: list[float | None]) -> str:
    """Mean ± 95 % CI of a measure's values, as a table shows it ("-": no run)."""
    from hivemem.platform.outputs import mean_ci

    if not values:
        return "-"
    measured = numbers_of(values)
    if not measured:
        return NOTHING_ASKED
    m, c = mean_ci(measured)
    return f"{m:.3f} ± {c:.3f}" if c == c else f"{m:.3f}"


def compare_runs(
    loaded: list[tuple[str, Any, bool]],
    seeds: int,
    remote: bool,
    target: str,
    results: dict[str, dict[str, list[float | None]]],
    failed: list[dict[str, Any]],
    log_path: Path,
) -> RunStopped | None:
    """Run every setting over its seeds, into ``results`` and one JSON line per run in
    ``log_path`` as each ends; what stopped them early (Ctrl-C, SIGTERM), or None.

    A run that fails is recorded in ``failed`` (and its line) as its setting, seed and
    error, and the others go on.
    """
    import json

    from hivemem.platform.outputs import RunStopped, stopping
    from rich.console import Console

    console = Console(stderr=True)
    with log_path.open("w", encoding="utf-8") as log:
        try:
            with stopping():
                for label, s, base in loaded:
                    for i in range(seeds):
                        si = s.model_copy(
                            update={"run": s.run.model_copy(update={"seed": s.run.seed + i})}
                        )
                        console.print(f"{label} seed {si.run.seed} ...")
                        run = {"setting": label, "seed": si.run.seed}
                        outcome = compare_one(si, base, remote, target, console)
                        if "error" in outcome:
                            failed.append({**run, **outcome})
                        else:
                            for k, v in outcome.items():
                                results.setdefault(label, {}).setdefault(k, []).append(v)
                        log.write(json.dumps({**run, **outcome}, sort_keys=True) + "\n")
                        log.flush()
        except RunStopped as stop:
            return stop
    return None


def compare_one(s: Any, base: bool, remote: bool, target: str, console: Any) -> dict[str, Any]:
    """One run of a comparison: its measures, or ``{"error": ...}`` if it failed (a bug's
    traceback is printed too). A signal that surfaced as an error is raised again."""
    from hivemem.memory_bus.errors import HivememError
    from hivemem.platform.outputs import signal_behind
    from hivemem.platform.runner import run_once

    try:
        r = run_once(s, baseline=base, remote=remote)
    except Exception as exc:
        if signal_behind(exc) is not None:
            raise
        if not isinstance(exc, HivememError):
            console.print_exception()
        return {"error": f"{type(exc).__name__}: {exc}"}
    held = [row["items"].get(target, 0) for row in r.rows]
    return {**r.summary, "memory": sum(held) / max(len(held), 1)}
