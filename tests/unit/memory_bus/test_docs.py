"""The examples in docstrings run as written."""

from __future__ import annotations

import doctest

import pytest
from hivemem.memory_bus import embedder, registry, sharding, store


@pytest.mark.parametrize("module", [store, embedder, registry, sharding], ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, verbose=False)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0
