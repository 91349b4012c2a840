"""One Ray session for every integration test that needs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    # address="local" always starts a fresh single-node cluster, never one found on the
    # machine; Ray 2.60 enables token auth for it and generates the token itself.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
