"""Bad input to ``hivemem`` ends in one ``error: ...`` line (no traceback), before Ray
starts where the command would start it, and ``--metrics-port 0`` says the port it got."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli import RAY_STARTING, hivemem

CLI = [sys.executable, "-m", "hivemem.platform.cli"]


def ours(stderr: str) -> list[str]:
    """The lines of ``stderr`` that hivemem wrote (not Ray's start-up log)."""
    return [line for line in stderr.splitlines() if not RAY_STARTING.search(line)]


def one_error(proc: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    """``proc`` exited with ``code`` after one ``error:`` line saying ``says``, and no Ray."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Started a local Ray" not in proc.stderr
    (line,) = ours(proc.stderr)
    assert line.startswith("error: ") and says in line, line


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another socket holds (listening) while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_run_on_a_metrics_port_in_use_is_one_line(busy_port: int, tmp_path: Path) -> None:
    port = str(busy_port)
    proc = hivemem("run", "relay_qa", "--metrics-port", port, "--out", str(tmp_path), timeout=60)
    one_error(proc, 1, f"cannot serve /metrics on 127.0.0.1:{busy_port} (--metrics-port)")


def test_run_on_a_metrics_host_that_is_no_address_is_one_line(tmp_path: Path) -> None:
    proc = hivemem(
        "run", "relay_qa", "--metrics-port", "0", "--metrics-host", "256.1.1.1",
        "--out", str(tmp_path), timeout=60,
    )  # fmt: skip
    one_error(proc, 1, "cannot serve /metrics on 256.1.1.1:0 (--metrics-port)")


@pytest.mark.parametrize("command", ["run", "compare"])
def test_an_out_that_is_a_file_is_refused_before_ray(command: str, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    scenario = ["relay_qa"] if command == "run" else ["capacity_stream", "--eviction", "lru"]
    proc = hivemem(command, *scenario, "--out", str(a_file), "--set", "run.ticks=1", timeout=60)
    one_error(proc, 2, f"cannot create the output folder {a_file} (--out)")


def test_schema_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "schema.json"
    one_error(hivemem("schema", "--out", str(target)), 2, f"cannot write {target} (--out)")


def test_run_says_the_metrics_port_it_got(tmp_path: Path) -> None:
    """--metrics-port 0 is any free port: the line says which, not ':0'."""
    proc = hivemem(
        "run", "relay_qa", "--metrics-port", "0", "--no-progress", "--out", str(tmp_path),
        "--set", "run.ticks=1", "--set", "agents.0.count=1", "--set", "agents.1.count=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proc.stderr)
    assert found is not None, proc.stderr[-3000:]
    assert int(found.group(1)) > 0


def test_bus_serve_says_where_its_metrics_are(tmp_path: Path) -> None:
    """The "serving on" line names the /metrics address, with the port it got; the
    address answers a scrape with the bus's series."""
    serve = subprocess.Popen(
        [*CLI, "bus", "serve", "--port", "0", "--pub-port", "0", "--metrics-port", "0",
         "--spin-us", "0", "--secret-file", str(tmp_path / "secret")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert serve.stderr is not None
        line = ""
        for line in serve.stderr:  # the server's log lines come first
            if "serving on" in line:
                break
        found = re.search(r"metrics on (http://127\.0\.0\.1:(\d+)/metrics)", line)
        assert found is not None, line
        assert int(found.group(2)) > 0
        with urllib.request.urlopen(found.group(1), timeout=30) as page:
            assert "hivemem_bus_" in page.read().decode()
    finally:
        serve.terminate()
        serve.communicate(timeout=60)


def test_compare_refuses_eviction_on_a_tier_with_no_capacity(tmp_path: Path) -> None:
    """capacity_stream's graph tier holds everything: every eviction policy would give
    the same rows."""
    proc = hivemem(
        "compare", "capacity_stream", "--tier", "graph", "--eviction", "lru,fifo",
        "--out", str(tmp_path), timeout=60,
    )  # fmt: skip
    one_error(proc, 2, "graph tier of 'capacity_stream' has no capacity")
    assert not any(tmp_path.iterdir())


def test_train_resume_with_no_saved_state_is_refused(tmp_path: Path) -> None:
    """A mistyped --out with --resume would otherwise train from scratch, quietly."""
    typo = tmp_path / "typo"
    proc = hivemem(
        "train", "capacity_stream", "--resume", "--out", str(typo), "--workers", "0",
        "--iterations", "1", "--pairs", "1", "--set", "run.ticks=5", timeout=60,
    )  # fmt: skip
    one_error(proc, 2, f"{typo}")
    assert "train_state.json" in proc.stderr and "--resume" in proc.stderr
    assert not (typo / "policy.json").exists()
