"""Checking a data directory offline, and cutting a damaged log back to its sound records."""

from __future__ import annotations

from pathlib import Path

import pytest
from hivemem.memory_bus.data_check import check_data_dir, fix_data_dir
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.journal_frames import JournalCorruptError, JournalGapError

N = 12


def made(root: Path, snapshot_after: int | None = None) -> Path:
    """Records 1..N: parts closed after records 4 and 8, a snapshot (of record
    ``snapshot_after``) if asked, the rest in journal.log."""
    with Journal(root, "no") as journal:
        for i in range(1, N + 1):
            journal.append({"n": i})
            if i in (4, 8):
                seq = journal.begin_snapshot()
                if snapshot_after == i:
                    journal.write_snapshot({"upto": i}, seq)
                    journal.end_snapshot(seq)
    return root


def replayed(root: Path) -> list[int]:
    with Journal(root, "no") as journal:
        journal.load_snapshot()
        return [r["n"] for r in journal.replay()]


def record_offset(path: Path, index: int) -> int:
    """Byte offset of the ``index``-th record (0-based) in a log file."""
    data, offset = path.read_bytes(), 0
    for _ in range(index):
        offset += 8 + int.from_bytes(data[offset : offset + 4], "little")
    return offset


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def part(root: Path, last: int) -> Path:
    return root / f"journal.{last:020d}.log"


def test_a_sound_directory_is_reported_as_a_restart_reads_it(tmp_path: Path) -> None:
    root = made(tmp_path, snapshot_after=4)
    report = check_data_dir(root)
    assert report.ok and report.snapshot_seq == 4 and report.last_seq == N
    assert report.to_replay == N - 4 == len(replayed(root))
    assert [(f.first_seq, f.last_seq) for f in report.files] == [(5, 8), (9, 12)]


def test_a_torn_tail_is_reported_and_is_not_damage(tmp_path: Path) -> None:
    root = made(tmp_path)
    log = root / "journal.log"
    log.write_bytes(log.read_bytes()[:-5])
    report = check_data_dir(root)
    assert report.ok and report.torn_tail_bytes > 0 and report.last_seq == N - 1


def test_damage_in_the_log_is_cut_off_and_the_rest_set_aside(tmp_path: Path) -> None:
    root = made(tmp_path)
    log = root / "journal.log"
    original = log.read_bytes()
    at = record_offset(log, 2)  # record 11
    flip(log, at + 12)
    with pytest.raises(JournalCorruptError):
        replayed(root)
    report = check_data_dir(root)
    assert not report.ok and report.damage is not None
    assert (report.damage.path, report.damage.offset) == (str(log), at)
    assert report.damage.records_after == 1 and report.last_seq == 10
    fixed, aside = fix_data_dir(root)
    assert fixed.ok and fixed.last_seq == 10 and aside is not None
    assert (aside / "journal.log").read_bytes() == bytes(
        b ^ 0xFF if i == at + 12 else b for i, b in enumerate(original)
    )
    assert replayed(root) == list(range(1, 11))
    with Journal(root, "no") as journal:  # the bus goes on from the last sound record
        list(journal.replay())
        assert journal.append({"n": 11}) == 11
    assert replayed(root) == list(range(1, 12))


def test_damage_in_a_closed_part_keeps_the_part_up_to_it_renamed(tmp_path: Path) -> None:
    root = made(tmp_path)
    flip(part(root, 8), record_offset(part(root, 8), 2) + 10)  # record 7
    report = check_data_dir(root)
    assert report.damage is not None and report.damage.records_after == 1 + 4
    fixed, aside = fix_data_dir(root)
    assert fixed.ok and fixed.last_seq == 6 and aside is not None
    assert sorted(p.name for p in aside.iterdir()) == [part(root, 8).name, "journal.log"]
    assert not part(root, 8).exists() and part(root, 6).exists()
    assert replayed(root) == list(range(1, 7))


def test_a_deleted_part_is_a_gap_and_the_fix_keeps_what_came_before(tmp_path: Path) -> None:
    root = made(tmp_path)
    part(root, 8).unlink()
    with pytest.raises(JournalGapError):
        replayed(root)
    report = check_data_dir(root)
    assert report.damage is not None and "records 5..8 are missing" in report.damage.reason
    assert report.damage.records_after == 4
    fixed, _ = fix_data_dir(root)
    assert fixed.ok and replayed(root) == [1, 2, 3, 4]


def test_a_damaged_snapshot_is_reported_and_not_cut(tmp_path: Path) -> None:
    root = made(tmp_path, snapshot_after=8)
    with Journal(root, "no") as journal:
        journal.save_config({"dim": 8})
    flip(root / "snapshot.msgpack", 20)
    report = check_data_dir(root)
    assert not report.ok and report.damage is not None and "snapshot" in report.damage.reason
    assert report.damage.records_after == N - 8  # the log after it, to replay once restored
    assert report.store_config == "kept"  # checked even so (it was left as "none")
    with pytest.raises(HivememError, match="backup"):
        fix_data_dir(root)
    assert not list(root.glob("damaged-*"))


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HivememError, match="no data directory"):
        check_data_dir(tmp_path / "nope")


def test_the_store_config_is_reported_and_a_damaged_one_set_aside(tmp_path: Path) -> None:
    """A damaged ``store_config.json`` makes a restart refuse the directory, so it is
    damage; the fix sets it aside (the log then replays under the bus's own config). A
    pinned checkpoint gone is reported: only a restart under another config needs it."""
    root = made(tmp_path)
    assert check_data_dir(root).store_config == "none"
    pinned = {"dim": 8, "private": {"eviction": "learned:$DATA_DIR/checkpoints/ab12.json"}}
    with Journal(root, "no") as journal:
        journal.save_config(pinned)
    report = check_data_dir(root)
    assert report.ok and report.store_config == "kept"
    assert report.checkpoints_missing == ["ab12.json"]
    (root / "store_config.json").write_text("{torn")
    report = check_data_dir(root)
    assert not report.ok and report.store_config == "damaged"
    assert report.damage is not None and "store config" in report.damage.reason
    fixed, aside = fix_data_dir(root)
    assert fixed.ok and fixed.store_config == "none" and fixed.last_seq == N
    assert aside is not None and (aside / "store_config.json").read_text() == "{torn"
    assert replayed(root) == list(range(1, N + 1))  # the log untouched


def test_parts_a_snapshot_holds_are_passed_over_and_deleted_by_a_restart(
    tmp_path: Path,
) -> None:
    """A server killed after its snapshot's rename and before it deleted the parts the
    snapshot holds leaves them behind. Damage in them is no damage: before, a restart
    refused to start, and ``--fix`` set aside journal.log with the acknowledged records
    after the snapshot."""
    with Journal(tmp_path, "no") as journal:
        for i in range(1, N + 1):
            journal.append({"n": i})
            if i in (4, 8):
                seq = journal.begin_snapshot()
                if i == 8:  # written, but the server died before end_snapshot
                    journal.write_snapshot({"upto": i}, seq)
    flip(part(tmp_path, 8), 20)
    report = check_data_dir(tmp_path)
    assert report.ok and report.snapshot_seq == 8 and report.to_replay == N - 8
    assert fix_data_dir(tmp_path) == (report, None)
    assert replayed(tmp_path) == list(range(9, N + 1))
    assert not part(tmp_path, 4).exists() and not part(tmp_path, 8).exists()
