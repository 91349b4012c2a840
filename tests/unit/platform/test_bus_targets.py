"""The Prometheus targets files of cluster runs' bus actors: a driver killed with
SIGKILL never removes its own, and ``HivememBusDown`` fired for ever for bus actors that
were gone. Each file names its driver's pid, and the next run removes those of dead
drivers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from hivemem.platform.runner import write_bus_targets


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_run_removes_the_targets_of_dead_drivers_only(tmp_path: Path) -> None:
    killed = tmp_path / f"{exited_pid()}-aaaa1111.json"  # a driver killed mid-run left it
    alive = tmp_path / f"{os.getppid()}-bbbb2222.json"  # another driver, still running
    other = tmp_path / "notes.json"  # not a driver's: left alone
    for path in (killed, alive, other):
        path.write_text("[]")
    found = [{"metrics": "10.0.0.7:41234", "address": "tcp://10.0.0.7:7000", "node": "n"}]
    path = write_bus_targets("relay_qa", "cccc3333", found, directory=tmp_path)
    assert path == tmp_path / f"{os.getpid()}-cccc3333.json"
    assert json.loads(path.read_text()) == [
        {"targets": ["10.0.0.7:41234"], "labels": {"scenario": "relay_qa"}}
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, alive.name, other.name])
