"""``hivemem run`` and ``hivemem compare`` when a run fails or asks nothing, in this
process (on the session's Ray, which the commands reuse) with the real runner, hosts and
bus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hivemem.platform.cli import app
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.usefixtures("ray_session")

RELAY = ["--set", "run.ticks=3", "--set", "agents.0.count=2", "--set", "agents.1.count=2"]


def hivemem(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    ("override", "error"),
    [
        # raised by the bus, on a host's step
        (
            "agents.1.type=hivemem.agents.testing:TrespassingAgent",
            "AccessDeniedError: agent 'analyst-0' may not read shared/elsewhere",
        ),
        # raised while a host builds its agents
        (
            "agents.0.type=hivemem.agents.testing:UnbuildableAgent",
            "ConfigError: agent 'scout-0': this agent type refuses to be built",
        ),
    ],
)
def test_a_hivemem_error_in_a_host_stops_the_run_with_one_line(
    override: str, error: str, tmp_path: Path
) -> None:
    result = hivemem(
        "run", "relay_qa", "--no-progress", "--out", str(tmp_path), *RELAY, "--set", override
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # not the error itself: no traceback
    (folder,) = tmp_path.iterdir()
    [line] = result.stderr.splitlines()
    assert line.startswith(f"stopped (error: {error}")
    assert line.endswith(f"run folder {folder}")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stopped_by"].startswith(f"error: {error}")


REFUSING = '''
from hivemem.memory_bus.errors import ConfigError


class Refusing:
    """An eviction policy that cannot be built: a run naming it fails as it starts."""

    name = "refusing"

    def __init__(self, **params):
        raise ConfigError("this policy refuses to be built")

    def select(self, candidates, features, n, ctx):
        return list(range(n))
'''


def test_a_failing_run_of_a_comparison_is_recorded_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "refusing_policy.py").write_text(REFUSING, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    result = hivemem(
        "compare", "capacity_stream", "--eviction", "refusing_policy:Refusing,fifo",
        "--seeds", "2", "--out", str(out), "--set", "run.ticks=10", "--set", "agents.0.count=2",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    (folder,) = out.iterdir()
    saved = json.loads((folder / "compare.json").read_text())
    error = "ConfigError: this policy refuses to be built"
    bad = "eviction=refusing_policy:Refusing"
    assert saved["failed"] == [
        {"setting": bad, "seed": 0, "error": error},
        {"setting": bad, "seed": 1, "error": error},
    ]
    assert len(saved["eviction=fifo"]["score"]) == len(saved["no-memory baseline"]["score"]) == 2
    assert bad not in saved
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    assert [(r["setting"], r["seed"], "error" in r) for r in runs] == [
        (bad, 0, True), (bad, 1, True),
        ("eviction=fifo", 0, False), ("eviction=fifo", 1, False),
        ("no-memory baseline", 0, False), ("no-memory baseline", 1, False),
    ]  # fmt: skip
    assert (folder / "compare.png").exists()
    assert f"{bad} seed 1 failed: {error}" in result.stderr
    assert "2 of 6 runs failed" in result.stderr
    assert "failed seeds" in result.stdout and "0, 1" in result.stdout
    assert result.stdout.strip().endswith(str(folder))


def test_compare_refuses_zero_seeds(tmp_path: Path) -> None:
    result = hivemem("compare", "capacity_stream", "--seeds", "0", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "--seeds" in result.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--set", "run.seed=-1"]])
def test_a_negative_seed_is_refused_before_anything_starts(args: list[str], tmp_path: Path) -> None:
    result = hivemem("run", "relay_qa", "--out", str(tmp_path), *args)
    assert result.exit_code == 2
    assert "seed" in result.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_run_that_asks_nothing_reports_no_score_rather_than_zero(tmp_path: Path) -> None:
    """evolving_facts asks from tick 2: a 2-tick run has no score, and says so (strict
    JSON: null, not NaN)."""

    def strict(text: str) -> Any:
        def refuse(constant: str) -> Any:
            raise ValueError(f"not strict JSON: {constant}")

        return json.loads(text, parse_constant=refuse)

    result = hivemem(
        "run", "evolving_facts", "--ticks", "2", "--no-progress", "--out", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    (folder,) = tmp_path.iterdir()
    summary = strict((folder / "summary.json").read_text())
    nothing = {"score": None, "current": None, "as_of": None, "as_of_changed": None}
    assert summary["summary"] == summary["baseline"] == nothing
    rows = [strict(line) for line in (folder / "ticks.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == [None, None]
    assert "no questions" in result.stdout and "0.000" not in result.stdout


TINY = ["--set", "run.ticks=2", "--set", "agents.0.count=1"]


def _same_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every folder's date and time the same, as for commands started in one second."""
    monkeypatch.setattr("time.strftime", lambda fmt, *args: "20260101-000000")


def test_two_comparisons_started_in_one_second_keep_their_own_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _same_second(monkeypatch)
    args = ["compare", "capacity_stream", "--seeds", "1", "--no-baseline", "--out", str(tmp_path)]
    first = hivemem(*args, "--eviction", "fifo", *TINY)
    second = hivemem(*args, "--eviction", "lru", *TINY)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 2
    assert {first.stdout.strip().splitlines()[-1], second.stdout.strip().splitlines()[-1]} == {
        str(f) for f in folders
    }
    saved = [json.loads((f / "compare.json").read_text()) for f in folders]
    assert sorted(label for s in saved for label in s) == ["eviction=fifo", "eviction=lru"]


def test_two_runs_started_in_one_second_keep_their_own_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _same_second(monkeypatch)
    args = ["run", "capacity_stream", "--no-progress", "--no-baseline", "--out", str(tmp_path)]
    assert hivemem(*args, *TINY).exit_code == hivemem(*args, *TINY).exit_code == 0
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 2
    for f in folders:
        assert json.loads((f / "summary.json").read_text())["complete"] is True
        assert len((f / "ticks.jsonl").read_text().splitlines()) == 2


def test_the_folder_s_scenario_yaml_runs_the_same_rows_again(tmp_path: Path) -> None:
    """``--seed``, ``--hosts``, ``--ticks`` and ``--set`` are all in the resolved file:
    run from it, the rows (with no wall-clock field) are the same bytes."""
    first = hivemem(
        "run", "capacity_stream", "--no-progress", "--out", str(tmp_path / "a"),
        "--seed", "3", "--hosts", "3", "--ticks", "3",
        "--set", "agents.0.count=4", "--set", "memory.private.eviction=lfu",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    (folder,) = (tmp_path / "a").iterdir()
    again = hivemem(
        "run", str(folder / "scenario.yaml"), "--no-progress", "--out", str(tmp_path / "b")
    )
    assert again.exit_code == 0, again.output
    (other,) = (tmp_path / "b").iterdir()
    for name in ("ticks.jsonl", "baseline_ticks.jsonl"):
        assert (folder / name).read_bytes() == (other / name).read_bytes()
    one, two = (json.loads((f / "summary.json").read_text()) for f in (folder, other))
    assert (one["seed"], one["hosts"], one["agents"], one["ticks"]) == (3, 3, 4, 3)
    for key in ("seed", "hosts", "agents", "ticks", "summary", "baseline"):
        assert one[key] == two[key]
