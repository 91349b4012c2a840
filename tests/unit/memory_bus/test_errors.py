"""hivemem's errors cross processes: Ray pickles an error raised in an agent host (or any
actor) to raise it again in the driver, so every one must survive a pickle round trip."""

from __future__ import annotations

import importlib
import inspect
import pickle
from pathlib import Path
from typing import Any

import pytest
from hivemem.memory_bus.errors import HivememError

MODULES = [
    "hivemem.memory_bus.errors",
    "hivemem.memory_bus.protocol",
    "hivemem.memory_bus.requests",
    "hivemem.memory_bus.sharding",
    "hivemem.memory_bus.data_dir_lock",
    "hivemem.memory_bus.journal_frames",
    "hivemem.platform.scenario_problems",
    "hivemem.platform.rl.envs",
]
"""Every module that defines a HivememError subclass."""


def _problems() -> list[Any]:
    from hivemem.platform.scenario_problems import Problem

    return [Problem("run.ticks", "required, missing", 3)]


SAMPLES: dict[str, Any] = {
    "message": "something went wrong",
    "kind": "eviction policy",
    "name": "lur",
    "choices": ["lru", "lfu", "fifo"],
    "module": "my_plugins",
    "field": "items[2].text",
    "reason": "must not be empty",
    "expected": 4,
    "got": 7,
    "limit": 10,
    "agent_id": "alice",
    "tier": "graph",
    "namespace": "red",
    "action": "write",
    "item_id": 34,
    "edge_id": 5,
    "actual": 9,
    "path": Path("/data/journal.log"),
    "outcome": "nothing was applied",
    "holder": "4242",
    "offset": 128,
    "found": 12,
    "code": "bad_frame",
    "source": "my.yaml",
    "problems": _problems,
}
"""A value for each constructor parameter of the errors (a callable: called for it)."""


def subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


def every_error_class() -> list[type[HivememError]]:
    for module in MODULES:
        importlib.import_module(module)
    classes = [HivememError, *subclasses(HivememError)]
    return sorted(set(classes), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def example(cls: type[HivememError]) -> HivememError:
    """An instance of ``cls`` built through its own constructor, with details."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self":
            continue
        if p.kind is p.VAR_KEYWORD:
            kwargs["extra"] = 1
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        assert p.name in SAMPLES, f"{cls.__name__}: add a sample for {p.name!r}"
        value = SAMPLES[p.name]
        args.append(value() if callable(value) else value)
    return cls(*args, **kwargs)


def test_the_walk_finds_the_errors_with_their_own_constructors() -> None:
    names = {c.__name__ for c in every_error_class()}
    assert {"ItemNotFoundError", "AccessDeniedError", "InvalidInputError", "ProtocolError"} <= names
    assert {"ScenarioError", "JournalSyncError", "UnknownNameError"} <= names


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda c: c.__name__)
def test_every_error_survives_a_pickle_round_trip(cls: type[HivememError]) -> None:
    exc = example(cls)
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is cls
    assert str(copy) == str(exc) and copy.args == exc.args
    assert copy.message == exc.message and copy.details == exc.details
    assert copy.code == exc.code
    assert vars(copy) == vars(exc)  # field, suggestions, problems, ... too


def test_a_round_trip_keeps_attributes_set_after_construction() -> None:
    from hivemem.memory_bus.errors import InvalidInputError, in_row

    exc = in_row(InvalidInputError("text", "must not be empty"), 3)
    copy = pickle.loads(pickle.dumps(exc))
    assert str(copy) == "invalid items[3].text: must not be empty"
    assert copy.field == "items[3].text" and copy.details["row"] == 3
