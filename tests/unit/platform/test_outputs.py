"""The run folder: ticks land as they end, and a run stopped early still says how far it got."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from hivemem.platform.outputs import RunFolder, RunStopped, Terminated
from hivemem.platform.runner import RunResult
from hivemem.platform.scenario import load_scenario


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_finished_run_gets_its_summary_and_both_tick_files(tmp_path: Path) -> None:
    s = load_scenario("capacity_stream", ["run.ticks=3"])
    folder = RunFolder(s, tmp_path)
    assert (folder.path / "scenario.yaml").exists()  # before the run starts
    running = json.loads((folder.path / "summary.json").read_text())
    assert running == {"scenario": s.name, "seed": s.run.seed, "ticks": 3, "complete": False,
                       "stopped_by": None, "pid": os.getpid()}  # fmt: skip
    results = []
    for label in ("memory", "baseline"):
        rows = folder.rows(label)
        for t in range(3):
            rows.append({"t": t, "score": 0.5 if label == "memory" else 0.1})
        results.append(RunResult(s.name, 0, 1, 4, 3, {"score": rows[-1]["score"]}, rows))
    folder.finish(results[0], results[1], plots=False)
    summary = json.loads((folder.path / "summary.json").read_text())
    assert summary["complete"] is True and summary["ticks"] == 3
    assert summary["summary"] == {"score": 0.5} and summary["baseline"] == {"score": 0.1}
    assert [r["t"] for r in lines(folder.path / "ticks.jsonl")] == [0, 1, 2]
    assert [r["score"] for r in lines(folder.path / "baseline_ticks.jsonl")] == [0.1] * 3
    assert sorted(p.name for p in folder.path.iterdir()) == [
        "baseline_ticks.jsonl", "scenario.yaml", "summary.json", "ticks.jsonl",
    ]  # fmt: skip


def test_sigterm_stops_the_run_and_the_summary_counts_what_was_written(tmp_path: Path) -> None:
    s = load_scenario("capacity_stream", ["run.ticks=1000"])
    folder = RunFolder(s, tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunStopped) as stop, folder.recording():
        rows = folder.rows("memory")
        for t in range(1000):
            rows.append({"t": t, "score": t / 1000})
            if t == 41:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises long before this ends
    assert (stop.value.reason, stop.value.exit_code) == ("SIGTERM", 143)
    assert signal.getsignal(signal.SIGTERM) is before
    summary = json.loads((folder.path / "summary.json").read_text())
    assert summary["complete"] is False and summary["stopped_by"] == "SIGTERM"
    assert summary["memory"]["ticks_done"] == 42 == len(lines(folder.path / "ticks.jsonl"))
    assert summary["memory"]["last_row"] == {"t": 41, "score": 0.041}
    assert folder.progress() == "memory 42 ticks"
    assert "baseline" not in summary  # it never started


def test_an_error_stops_the_run_with_its_message_and_cause(tmp_path: Path) -> None:
    s = load_scenario("capacity_stream", ["run.ticks=10"])
    folder = RunFolder(s, tmp_path)
    with pytest.raises(RunStopped) as stop, folder.recording():
        folder.rows("memory").append({"t": 0})
        raise ValueError("host 3 died")
    assert stop.value.exit_code == 1 and isinstance(stop.value.__cause__, ValueError)
    summary = json.loads((folder.path / "summary.json").read_text())
    assert summary["stopped_by"] == "error: ValueError: host 3 died"
    assert summary["memory"] == {"ticks_done": 1, "last_row": {"t": 0}}


def test_ctrl_c_is_sigint(tmp_path: Path) -> None:
    folder = RunFolder(load_scenario("capacity_stream"), tmp_path)
    with pytest.raises(RunStopped) as stop, folder.recording():
        raise KeyboardInterrupt
    assert (stop.value.reason, stop.value.exit_code) == ("SIGINT", 130)
    summary = json.loads((folder.path / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGINT" and summary["complete"] is False


def raised_from(signal_exc: BaseException, error: Exception) -> None:
    """Raise ``error`` from ``signal_exc``, as CPython does when a signal handler's
    exception is pending as a C function returns ("returned a result with an exception
    set")."""
    try:
        raise signal_exc
    except BaseException as pending:
        raise error from pending


@pytest.mark.parametrize(
    ("pending", "stop"), [(Terminated(), ("SIGTERM", 143)), (KeyboardInterrupt(), ("SIGINT", 130))]
)
def test_a_signal_that_surfaces_as_a_system_error_still_stops_by_that_signal(
    tmp_path: Path, pending: BaseException, stop: tuple[str, int]
) -> None:
    """A SIGTERM or Ctrl-C that found the main thread inside Ray's C code came out as a
    SystemError raised from it; the run is still stopped by the signal (exit 143 or 130),
    not by an error (exit 1)."""
    folder = RunFolder(load_scenario("capacity_stream"), tmp_path)
    with pytest.raises(RunStopped) as stopped, folder.recording():
        raised_from(
            pending,
            SystemError("<built-in method __new__> returned a result with an exception set"),
        )
    assert (stopped.value.reason, stopped.value.exit_code) == stop
    assert json.loads((folder.path / "summary.json").read_text())["stopped_by"] == stop[0]


def test_an_error_with_no_signal_behind_it_stays_an_error(tmp_path: Path) -> None:
    folder = RunFolder(load_scenario("capacity_stream"), tmp_path)
    with pytest.raises(RunStopped) as stopped, folder.recording():
        try:
            raise ValueError("first")
        except ValueError as first:
            raise SystemError("second") from first
    assert stopped.value.exit_code == 1
    assert stopped.value.reason == "error: SystemError: second"


def test_an_ended_runs_files_are_on_the_disk_before_its_summary_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows were flushed to the kernel only: a power cut after a finished run could lose
    the last rows, or leave summary.json empty after its rename."""
    s = load_scenario("capacity_stream", ["run.ticks=2"])
    folder = RunFolder(s, tmp_path)
    rows = folder.rows("memory")
    rows.append({"t": 0, "score": 0.5})
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    folder.finish(RunResult(s.name, 0, 1, 4, 1, {"score": 0.5}, rows), None, plots=False)
    where = [Path(p).name for p in synced]
    assert where == ["ticks.jsonl", "summary.json.tmp", folder.path.name]  # rows, then summary
