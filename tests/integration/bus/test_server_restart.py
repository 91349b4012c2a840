"""A BusServer serves once: started again after stop() it says so, instead of serving nothing."""

from __future__ import annotations

import pytest
from hivemem.memory_bus.errors import HivememError

from .conftest import Bus, make_server


def test_a_stopped_server_refuses_to_start_again() -> None:
    server, tokens = make_server()
    with server:
        with Bus(server, tokens).client("alice", timeout=5.0) as alice:
            assert alice.ping()["agent"] == "alice"
        with pytest.raises(HivememError, match="already started"):
            server.start()
        assert server.serving  # the refused start left it serving
        with Bus(server, tokens).client("alice", timeout=5.0) as alice:
            assert alice.ping()["agent"] == "alice"
    # It returned at once, reported serving=False and answered nothing (its owner thread
    # saw the stop of the first run and ended): now it says what to do instead.
    with pytest.raises(HivememError, match="cannot be started again; make a new one"):
        server.start()
    assert not server.serving
    server.stop()  # still harmless
