"""The wheel holds every package under its import name, and nothing shadows the stdlib."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("hivemem-*.whl")
    return found


def test_wheel_layout(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "hivemem/platform/cli.py",
        "hivemem/memory_bus/store.py",
        "hivemem/memory_bus/policies/eviction.py",
        "hivemem/memory_bus/testing/contract.py",
        "hivemem/memory_bus/py.typed",
        "hivemem/agents/__init__.py",
        "hivemem/scenarios/__init__.py",
    ):
        assert required in names, required
    assert "hivemem/platform/__init__.py" not in names
    assert not any(n.startswith(("platform/", "memory_bus/", "tests/")) for n in names)


WHEEL_ONLY = """
import runpy, sys
# this environment's editable install of the checkout: without it, only the wheel is seen
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]

def main(*args):
    sys.argv = ["hivemem", *args]
    runpy.run_module("hivemem.platform.cli", run_name="__main__")

"""
"""Code that runs the ``hivemem`` command line from the wheel alone (on ``PYTHONPATH``):
the checkout's editable install made a namespace package's missing subpackage importable."""


def test_wheel_holds_every_source_file(wheel: Path) -> None:
    """Every module of the four source folders, subpackages too: ``platform/rl`` was
    missing from the packages list, and the wheel's ``hivemem`` command failed to start
    (its CLI imports the RL commands)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        f"hivemem/{path.relative_to(ROOT).as_posix()}"
        for folder in ("platform", "agents", "memory_bus", "scenarios")
        for path in (ROOT / folder).rglob("*.py")
    }
    assert len(sources) > 100
    assert sorted(sources - names) == []


def test_the_wheels_command_line_starts(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", WHEEL_ONLY + "main('train', '--help')"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Train a learned write or eviction policy" in proc.stdout


def test_wheel_imports_and_finds_package_data(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import importlib.resources, platform, hivemem.memory_bus.store as s;"
        "print(s.__file__);"
        "print(importlib.resources.files('hivemem.memory_bus').joinpath('py.typed').is_file());"
        "print(platform.system())"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out[0].startswith(str(tmp_path)), "imported the checkout, not the wheel"
    assert out[1] == "True"
    assert out[2] == "Linux", "the stdlib platform module was shadowed"
