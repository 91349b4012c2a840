"""Which shard of a bus owns a namespace: the one rule clients and servers share.

A sharded client sends each namespace's requests to ``shard_of(namespace, n)``; a shard
refuses to make, or read, a namespace that is not its own (:func:`check_placement`), so a client
that lists the shards in another order, or one that knows nothing of shards, cannot
scatter a namespace over several of them.
"""

from __future__ import annotations

import hashlib

from hivemem.memory_bus.errors import WrongShardError


def shard_of(namespace: str, shards: int) -> int:
    """The shard that owns ``namespace`` among ``shards`` (stable across processes:
    BLAKE2b, never Python's salted ``hash()``)."""
    if shards == 1:
        return 0
    digest = hashlib.blake2b(namespace.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def check_placement(namespace: str, shard: tuple[int, int]) -> None:
    """Refuse ``namespace`` on this shard (``(index, count)``) unless it is the shard's own.

    Asked of a namespace the shard does not hold yet, by every access check
    (``VectorTier._check``): a write would make it here, a read would find it empty.

    Raises:
        WrongShardError: naming the namespace, its shard and this one.
    """
    index, count = shard
    if count > 1 and (owner := shard_of(namespace, count)) != index:
        raise WrongShardError.of(namespace, owner, index, count)
