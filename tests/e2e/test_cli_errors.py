"""Bad input to ``hivemem`` ends in one ``error: ...`` line (no traceback), before Ray
starts where the command would start it."""

from __future__ import annotations

import socket
import subprocess
import sys
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
