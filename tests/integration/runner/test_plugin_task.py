"""A task family of one's own (``task.family: "module:Class"``) whose ``observe``,
``score`` or ``summary`` raises or answers out of the task protocol: ``hivemem run``
stops with one line naming the family, the method and the answer. Real runs on the
session's Ray, the plug-in a module in a temporary folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivemem.platform.cli import app
from typer.testing import CliRunner

pytestmark = pytest.mark.usefixtures("ray_session")

TASKS = """
from hivemem.scenarios.relay_qa import RelayQA


class ObserveList(RelayQA):
    def observe(self, t):
        return list(super().observe(t).items())


class ObserveText(RelayQA):
    def observe(self, t):
        return {"scout-0": "the colour of e1 is amber"}


class ObserveStranger(RelayQA):
    def observe(self, t):
        return {**super().observe(t), "nobody-9": {}}


class ObserveRaises(RelayQA):
    def observe(self, t):
        raise KeyError("tick")


class ScoreNone(RelayQA):
    def score(self, t, answers):
        super().score(t, answers)


class ScoreText(RelayQA):
    def score(self, t, answers):
        return {"correct": "yes", "asked": 1}


class ScoreNan(RelayQA):
    def score(self, t, answers):
        return {"correct": float("nan"), "asked": 1}


class ScoreRaises(RelayQA):
    def score(self, t, answers):
        raise ZeroDivisionError("division by zero")


class ScoreNamesAColumn(RelayQA):
    def score(self, t, answers):
        return {**super().score(t, answers), "t": 7}


class HeadlineText(RelayQA):
    def headline(self, totals):
        return tuple(str(x) for x in super().headline(totals))

    def summary(self, totals):  # (relay_qa's own reads its headline)
        return {"score": 0.5}


class OutcomeKindsRaise(RelayQA):
    def outcome_kinds(self, parts):
        raise KeyError("kind")


class SummaryWithoutScore(RelayQA):
    def summary(self, totals):
        return {"accuracy": 0.5}
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_bad_tasks.py").write_text(TASKS, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield folder


@pytest.mark.parametrize(
    ("family", "says"),
    [
        ("ObserveList", "observe answered [('scout-0', {"),
        ("ObserveText", "observe answered {'scout-0': 'the colour of e1 is amber'}; it must"),
        ("ObserveStranger", "observe answered an observation of 'nobody-9', not an agent"),
        ("ObserveRaises", "observe raised KeyError: 'tick'"),
        ("ScoreNone", "score answered None; it must return a dict of"),
        ("ScoreText", "score answered {'correct': 'yes', 'asked': 1}; it must return"),
        ("ScoreNan", "score answered {'correct': nan, 'asked': 1}; it must return"),
        ("ScoreRaises", "score raised ZeroDivisionError: division by zero"),
        ("SummaryWithoutScore", "summary answered {'accuracy': 0.5}; it must return"),
        # its "t" replaced the tick's in every row
        ("ScoreNamesAColumn", "score answered a counter named 't', a column the runner"),
        # asked only for the driver's metrics (the run exposes them on a free port)
        ("HeadlineText", "headline answered ('0', '0'); it must return a pair of finite"),
        ("OutcomeKindsRaise", "outcome_kinds raised KeyError: 'kind'"),
    ],
)
def test_a_task_out_of_protocol_stops_the_run_with_one_line_naming_it(
    family: str, says: str, plugin_dir: Path, tmp_path: Path
) -> None:
    """Each ended the run with a traceback (an AttributeError of the runner or the agent
    host, a ValueError of float(), the task's own error) naming no task, or for the
    observation of an agent nobody hosts, not at all: it was dropped."""
    name = f"my_bad_tasks:{family}"
    result = CliRunner().invoke(
        app,
        [
            "run", "relay_qa", "--no-progress", "--out", str(tmp_path), "--ticks", "3",
            "--set", "run.baseline=false", "--set", f"task.family={name}",
            "--set", "agents.0.count=1", "--set", "agents.1.count=1", "--metrics-port", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    [line] = [x for x in result.stderr.splitlines() if not x.startswith("metrics on http://")]
    assert line.startswith(f"stopped (error: ConfigError: task family {name!r}: {says}"), line
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert f"task family {name!r}: {says}" in summary["stopped_by"]
