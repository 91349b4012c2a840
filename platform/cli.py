"""The ``hivemem`` command line.

Errors end a command with one ``error: ...`` line on stderr and exit status 2 for bad
input, 1 for a failure once started (:func:`hivemem.platform.bus_connect.fail`, whose
module docstring states the convention); ``validate`` exits 1 for an invalid file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from hivemem.platform.bus_cli import bus_app, serve_metrics
from hivemem.platform.bus_connect import BAD_INPUT, fail

if TYPE_CHECKING:
    pass

app = typer.Typer(no_args_is_help=True, help="Simulate many AI agents that share memory.")
app.add_typer(bus_app, name="bus")


def _start_ray(ensure_ray: Callable[[str | None, int], None], *args: Any) -> None:
    """Start or join Ray (``ensure_ray``); no cluster at the address given is one error
    line, exit 1 (it may come up: try again), not a traceback."""
    from hivemem.memory_bus.errors import HivememError

    try:
        ensure_ray(*args)
    except HivememError as exc:
        fail(exc)


@app.command()
def version() -> None:
    """Print the installed hivemem version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("hivemem"))


# --- scenarios -----------------------------------------------------------------------


def _load(scenario: str, overrides: list[str] | None) -> Any:
    from hivemem.platform.scenario import load_scenario
    from hivemem.platform.scenario_problems import ScenarioError

    try:
        return load_scenario(scenario, overrides or [])
    except ScenarioError as exc:
        fail(exc, BAD_INPUT)


def _make_out(folder: Path) -> None:
    """Make the output folder before Ray starts (seconds): one that cannot be made (a file
    in the way, no permission) is bad input."""
    from hivemem.memory_bus.errors import ConfigError
    from hivemem.platform.outputs import make_folder

    try:
        make_folder(folder, "--out")
    except ConfigError as exc:
        fail(exc, BAD_INPUT)


@app.command()
def validate(
    files: list[str] = typer.Argument(..., help="Scenario files or built-in names."),
) -> None:
    """Check scenario files; every problem is named with its path (and line) in the file.

    Exits 1 if any file is invalid (or missing): that is its finding, as a linter's.
    """
    from hivemem.memory_bus.errors import HivememError
    from hivemem.platform.scenario import load_scenario
    from hivemem.platform.scenario_problems import Problem, ScenarioError

    failed = 0
    for name in files:
        try:
            s = load_scenario(name)
            try:  # a family of one's own whose constructor raises fails here, not in the run
                s.make_task()
                s.make_task(baseline=True)
            except HivememError as exc:
                raise ScenarioError(name, [Problem("task.family", exc.message)]) from None
        except ScenarioError as exc:
            failed += 1
            typer.echo(f"error: {exc}", err=True)
            continue
        typer.echo(
            f"{name}: ok ({s.task.family}, {sum(e.count for e in s.agents)} agents, {s.run.ticks} ticks)"
        )
    if failed:
        raise typer.Exit(1)


@app.command()
def schema(
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here instead of stdout."),
) -> None:
    """Print (or write) the JSON Schema of scenario files."""
    import json

    from hivemem.platform.scenario import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out} (--out): {exc.strerror or exc}", BAD_INPUT)


@app.command("list")
def list_things() -> None:
    """Built-in scenarios, task families, agent types and memory policies."""
    from hivemem.agents.base import AGENT_TYPES
    from hivemem.memory_bus.policies import EVICTION_POLICIES, WRITE_POLICIES
    from hivemem.platform.scenario import builtin_names, load_scenario, task_families
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hivemem")
    table.add_column("kind")
    table.add_column("names")
    rows = []
    for name in builtin_names():
        s = load_scenario(name)
        rows.append(f"{name} ({s.task.family}) - {s.description}")
    table.add_row("scenarios", "\n".join(rows))
    table.add_row("task families", ", ".join(task_families()))
    table.add_row("agent types", ", ".join(AGENT_TYPES.names()))
    for label, registry in (("eviction", EVICTION_POLICIES), ("write", WRITE_POLICIES)):
        names = [*registry.names(), *(f"{p[:-3]}PATH" for p in registry.prefixes())]
        table.add_row(f"{label} policies", ", ".join(names))
    Console().print(table)


