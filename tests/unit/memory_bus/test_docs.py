"""The examples in docstrings run as written."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
from hivemem.memory_bus import embedder, registry, sharding, store
from hivemem.memory_bus.errors import HivememError


@pytest.mark.parametrize("module", [store, embedder, registry, sharding], ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, verbose=False)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0


def test_the_architecture_page_lists_every_module_of_the_bus() -> None:
    """docs/architecture.md's module lists name every module of ``memory_bus/`` and no
    module that is gone (a split or a rename must update the map readers navigate by)."""
    root = Path(__file__).resolve().parents[3]
    page = (root / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^(\w+\.py)\s", page, flags=re.MULTILINE))
    modules = {p.name for p in (root / "memory_bus").glob("*.py")} - {"__init__.py"}
    assert modules - listed == set(), "modules the page does not list"
    assert listed - modules == set(), "modules the page lists that are gone"


def test_the_protocol_page_gives_the_limits_the_code_enforces() -> None:
    """Each row of docs/protocol.md's "Limits" states the constant the code holds
    (the live check that each is enforced with its code: test_protocol_doc.py)."""
    from hivemem.memory_bus import protocol
    from hivemem.memory_bus.config import MAX_HOPS
    from hivemem.memory_bus.item import DEFAULT_LIMITS as L
    from hivemem.memory_bus.validation import as_k

    page = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()
    limits = page.split("## Limits\n", 1)[1].split("\n## ", 1)[0]
    rows = {ln.split(" | ")[0][2:]: ln for ln in limits.splitlines() if ln.startswith("| ")}
    unpack = protocol._UNPACK_LIMITS
    assert protocol.MAX_MESSAGE_BYTES == 16 * 2**20 and "16 MiB" in rows["message"]
    assert L.max_batch == protocol.MAX_BATCH
    assert f"{L.max_batch:,} (`MAX_BATCH`)" in rows["entries in a batch"]
    assert f"{L.max_text_chars:,} characters" in rows["text"]
    meta = rows["meta"]
    assert f"{L.max_meta_keys} keys" in meta and f"at most {L.max_meta_depth} maps" in meta
    assert f"{L.max_meta_str_chars:,} characters" in meta
    decoding = rows["msgpack while decoding"]
    assert unpack["max_str_len"] == 2**20 and "strings 1 MiB" in decoding
    assert f"arrays {unpack['max_array_len']:,}" in decoding
    assert f"maps {unpack['max_map_len']:,} entries" in decoding and unpack["max_ext_len"] == 0
    assert as_k(1000) == 1000 and "1 … 1,000" in rows["`k`"]
    with pytest.raises(HivememError):
        as_k(1001)
    assert f"1 … {L.max_batch:,}" in rows["`limit` of `scan` and `edges`"]
    assert f"0 … {MAX_HOPS}" in rows["`hops` of `retrieve`"]
    assert (
        f"1 … {L.max_meta_str_chars:,} characters"
        in rows["an edge's `type` (`add_edge`; `promote`'s `edge_type`)"]
    )
