"""A worker node of a 4-node Ray cluster killed mid-run (between ticks, and between the
hosts' step and commit): the hosts on it restart on the other nodes and the run's rows
equal those of an undisturbed run on the same cluster.

It runs ``benchmarks/node_loss.py --quick`` in its own process: that process must be the
cluster's driver (a process joins one Ray cluster, and the test session has its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "node_loss.py"


def test_a_lost_node_moves_its_hosts_and_changes_no_result() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["clean"]["nodes_used"] >= 2, "hosts were not spread over the nodes"
    for phase in ("before_tick", "before_commit"):
        run = figures[phase]
        assert run["hosts_on_removed_node"] >= 1, phase
        assert run["hosts_left_on_removed_node"] == 0, phase
        assert run["host_restarts"] >= 1, phase
        assert run["same_summary"] and run["same_rows"], phase
