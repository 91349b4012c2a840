"""A bus actor started detached outlives the driver that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.item import NewItem

pytestmark = pytest.mark.usefixtures("ray_session")

STARTER = """
import sys
import ray
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.ray_actor import start_bus_actor

ray.init(address=sys.argv[1], log_to_driver=False)
secret = bytes.fromhex(sys.argv[2])
for name, detached in (("bus-detached", True), ("bus-owned", False)):
    start_bus_actor(StoreConfig(dim=16), secret, name=name, host="127.0.0.1", detached=detached)
"""


def _gone(name: str, deadline_s: float = 60.0) -> bool:
    """Whether Ray stops naming ``name`` (an actor dies with its owner soon, not at once)."""
    import ray

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if name not in {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}:
            return True
        time.sleep(0.2)
    return False


def test_a_detached_bus_outlives_the_driver_that_started_it() -> None:
    """A bus actor died with the driver that started it, while another driver that had
    joined it used it: a memory-only bus lost every write it had acknowledged."""
    import ray
    from hivemem.memory_bus.ray_actor import find_bus_actor, start_bus_actor

    secret, config = new_secret(), StoreConfig(dim=16)
    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = subprocess.run(
        [sys.executable, "-c", STARTER, gcs, secret.hex()],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    actor, addrs = find_bus_actor("bus-detached")  # its starter exited
    try:
        with MemoryClient(addrs["address"], "a1", token_for(secret, "a1"), timeout=10.0) as c:
            kept = c.write("private", "a1", NewItem("after the starter left"), now=0.0).item_id
            assert [i.id for i in c.scan("private", "a1").items] == [kept]
        assert _gone("bus-owned")  # not detached: it went with its starter, as a run's bus
        with pytest.raises(ConfigError, match="detached False"):  # asked detached, got not
            owned, _ = start_bus_actor(config, secret, name="bus-owned-2", host="127.0.0.1")
            try:
                start_bus_actor(config, secret, name="bus-owned-2", detached=True)
            finally:
                ray.kill(owned)
        _, joined = start_bus_actor(config, secret, name="bus-detached", host="127.0.0.1")
        assert joined == addrs  # not asking detached joins a detached bus
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)
