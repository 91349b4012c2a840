"""Listing a namespace page by page (``scan``): id order, cursors, filters, access."""

from __future__ import annotations

import msgpack
import pytest
from hivemem.memory_bus.config import AccessConfig, StoreConfig
from hivemem.memory_bus.errors import AccessDeniedError, InvalidInputError
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore

ALICE = Caller("alice", frozenset({"team"}))
BOB = Caller("bob", frozenset({"other"}))


def every_page(store: MemoryStore, tier: str, namespace: str, who: Caller = ALICE, **kw: object) -> list[list[int]]:  # fmt: skip
    pages, after = [], 0
    while True:
        page = store.tier(tier).scan(who, namespace, after=after, **kw)  # type: ignore[arg-type]
        pages.append([it.id for it in page.items])
        if page.next is None:
            return pages
        after = page.next


def flat(pages: list[list[int]]) -> list[int]:
    return [item_id for page in pages for item_id in page]


def test_pages_list_every_item_once_in_id_order_built_or_not() -> None:
    store = MemoryStore(StoreConfig(dim=16))
    tier = store.private
    # a batch stored as columns, then single writes, then another batch
    ids = [r.item_id for r in tier.write_many([WriteRequest(ALICE, "alice", NewItem(f"a{i}")) for i in range(7)], now=1.0)]  # fmt: skip
    ids += [tier.write(ALICE, "alice", NewItem(f"b{i}"), now=2.0).item_id for i in range(3)]
    ids += [r.item_id for r in tier.write_many([WriteRequest(ALICE, "alice", NewItem(f"c{i}")) for i in range(5)], now=3.0)]  # fmt: skip
    tier.delete(ALICE, "alice", ids[8], now=4.0)
    kept = [i for i in ids if i != ids[8]]
    pages = every_page(store, "private", "alice", limit=4)
    assert [len(p) for p in pages] == [4, 4, 4, 2]
    assert flat(pages) == kept
    texts = [it.text for it in tier.scan(ALICE, "alice", limit=100).items]
    assert texts == [f"a{i}" for i in range(7)] + ["b0", "b2"] + [f"c{i}" for i in range(5)]
    # a page that ends exactly at the last item says so
    assert tier.scan(ALICE, "alice", limit=len(kept)).next is None
    assert tier.scan(ALICE, "alice", limit=len(kept) - 1).next == kept[-2]


def test_pages_see_the_writes_deletions_and_evictions_between_them() -> None:
    """The ids in order are kept between pages; every change of the ids must show."""
    store = MemoryStore(StoreConfig(dim=16, private={"capacity": 10, "eviction": "fifo"}))
    tier = store.private
    ids = [r.item_id for r in tier.write_many([WriteRequest(ALICE, "alice", NewItem(f"a{i}")) for i in range(8)], now=1.0)]  # fmt: skip
    first = tier.scan(ALICE, "alice", limit=3)
    assert [it.id for it in first.items] == ids[:3]
    tier.delete(ALICE, "alice", ids[3], now=2.0)  # next on the list
    ids += [tier.write(ALICE, "alice", NewItem(f"b{i}"), now=3.0).item_id for i in range(4)]  # evicts a0  # fmt: skip
    second = tier.scan(ALICE, "alice", after=first.next, limit=3)  # type: ignore[arg-type]
    assert [it.id for it in second.items] == [ids[4], ids[5], ids[6]]
    assert flat(every_page(store, "private", "alice", limit=4)) == [ids[1], ids[2], *ids[4:]]
    tier.namespaces["alice"].set_state(tier.namespaces["alice"].get_state())
    assert flat(every_page(store, "private", "alice", limit=4)) == [ids[1], ids[2], *ids[4:]]


