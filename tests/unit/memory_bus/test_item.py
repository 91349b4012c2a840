"""Token counting: the batch count agrees with splitting each text."""

from __future__ import annotations

from hivemem.memory_bus.item import count_tokens, count_tokens_many
from hypothesis import given
from hypothesis import strategies as st

# Every ASCII whitespace str.split() knows, a non-whitespace control character, letters,
# and two non-ASCII characters: one whitespace (NO-BREAK SPACE), one not.
ALPHABET = st.sampled_from(list("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x00\x7fab.\xa0é"))
ASCII = st.sampled_from(list("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x00\x7fab."))


@given(st.lists(st.text(ASCII, max_size=30), max_size=8))
def test_ascii_texts_count_as_split_does(texts: list[str]) -> None:
    assert count_tokens_many(texts) == sum(len(t.split()) for t in texts)


@given(st.lists(st.text(ALPHABET, max_size=30), max_size=8))
def test_any_texts_count_as_split_does(texts: list[str]) -> None:
    assert count_tokens_many(texts) == sum(map(count_tokens, texts))


def test_texts_do_not_join_across_their_boundary() -> None:
    # "a" + "b" would be one token if the texts were run together.
    assert count_tokens_many(["a", "b", "", "  ", "c d\x1fe"]) == 5
    assert count_tokens_many([]) == 0
    assert count_tokens_many(["", ""]) == 0
