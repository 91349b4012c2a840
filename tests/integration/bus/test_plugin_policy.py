"""A plug-in eviction policy that answers out of its contract: the bus names it, and what
the failed write left is what a restart finds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.item import Item, NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore


class PastTheEnd:
    """Answers a position past its candidates."""

    name = "past-the-end"

    def select(self, candidates: list[Item], features: object, n: int, ctx: object) -> list[int]:
        return [len(candidates)]


class Raising:
    """Raises an error of its own."""

    name = "raising"

    def select(self, candidates: list[Item], features: object, n: int, ctx: object) -> list[int]:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("plugin", "refusal"),
    [("PastTheEnd", "answered"), ("Raising", "raised RuntimeError: boom")],
)
def test_a_policy_out_of_its_contract_is_named_and_a_restart_finds_what_it_left(
    tmp_path: Path, plugin: str, refusal: str
) -> None:
    """Both failed the write as ``internal error: ...``; each is refused as ``config``,
    naming the policy. Its row was in before the policy was asked, so the bus keeps the
    request's record, and the restarted bus holds what the running one held."""
    policy = f"{__name__}:{plugin}"
    config = StoreConfig(dim=8, private=TierConfig(capacity=2, eviction=policy))
    secret = new_secret()

    def texts(server: BusServer) -> list[str]:
        with MemoryClient(server.address, "alice", token_for(secret, "alice"), timeout=5) as c:
            return [item.text for item in c.scan("private", "alice").items]

    with BusServer(MemoryStore(config), secret=secret, journal=Journal(tmp_path, "always")) as bus:
        with MemoryClient(bus.address, "alice", token_for(secret, "alice"), timeout=5) as alice:
            for i in range(2):
                alice.write("private", "alice", NewItem(f"x{i}"), now=float(i))
            with pytest.raises(ConfigError, match=f"eviction policy '{policy}' {refusal}"):
                alice.write("private", "alice", NewItem("x2"), now=2.0)
            alice.ping()  # still serving
        before = texts(bus)
    with BusServer(MemoryStore(config), secret=secret, journal=Journal(tmp_path, "always")) as bus:
        assert texts(bus) == before == ["x0", "x1", "x2"]
