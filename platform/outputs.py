"""What a run leaves behind: its folder of outputs, and the confidence intervals its reports
print (``hivemem run``, ``hivemem compare``, ``hivemem rl evaluate``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from hivemem.memory_bus.errors import ConfigError
from hivemem.platform.runner import RunResult
from hivemem.platform.scenario import Scenario, dump_resolved
from hivemem.platform.ticks import TickRows


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM within :func:`stopping` (like KeyboardInterrupt,
    not an ``Exception``, so no ``except Exception`` on the way swallows it)."""


class RunStopped(Exception):
    """A run (or a comparison of runs) stopped early, by a signal or an error.

    Attributes:
        reason: ``"SIGINT"``, ``"SIGTERM"`` or ``"error: ..."``.
        exit_code: What the command should exit with (130, 143 or 1).
    """

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def stopping() -> Iterator[None]:
    """Within: Ctrl-C raises :class:`RunStopped` ``("SIGINT", 130)``, and SIGTERM (in the
    main thread) ``("SIGTERM", 143)``, each from where the signal found the code, so the
    ``finally`` blocks on the way out (the runner's hosts and bus) run."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        yield
    except KeyboardInterrupt:
        raise RunStopped("SIGINT", 130) from None
    except Terminated:
        raise RunStopped("SIGTERM", 143) from None
    except Exception as exc:
        # A signal that finds the main thread inside a C extension (Ray's ray.get) may
        # come out as another error raised from it: "SystemError: <built-in method
        # __new__ ...> returned a result with an exception set". Still the signal.
        cause = signal_behind(exc)
        if cause is None:
            raise
        stop = ("SIGINT", 130) if isinstance(cause, KeyboardInterrupt) else ("SIGTERM", 143)
        raise RunStopped(*stop) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def signal_behind(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or :class:`Terminated` ``exc`` was raised from or while
    handling (its causes and contexts, followed back), if any."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (KeyboardInterrupt, Terminated)):
            return current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


def make_folder(out: Path, flag: str | None = None) -> None:
    """Create the output folder ``out`` (and its parents) if missing: a command checks
    it before it starts Ray, which takes seconds, rather than fail at the end of that.

    Args:
        out: The folder.
        flag: The option that named it (``--out``), for the message.

    Raises:
        ConfigError: it cannot be created (no permission, a file in the way...).
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        named = f" ({flag})" if flag else ""
        raise ConfigError(
            f"cannot create the output folder {out}{named}: {exc.strerror or exc}", path=str(out)
        ) from exc


class RunFolder:
    """A run's folder, made before the run starts, so each tick's row lands as it ends.

    ``scenario.yaml`` is written at once; ``ticks.jsonl`` (and ``baseline_ticks.jsonl``
    for the no-memory baseline) get a row per finished tick; ``summary.json`` and the
    plots come at the end (:meth:`finish`), or a summary of what was done when the run
    stops early (:meth:`stopped`). Until then ``summary.json`` says the run has not
    ended (``"complete": false``, ``"stopped_by": null``, and the process's ``pid``): a
    run killed outright (SIGKILL, the out-of-memory killer, a lost machine) keeps that
    summary, and its tick files hold every row it finished. Each summary replaces the
    last whole (written aside, then renamed), so a kill mid-write leaves the old one.
    """

    def __init__(self, scenario: Scenario, out_dir: Path) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{scenario.name}-s{scenario.run.seed}-{stamp}-{uuid.uuid4().hex[:4]}"
        self.path = out_dir / name
        self.path.mkdir(parents=True, exist_ok=False)
        (self.path / "scenario.yaml").write_text(dump_resolved(scenario), encoding="utf-8")
        self._scenario = scenario
        self._files: list[TextIO] = []
        self._rows: dict[str, TickRows] = {}
        self._write_summary({**self._head(), "stopped_by": None, "pid": os.getpid()})

    def _head(self) -> dict[str, Any]:
        """What every summary of a run that did not finish starts with."""
        run = self._scenario.run
        return {"scenario": self._scenario.name, "seed": run.seed, "ticks": run.ticks,
                "complete": False}  # fmt: skip

    def rows(self, label: str) -> TickRows:
        """The rows of the run called ``label`` ("memory" or "baseline"), written here."""
        name = "ticks.jsonl" if label == "memory" else f"{label}_ticks.jsonl"
        fh = (self.path / name).open("w", encoding="utf-8")
        self._files.append(fh)
        self._rows[label] = TickRows(fh)
        return self._rows[label]

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Run inside this: a run that stops early still gets its ``summary.json``.

        SIGTERM stops the run as Ctrl-C does (the runner's hosts and bus are closed on
        the way out). Stopping by either signal, or by an error, writes what was done and
        raises :class:`RunStopped`, chained to the error if there was one.
        """
        try:
            with stopping():
                yield
        except RunStopped as stop:
            self.stopped(stop.reason)
            raise
        except Exception as exc:
            reason = f"error: {type(exc).__name__}: {exc}"
            self.stopped(reason)
            raise RunStopped(reason, 1) from exc

    def finish(self, result: RunResult, baseline: RunResult | None, plots: bool) -> Path:
        """Write ``summary.json`` (and the plots) of a run that ran every tick."""
        self.close()
        summary = {**result.to_json(), "complete": True}
        if baseline is not None:
            summary["baseline"] = baseline.summary
            summary["baseline_seconds"] = baseline.seconds  # the printed table shows it
        self._write_summary(summary)
        if plots:
            from hivemem.platform.plots import run_plots

            run_plots(self.path, result, baseline)
        return self.path

    def stopped(self, reason: str) -> Path:
        """Write ``summary.json`` of a run stopped early: how far each part got, and why."""
        self.close()
        summary = {**self._head(), "stopped_by": reason}
        for label, rows in self._rows.items():
            last = rows[-1] if rows else None
            summary[label] = {"ticks_done": len(rows), "last_row": last}
        self._write_summary(summary)
        return self.path

    def progress(self) -> str:
        """How far each part got, e.g. ``"memory 120 ticks, baseline 0 ticks"``."""
        return ", ".join(f"{label} {len(rows)} ticks" for label, rows in self._rows.items())

    def close(self) -> None:
        """Close the tick files, on the disk: every row was flushed to the kernel as it
        came (a killed run keeps them), and an ended run's rows survive a power cut too."""
        for fh in self._files:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        self._files.clear()

    def _write_summary(self, summary: dict[str, Any]) -> None:
        """Replace ``summary.json`` whole and durably: written aside, synced, renamed,
        and the folder synced (else a power cut could leave an empty file in its place)."""
        from hivemem.memory_bus.data_files import replace_durably

        replace_durably(self.path / "summary.json", json.dumps(summary, indent=2, sort_keys=True))


NOTHING_ASKED = "no questions"
"""How a table shows a measure of questions none of which was asked (None)."""


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (Student t)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    from scipy import stats

    return mean, float(stats.t.ppf(0.975, n - 1) * math.sqrt(var / n))
