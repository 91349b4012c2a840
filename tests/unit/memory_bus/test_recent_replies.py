"""The replies a bus keeps for retries: the last ones of all, and of each agent."""

from __future__ import annotations

from hivemem.memory_bus.durability import RecentReplies
from hypothesis import given, settings
from hypothesis import strategies as st


def test_one_agents_flood_keeps_the_others_replies() -> None:
    """Before, 100 changes of one agent pushed out every other agent's replies: their
    retries were then applied twice."""
    replies = RecentReplies(100)
    replies.remember((1, 1, "alice"), b"alice's")
    for i in range(10_000):
        replies.remember((2, i, "mallory"), b"flood")
    assert replies.get((1, 1, "alice")) == b"alice's"
    assert replies.get((2, 9_999, "mallory")) == b"flood"
    assert replies.get((2, 9_989, "mallory")) is None  # her last 10 (a tenth) are kept


KEYS = st.tuples(st.integers(0, 2), st.integers(0, 30), st.sampled_from(["a", "b", "c"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=200), st.integers(1, 40))
def test_it_keeps_what_a_plain_list_of_the_last_keys_keeps(
    keys: list[tuple[int, int, str]], size: int
) -> None:
    replies, model = RecentReplies(size), []
    for n, key in enumerate(keys):
        replies.remember(key, str(n).encode())
        if key not in model:
            model.append(key)
            theirs = [k for k in model if k[2] == key[2]]
            if len(theirs) > replies.per_agent:
                model.remove(theirs[0])
        if len(model) > size:
            model.pop(0)
    kept = {key for key in set(keys) if replies.get(key) is not None}
    assert kept == set(model)
    again = RecentReplies(size)
    again.load(replies.to_state())
    assert again.to_state() == replies.to_state()


def test_a_token_an_older_bus_kept_is_not_kept_again() -> None:
    """A snapshot an older bus wrote holds register's replies with their tokens; loaded,
    they lose them, so the next snapshot holds none."""
    from hivemem.memory_bus.protocol import encode_reply, unpack_reply

    replies = RecentReplies(10)
    replies.load([[7, 1, "__admin__", encode_reply(1, {"token": "5f1c" * 16})],
                  [7, 2, "alice", encode_reply(2, {"op": "ADD", "item_id": 3})]])  # fmt: skip
    assert unpack_reply(replies.get((7, 1, "__admin__")) or b"")["result"] == {}
    assert unpack_reply(replies.get((7, 2, "alice")) or b"")["result"]["item_id"] == 3
    assert b"5f1c" not in b"".join(r[3] for r in replies.to_state())
