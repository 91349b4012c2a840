"""The journal: round trips, torn tails, corruption, snapshots, fsync policies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.journal_frames import JournalCorruptError
from hypothesis import given, settings
from hypothesis import strategies as st

RECORDS = [
    {"op": "write", "n": i, "blob": bytes([i]) * i, "big": 2**40 + i, "x": {"f": i / 3}}
    for i in range(8)
]


def fill(path: Path, records: list[dict[str, object]], fsync: str = "no") -> None:
    with Journal(path, fsync) as journal:
        for record in records:
            journal.append(record)


def replayed(path: Path) -> list[dict[str, object]]:
    with Journal(path, "no") as journal:
        journal.load_snapshot()
        return list(journal.replay())


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_round_trip_under_every_policy(tmp_path: Path, fsync: str) -> None:
    fill(tmp_path, RECORDS, fsync)
    assert replayed(tmp_path) == RECORDS


def test_torn_last_record_at_every_offset(tmp_path: Path) -> None:
    fill(tmp_path / "whole", RECORDS)
    data = (tmp_path / "whole" / "journal.log").read_bytes()
    fill(tmp_path / "probe", RECORDS[:-1])
    last_start = (tmp_path / "probe" / "journal.log").stat().st_size
    for cut in range(last_start, len(data)):
        case = tmp_path / f"cut{cut}"
        case.mkdir()
        (case / "journal.log").write_bytes(data[:cut])
        assert replayed(case) == RECORDS[:-1], cut
        with Journal(case, "no") as journal:  # the torn tail was cut away: appends continue cleanly
            list(journal.replay())
            journal.append({"after": cut})
        assert replayed(case) == [*RECORDS[:-1], {"after": cut}]


def test_corrupt_middle_record_is_an_error(tmp_path: Path) -> None:
    fill(tmp_path, RECORDS)
    log = tmp_path / "journal.log"
    data = bytearray(log.read_bytes())
    fill(tmp_path / "probe", RECORDS[:3])
    offset = (tmp_path / "probe" / "journal.log").stat().st_size
    data[offset + 12] ^= 0xFF  # inside the payload of the fourth record
    log.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError) as info:
        replayed(tmp_path)
    assert info.value.details["offset"] == offset


def test_snapshot_then_more_records(tmp_path: Path) -> None:
    with Journal(tmp_path, "no") as journal:
        for r in RECORDS[:5]:
            journal.append(r)
        journal.snapshot({"upto": 5})
        for r in RECORDS[5:]:
            journal.append(r)
    with Journal(tmp_path, "no") as journal:
        assert journal.load_snapshot() == {"upto": 5}
        assert list(journal.replay()) == RECORDS[5:]
        assert journal.seq == len(RECORDS)


def test_the_log_since_the_snapshot_is_counted_live_and_after_a_restart(tmp_path: Path) -> None:
    """What makes a snapshot due by size: the framed bytes and records since the last
    snapshot, the replayed ones counted as if appended again, and that snapshot's size."""
    with Journal(tmp_path, "no") as journal:
        assert journal.snapshot_bytes == 0
        for r in RECORDS[:5]:
            journal.append(r)
        journal.snapshot({"upto": 5})
        assert journal.records_since_snapshot == journal.bytes_since_snapshot == 0
        assert journal.snapshot_bytes == (tmp_path / "snapshot.msgpack").stat().st_size > 0
        before = (tmp_path / "journal.log").stat().st_size
        for r in RECORDS[5:]:
            journal.append(r)
        logged = (tmp_path / "journal.log").stat().st_size
        assert journal.bytes_since_snapshot == logged > before == 0
        assert journal.records_since_snapshot == len(RECORDS) - 5
    with Journal(tmp_path, "no") as journal:
        assert journal.snapshot_bytes == (tmp_path / "snapshot.msgpack").stat().st_size
        journal.load_snapshot()
        assert list(journal.replay()) == RECORDS[5:]
        assert journal.bytes_since_snapshot == logged
        assert journal.records_since_snapshot == len(RECORDS) - 5