def test_a_page_builds_only_the_batches_it_lists() -> None:
    """Rows written in bulk stay columns until read (memory_bus/pending.py); a first page
    built every pending item of the namespace (half a second at 100,000)."""
    store = MemoryStore(StoreConfig(dim=16))
    tier = store.private
    for b in range(3):
        tier.write_many([WriteRequest(ALICE, "alice", NewItem(f"b{b}-{i}")) for i in range(50)], now=1.0)  # fmt: skip
    pending = tier.namespaces["alice"]._pending
    page = tier.scan(ALICE, "alice", limit=60)
    assert [it.text for it in page.items] == [f"b0-{i}" for i in range(50)] + [f"b1-{i}" for i in range(10)]  # fmt: skip
    assert len(pending.batches) == 3 and sorted(pending._built) == [0, 1]
    tier.delete(ALICE, "alice", page.items[3].id, now=2.0)  # a built pending row
    listed = flat(every_page(store, "private", "alice", limit=7))
    assert len(listed) == 149 and page.items[3].id not in listed and listed == sorted(listed)


def test_a_listing_is_not_a_recall_and_changes_nothing() -> None:
    store = MemoryStore(StoreConfig(dim=16))
    store.private.write(ALICE, "alice", NewItem("x"), now=1.0)
    store.private.namespaces["alice"].items  # built, as a listing builds them  # noqa: B018
    before = msgpack.packb(store.get_state())
    page = store.private.scan(ALICE, "alice")
    assert page.items[0].hits == 0
    assert msgpack.packb(store.get_state()) == before


def test_as_of_lists_what_was_valid_then() -> None:
    store = MemoryStore(StoreConfig(dim=16))
    tier = store.shared
    old = tier.write(ALICE, "team", NewItem("old", valid_from=0.0, valid_to=5.0), now=0.0).item_id
    new = tier.write(ALICE, "team", NewItem("new", valid_from=5.0), now=5.0).item_id
    assert every_page(store, "shared", "team", as_of=3.0) == [[old]]
    assert every_page(store, "shared", "team", as_of=7.0) == [[new]]
    assert every_page(store, "shared", "team", as_of=7.0, limit=1) == [[new]]


def test_graph_nodes_on_levels_the_role_may_not_read_are_not_listed() -> None:
    access = AccessConfig(graph_levels={"worker": [0, 1]})
    store = MemoryStore(StoreConfig(dim=16, access=access))
    lead = Caller("lead", frozenset({"team"}), role="lead")
    worker = Caller("worker", frozenset({"team"}), role="worker")
    ids = [store.graph.write(lead, "team", NewItem(f"n{lv}", level=lv), now=0.0).item_id for lv in (2, 0, 2, 1, 2)]  # fmt: skip
    assert flat(every_page(store, "graph", "team", lead, limit=2)) == ids
    assert flat(every_page(store, "graph", "team", worker, limit=1)) == [ids[1], ids[3]]


def test_an_unwritten_namespace_has_no_items_and_access_is_checked() -> None:
    store = MemoryStore(StoreConfig(dim=16))
    page = store.private.scan(ALICE, "alice")
    assert page.items == [] and page.next is None
    store.shared.write(ALICE, "team", NewItem("x"), now=0.0)
    with pytest.raises(AccessDeniedError):
        store.shared.scan(BOB, "team")
    with pytest.raises(AccessDeniedError):
        store.private.scan(BOB, "alice")


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"after": -1}, "after"),
        ({"after": 1.5}, "after"),
        ({"after": True}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 4097}, "limit"),
        ({"limit": "9"}, "limit"),
        ({"as_of": float("nan")}, "as_of"),
    ],
)
def test_bad_arguments_are_refused_by_name(kw: dict[str, object], field: str) -> None:
    store = MemoryStore(StoreConfig(dim=16))
    store.private.write(ALICE, "alice", NewItem("x"), now=0.0)
    with pytest.raises(InvalidInputError) as info:
        store.private.scan(ALICE, "alice", **kw)  # type: ignore[arg-type]
    assert info.value.details["field"] == field
