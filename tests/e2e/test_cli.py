"""The CLI end to end, as a user runs it: a fresh process starts its own local Ray and
embedded bus, runs a built-in scenario, prints a table and leaves a run folder."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hivemem.platform.scenario import load_scenario

SMALL = {
    "relay_qa": ["run.ticks=10", "agents.0.count=2", "agents.1.count=3"],
    "evolving_facts": ["run.ticks=12", "agents.1.count=3"],
    "team_insights": ["run.ticks=20", "agents.0.count=3", "agents.1.count=3", "agents.2.count=2"],
    "capacity_stream": ["run.ticks=30", "agents.0.count=4"],
}
PNG = b"\x89PNG\r\n\x1a\n"


def hivemem(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hivemem.platform.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sets(name: str) -> list[str]:
    return [a for o in SMALL[name] for a in ("--set", o)]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_run_writes_a_run_folder_and_memory_beats_the_baseline(name: str, tmp_path: Path) -> None:
    proc = hivemem(
        "run", name, "--out", str(tmp_path), "--no-progress", "--hosts", "2", *sets(name)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no-memory baseline" in proc.stdout and "score" in proc.stdout
    (folder,) = tmp_path.iterdir()
    assert proc.stdout.strip().endswith(str(folder))
    assert {p.name for p in folder.iterdir()} == {
        "scenario.yaml",
        "ticks.jsonl",
        "baseline_ticks.jsonl",
        "summary.json",
        "score.png",
        "memory_ops.png",
        "items.png",
    }
    summary = json.loads((folder / "summary.json").read_text())
    rows = [json.loads(line) for line in (folder / "ticks.jsonl").read_text().splitlines()]
    ticks = int(SMALL[name][0].split("=")[1])
    assert summary["ticks"] == ticks == len(rows)
    assert [r["t"] for r in rows] == list(range(ticks))
    assert summary["complete"] is True
    base = [json.loads(line) for line in (folder / "baseline_ticks.jsonl").read_text().splitlines()]
    assert base[-1]["score"] == pytest.approx(summary["baseline"]["score"])
    assert summary["summary"]["score"] > summary["baseline"]["score"] + 0.3
    for png in ("score.png", "memory_ops.png", "items.png"):
        data = (folder / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000
    assert_documented(name, rows, summary)
    assert_recomputed(folder, summary, proc.stdout)
    # the resolved scenario is itself a valid scenario file that says what ran
    check = hivemem("validate", str(folder / "scenario.yaml"))
    assert check.returncode == 0, check.stderr


DOCS = Path(__file__).parents[2] / "docs" / "scenarios.md"


def documented_fields() -> list[list[tuple[re.Pattern[str], str]]]:
    """The tables of docs/scenarios.md's "What the files hold" (``ticks.jsonl``'s, then
    ``summary.json``'s): each field's name as a pattern (``<N>``: a number) and its "in"."""
    text = DOCS.read_text(encoding="utf-8").split("### What the files hold", 1)[1]
    text = text.split("\n## ", 1)[0]
    tables: list[list[tuple[re.Pattern[str], str]]] = []
    for block in re.split(r"\n\n", text):
        lines = [line for line in block.splitlines() if line.startswith("| `")]
        if not lines:
            continue
        table = []
        for line in lines:
            names, _, where = (c.strip() for c in line.strip().strip("|").split("|")[:3])
            for found in re.findall(r"`([^`]+)`", names):
                pattern = re.escape(found).replace(re.escape("<N>"), r"\d+")
                table.append((re.compile(pattern), where))
        tables.append(table)
    return tables


def assert_documented(name: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Every field of the rows and of a finished run's summary is documented, and every
    field documented for them is there."""
    row_fields, summary_fields = documented_fields()
    mine = [p for p, where in row_fields if where == "every run" or name in where]
    keys = {k for r in rows for k in r}
    assert [k for k in keys if not any(p.fullmatch(k) for p in mine)] == []
    assert [p.pattern for p in mine if not any(p.fullmatch(k) for k in keys)] == []
    finished = {"every summary", "finished", "finished, with the baseline"}
    mine = [p for p, where in summary_fields if where in finished]
    keys = {k for k in summary if k != "timing"} | {f"timing.{k}" for k in summary["timing"]}
    assert [k for k in keys if not any(p.fullmatch(k) for p in mine)] == []
    assert [p.pattern for p in mine if not any(p.fullmatch(k) for k in keys)] == []


