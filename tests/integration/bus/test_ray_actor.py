"""The bus as a named Ray actor: found by name, served over ZeroMQ."""

from __future__ import annotations

from pathlib import Path

import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.testing.server_process import free_port

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


def _pings(address: str, secret: bytes) -> bool:
    """Whether the bus at ``address`` answers (within 3 s)."""
    from hivemem.memory_bus.errors import HivememError

    try:
        with MemoryClient(address, "a1", token_for(secret, "a1"), timeout=3.0, retries=0) as c:
            c.ping()
    except HivememError:
        return False
    return True


def test_joining_with_other_launch_parameters_is_refused(tmp_path: Path) -> None:
    """Asked for a data dir (or a port, a shard, metrics) and joined a bus without one,
    a caller would believe its writes durable: the differences are named instead."""
    import ray
    from hivemem.memory_bus.ray_actor import start_bus_actor

    secret, config = new_secret(), StoreConfig(dim=16)
    actor, _ = start_bus_actor(config, secret, name="bus-launch", host="127.0.0.1")
    try:
        data, port = tmp_path / "data", free_port(following=1)
        with pytest.raises(ConfigError, match=r"port \d+ .*data_dir None") as info:
            start_bus_actor(
                config, secret, name="bus-launch", host="127.0.0.1", port=port, data_dir=data
            )
        assert info.value.details["differs"][0].endswith(f"(asked {port})")
        assert not data.exists()  # nothing was started with it
        for other in ({"shard": (1, 2)}, {"metrics": True}, {"host": "127.0.0.2"}):
            with pytest.raises(ConfigError, match=next(iter(other))):
                start_bus_actor(config, secret, name="bus-launch", **other)  # type: ignore[arg-type]
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)


def test_joining_the_same_bus_named_otherwise_is_accepted(tmp_path: Path) -> None:
    """Settings were compared as given: the same data dir as ``d/`` or ``x/../d``, the
    node's own IP for a bus started on None, or the port it chose were refused."""
    import ray
    from hivemem.memory_bus.ray_actor import start_bus_actor

    secret, config = new_secret(), StoreConfig(dim=16)
    data = tmp_path / "data"
    actor, found = start_bus_actor(config, secret, name="bus-same", data_dir=data)
    try:
        host, port = found["address"][len("tcp://") :].rsplit(":", 1)
        for same in (
            {"data_dir": f"{data}/"},
            {"data_dir": tmp_path / "x" / ".." / "data"},
            {"data_dir": data, "host": host, "port": int(port)},
        ):
            _, again = start_bus_actor(config, secret, name="bus-same", **same)  # type: ignore[arg-type]
            assert again["address"] == found["address"]
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)


def test_an_actor_ray_finds_unreachable_for_a_moment_is_asked_again_not_replaced() -> None:
    """``ActorUnavailableError`` ("may be available later", on a lost RPC) is a
    ``RayActorError``: it was taken for death, so a healthy run failed and a live bus
    actor, maybe serving another driver, was killed and replaced. (Ray's own RPC fault
    injection shows it live, at random; here the actor's answers fail twice, then come.)"""
    import ray
    from hivemem.memory_bus import ray_actor
    from hivemem.memory_bus.errors import HivememError
    from ray.exceptions import ActorUnavailableError

    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures = failures

        def remote(self) -> object:
            self.failures -= 1
            if self.failures >= 0:
                raise ActorUnavailableError("RpcError: Unavailable", None)
            return ray.put(True)

    class Actor:
        serving = Flaky(2)

    assert ray_actor._serving(Actor()) is True
    Actor.serving = Flaky(10**6)
    before, ray_actor.UNAVAILABLE_WAIT_S = ray_actor.UNAVAILABLE_WAIT_S, 0.5
    try:
        with pytest.raises(HivememError, match="stayed unreachable"):
            ray_actor._serving(Actor())
    finally:
        ray_actor.UNAVAILABLE_WAIT_S = before


def test_a_stopped_bus_actor_is_refused_by_find_and_replaced_by_start() -> None:
    import ray
    from hivemem.memory_bus.errors import HivememError
    from hivemem.memory_bus.ray_actor import find_bus_actor, start_bus_actor

    secret, config = new_secret(), StoreConfig(dim=16)
    actor, _ = start_bus_actor(config, secret, name="bus-stopped", host="127.0.0.1")
    ray.get(actor.stop.remote())
    with pytest.raises(HivememError, match="stopped"):
        find_bus_actor("bus-stopped")
    again, second = start_bus_actor(config, secret, name="bus-stopped", host="127.0.0.1")
    try:
        assert again._actor_id != actor._actor_id
        assert _pings(second["address"], secret)
        assert find_bus_actor("bus-stopped")[1] == second
    finally:
        ray.get(again.stop.remote())
        ray.kill(again)


def test_a_stopped_bus_actor_no_longer_serves_metrics() -> None:
    """Prometheus would scrape a stopped bus as a live one."""
    import urllib.error
    import urllib.request

    import ray
    from hivemem.memory_bus.ray_actor import start_bus_actor

    actor, addrs = start_bus_actor(
        StoreConfig(dim=16), new_secret(), name="bus-metrics", host="127.0.0.1", metrics=True
    )
    try:
        url = f"http://{addrs['metrics']}/metrics"
        assert "hivemem_bus_requests" in urllib.request.urlopen(url, timeout=10).read().decode()
        ray.get(actor.stop.remote())
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        ray.kill(actor)


def test_a_bus_on_a_fixed_port_keeps_its_events_port_across_restarts(tmp_path: Path) -> None:
    """Events on ``port + 1`` (as ``hivemem bus serve``): a bus restarted on its port
    publishes where its subscribers still listen."""
    import ray
    from hivemem.memory_bus.ray_actor import start_bus_actor

    secret, config, port = new_secret(), StoreConfig(dim=16), free_port(following=1)
    kw = {"name": "bus-events", "host": "127.0.0.1", "port": port, "data_dir": tmp_path}
    actor, first = start_bus_actor(config, secret, **kw)  # type: ignore[arg-type]
    assert first["pub"] == f"tcp://127.0.0.1:{port + 1}"
    ray.get(actor.stop.remote())
    ray.kill(actor)
    again, second = start_bus_actor(config, secret, **kw)  # type: ignore[arg-type]
    try:
        assert second["pub"] == first["pub"]
    finally:
        ray.get(again.stop.remote())
        ray.kill(again)
    other, chosen = start_bus_actor(
        config, secret, name="bus-events-2", host="127.0.0.1", pub_port=0
    )
    ray.kill(other)
    assert chosen["pub"] != first["pub"]


def test_a_start_right_after_a_failed_one_starts_anew() -> None:
    """A start that fails (port taken) leaves a dead actor that Ray names for a moment;
    the retry must not join it and report its old failure."""
    import socket

    import ray
    from hivemem.memory_bus.errors import HivememError
    from hivemem.memory_bus.ray_actor import start_bus_actor

    secret, config = new_secret(), StoreConfig(dim=16)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for trial in range(2):  # the old failure showed on most tries, not all
            name = f"bus-retry-{trial}"
            with pytest.raises(HivememError, match="failed to start"):
                start_bus_actor(config, secret, name=name, host="127.0.0.1", port=taken)
            actor, addrs = start_bus_actor(config, secret, name=name, host="127.0.0.1")
            try:
                assert _pings(addrs["address"], secret)
            finally:
                ray.kill(actor)
