"""Check a bus data directory without a server, and cut a damaged log back to sound records.

What ``hivemem bus check`` runs; Redis's ``redis-check-aof`` is the model. A server
refuses to start on a damaged log (:class:`~hivemem.memory_bus.journal_frames.JournalCorruptError`,
:class:`~hivemem.memory_bus.journal_frames.JournalGapError`) rather than guess, because the
records after the damage cannot be applied without the ones it destroyed: item ids are
given out in order, and an update needs the write before it. :func:`check_data_dir` reads
every file as a restart would (checksums, decoding, the records' sequence) and says where
the first damage is and how many whole records come after it. :func:`fix_data_dir` then
keeps the records before the damage: it cuts the damaged file there and moves the rest
(a copy of the damaged file, and every later file of the log) into a ``damaged-<time>``
folder, so nothing is deleted. The bus then starts with the store as it was at the last
sound record. A damaged snapshot cannot be cut back (the log it replaced is gone):
restore ``snapshot.msgpack`` from a backup. A damaged ``store_config.json`` (the store
config the log was written under) is set aside whole: the log then replays under the
bus's own config, as a directory from before it was kept does. Parts of the log that the
snapshot holds whole (left by a server that died between its snapshot's rename and their
deletion) are passed over: a restart deletes them unread.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hivemem.memory_bus.data_dir_lock import lock_data_dir
from hivemem.memory_bus.data_files import CONFIG_NAME, LOG_NAME, SNAPSHOT_NAME, log_parts
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.journal import decode_record, snapshot_body
from hivemem.memory_bus.journal_frames import FRAME, JournalCorruptError, frame_end, next_frame
from hivemem.memory_bus.policies.learned import pinned_names


@dataclass
class LogFile:
    """One file of the log as read: its whole records and their sequence numbers."""

    path: str
    bytes: int
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None


@dataclass
class Damage:
    """The first damage found: where, what, and the whole records that follow it."""

    path: str
    offset: int
    reason: str
    records_after: int


@dataclass
class DataCheck:
    """What :func:`check_data_dir` found in a data directory."""

    data_dir: str
    snapshot_seq: int | None = None  # the last record the snapshot holds (None: no snapshot)
    snapshot_bytes: int = 0
    files: list[LogFile] = field(default_factory=list)
    to_replay: int = 0  # records after the snapshot, up to any damage: what a restart applies
    last_seq: int = 0  # of the last sound record (or of the snapshot)
    torn_tail_bytes: int = 0  # an unfinished last record, which a restart cuts off
    damage: Damage | None = None
    # The store config the log was written under: "kept", "none" (a directory from before
    # it was kept: the log replays under the bus's) or "damaged" (a restart refuses it).
    store_config: str = "none"
    # learned checkpoints it names that are not in checkpoints/: a restart under another
    # config, which must replay the log under this one, would be refused
    checkpoints_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether a server would start on this directory."""
        return self.damage is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_data_dir(data_dir: str | Path) -> DataCheck:
    """Read every file of ``data_dir`` as a restart would, changing nothing.

    Raises:
        HivememError: ``data_dir`` is not a directory.
    """
    root = _existing(data_dir)
    report = DataCheck(str(root))
    snapshot_damage = _check_snapshot(root / SNAPSHOT_NAME, report)
    config_damage = _check_config(root, report)
    files = _log_files(root, report.snapshot_seq)
    if snapshot_damage is not None:  # the log holds only what came after it
        snapshot_damage.records_after = sum(_whole_records(f.read_bytes()) for f in files)
        report.damage = snapshot_damage
        return report
    for i, path in enumerate(files):
        damage = _check_log_file(path, report, is_log=path.name == LOG_NAME)
        if damage is not None:
            damage.records_after += sum(_whole_records(f.read_bytes()) for f in files[i + 1 :])
            report.damage = damage
            break
    if report.damage is None:
        report.damage = config_damage
    return report


def _check_config(root: Path, report: DataCheck) -> Damage | None:
    """Read ``store_config.json`` (and see its pinned checkpoints) into ``report``."""
    path = root / CONFIG_NAME
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        report.store_config = "damaged"
        reason = (
            f"the store config the log was written under is damaged ({exc}); --fix sets it "
            "aside, and the log is then replayed under the bus's own"
        )
        return Damage(str(path), 0, reason, 0)
    report.store_config = "kept"
    folder = root / "checkpoints"
    report.checkpoints_missing = [
        name for name in pinned_names(config) if not (folder / name).exists()
    ]
    return None


def _existing(data_dir: str | Path) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise HivememError(f"no data directory at {root}", path=str(root))
    return root