@app.command()
def run(
    scenario: str = typer.Argument(
        ..., help="A scenario file or a built-in name (see `hivemem list`)."
    ),
    address: str | None = typer.Option(
        None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)."
    ),
    hosts: int | None = typer.Option(None, help="Agent host actors (overrides run.hosts)."),
    seed: int | None = typer.Option(None, min=0, help="Seed (overrides run.seed)."),
    ticks: int | None = typer.Option(None, help="Ticks (overrides run.ticks)."),
    out: Path | None = typer.Option(
        None, help="Parent folder of the run folder (overrides outputs.dir)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override any field: key.sub=value (repeatable)."
    ),
    baseline: bool | None = typer.Option(
        None, "--baseline/--no-baseline", help="Also run the no-memory baseline."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    metrics_port: int | None = typer.Option(
        None, min=0, max=65535, help="Expose Prometheus /metrics here (overrides metrics_port)."
    ),
    metrics_host: str = typer.Option("127.0.0.1", help="Interface for /metrics."),
) -> None:
    """Run a scenario and write its run folder."""
    import json
    import os

    from hivemem.memory_bus.errors import HivememError
    from hivemem.platform.outputs import RunFolder, RunStopped
    from hivemem.platform.runner import ensure_ray
    from rich.console import Console

    overrides = list(set_)
    for key, value in (
        ("run.hosts", hosts),
        ("run.seed", seed),
        ("run.ticks", ticks),
        ("outputs.dir", out),
        ("run.baseline", baseline),
    ):
        if value is not None:
            overrides.append(
                f"{key}={json.dumps(str(value)) if isinstance(value, Path) else json.dumps(value)}"
            )
    if metrics_port is not None:
        overrides.append(f"metrics_port={metrics_port}")
    s = _load(scenario, overrides)
    _make_out(Path(s.outputs.dir))
    console = Console(stderr=True)
    remote = bool(address or os.environ.get("RAY_ADDRESS"))
    metrics = None
    if s.metrics_port is not None:
        from hivemem.platform.metrics import DriverMetrics

        metrics = DriverMetrics()
        url = serve_metrics(metrics.serve, s.metrics_port, metrics_host)
        console.print(f"metrics on {url}")
    _start_ray(ensure_ray, address, s.run.num_cpus)
    folder = RunFolder(s, Path(s.outputs.dir))
    results: dict[str, Any] = {}
    try:
        with folder.recording():
            for part in ("memory", "baseline") if s.run.baseline else ("memory",):
                results[part] = _run_with_progress(
                    s,
                    console,
                    progress,
                    "memory" if part == "memory" else "no-memory baseline",
                    partial(_run_part, s, part, remote, metrics, folder),
                )
    except RunStopped as stop:
        done = folder.progress() or "before its first tick"
        typer.echo(f"stopped ({stop.reason}): {done}; run folder {folder.path}", err=True)
        typer.echo(str(folder.path))
        cause = stop.__cause__
        if cause is not None and not isinstance(cause, HivememError):
            raise cause from None  # a bug: its own traceback says where
        raise typer.Exit(stop.exit_code) from None
    result, base_result = results["memory"], results.get("baseline")
    folder.finish(result, base_result, s.outputs.plots)
    _results_table(s, result, base_result)
    typer.echo(str(folder.path))


def _run_part(s: Any, part: str, remote: bool, metrics: Any, folder: Any, on_tick: Any) -> Any:
    """Run the memory agents (``part`` "memory") or the baseline, rows into ``folder``."""
    from hivemem.platform.runner import run_once

    base = part == "baseline"
    return run_once(
        s,
        baseline=base,
        remote=remote,
        on_tick=on_tick,
        metrics=None if base else metrics,
        rows=folder.rows(part),
    )