def test_crash_between_snapshot_and_log_truncation_applies_nothing_twice(tmp_path: Path) -> None:
    fill(tmp_path, RECORDS)
    old_log = (tmp_path / "journal.log").read_bytes()
    with Journal(tmp_path, "no") as journal:
        list(journal.replay())
        journal.snapshot({"all": True})
        journal.append({"later": 1})
    # As if the process died after the snapshot's rename but before the log was emptied:
    later = (tmp_path / "journal.log").read_bytes()
    (tmp_path / "journal.log").write_bytes(old_log + later)
    with Journal(tmp_path, "no") as journal:
        assert journal.load_snapshot() == {"all": True}
        assert list(journal.replay()) == [{"later": 1}]


def test_leftover_temporary_snapshot_is_ignored(tmp_path: Path) -> None:
    fill(tmp_path, RECORDS)
    (tmp_path / "snapshot.tmp").write_bytes(b"half a snapshot")
    assert replayed(tmp_path) == RECORDS


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=5),
            st.one_of(
                st.integers(-(2**63), 2**64 - 1), st.text(), st.binary(), st.floats(allow_nan=False)
            ),
        ),
        max_size=20,
    )
)
def test_any_records_round_trip(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, object]]
) -> None:
    path = tmp_path_factory.mktemp("j")
    fill(path, records)
    assert replayed(path) == records


def test_a_snapshot_larger_than_any_message_loads(tmp_path: Path) -> None:
    """A big store's snapshot is far over the wire's 16 MiB and its limits on map and
    array sizes; the journal is our own checksummed data and must load whatever it wrote."""
    from hivemem.memory_bus.protocol import MAX_MESSAGE_BYTES

    state = {
        "namespaces": {f"agent-{i}": [i, "x" * 8] for i in range(20_000)},
        "ids": list(range(100_000)),
        "blob": b"\x01" * (MAX_MESSAGE_BYTES + 1024),
    }
    with Journal(tmp_path, "no") as journal:
        journal.append({"op": "write", "n": 1})
        journal.snapshot(state)
        journal.append({"op": "write", "n": 2})
    with Journal(tmp_path, "no") as journal:
        loaded = journal.load_snapshot()
        assert loaded == state
        assert list(journal.replay()) == [{"op": "write", "n": 2}]


@pytest.mark.parametrize("crash_after", ["begin", "write", "end"])
def test_a_snapshot_in_three_steps_loses_nothing_whichever_step_a_crash_follows(
    tmp_path: Path, crash_after: str
) -> None:
    """begin closes the log so far as a part and later records go to a fresh log; a
    process that dies after any step restarts with every record exactly once."""
    with Journal(tmp_path, "always") as journal:
        for r in RECORDS[:5]:
            journal.append(r)
        seq = journal.begin_snapshot()
        for r in RECORDS[5:]:
            journal.append(r)  # while the snapshot of the first five is being written
        assert seq == 5 and (tmp_path / f"journal.{5:020d}.log").exists()
        if crash_after in ("write", "end"):
            journal.write_snapshot({"upto": 5}, seq)
        if crash_after == "end":
            journal.end_snapshot(seq)
    parts = sorted(p.name for p in tmp_path.glob("journal.*.log"))
    assert parts == ([] if crash_after == "end" else [f"journal.{5:020d}.log"])
    with Journal(tmp_path, "no") as journal:
        snapshot = journal.load_snapshot()
        records = list(journal.replay())
        assert journal.seq == len(RECORDS)
    if crash_after == "begin":
        assert snapshot is None and records == RECORDS
    else:
        assert snapshot == {"upto": 5} and records == RECORDS[5:]


def test_a_damaged_closed_part_is_an_error_not_a_torn_tail(tmp_path: Path) -> None:
    with Journal(tmp_path, "no") as journal:
        for r in RECORDS[:4]:
            journal.append(r)
        journal.begin_snapshot()
        journal.append(RECORDS[4])
    part = tmp_path / f"journal.{4:020d}.log"
    part.write_bytes(part.read_bytes()[:-3])
    with pytest.raises(JournalCorruptError):
        replayed(tmp_path)


