"""A shard knows which shard it is: its data directory keeps its place in the bus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import ConfigError, HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.placement import shard_of
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

CONFIG = StoreConfig(dim=32, shared=TierConfig(capacity=1000))


def _server(data: Path, secret: bytes, shard: tuple[int, int] | None) -> BusServer:
    store = MemoryStore(CONFIG) if shard is None else MemoryStore(CONFIG).as_shard(*shard)
    return BusServer(store, secret=secret, journal=Journal(data, "no"))


def _owner(server: BusServer) -> str:
    """An agent whose private namespace this shard owns (a shard makes no other)."""
    index, count = server.store.shard
    return next(a for a in (f"agent-{i}" for i in range(100)) if shard_of(a, count) == index)


def _write(server: BusServer, secret: bytes, texts: list[str]) -> dict[int, str]:
    agent = _owner(server)
    with MemoryClient(server.address, agent, token_for(secret, agent), timeout=5.0) as c:
        return {c.write("private", agent, NewItem(t), now=0.0).item_id: t for t in texts}


def _read(server: BusServer, secret: bytes) -> dict[int, str]:
    agent = _owner(server)
    with MemoryClient(server.address, agent, token_for(secret, agent), timeout=5.0) as c:
        return {i.id: i.text for i in c.scan("private", agent).items}


def test_a_shard_restarted_as_another_shard_is_refused(tmp_path: Path) -> None:
    """Shard 1 of 2 restarted on its data dir as shard 0 of 2, or unsharded, replayed its
    writes with the other spacing: the ids its clients were told named other items."""
    secret = new_secret()
    with _server(tmp_path, secret, (1, 2)) as first:
        acked = _write(first, secret, ["a", "b", "c"])
    assert sorted(acked) == [2, 4, 6]
    for other, named in (((0, 2), r"\(0, 2\)"), (None, r"\(0, 1\)"), ((1, 3), r"\(1, 3\)")):
        with pytest.raises(HivememError, match=rf"shard \(1, 2\).*{named}") as info:
            _server(tmp_path, secret, other).start()
        assert isinstance(info.value.__cause__, ConfigError)
    with _server(tmp_path, secret, (1, 2)) as again:  # its own place: served as before
        assert _read(again, secret) == acked
        acked |= _write(again, secret, ["d"])
    assert sorted(acked) == [2, 4, 6, 8]


def test_an_unsharded_data_dir_stays_unsharded(tmp_path: Path) -> None:
    """A directory written unsharded (the record made by its first start) is refused as a
    shard; one from before the record was kept is taken as unsharded, and gets it."""
    secret = new_secret()
    with _server(tmp_path, secret, None) as first:
        acked = _write(first, secret, ["a", "b"])
    with pytest.raises(HivememError, match=r"shard \(0, 1\).*\(1, 2\)"):
        _server(tmp_path, secret, (1, 2)).start()
    assert json.loads((tmp_path / "shard.json").read_text()) == {"index": 0, "count": 1}
    (tmp_path / "shard.json").unlink()  # as an older hivemem left it
    with pytest.raises(HivememError, match=r"shard \(0, 1\).*\(0, 2\)"):
        _server(tmp_path, secret, (0, 2)).start()
    with _server(tmp_path, secret, None) as again:
        assert _read(again, secret) == acked
    assert (tmp_path / "shard.json").exists()


def test_a_new_data_dir_takes_the_place_of_its_first_start(tmp_path: Path) -> None:
    secret = new_secret()
    with _server(tmp_path, secret, (2, 3)) as first:
        acked = _write(first, secret, ["a"])
    assert json.loads((tmp_path / "shard.json").read_text()) == {"index": 2, "count": 3}
    with _server(tmp_path, secret, (2, 3)) as again:
        assert _read(again, secret) == acked == {3: "a"}
