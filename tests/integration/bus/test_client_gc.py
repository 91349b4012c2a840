"""A client nobody closed is collected without hanging its process."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio, gc, warnings
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.sharding import AsyncShardedClient
from hivemem.memory_bus.store import MemoryStore

warnings.simplefilter("ignore", ResourceWarning)  # an unclosed client is what is tested
secret = new_secret()
config = StoreConfig(dim=8, shared=TierConfig(capacity=100))
servers = [BusServer(MemoryStore(config).as_shard(i, 3), secret=secret).start() for i in range(3)]

async def main():
    admin = AsyncShardedClient(
        [s.address for s in servers], ADMIN_AGENT, token_for(secret, ADMIN_AGENT), timeout=5.0
    )
    await admin.register("alice", ["g0", "g1"])
    alice = admin.as_agent("alice", token_for(secret, "alice"))
    streams = [alice.events(["shared/g0", "shared/g1"]), admin.events(["shared/"])]
    waiting = [asyncio.ensure_future(s.__anext__()) for s in streams]
    await asyncio.sleep(0.3)
    raise RuntimeError("the caller's own failure, before it closed the client")

try:
    asyncio.run(main())
except RuntimeError:
    pass
gc.collect()
print("collected")
for server in servers:
    server.stop()
"""


def test_an_unclosed_client_with_event_streams_is_collected_without_a_hang() -> None:
    """Each client had a ZeroMQ context of its own, terminated by its finalizer. When an
    exception left ``asyncio.run`` with a sharded client's streams open, the garbage
    collection hung for ever in ``Context.term()``: the collector had already cleared
    the context's weak references to its sockets, so nothing closed them."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["collected"]
