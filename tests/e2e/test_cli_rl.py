"""``hivemem train`` / ``eval`` / ``compare`` with a learned policy, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from .test_cli import PNG, hivemem, sets


def test_train_then_serve_the_policy_by_name(tmp_path: Path) -> None:
    out = tmp_path / "train"
    proc = hivemem(
        "train", "capacity_stream", "--controller", "eviction", "--workers", "0",
        "--iterations", "2", "--pairs", "2", "--episodes", "1", "--out", str(out),
        *sets("capacity_stream"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    policy = out / "policy.json"
    assert proc.stdout.strip().endswith(str(policy))
    assert "generation 2/2" in proc.stderr
    assert (out / "curve.png").read_bytes().startswith(PNG)
    doc = json.loads(policy.read_text())
    assert doc["controller"] == "eviction" and doc["meta"]["tier"] == "private"

    proc = hivemem(
        "eval", str(policy), "--seeds", "2", "--against", "lru", *sets("capacity_stream")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(scores) == {f"learned:{policy}", "lru"} and all(len(v) == 2 for v in scores.values())

    proc = hivemem(
        "compare", "capacity_stream", "--eviction", f"lru,learned:{policy}", "--seeds", "1",
        "--no-baseline", "--out", str(tmp_path / "cmp"), *sets("capacity_stream"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (tmp_path / "cmp").iterdir()
    results = json.loads((folder / "compare.json").read_text())
    assert 0 < results[f"eviction=learned:{policy}"]["memory"][0] <= 12 * 4  # capacity × agents
    # the learned policy ran in the bus: its score is the one `eval` measured on that seed
    assert results[f"eviction=learned:{policy}"]["score"][0] == scores[f"learned:{policy}"][0]


def test_a_corrupted_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "policy.json"
    bad.write_text('{"format": "hivemem-policy", "version": 1, "params": [1, 2]}')
    proc = hivemem("eval", str(bad))
    assert proc.returncode == 2 and "corrupted" in proc.stderr
    proc = hivemem(
        "run", "capacity_stream", "--no-baseline", "--out", str(tmp_path),
        "--set", f"memory.private.eviction=learned:{bad}",
    )  # fmt: skip
    assert proc.returncode != 0 and "corrupted" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_by_policy_gradient(tmp_path: Path) -> None:
    proc = hivemem(
        "train", "capacity_stream", "--method", "reinforce", "--iterations", "2",
        "--episodes", "2", "--workers", "1", "--out", str(tmp_path), *sets("capacity_stream"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iteration 2/2" in proc.stderr
    doc = json.loads((tmp_path / "policy.json").read_text())
    assert doc["meta"]["method"] == "reinforce" and any(p != 0 for p in doc["params"])
    assert (tmp_path / "curve.png").read_bytes().startswith(PNG)
    proc = hivemem("train", "capacity_stream", "--method", "reinforce", "--controller", "write")
    assert proc.returncode == 2 and "linear eviction policies only" in proc.stderr
