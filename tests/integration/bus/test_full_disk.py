"""A bus whose disk fills up: changes are refused whole, reads go on, and once there is room
again nothing acknowledged is lost and nothing refused appears.

A real ``hivemem bus serve`` process; its file-size limit (``prlimit``), lowered from
outside, is what a full disk does to its journal: the write that crosses it is taken only
in part, and every later one fails (``EFBIG`` instead of ``ENOSPC``).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.codec import encode_new_item
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.embedder import HashingEmbedder
from hivemem.memory_bus.errors import JournalWriteError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import encode_request
from hivemem.memory_bus.testing.server_process import ServerProcess

from .conftest import send_once

PAD = "x" * 700  # a record of ~1 kB: the limit falls inside one


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", snapshot_every=100_000)
    proc.start()
    yield proc
    proc.stop()


def _limit_files_of(server: ServerProcess, nbytes: int) -> None:
    assert server.proc is not None
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))


def _write_request(server: ServerProcess, req_id: int, text: str) -> list[bytes]:
    args = {
        "tier": "private",
        "namespace": "w0",
        "item": encode_new_item(NewItem(text)),
        "now": 5.0,
    }
    return encode_request(req_id, 4242, "write", "w0", server.token("w0"), args)


def test_a_full_disk_refuses_changes_whole_and_loses_nothing_acknowledged(
    server: ServerProcess,
) -> None:
    acked: dict[int, str] = {}
    with MemoryClient(server.address, "w0", server.token("w0"), retries=0) as client:
        first = client.write("private", "w0", NewItem("version one"), now=0.0)
        acked[first.item_id] = "version one"
        log = server.data_dir / "journal.log"
        _limit_files_of(server, log.stat().st_size + 5_500)
        refused = 0
        for n in range(40):
            try:
                result = client.write("private", "w0", NewItem(f"fact {n} {PAD}"), now=1.0)
            except JournalWriteError as exc:
                assert exc.details["reason"] == "File too large"
                refused += 1
                continue
            acked[result.item_id] = f"fact {n} {PAD}"
        assert 3 <= len(acked) - 1 <= 6 and refused == 40 - (len(acked) - 1)
        _limit_files_of(server, log.stat().st_size)  # not a byte more: the disk is full
        # A change applied at once (not after the reply) is refused before it is applied.
        with pytest.raises(JournalWriteError):
            client.update(
                "private", "w0", first.item_id, expected_version=1, now=2.0, text="version two"
            )
        # Reads are answered meanwhile, and see exactly what was acknowledged.
        assert client.get("private", "w0", first.item_id).text == "version one"
        assert client.stats()["private"]["items"] == len(acked)
        # A read's record (what it recalled) waits for the log, before the next change.
        query = HashingEmbedder(StoreConfig().dim)(["fact 1"])[0]
        (recalled,) = client.search("private", "w0", query, k=1, now=3.0)
        # A refused change is not remembered as answered: the same request, retried once
        # there is room, is applied (once).
        retried = _write_request(server, 7, "retried")
        assert send_once(server.address, retried).error["code"] == "journal_write_failed"  # type: ignore[index]
        _limit_files_of(server, resource.RLIM_INFINITY)  # room again
        applied = send_once(server.address, retried)
        assert applied.ok and send_once(server.address, retried) == applied
        acked[applied.result["item_id"]] = "retried"
        result = client.write("private", "w0", NewItem("after"), now=4.0)
        acked[result.item_id] = "after"
        hits = client.get("private", "w0", recalled.id).hits
        assert hits >= 1
    server.kill()
    server.start()  # would refuse a log with a torn record before whole ones
    with MemoryClient(server.address, "w0", server.token("w0")) as client:
        assert client.stats()["private"]["items"] == len(acked)
        for item_id, text in acked.items():
            assert client.get("private", "w0", item_id).text == text
        assert client.get("private", "w0", recalled.id).hits == hits  # the read's record too


@pytest.mark.parametrize("fork", [True, False], ids=["forked-snapshots", "inline-snapshots"])
def test_snapshots_that_do_not_fit_lose_nothing_and_stop_nothing(
    tmp_path: Path, fork: bool
) -> None:
    """Room for the log's records but not for a snapshot of the whole store: the snapshot
    fails (in the forked writer or on the serving thread), the bus serves on, and the log
    keeps every record the failed snapshot was to hold (the SIGKILL case is the test
    above's)."""
    server = ServerProcess(tmp_path / "data", snapshot_every=8, fork_snapshots=fork)
    server.start()
    try:
        acked: dict[int, str] = {}
        with MemoryClient(server.address, "w0", server.token("w0"), retries=0) as client:
            # A log part holds 8 records of ~1 kB, and a few more while a forked writer
            # works; the store outgrows the limit after ~40 items.
            _limit_files_of(server, 40_000)
            for n in range(80):
                text = f"fact {n} {PAD}"
                time.sleep(0.005)  # so that a forked writer is done before 30 more records
                try:
                    acked[client.write("private", "w0", NewItem(text), now=0.0).item_id] = text
                except JournalWriteError:  # a slow writer, and the log outgrew the limit
                    time.sleep(0.1)
            assert len(acked) >= 60 and client.ping()
        server.stop()  # waits for a snapshot being written
        # Snapshots failed (their parts of the log are kept) and left no partial file.
        assert list(server.data_dir.glob("journal.*.log"))
        assert not list(server.data_dir.glob("*.tmp"))
        server.start()
        with MemoryClient(server.address, "w0", server.token("w0")) as client:
            assert client.stats()["private"]["items"] == len(acked)
            for item_id, text in acked.items():
                assert client.get("private", "w0", item_id).text == text
    finally:
        server.stop()