def _log_files(root: Path, snapshot_seq: int | None = None) -> list[Path]:
    """The files of the log in the order a restart reads them, but for the parts the
    snapshot of ``snapshot_seq`` holds whole (a restart deletes them unread)."""
    files = [part for last, part in log_parts(root) if last > (snapshot_seq or 0)]
    return [*files, root / LOG_NAME] if (root / LOG_NAME).exists() else files


def _check_snapshot(path: Path, report: DataCheck) -> Damage | None:
    """Read the snapshot into ``report``; its damage, if it is damaged."""
    if not path.exists():
        report.snapshot_seq = None
        return None
    data = path.read_bytes()
    report.snapshot_bytes = len(data)
    try:
        body = snapshot_body(data, path)
        report.snapshot_seq = report.last_seq = int(body["seq"])
    except (JournalCorruptError, KeyError, TypeError, ValueError) as exc:
        reason = "the snapshot is damaged (restore it from a backup: the log it replaced is gone)"
        return Damage(str(path), 0, f"{reason}: {exc}", 0)
    return None


def _check_log_file(path: Path, report: DataCheck, is_log: bool) -> Damage | None:
    """Read one file of the log into ``report`` up to its first damage, if any."""
    data = path.read_bytes()
    seen = LogFile(str(path), len(data))
    report.files.append(seen)
    snapshot_seq = report.snapshot_seq or 0
    offset = 0
    while offset < len(data):
        end = frame_end(data, offset)
        if end is None:
            after = seen.last_seq if seen.last_seq is not None else report.last_seq
            follows = next_frame(data, offset + 1, after)
            if follows is None and is_log:  # the process died writing it: not damage
                report.torn_tail_bytes = len(data) - offset
                return None
            reason = "a damaged record" if follows is not None else "a closed part cut short"
            return _damage(path, offset, reason, data, follows)
        try:
            payload = memoryview(data)[offset + FRAME.size : end]
            seq = int(decode_record(payload, path, offset)["seq"])
        except (JournalCorruptError, KeyError, TypeError, ValueError) as exc:
            return _damage(path, offset, f"an undecodable record: {exc}", data, end)
        if seq > snapshot_seq:
            if seq != report.last_seq + 1:
                missing = f"records {report.last_seq + 1}..{seq - 1} are missing"
                if seq <= report.last_seq:
                    missing = f"record {seq} comes out of order"
                return _damage(path, offset, missing, data, offset)
            report.to_replay += 1
            report.last_seq = seq
        seen.records += 1
        seen.first_seq = seq if seen.first_seq is None else seen.first_seq
        seen.last_seq = seq
        offset = end
    return None


def _damage(path: Path, offset: int, reason: str, data: bytes, follows: int | None) -> Damage:
    """Damage at ``offset``; the whole records from ``follows`` on come after it."""
    return Damage(
        str(path), offset, reason, 0 if follows is None else _whole_records(data[follows:])
    )


def _whole_records(data: bytes) -> int:
    """Whole frames in ``data``, skipping over damage to the next one."""
    count, offset = 0, next_frame(data, 0)
    while offset is not None:
        count += 1
        offset = next_frame(data, frame_end(data, offset) or len(data))
    return count


def fix_data_dir(data_dir: str | Path) -> tuple[DataCheck, Path | None]:
    """Cut the log back to the records before its first damage; what is cut goes aside.

    Returns:
        The check after the fix, and the folder holding what was set aside (None if
        there was no damage).

    Raises:
        HivememError: the snapshot is damaged (nothing here can repair it).
        DataDirInUseError: a bus is running on the directory.
    """
    root = _existing(data_dir)
    lock = lock_data_dir(root)  # never cut a log that a running bus appends to
    try:
        report = check_data_dir(root)
        if report.damage is None:
            return report, None
        return _cut_back(root, report, report.damage)
    finally:
        os.close(lock)


def _cut_back(root: Path, report: DataCheck, damage: Damage) -> tuple[DataCheck, Path]:
    damaged = Path(damage.path)
    if damaged.name == SNAPSHOT_NAME:
        raise HivememError(damage.reason, path=damage.path)
    aside = root / time.strftime("damaged-%Y%m%dT%H%M%S", time.gmtime())
    aside.mkdir(mode=0o700)
    if damaged.name == CONFIG_NAME:
        damaged.rename(aside / damaged.name)
        return check_data_dir(root), aside
    shutil.copy2(damaged, aside / damaged.name)
    files = _log_files(root, report.snapshot_seq)
    for later in files[files.index(damaged) + 1 :]:
        later.rename(aside / later.name)
    with damaged.open("r+b") as out:
        out.truncate(damage.offset)
    kept = report.files[-1]  # the damaged file, as far as it was sound
    if damaged.name != LOG_NAME:
        if kept.last_seq is None:
            damaged.unlink()
        else:  # a part is named by its last record
            damaged.rename(root / f"journal.{kept.last_seq:020d}.log")
    return check_data_dir(root), aside