def _run_with_progress(
    s: Any, console: Any, show: bool, label: str, fn: Callable[[Any], Any]
) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not show:
        return fn(None)
    with Progress(
        TextColumn(f"[bold]{s.name}[/] {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("score {task.fields[score]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        job = bar.add_task(label, total=s.run.ticks, score=_shown(None))
        return fn(lambda t, row: bar.update(job, completed=t + 1, score=_shown(row["score"])))


def _shown(value: float | None) -> str:
    """A measure as a table shows it."""
    from hivemem.platform.outputs import NOTHING_ASKED

    return NOTHING_ASKED if value is None else f"{value:.3f}"


def _results_table(s: Any, result: Any, base: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{s.name} (seed {result.seed}, {result.agents} agents on {result.hosts} hosts, {result.ticks} ticks)"
    )
    table.add_column("measure")
    table.add_column("memory agents", justify="right")
    if base is not None:
        table.add_column("no-memory baseline", justify="right")
    for key, value in result.summary.items():
        cells = [key, _shown(value)]
        if base is not None:
            cells.append(_shown(base.summary.get(key)))
        table.add_row(*cells)
    steps = result.agents * result.ticks
    table.add_row(
        "agent-steps/s", f"{steps / result.seconds:,.0f}", *([""] if base is not None else [])
    )
    table.add_row(
        "seconds", f"{result.seconds:.1f}", *([f"{base.seconds:.1f}"] if base is not None else [])
    )
    Console().print(table)


@app.command()
def compare(
    scenario: str = typer.Argument(..., help="A scenario file or a built-in name."),
    eviction: str | None = typer.Option(None, help="Comma-separated eviction policies to compare."),
    write: str | None = typer.Option(None, help="Comma-separated write policies to compare."),
    tier: str | None = typer.Option(
        None, help="Tier the policies apply to (default: the one with a capacity)."
    ),
    seeds: int = typer.Option(5, min=1, help="Seeds per setting (run.seed, run.seed+1, ...)."),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="Add the no-memory baseline row."
    ),
    address: str | None = typer.Option(None, help="Ray cluster address."),
    out: Path = typer.Option(Path("runs"), help="Where the comparison folder goes."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override any field: key.sub=value (repeatable)."
    ),
) -> None:
    """Run a grid of policies over several seeds; print mean ± 95 % CI and save a plot.

    'memory' is the mean number of items the tier held per tick. Any policy name works,
    including learned:PATH (a checkpoint from 'hivemem train'). A run that fails is
    listed with its error and the others go on; the command then exits with 1.
    """
    import json
    import os

    from hivemem.platform.comparing import (
        compare_runs,
        compare_table,
        comparison_folder,
        failed_seeds,
        save_comparison,
        save_setup,
    )
    from hivemem.platform.runner import ensure_ray
    from rich.console import Console

    s0 = _load(scenario, list(set_))
    policies = {"eviction": _policy_names("eviction", eviction)}
    policies["write_policy"] = _policy_names("write", write)
    target = _compared_tier(s0, tier, bool(policies["eviction"]))
    grid: list[tuple[str, list[str], bool]] = []
    for field, names in policies.items():
        for name in names:
            setting = f"memory.{target}.{field}={json.dumps(name)}"  # a name, never YAML
            grid.append((f"{field.removesuffix('_policy')}={name}", [setting], False))
    if not grid:
        grid.append(("as written", [], False))
    if baseline:
        grid.append(("no-memory baseline", [], True))
    loaded = [
        (label, _load(scenario, [*set_, *extra, "run.baseline=false"]), base)
        for label, extra, base in grid
    ]
    remote = bool(address or os.environ.get("RAY_ADDRESS"))
    _make_out(out)
    _start_ray(ensure_ray, address, s0.run.num_cpus)
    folder = comparison_folder(out, s0.name)
    save_setup(folder, s0, target, seeds, grid)
    results: dict[str, dict[str, list[float | None]]] = {}
    failed: list[dict[str, Any]] = []
    stopped = compare_runs(loaded, seeds, remote, target, results, failed, folder / "runs.jsonl")
    ran = [label for label, _, _ in loaded if label in results or failed_seeds(failed, label)]
    title = f"{s0.name}: {target} tier, {seeds} seeds (mean ± 95 % CI)"
    Console().print(compare_table(title, ran, results, failed))
    save_comparison(folder, s0.name, ran, results, failed)
    runs = sum(len(r["score"]) for r in results.values()) + len(failed)
    for f in failed:
        typer.echo(f"{f['setting']} seed {f['seed']} failed: {f['error']}", err=True)
    if stopped is not None:
        total = len(loaded) * seeds
        typer.echo(f"stopped ({stopped.reason}) after {runs} of {total} runs", err=True)
    elif failed:
        typer.echo(f"{len(failed)} of {runs} runs failed", err=True)
    typer.echo(str(folder))
    if stopped is not None:
        raise typer.Exit(stopped.exit_code)
    if failed:
        raise typer.Exit(1)


def _policy_names(flag: str, names: str | None) -> list[str]:
    """The comma-separated policy names of ``--<flag>``. An empty name (``lru,,fifo``, or
    an empty flag) or one given twice is bad input: a name twice would pool its runs as
    if they were twice the seeds."""
    if names is None:
        return []
    found = [name.strip() for name in names.split(",")]
    if "" in found:
        fail(f"--{flag} {names!r}: an empty policy name", BAD_INPUT)
    twice = sorted({name for name in found if found.count(name) > 1})
    if twice:
        fail(f"--{flag} {names!r} names {', '.join(map(repr, twice))} more than once", BAD_INPUT)
    return found


def _compared_tier(s: Any, tier: str | None, eviction: bool) -> str:
    """The tier ``compare`` sets policies on: the one named, else the first with a
    capacity. Eviction policies on a tier with no capacity are refused, as ``train`` and
    ``eval`` refuse them: nothing is ever evicted there, so every row would be the same."""
    from hivemem.memory_bus.errors import HivememError
    from hivemem.platform.rl.sim import controller_tier

    try:
        return controller_tier(s, tier, "eviction" if eviction else "write")
    except HivememError as exc:
        fail(exc, BAD_INPUT)


def _add_rl_commands() -> None:
    from hivemem.platform.rl.commands import eval_command, train_command

    app.command("train")(train_command)
    app.command("eval")(eval_command)


_add_rl_commands()


def _one_line_summaries(*apps: typer.Typer) -> None:
    """Give each command of ``apps`` the first paragraph of its docstring, joined into
    one line, as the summary a group's ``--help`` lists: typer keeps the docstring's own
    line breaks there, so a summary broke off mid-sentence wherever its source line did,
    however wide the terminal."""
    for group in apps:
        for info in group.registered_commands:
            if info.short_help is None and info.callback is not None and info.callback.__doc__:
                first = inspect.cleandoc(info.callback.__doc__).split("\n\n")[0]
                info.short_help = " ".join(first.split())


_one_line_summaries(app, bus_app)


def main() -> None:
    """Entry point of the ``hivemem`` script."""
    app()


if __name__ == "__main__":
    main()
