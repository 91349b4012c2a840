"""The bus as a named Ray actor: found by name, served over ZeroMQ."""

from __future__ import annotations

import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.item import NewItem

pytestmark = pytest.mark.usefixtures("ray_session")


def test_named_bus_actor() -> None:
    import ray
    from hivemem.memory_bus.ray_actor import find_bus_actor, start_bus_actor

    secret = new_secret()
    actor, addrs = start_bus_actor(StoreConfig(dim=16), secret, name="bus-test", host="127.0.0.1")
    try:
        _again, same = start_bus_actor(
            StoreConfig(dim=16), secret, name="bus-test", host="127.0.0.1"
        )
        assert same == addrs  # joined the running actor, did not start a second server
        for config, key in ((StoreConfig(dim=32), secret), (StoreConfig(dim=16), new_secret())):
            with pytest.raises(ConfigError, match="already runs"):  # joined, tokens then failed
                start_bus_actor(config, key, name="bus-test", host="127.0.0.1")
        _, found = find_bus_actor("bus-test")
        assert found == addrs
        with MemoryClient(addrs["address"], "a1", token_for(secret, "a1")) as client:
            client.write("private", "a1", NewItem("hello from the driver"), now=0.0)
        assert ray.get(actor.stats.remote())["private"]["items"] == 1
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)
