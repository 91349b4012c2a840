"""A ``"module:Class"`` plug-in name that the module does not hold: the "did you mean"
and the known names are what a user could mean (the module's own classes and
functions), and a name of something else there (a module it imports, a constant) is
refused at once. Through ``hivemem validate``, the plug-in a module in a temporary
folder on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGINS = '''"""Plug-ins of one's own."""

import json
from typing import Any

import numpy as np
from hivemem.memory_bus.policies.eviction import LRUPolicy
from hivemem.scenarios.relay_qa import RelayQA

_SEEN: dict[str, Any] = {}
LIMIT = 3


class OldestFirst:
    name = "oldest_first"

    def select(self, candidates, features, n, ctx):
        return list(range(n))


class OldestLast(OldestFirst):
    name = "oldest_last"


def make_policy(**params: Any) -> OldestFirst:
    return OldestFirst()


class Relay(RelayQA):
    pass
'''
EXPORTS = """from my_plugins import OldestFirst, make_policy

__all__ = ["OldestFirst", "LIMIT"]
LIMIT = 3
"""
"""A module that names what it offers: imported, and not all callable."""
ROOT = Path(__file__).resolve().parents[3]
OWN = "(my_plugins defines: OldestFirst, OldestLast, Relay, make_policy)"


def validate(folder: Path, *files: Path) -> str:
    """``hivemem validate FILES`` with ``folder`` on PYTHONPATH; its stderr."""
    env = {**os.environ, "PYTHONPATH": str(folder), "COLUMNS": "250", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hivemem.platform.cli", "validate", *map(str, files)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def scenario(folder: Path, name: str, *edits: tuple[str, str]) -> Path:
    text = (ROOT / "scenarios" / "relay_qa.yaml").read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(stderr: str, path: str) -> list[str]:
    """The lines of ``stderr`` that report a problem at ``path``."""
    return [x for x in stderr.splitlines() if x.strip().startswith(f"- {path} ")]


def problem(stderr: str, path: str) -> str:
    [line] = problems(stderr, path)
    return line


def test_a_misspelt_plugin_name_is_offered_the_modules_own_classes_and_functions(
    tmp_path: Path,
) -> None:
    """The known names listed the module's dunders (``__builtins__``, ``__doc__``...),
    what it imports (``np``, ``json``, ``Any``, ``LRUPolicy``) and its private names, and
    offered ``'json'`` for ``jsn``; ``np``, ``LIMIT`` and ``__doc__`` passed ``validate``
    (an agent type or task family of them failed later, in the run or in Ray)."""
    (tmp_path / "my_plugins.py").write_text(PLUGINS, encoding="utf-8")
    policies = scenario(
        tmp_path,
        "policies",
        ("eviction: lru", 'eviction: "my_plugins:OldestFrist"'),
        ("write_policy: dedup", 'write_policy: "my_plugins:jsn"'),
        ("type: fact_memory", 'type: "my_plugins:np"'),
        ("type: fact_memory", 'type: "my_plugins:LIMIT"'),
    )
    family = scenario(tmp_path, "family", ("family: relay_qa", 'family: "my_plugins:Rely"'))
    doc = scenario(tmp_path, "doc", ("family: relay_qa", 'family: "my_plugins:__doc__"'))
    (tmp_path / "my_constants.py").write_text("import json\n\nLIMIT = 3\n", encoding="utf-8")
    none = scenario(tmp_path, "none", ("eviction: lru", 'eviction: "my_constants:Policy"'))
    (tmp_path / "my_exports.py").write_text(EXPORTS, encoding="utf-8")
    listed = scenario(tmp_path, "listed", ("type: fact_memory", 'type: "my_exports:Oldest"'))
    stderr = validate(tmp_path, policies, family, doc, none, listed)

    exported = problems(stderr, "agents.0.type")[1]  # of listed.yaml
    assert exported.endswith(
        "'my_exports:Oldest'; did you mean 'my_exports:OldestFirst'? "
        "(my_exports defines: OldestFirst)"
    )
    misspelt, nothing = problems(stderr, "memory.shared.eviction")  # policies, none
    assert misspelt.endswith(
        "unknown eviction policy 'my_plugins:OldestFrist'; "
        f"did you mean 'my_plugins:OldestFirst' or 'my_plugins:OldestLast'? {OWN}"
    )
    line = problem(stderr, "memory.shared.write_policy")
    assert line.endswith(f"unknown write policy 'my_plugins:jsn' {OWN}")
    assert problems(stderr, "agents.0.type")[0].endswith(
        "agent type 'my_plugins:np' is a module, not a class or a function"
    )
    assert problem(stderr, "agents.1.type").endswith(
        "agent type 'my_plugins:LIMIT' is an int, not a class or a function"
    )
    rely, dunder = problems(stderr, "task.family")  # of family.yaml, then of doc.yaml
    assert rely.endswith(
        f"unknown task family 'my_plugins:Rely'; did you mean 'my_plugins:Relay'? {OWN}"
    )
    assert dunder.endswith("task family 'my_plugins:__doc__' is a str, not a class or a function")
    assert nothing.endswith(
        "unknown eviction policy 'my_constants:Policy' (my_constants defines: none)"
    )
    assert "__builtins__" not in stderr and "_SEEN" not in stderr