def test_leftover_temporary_snapshots_of_dead_writers_are_removed(tmp_path: Path) -> None:
    fill(tmp_path, RECORDS)
    (tmp_path / "snapshot.4242.tmp").write_bytes(b"half a snapshot")
    assert replayed(tmp_path) == RECORDS
    assert not list(tmp_path.glob("*.tmp"))


_FULL_DISK = """
import resource, sys
from hivemem.memory_bus.errors import JournalWriteError
from hivemem.memory_bus.journal import Journal
# CPython ignores SIGXFSZ: a write past the limit takes what fits, then fails with EFBIG.
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
ok = []
with Journal(sys.argv[1], sys.argv[3]) as journal:
    for i in range(40):
        try:
            ok.append(journal.append({"i": i, "pad": "x" * 900}))
        except JournalWriteError as exc:
            print("refused", i, exc.details["reason"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)  # room again
    ok.append(journal.append({"i": 40, "pad": ""}))
print("acknowledged", *ok)
"""


@pytest.mark.parametrize("fsync", ["always", "no"])
def test_a_write_the_disk_takes_only_in_part_leaves_nothing_in_the_log(
    tmp_path: Path, fsync: str
) -> None:
    """A real file-size limit (what a full disk does to a write): the record that crosses
    it is written in part by the kernel. The journal must cut that part off and refuse the
    record, or the next whole record turns the torn one into damage a restart refuses."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path), "10000", fsync],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    refused = [line.split() for line in out if line.startswith("refused")]
    acknowledged = [int(seq) for seq in out[-1].split()[1:]]
    assert refused and refused[0][2:] == ["File", "too", "large"]
    assert acknowledged == list(range(1, len(acknowledged) + 1))  # no seq used by a refusal
    records = replayed(tmp_path)
    assert [r["i"] for r in records] == [*range(len(acknowledged) - 1), 40]
    assert (tmp_path / "journal.log").stat().st_size < 10000 + 100


def test_a_retracted_record_is_gone_and_its_seq_used_again(tmp_path: Path) -> None:
    with Journal(tmp_path, "no") as journal:
        for r in RECORDS[:3]:
            journal.append(r)
        size, logged = journal.bytes_since_snapshot, journal.records_since_snapshot
        seq = journal.append({"refused": True})
        with pytest.raises(ValueError):
            journal.retract(seq - 1)  # only the last one
        assert journal.retract(seq)
        assert (journal.bytes_since_snapshot, journal.records_since_snapshot) == (size, logged)
        assert (tmp_path / "journal.log").stat().st_size == size
        assert journal.append(RECORDS[3]) == seq
    assert replayed(tmp_path) == RECORDS[:4]


def test_a_missing_part_of_the_log_is_a_gap_not_silently_skipped(tmp_path: Path) -> None:
    from hivemem.memory_bus.journal_frames import JournalGapError

    with Journal(tmp_path, "no") as journal:
        for i, r in enumerate(RECORDS):
            journal.append(r)
            if i in (2, 5):
                journal.begin_snapshot()  # parts ending at records 3 and 6
    assert replayed(tmp_path) == RECORDS
    (tmp_path / f"journal.{3:020d}.log").unlink()
    with pytest.raises(JournalGapError) as info:
        replayed(tmp_path)
    assert (info.value.details["expected"], info.value.details["found"]) == (1, 4)


_HOLDER = """
import os, sys, time
from hivemem.memory_bus.journal import Journal
journal = Journal(sys.argv[1], "no")
if os.fork() == 0:  # as a snapshot writer: a child of the holder, which outlives it here
    time.sleep(30)
    os._exit(0)
print("held", flush=True)
time.sleep(30)
"""


def test_a_data_dir_is_held_by_one_process_and_freed_when_it_dies(tmp_path: Path) -> None:
    """A second bus on the same directory would interleave its records with the first's."""
    import signal
    import subprocess
    import sys

    from hivemem.memory_bus.data_check import fix_data_dir
    from hivemem.memory_bus.data_dir_lock import DataDirInUseError

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(DataDirInUseError) as info:
            Journal(tmp_path, "no")
        assert info.value.details["pid"] == str(holder.pid)
        with pytest.raises(DataDirInUseError):
            fix_data_dir(tmp_path)
        holder.send_signal(signal.SIGKILL)  # its forked child lives on, and holds nothing
        holder.wait(timeout=30)
        with Journal(tmp_path, "no") as journal:
            assert journal.append({"after": 1}) == 1
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()