def table_cells(stdout: str) -> dict[str, list[str]]:
    """The printed results table: each row's cells after its first, by its first."""
    cells: dict[str, list[str]] = {}
    last = ""
    for line in stdout.splitlines():
        parts = [c.strip() for c in line.split("│")]
        if len(parts) < 4:
            continue
        if parts[1]:
            last = parts[1]
            cells[last] = parts[2:-1]
        else:  # a row whose cells wrapped onto this line
            cells[last] = [
                f"{a} {b}".strip() for a, b in zip(cells[last], parts[2:-1], strict=True)
            ]
    return cells


def assert_recomputed(folder: Path, summary: dict[str, Any], stdout: str) -> None:
    """Each measure of the summary is its family's ratio of the rows' counts summed, and
    the printed table shows the summary's figures."""
    from hivemem.platform.scenario import load_scenario

    task = load_scenario(str(folder / "scenario.yaml")).make_task(False)
    common = {"t", "score", "recalls", "hits", "writes", "promotions", "ops", "evicted", "items"}
    for key, file in (("summary", "ticks.jsonl"), ("baseline", "baseline_ticks.jsonl")):
        totals: dict[str, float] = {}
        for line in (folder / file).read_text().splitlines():
            for k, v in json.loads(line).items():
                if k not in common:
                    totals[k] = totals.get(k, 0.0) + v
        assert task.summary(totals) == summary[key]
    cells = table_cells(stdout)
    for measure, value in summary["summary"].items():
        assert cells[measure] == [f"{value:.3f}", f"{summary['baseline'][measure]:.3f}"]
    assert cells["seconds"] == [f"{summary['seconds']:.1f}", f"{summary['baseline_seconds']:.1f}"]
    assert cells["agent-steps/s"] == [f"{summary['agent_steps_per_second']:,.0f}", ""]
    steps = summary["agents"] * summary["ticks"] / summary["seconds"]
    assert summary["agent_steps_per_second"] == pytest.approx(steps)


def test_compare_prints_mean_and_ci_per_policy_and_saves_a_plot(tmp_path: Path) -> None:
    proc = hivemem(
        "compare", "capacity_stream", "--eviction", "fifo,oracle", "--seeds", "3",
        "--out", str(tmp_path), *sets("capacity_stream"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("eviction=fifo", "eviction=oracle", "no-memory baseline", "±"):
        assert label in proc.stdout
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "compare.json").read_text())
    assert len(results["eviction=fifo"]["score"]) == 3
    oracle = sum(results["eviction=oracle"]["score"])
    assert oracle >= sum(results["eviction=fifo"]["score"])
    assert max(results["no-memory baseline"]["score"]) < min(results["eviction=fifo"]["score"])
    assert (folder / "compare.png").read_bytes().startswith(PNG)
    # what was compared: the scenario as run, and each setting's overrides of it
    setup = json.loads((folder / "settings.json").read_text())
    assert setup["tier"] == "private" and setup["seeds"] == [0, 1, 2]
    assert [(x["setting"], x["set"], x["baseline"]) for x in setup["settings"]] == [
        ("eviction=fifo", ['memory.private.eviction="fifo"'], False),
        ("eviction=oracle", ['memory.private.eviction="oracle"'], False),
        ("no-memory baseline", [], True),
    ]
    as_run = load_scenario(str(folder / "scenario.yaml"), setup["settings"][1]["set"])
    assert as_run.name == "capacity_stream" and as_run.memory.private.eviction == "oracle"
    assert as_run.run.ticks == 30  # SMALL's override, kept
    # compare.json is runs.jsonl by setting, and the table its mean ± t-interval
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    assert [(r["setting"], r["seed"]) for r in runs] == [
        (label, seed) for label in results for seed in range(3)
    ]
    cells = table_cells(proc.stdout)
    for label, measures in results.items():
        for measure, values in measures.items():
            assert values == [r[measure] for r in runs if r["setting"] == label]
            mean = sum(values) / 3
            sd = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
            ci = 4.302652729911275 * sd / 3**0.5  # Student t, 2 degrees of freedom, 97.5 %
            assert f"{mean:.3f} ± {ci:.3f}" in cells[label], (label, measure, cells[label])


def test_an_invalid_scenario_runs_nothing(tmp_path: Path) -> None:
    proc = hivemem("run", "relay_qa", "--out", str(tmp_path), "--set", "run.tiks=3")
    assert proc.returncode == 2
    assert "run.tiks" in proc.stderr and "did you mean 'ticks'" in proc.stderr
    assert not any(tmp_path.iterdir())
    assert "Started a local Ray" not in proc.stderr


