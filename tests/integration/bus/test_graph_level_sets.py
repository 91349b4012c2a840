"""Which graph levels a role reads is a set of levels, not a count of them.

An audit found a role given ``[0, 1, 5]`` on the 3-level graph read level 2 (insights)
through search, retrieve, scan, edges and neighbours: "reads every level" was decided by
counting the role's levels. The config is now refused; a store built around the check
(``model_construct``) still shows such a role nothing of level 2.
"""

from __future__ import annotations

import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import AccessConfig, GraphConfig, StoreConfig
from hivemem.memory_bus.errors import ItemNotFoundError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from pydantic import ValidationError

DIM = 8


def test_a_role_naming_a_level_the_graph_lacks_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"graph_levels\['worker'\] names level 5.*0\.\.2"):
        StoreConfig(dim=DIM, access=AccessConfig(graph_levels={"worker": [0, 1, 5]}))
    with pytest.raises(ValidationError, match=r"graph_levels\['worker'\] names level -1"):
        StoreConfig(dim=DIM, access=AccessConfig(graph_levels={"worker": [-1]}))
    with pytest.raises(ValidationError, match=r"default_graph_levels names level 3"):
        StoreConfig(dim=DIM, access=AccessConfig(default_graph_levels=[0, 3]))
    # the default [0, 1, 2] on a 2-level graph still means "every level"
    StoreConfig(dim=DIM, graph=GraphConfig(levels=["event", "insight"]))
    StoreConfig(dim=DIM, access=AccessConfig(graph_levels={"worker": [0, 2]}))


def test_three_levels_that_are_not_the_graph_s_three_read_no_insight() -> None:
    access = AccessConfig(graph_levels={"worker": [0, 1, 5]})
    config = StoreConfig.model_construct(dim=DIM, graph=GraphConfig(), access=access)
    server = BusServer(MemoryStore(config))
    roles = [("lead", "lead"), ("wendy", "worker")]
    tokens = {a: server.register(a, ["team"], role=r) for a, r in roles}
    v = np.eye(DIM, dtype=np.float32)[0]
    with (
        server,
        MemoryClient(server.address, "lead", tokens["lead"], timeout=5.0) as lead,
        MemoryClient(server.address, "wendy", tokens["wendy"], timeout=5.0) as wendy,
    ):
        event = lead.write("graph", "team", NewItem("event", vector=v), now=1.0).item_id
        secret = lead.write("graph", "team", NewItem("insight", vector=v, level=2), now=1.0).item_id
        lead.add_edge("team", secret, event, "abstracts", now=1.0)
        assert [h.item.id for h in wendy.search("graph", "team", v, k=5, now=None)] == [event]
        for method in ("vector", "khop", "ppr"):
            hits = wendy.retrieve("team", v, k=5, now=None, method=method)
            assert [h.item.id for h in hits] == [event], method
        assert [i.id for i in wendy.scan("graph", "team").items] == [event]
        assert wendy.edges("team") == []
        assert wendy.neighbors("team", event) == []
        with pytest.raises(ItemNotFoundError):
            wendy.get("graph", "team", secret)
        # to lead, all of it
        assert lead.neighbors("team", event) == [secret]