def test_always_syncs_changes_and_leaves_recalls_to_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read under ``always`` must not wait for the disk: its recall record goes with
    the next change's fsync, or with the one before a snapshot closes the log as a part
    (a part's torn tail would be damage)."""
    import os

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with Journal(tmp_path, "always") as journal:
        journal.append({"op": "write"})
        assert len(synced) == 1
        journal.append({"op": "recall"}, sync=False)
        journal.append({"op": "recall"}, sync=False)
        assert len(synced) == 1
        journal.append({"op": "write"})
        assert len(synced) == 2
        journal.append({"op": "recall"}, sync=False)
        journal.begin_snapshot()
        assert len(synced) == 4  # the log's records, then the directory
        journal.begin_snapshot()  # nothing new to sync
        assert len(synced) == 4
    assert [r["op"] for r in replayed(tmp_path)] == ["write", "recall", "recall", "write", "recall"]


def test_sync_covers_deferred_records_once_and_a_failed_sync_takes_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync`` is the group commit's one fsync; after it fails, nothing may be appended:
    which records reached the disk is unknown, and Linux reports the error only once."""
    import errno
    import os

    from hivemem.memory_bus.errors import JournalSyncError, JournalWriteError

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with Journal(tmp_path, "always") as journal:
        for i in range(5):
            journal.append({"op": "write", "i": i}, sync=False)
        assert synced == []
        journal.sync()
        journal.sync()  # nothing left
        assert len(synced) == 1

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken)
        journal.append({"op": "write", "i": 5}, sync=False)
        with pytest.raises(JournalSyncError, match="fsync failed"):
            journal.sync()
        with pytest.raises(JournalWriteError, match="takes no more records"):
            journal.append({"op": "write", "i": 6})
        monkeypatch.setattr(os, "fsync", real)
    assert [r["i"] for r in replayed(tmp_path)] == [0, 1, 2, 3, 4, 5]


def test_a_torn_last_record_holding_a_frame_of_client_bytes_is_still_a_tear(
    tmp_path: Path,
) -> None:
    """A client's bytes (a vector, here) may hold a whole checksummed frame; torn, the
    record they are in was refused as damage, as if a record followed it."""
    from hivemem.memory_bus.data_check import check_data_dir
    from hivemem.memory_bus.journal_frames import frame

    fill(tmp_path, [*RECORDS[:2], {"vector": frame(b"\x00\x00\x80?") + b"\x01" * 40}])
    log = tmp_path / "journal.log"
    log.write_bytes(log.read_bytes()[:-3])
    assert check_data_dir(tmp_path).torn_tail_bytes > 0
    with Journal(tmp_path, "no") as journal:
        assert [r for r in journal.replay()] == RECORDS[:2]
        journal.append(RECORDS[2])  # the log goes on after the cut
    assert replayed(tmp_path) == RECORDS[:3]


def test_a_damaged_record_with_records_after_it_is_damage_not_a_tear(tmp_path: Path) -> None:
    fill(tmp_path, RECORDS[:4])
    log = tmp_path / "journal.log"
    data = bytearray(log.read_bytes())
    data[len(data) // 3] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError):
        replayed(tmp_path)


@pytest.mark.parametrize("seq", [1, 2, 3])
def test_a_torn_last_record_holding_a_framed_record_of_client_bytes_is_still_a_tear(
    tmp_path: Path, seq: int
) -> None:
    """A client's meta may hold a framed map with a ``seq``, as an exported record does:
    one that could not follow the records before the tear (record 2, then the torn 3)
    does not make the tear damage. Before, any such map did, and the bus would not start."""
    from hivemem.memory_bus.journal_frames import frame
    from hivemem.memory_bus.protocol import pack

    exported = frame(pack({"seq": seq, "record": {"op": "write"}}))
    fill(tmp_path, [*RECORDS[:2], {"meta": exported + b"\x01" * 40}])
    log = tmp_path / "journal.log"
    log.write_bytes(log.read_bytes()[:-3])
    assert replayed(tmp_path) == RECORDS[:2]


@pytest.mark.parametrize("zeros", [8, 4096])
def test_a_zero_filled_tail_is_a_torn_tail(tmp_path: Path, zeros: int) -> None:
    """A crash may leave a file's new length with zeros where the last write did not
    land (XFS; ext4 with data=writeback). Eight zero bytes read as an empty frame whose
    checksum holds (crc32(b"") is 0), and the bus refused to start."""
    from hivemem.memory_bus.data_check import check_data_dir

    fill(tmp_path, RECORDS[:3])
    log = tmp_path / "journal.log"
    sound = log.stat().st_size
    with log.open("ab") as out:
        out.write(bytes(zeros))
    report = check_data_dir(tmp_path)
    assert report.ok and report.torn_tail_bytes == zeros
    assert replayed(tmp_path) == RECORDS[:3]
    assert log.stat().st_size == sound


def test_an_undecodable_record_is_reported_where_it_lies(tmp_path: Path) -> None:
    from hivemem.memory_bus.journal_frames import frame

    fill(tmp_path, RECORDS[:3])
    log = tmp_path / "journal.log"
    at = log.stat().st_size
    with log.open("ab") as out:
        out.write(frame(b"\xc1"))  # a byte msgpack never uses, under a sound checksum
    with pytest.raises(JournalCorruptError, match=f"at byte {at}$"):
        replayed(tmp_path)


def test_a_snapshot_goes_in_frames_of_at_most_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame's length is 32 bits: a snapshot of 4 GiB or more (3.2 million 384-float
    items) could not be written. Chunks of 100 bytes stand in for the 1 GiB ones."""
    from hivemem.memory_bus import journal_frames as journal_module
    from hivemem.memory_bus.data_check import check_data_dir

    monkeypatch.setattr(journal_module, "SNAPSHOT_CHUNK", 100)
    state = {"blob": bytes(range(256)) * 3, "n": 7}
    with Journal(tmp_path, "no") as journal:
        journal.append(RECORDS[0])
        seq = journal.begin_snapshot()
        journal.write_snapshot(state, seq)
        journal.end_snapshot(seq)
    assert (tmp_path / "snapshot.msgpack").stat().st_size > 8 * 100  # several frames
    with Journal(tmp_path, "no") as journal:
        assert journal.load_snapshot() == state
    assert check_data_dir(tmp_path).snapshot_seq == 1


def test_a_torn_first_record_after_a_snapshot_holding_a_framed_record_is_a_tear(
    tmp_path: Path,
) -> None:
    """After a snapshot, journal.log starts afresh: its first record had no record
    before it to say which seqs could follow, so any framed map with a seq in its client
    bytes made the tear damage."""
    from hivemem.memory_bus.data_check import check_data_dir
    from hivemem.memory_bus.journal_frames import frame
    from hivemem.memory_bus.protocol import pack

    with Journal(tmp_path, "no") as journal:
        for record in RECORDS[:2]:
            journal.append(record)
        seq = journal.begin_snapshot()
        journal.write_snapshot({"held": 2}, seq)
        journal.end_snapshot(seq)
        journal.append({"meta": frame(pack({"seq": 3, "record": {}})) + b"\x01" * 40})
    log = tmp_path / "journal.log"
    log.write_bytes(log.read_bytes()[:-3])
    assert check_data_dir(tmp_path).ok
    assert replayed(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's takes root")
def test_a_file_another_user_owns_in_a_data_directory_is_left_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bus closes the modes of what it owns in its directory; another user's file (as
    root left there, or in a group's shared folder) it cannot change, and must not fail
    on: it started there before."""
    theirs = tmp_path / "notes.txt"
    theirs.write_text("someone else's")
    theirs.chmod(0o644)
    os.chown(theirs, 65534, 65534)
    with Journal(tmp_path, "no"):
        pass
    assert theirs.stat().st_mode & 0o777 == 0o644
    assert "cannot close (another user's)" in caplog.text and "notes.txt" in caplog.text
