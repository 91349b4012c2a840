"""Which shard of a bus owns a namespace: the one rule clients and servers share.

A sharded client sends each namespace's requests to ``shard_of(namespace, n)``; a shard
refuses to make a namespace that is not its own (:func:`check_placement`), so a client
that lists the shards in another order, or one that knows nothing of shards, cannot
scatter a namespace over several of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable

from hivemem.memory_bus.errors import WrongShardError


def shard_of(namespace: str, shards: int) -> int:
    """The shard that owns ``namespace`` among ``shards`` (stable across processes:
    BLAKE2b, never Python's salted ``hash()``)."""
    if shards == 1:
        return 0
    digest = hashlib.blake2b(namespace.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def check_placement(
    namespaces: Iterable[str], shard: tuple[int, int], known: Container[str]
) -> None:
    """Refuse the first namespace of ``namespaces`` that this shard (``(index, count)``)
    does not hold yet and does not own; a namespace it holds was checked when it was made.

    Raises:
        WrongShardError: naming the namespace, its shard and this one.
    """
    index, count = shard
    if count == 1:
        return
    checked: set[str] = set()
    for name in namespaces:
        if name in known or name in checked:
            continue
        owner = shard_of(name, count)
        if owner != index:
            raise WrongShardError.of(name, owner, index, count)
        checked.add(name)
