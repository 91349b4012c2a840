"""``hivemem train`` / ``eval`` refuse bad input in one line (exit 2) before Ray starts,
and ``eval`` finds the scenario a policy was trained on in its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import hivemem, sets

REPO = Path(__file__).parents[2]
POLICY = str(REPO / "docs" / "rl" / "capacity_stream-eviction-es.json")
QUICK = ["--workers", "0", "--iterations", "1", "--episodes", "1"]
"""Were a setting let through, training would end in seconds (and in this process)."""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--method", "reinforce", "--episodes", "0"], "episodes must be >= 1"),
        (["--method", "reinforce", "--iterations", "0"], "iterations must be >= 1"),
        (["--method", "reinforce", "--workers", "-1"], "workers must be >= 0"),
        (["--method", "reinforce", "--pairs", "3"], "does not use --pairs"),
        (["--method", "reinforce", "--sigma", "0.1"], "does not use --sigma"),
        (["--method", "reinforce", "--resume"], "does not use --resume"),
        (["--iterations", "0"], "iterations must be >= 1"),
        (["--workers", "-1"], "workers must be >= 0"),
        (["--tier", "shared"], "shared tier of 'capacity_stream' has no capacity"),
        (["--method", "reinforce", "--tier", "shared"], "has no capacity"),
        (["--out", "/proc/forbidden", "--workers", "0"], "cannot create the output folder"),
        (["--address", "127.0.0.1:1", *QUICK], "--address 127.0.0.1:1 needs rollout workers"),
        (["--memory-cost", "nan", *QUICK], "memory_cost must be finite, got nan"),
        (["--lr", "inf", *QUICK], "lr must be finite and > 0, got inf"),
        (["--sigma", "inf", *QUICK], "sigma must be finite and > 0, got inf"),
        (["--method", "reinforce", "--memory-cost", "-inf", *QUICK], "memory_cost must be finite"),
        (["--method", "reinforce", "--lr", "inf", *QUICK], "lr must be finite and > 0"),
    ],
)
def test_train_refuses_bad_settings_before_ray(args: list[str], says: str) -> None:
    proc = hivemem("train", "capacity_stream", *args, *sets("capacity_stream"), timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    # one line: no traceback, and no Ray started (it would log its start)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and says in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seeds", "0"], "seeds must be >= 1"),
        (["--seeds", "-2"], "seeds must be >= 1"),
        (["--against", "nosuchpolicy"], "unknown eviction policy 'nosuchpolicy'"),
        (["--against", "lru,fifo,lru"], "policy 'lru' named more than once"),
        (["--against", ""], "unknown eviction policy ''"),
    ],
)
def test_eval_refuses_bad_settings(args: list[str], says: str) -> None:
    # episodes so long that one run before the check would time the command out
    long = ["--set", "run.ticks=500000"]
    proc = hivemem("eval", POLICY, *args, *sets("capacity_stream"), *long, timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr
    assert proc.stdout == ""


def test_eval_refuses_a_checkpoint_with_nan(tmp_path: Path) -> None:
    doc = json.loads(Path(POLICY).read_text())
    doc["params"][0] = float("nan")
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps(doc))
    proc = hivemem("eval", str(bad), timeout=60)
    assert proc.returncode == 2 and "not finite" in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1


def test_eval_runs_a_policy_on_the_scenario_it_was_trained_on(tmp_path: Path) -> None:
    """Trained from a file with --set; the file is gone when eval runs."""
    text = (REPO / "scenarios" / "capacity_stream.yaml").read_text()
    source = tmp_path / "mine.yaml"
    source.write_text(text.replace("name: capacity_stream", "name: mine"))
    out = tmp_path / "train"
    proc = hivemem(
        "train", str(source), "--workers", "0", "--iterations", "1", "--pairs", "1",
        "--episodes", "1", "--out", str(out), "--set", "run.ticks=12", "--set", "agents.0.count=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    source.unlink()
    proc = hivemem("eval", str(out / "policy.json"), "--seeds", "1", "--against", "lru")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mine: eviction on the private tier" in proc.stdout
    scores = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(scores) == {f"learned:{out / 'policy.json'}", "lru"}


def test_reinforce_in_this_process_with_one_episode(tmp_path: Path) -> None:
    """--workers 0 runs without Ray; one episode per step still learns (a leave-one-out
    baseline); --memory-cost is honoured; no training state is written."""
    proc = hivemem(
        "train", "capacity_stream", "--method", "reinforce", "--workers", "0",
        "--iterations", "1", "--episodes", "1", "--memory-cost", "0.01",
        "--out", str(tmp_path), *sets("capacity_stream"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "policy.json").read_text())
    assert any(p != 0 for p in doc["params"])
    assert doc["meta"]["config"]["memory_cost"] == 0.01 and doc["meta"]["resolved_scenario"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "policy.json"]


FAILING_POLICY = '''
from hivemem.memory_bus.errors import HivememError


class Failing:
    """Builds (so eval takes its name), then fails at its first eviction."""

    name = "failing"

    def select(self, candidates, features, n, ctx):
        raise HivememError("the failing policy failed at its first eviction")
'''


def test_eval_failing_in_the_middle_of_its_episodes_exits_1_not_2(tmp_path: Path) -> None:
    """Exit 2 says the command line was wrong; eval gave it for a failure in the middle
    of the episodes too, after every name had been checked."""
    (tmp_path / "failing_policy.py").write_text(FAILING_POLICY)
    checkpoint = REPO / "docs" / "rl" / "capacity_stream-eviction-es.json"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "hivemem.platform.cli", "eval", str(checkpoint), "--seeds", "1",
            "--against", "failing_policy:Failing", "--set", "run.ticks=12",
        ],
        capture_output=True, text=True, timeout=240, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "error: the failing policy failed at its first eviction"
    ]
    bad = subprocess.run(
        [
            sys.executable, "-m", "hivemem.platform.cli", "eval", str(checkpoint), "--seeds", "1",
            "--against", "failing_policy:Nothing",
        ],
        capture_output=True, text=True, timeout=240, check=False, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: "), bad.stderr[-3000:]
