"""The shards of a bus as named Ray actors: joined only when they are the bus asked for."""

from __future__ import annotations

from typing import Any

import pytest
from hivemem.memory_bus.auth import new_secret
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import ConfigError

pytestmark = pytest.mark.usefixtures("ray_session")


def _end(actors: list[Any], group: Any) -> None:
    import ray
    from hivemem.memory_bus.ray_actor import remove_placement

    for actor in actors:
        ray.kill(actor, no_restart=True)
    remove_placement(group)


def test_shards_left_under_a_name_are_joined_only_if_they_serve_the_same_bus() -> None:
    """``start_bus_shards`` joined leftover actors of the same names whatever their
    secret and shard count: one bus then mixed two secrets and handed out the same ids
    on two shards."""
    import ray
    from hivemem.memory_bus.ray_actor import start_bus_shards

    secret, config = new_secret(), StoreConfig(dim=16)
    actors, found, group = start_bus_shards(config, secret, 2, name="shards-twice")
    try:
        for secret_, count, differs in (
            (new_secret(), 2, r"another secret"),
            (secret, 3, r"another shard \(0, 2\) \(asked \(0, 3\)\)"),
            (secret, 1, r"another shard \(0, 2\) \(asked \(0, 1\)\)"),
        ):
            with pytest.raises(ConfigError, match=differs) as info:
                start_bus_shards(config, secret_, count, name="shards-twice")
            assert "shards-twice-0" in info.value.message
        with pytest.raises(ConfigError, match="store configuration"):
            start_bus_shards(StoreConfig(dim=32), secret, 2, name="shards-twice")
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        assert "shards-twice-2" not in names  # the refused start left no new shard behind
        again, same, other_group = start_bus_shards(config, secret, 2, name="shards-twice")
        assert [f["address"] for f in same] == [f["address"] for f in found]
        assert [a._actor_id for a in again] == [a._actor_id for a in actors]
        _end([], other_group)
    finally:
        _end(actors, group)
