"""The bus secret file ``hivemem bus serve`` makes when it is missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hivemem.platform.bus_setup import read_or_make_secret

SECRET = bytes(range(32))


def test_a_secret_file_is_never_seen_empty_while_it_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was created empty, then written: a client waiting for the file to appear (the
    observability fixture) could read an empty secret in between."""
    path = tmp_path / "runs" / "bus.secret"
    seen: list[bool] = []  # whether something was at ``path`` when the secret was made, written
    real_fdopen = os.fdopen

    class Spy:
        """The file ``os.fdopen`` opened, telling at each write whether ``path`` exists."""

        def __init__(self, opened: Any) -> None:
            self.opened = opened

        def write(self, data: bytes) -> int:
            seen.append(path.exists())
            return int(self.opened.write(data))

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.opened.close()

    def fdopen(fd: int, *args: Any, **kw: Any) -> Spy:
        return Spy(real_fdopen(fd, *args, **kw))

    def make() -> bytes:
        seen.append(path.exists())
        return SECRET

    monkeypatch.setattr(os, "fdopen", fdopen)
    assert read_or_make_secret(path, make) == SECRET
    assert seen and not any(seen)
    assert path.read_bytes() == SECRET and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["bus.secret"]  # nothing left beside it
    assert read_or_make_secret(path, lambda: b"another" * 8) == SECRET  # kept, not made again
