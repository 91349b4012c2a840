"""A stateful property test: a tier behaves like a plain dict of versions under any op sequence."""

from __future__ import annotations

import itertools

import numpy as np
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import ItemNotFoundError, VersionConflictError
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

DIM = 16
OWNER = Caller("owner", frozenset({"g"}))
words = st.lists(
    st.sampled_from(["red", "blue", "fox", "key", "door", "seven"]), min_size=1, max_size=4
)


class TierModel(RuleBasedStateMachine):
    """Model: item id -> (text, version). Capacity is unbounded, so nothing is evicted."""

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore(StoreConfig(dim=DIM, shared=TierConfig()))
        self.tier = self.store.shared
        self.model: dict[int, tuple[str, int]] = {}
        self.deleted: set[int] = set()
        self.now = 0.0

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    @rule(batch=st.lists(words, min_size=1, max_size=5))
    def write_many(self, batch: list[list[str]]) -> None:
        requests = [WriteRequest(OWNER, "g", NewItem(" ".join(w))) for w in batch]
        results = self.tier.write_many(requests, now=self.tick())
        for req, res in zip(requests, results, strict=True):
            assert res.item_id not in self.model and res.item_id not in self.deleted
            self.model[res.item_id] = (req.item.text, 1)

    @rule(batches=st.lists(st.lists(words, min_size=1, max_size=3), min_size=2, max_size=4))
    def tokens_while_batches_wait(self, batches: list[list[list[str]]]) -> None:
        """Batches written and not yet read stay pending: their tokens are counted as they
        come (each once), and the count matches the model before anything is read."""
        for batch in batches:
            self.write_many(batch)
            assert self.tier.namespaces["g"].tokens == self.model_tokens()

    def model_tokens(self) -> int:
        return sum(len(text.split()) for text, _version in self.model.values())

    @precondition(lambda self: self.model)
    @rule(data=st.data(), text=words, stale=st.booleans())
    def update(self, data: st.DataObject, text: list[str], stale: bool) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.model)))
        _old_text, version = self.model[item_id]
        expected = version - 1 if stale else version
        try:
            self.tier.update(
                OWNER, "g", item_id, expected_version=expected, now=self.tick(), text=" ".join(text)
            )
        except VersionConflictError:
            assert stale
            return
        assert not stale
        self.model[item_id] = (" ".join(text), version + 1)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.model)))
        self.tier.delete(OWNER, "g", item_id, now=self.tick())
        del self.model[item_id]
        self.deleted.add(item_id)

    @precondition(lambda self: self.deleted)
    @rule(data=st.data())
    def get_deleted_fails(self, data: st.DataObject) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.deleted)))
        try:
            self.tier.get(OWNER, "g", item_id)
        except ItemNotFoundError:
            return
        raise AssertionError(f"deleted item {item_id} is still readable")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def search_finds_own_vector(self, data: st.DataObject) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.model)))
        vector = self.tier.get(OWNER, "g", item_id).vector
        hits = self.tier.search(OWNER, "g", vector, k=len(self.model), now=self.tick())
        assert item_id in {h.id for h in hits}
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))

    @invariant()
    def matches_model(self) -> None:
        ns = self.tier.namespaces.get("g")
        assert ns is None or ns.tokens == self.model_tokens()  # before items builds them
        items = {} if ns is None else {i: (it.text, it.version) for i, it in ns.items.items()}
        assert items == self.model
        assert ns is None or len(ns.index) == len(self.model)
        if ns is not None and self.model:
            probe = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
            assert len(ns.search(probe[None, :], len(self.model), None)[0]) == len(self.model)


TestTierModel = TierModel.TestCase
TestTierModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