def test_a_bus_error_in_the_hosts_is_one_line_on_stderr(tmp_path: Path) -> None:
    """Both hosts' analysts are refused by the bus: the run stops with one line naming
    the error, and neither a traceback nor Ray's report of the other host's error."""
    # the hosts: scout-0 and analyst-0; analyst-1 and analyst-2
    proc = hivemem(
        "run", "relay_qa", "--no-progress", "--hosts", "2", "--out", str(tmp_path),
        "--set", "run.ticks=3", "--set", "agents.0.count=1", "--set", "agents.1.count=3",
        "--set", "agents.1.type=hivemem.agents.testing:TrespassingAgent",
    )  # fmt: skip
    assert proc.returncode == 1
    ours = [line for line in proc.stderr.splitlines() if not RAY_STARTING.search(line)]
    assert len(ours) == 1, proc.stderr[-3000:]
    assert ours[0].startswith("stopped (error: AccessDeniedError: agent 'analyst-")


RAY_STARTING = re.compile(r"^\S+ \S+\s+(INFO|WARNING) \S+:\d+ -- ")
"""The lines Ray logs as the local instance starts (its time, level and source)."""


def _restore_sigint() -> None:
    # a shell's background job starts with SIGINT ignored, and Python keeps it so
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_when_written(
    args: list[str], out: Path, name: str, lines: int, sig: signal.Signals
) -> tuple[subprocess.Popen[str], str, str]:
    """Start ``hivemem ARGS``, send ``sig`` once the file ``name`` in its folder under
    ``out`` has ``lines`` lines (or after two minutes), and wait for it to end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivemem.platform.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_restore_sigint,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(out.glob(f"*/{name}"))
            if found and found[0].read_text().count("\n") >= lines:
                break
            time.sleep(0.2)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc, stdout, stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_keeps_every_tick_it_finished(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    proc, out, err = stop_when_written(
        ["run", "capacity_stream", "--no-progress", "--out", str(tmp_path),
         "--set", "run.ticks=1000000"],
        tmp_path, "ticks.jsonl", 20, sig,
    )  # fmt: skip
    assert proc.returncode == code, err[-3000:]
    (folder,) = tmp_path.iterdir()
    assert out.strip() == str(folder)
    summary = json.loads((folder / "summary.json").read_text())
    rows = [json.loads(line) for line in (folder / "ticks.jsonl").read_text().splitlines()]
    assert summary["complete"] is False and summary["stopped_by"] == sig.name
    assert summary["memory"]["ticks_done"] == len(rows) >= 20
    assert f"stopped ({sig.name}): memory {len(rows)} ticks; run folder {folder}" in err
    assert [r["t"] for r in rows] == list(range(len(rows)))
    assert summary["memory"]["last_row"] == rows[-1]
    assert not (folder / "score.png").exists()


def test_a_run_killed_outright_keeps_its_rows_and_a_summary_saying_it_did_not_end(
    tmp_path: Path,
) -> None:
    proc, _, _ = stop_when_written(
        ["run", "capacity_stream", "--no-progress", "--out", str(tmp_path),
         "--set", "run.ticks=1000000"],
        tmp_path, "ticks.jsonl", 20, signal.SIGKILL,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["complete"] is False and summary["stopped_by"] is None
    assert summary["pid"] == proc.pid and summary["ticks"] == 1000000
    rows = [json.loads(line) for line in (folder / "ticks.jsonl").read_text().splitlines()]
    assert len(rows) >= 20 and [r["t"] for r in rows] == list(range(len(rows)))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_compare_keeps_the_runs_it_finished(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    proc, out, err = stop_when_written(
        ["compare", "capacity_stream", "--eviction", "fifo,lru", "--seeds", "40",
         "--out", str(tmp_path), "--set", "run.ticks=40", "--set", "agents.0.count=4"],
        tmp_path, "runs.jsonl", 2, sig,
    )  # fmt: skip
    assert proc.returncode == code, err[-3000:]
    (folder,) = tmp_path.iterdir()
    assert out.strip().endswith(str(folder))
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    assert 2 <= len(runs) < 120  # fifo, lru and the baseline, 40 seeds each
    assert f"stopped ({sig.name}) after {len(runs)} of 120 runs" in err
    results = json.loads((folder / "compare.json").read_text())
    assert results["eviction=fifo"]["score"] == [r["score"] for r in runs][:40]
    assert [r["seed"] for r in runs] == list(range(len(runs)))[:40]
    assert "eviction=fifo" in out and "±" in out  # the table of what was done
    assert (folder / "compare.png").read_bytes().startswith(PNG)
