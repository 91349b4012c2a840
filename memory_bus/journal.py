"""Durability: an append-only log of acknowledged changes, and snapshots.

The bus server appends a record for every change *before* it acknowledges the request,
and on start loads the newest snapshot and replays the log records that came after it.
Its files are listed in :mod:`hivemem.memory_bus.data_files`, and the frames its records
and snapshots are written in are described in :mod:`hivemem.memory_bus.journal_frames`.

A snapshot happens in three steps, so that the slow middle one can run elsewhere (the bus
server writes it from a forked process, see :mod:`hivemem.memory_bus.durability`):
:meth:`Journal.begin_snapshot` closes the log so far as a part and starts a fresh
``journal.log`` for the records that follow; :meth:`Journal.write_snapshot` writes the
state as of that point; :meth:`Journal.end_snapshot` deletes the parts it holds. Replay
reads the parts in order, then ``journal.log``. Every record carries a sequence number
and replay skips those the snapshot already holds, so a crash at any step (a snapshot
never written, or written with its parts not yet deleted) loses nothing and applies
nothing twice. A torn last record of ``journal.log`` (the process died mid-write) is
ignored and cut off; a corrupt record *followed by valid ones*, or anywhere in a closed
part, is real damage and raises :class:`JournalCorruptError`, and records missing from
the sequence (a part deleted) raise :class:`JournalGapError`; ``hivemem bus check``
names the damage and, with ``--fix``, cuts the log back to the records before it.
An append that fails (a full disk) leaves nothing of its record behind, and a request
that is refused after its record was appended takes the record back
(:meth:`Journal.retract`), so the log holds exactly the acknowledged changes.

``fsync`` policies, as Redis's ``appendfsync``:

- ``always``: fsync before a change is acknowledged. Nothing acknowledged is lost even
  on a power cut; the slowest. ``append`` fsyncs before it returns, unless told not to
  (``sync=False``), in which case :meth:`Journal.sync` does it later. The bus server
  commits in groups, as a database does: the changes of every request waiting when it
  polls are appended, one fsync covers them all, and only then are their replies sent
  (a read that comes after a change in the same group waits for that fsync with it).
  Records of what reads recalled are never synced alone: the next change's fsync takes
  them along, so a read never waits for the disk on their account, and a power cut
  loses at most the access counts of the reads since. An fsync that fails leaves the
  journal taking no more records (:meth:`Journal.sync`).
- ``everysec``: a background thread fsyncs every ``interval_ms`` (default 1,000). A power
  cut loses at most that window; a killed process (even SIGKILL) loses nothing, because
  each record already reached the kernel's page cache.
- ``no``: never fsync; the kernel flushes when it likes. A killed process still loses
  nothing; a power cut may lose tens of seconds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgpack
from hivemem.memory_bus.data_dir_lock import lock_data_dir
from hivemem.memory_bus.data_files import (
    CONFIG_NAME,
    LOG_NAME,
    PRIVATE_DIR,
    PRIVATE_FILE,
    SNAPSHOT_NAME,
    directory_epoch,
    fsync_dir,
    log_parts,
    make_private,
    read_store_config,
    save_store_config,
)
from hivemem.memory_bus.errors import JournalSyncError, JournalWriteError
from hivemem.memory_bus.journal_frames import (
    FRAME,
    JournalCorruptError,
    JournalGapError,
    frame,
    read_frames,
    write_chunks,
)
from hivemem.memory_bus.protocol import pack

log = logging.getLogger(__name__)


class FsyncPolicy(StrEnum):
    """When the journal forces records to disk."""

    ALWAYS = "always"
    EVERYSEC = "everysec"
    NO = "no"


def decode_record(payload: bytes | memoryview, path: Path, offset: int = 0) -> Any:
    """The msgpack body of a frame of ours (a record or a snapshot): no wire limits (a
    snapshot of a large store is far over the message size and holds maps of thousands of
    namespaces)."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise JournalCorruptError(path, offset) from exc


def snapshot_body(data: bytes, path: Path) -> Any:
    """The record a snapshot file holds: its frames' payloads, joined, unpacked.

    Raises:
        JournalCorruptError: a frame is damaged or cut short, or there is none.
    """
    payloads, valid = read_frames(data, path)
    if not payloads or valid != len(data):
        raise JournalCorruptError(path, valid)
    return decode_record(payloads[0] if len(payloads) == 1 else b"".join(payloads), path)


class Journal:
    """The log and snapshot of one data directory, which it holds (:func:`lock_data_dir`).

    Args:
        data_dir: Where the files live (created if missing).
        fsync: ``always``, ``everysec`` or ``no``.
        interval_ms: The ``everysec`` period.
    """

    def __init__(
        self,
        data_dir: str | Path,
        fsync: FsyncPolicy | str = FsyncPolicy.EVERYSEC,
        interval_ms: int = 1000,
    ) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        self.policy = FsyncPolicy(fsync)
        self._lock = lock_data_dir(self.dir)  # first: nothing below may touch another's files
        make_private(self.dir)
        self.log_path = self.dir / LOG_NAME
        self.snapshot_path = self.dir / SNAPSHOT_NAME
        for tmp in [*self.dir.glob("snapshot*.tmp"), *self.dir.glob(f"{CONFIG_NAME}.*.tmp")]:
            # A writer that died (or outlived its server: its rename now fails) left it.
            tmp.unlink(missing_ok=True)
        self._fd = self._open_log()
        self._retired: queue.SimpleQueue[int] = queue.SimpleQueue()  # parts the syncer closes
        self.seq = 0
        self.records_since_snapshot = 0
        self.bytes_since_snapshot = 0  # of the records since the snapshot, framed
        self._snapshot_at: int | None = None  # the seq of the snapshot loaded, once loaded
        self._last: int | None = None  # bytes of the last record appended (to retract it)
        self._expected = 1  # the seq replay expects next
        self._broken: str | None = None  # why the log takes no more records
        self._unsynced = False  # always: records appended with sync=False since the fsync
        self.sync_failure: JournalSyncError | None = None  # why an fsync failed (always)
        self.snapshot_bytes = self._snapshot_size()
        self._closed = threading.Event()
        self._syncer: threading.Thread | None = None
        if self.policy is FsyncPolicy.EVERYSEC:
            self._syncer = threading.Thread(
                target=self._sync_loop, args=(interval_ms / 1000,), daemon=True
            )
            self._syncer.start()

    def _open_log(self) -> int:
        return os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)

    def _sync_loop(self, period: float) -> None:
        failing = False
        while not self._closed.wait(period):
            try:
                os.fsync(self._fd)
            except OSError as exc:  # records reached the kernel, maybe not the disk
                if not failing:
                    log.error("fsync of %s failed: %s (retried every period)", self.log_path, exc)
                failing = True
            else:
                if failing:
                    log.warning("fsync of %s works again", self.log_path)
                failing = False
            self._close_retired()

    def _close_retired(self) -> None:
        """fsync and close the parts :meth:`begin_snapshot` closed (``everysec``)."""
        retired = False
        while True:
            try:
                fd = self._retired.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
            retired = True
        if retired:
            self._fsync_dir()

    def append(self, record: dict[str, Any], sync: bool = True) -> int:
        """Write one record durably per the policy; returns its sequence number.

        All or nothing: a write the kernel takes only in part (a full disk, the file size
        limit) or an ``fsync`` that fails is cut off the log again, so the log never holds
        a torn record with whole ones after it (which a restart would refuse as damage).

        Args:
            record: What to log.
            sync: Under ``always``, fsync before returning; False leaves the record for
                the next fsync (a record whose loss in a power cut acknowledges nothing).

        Raises:
            JournalWriteError: the record is not in the log.
        """
        if self._broken is not None:
            raise JournalWriteError(
                str(self.log_path), f"the log takes no more records ({self._broken})"
            )
        payload = frame(
            pack({"seq": self.seq + 1, "record": record})
        )  # fails before anything is written
        self._write_all(payload, sync)
        self.seq += 1
        self.records_since_snapshot += 1
        self.bytes_since_snapshot += len(payload)
        self._last = len(payload)
        return self.seq

    def sync(self) -> None:
        """fsync what ``append(..., sync=False)`` left unsynced (``always``; else nothing).

        A failed fsync leaves it unknown which of those records reached the disk (Linux
        may have dropped the dirty pages and reports the error once), so the journal
        takes no more records: whoever acknowledges changes must stop (PostgreSQL panics
        there, Redis exits); a restart replays whatever the disk holds.

        Raises:
            JournalSyncError: the fsync failed; every later append is refused.
        """
        if not self._unsynced:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise self._sync_failed(exc) from exc
        self._unsynced = False

    def _sync_failed(self, exc: OSError) -> JournalSyncError:
        """Take no more records after a failed fsync (see :meth:`sync`); the error."""
        self._broken = f"fsync failed: {exc.strerror or exc}"
        self.sync_failure = JournalSyncError(str(self.log_path), self._broken)
        return self.sync_failure

    def _write_all(self, payload: bytes, sync: bool) -> None:
        view, written = memoryview(payload), 0
        try:
            while written < len(payload):
                done = os.write(self._fd, view[written:])
                if done <= 0:
                    raise OSError(errno.EIO, "write took no bytes")
                written += done
        except OSError as exc:
            self._cut(written)
            raise JournalWriteError(str(self.log_path), exc.strerror or str(exc)) from exc
        if self.policy is not FsyncPolicy.ALWAYS:
            return
        self._unsynced = True
        if sync:
            try:
                self.sync()
            except JournalSyncError:  # the record is refused, and no later one is taken
                self._cut(written)
                raise

    def _cut(self, nbytes: int) -> None:
        """Remove the last ``nbytes`` of the log; if that fails, refuse every later append
        (the torn bytes then stay the log's tail, which a restart cuts off)."""
        if not nbytes:
            return
        try:
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - nbytes)
        except OSError as exc:
            self._broken = f"a torn record could not be cut off: {exc.strerror or exc}"
            log.critical(
                "could not cut a torn record off %s (%s): no more appends", self.log_path, exc
            )

    def retract(self, seq: int) -> bool:
        """Remove the record just appended (``seq``): its request was then refused.

        Returns:
            Whether it is gone. If not, it stays in the log, which is harmless: replaying
            it meets the same refusal.
        """
        if seq != self.seq or self._last is None:
            raise ValueError(f"only the last record ({self.seq}) can be retracted, not {seq}")
        size, self._last = self._last, None
        try:
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - size)
        except OSError:
            return False
        self.seq -= 1
        self.records_since_snapshot -= 1
        self.bytes_since_snapshot -= size
        return True

    def load_snapshot(self) -> dict[str, Any] | None:
        """The state of the newest snapshot, or None."""
        if not self.snapshot_path.exists():
            return None
        body = snapshot_body(self.snapshot_path.read_bytes(), self.snapshot_path)
        self._snapshot_at = int(body["seq"])
        self.seq = max(self.seq, self._snapshot_at)
        return dict(body["state"])

    def replay(self) -> Iterator[dict[str, Any]]:
        """Records after the snapshot, in order; a torn tail is cut off ``journal.log``.

        Raises:
            JournalCorruptError: a damaged record that is not the torn tail.
            JournalGapError: records missing between the snapshot and the log, or
                within the log (a part deleted or lost): replaying the records after the
                gap would build a store that no client ever saw.
        """
        snapshot_seq = self._snapshot_seq() if self._snapshot_at is None else self._snapshot_at
        self._expected = snapshot_seq + 1
        for last, part in log_parts(self.dir):
            if last <= snapshot_seq:  # the snapshot holds it (a server died before its end)
                part.unlink(missing_ok=True)
                continue
            data = part.read_bytes()
            payloads, valid = read_frames(data, part, self._expected - 1)
            if valid < len(data):  # a part was whole when it was closed
                raise JournalCorruptError(part, valid)
            yield from self._records(payloads, part, snapshot_seq)
        data = self.log_path.read_bytes()
        payloads, valid = read_frames(data, self.log_path, self._expected - 1)
        if valid < len(data):
            log.warning(
                "cut %d bytes off the end of %s at byte %d: a last record the process did "
                "not finish writing, or one damaged where it lies (no record follows it)",
                len(data) - valid,
                self.log_path,
                valid,
            )
            os.truncate(self.log_path, valid)
        yield from self._records(payloads, self.log_path, snapshot_seq)

    def _records(
        self, payloads: list[memoryview], path: Path, snapshot_seq: int
    ) -> Iterator[dict[str, Any]]:
        at = 0  # where the payload's frame begins in the file
        for payload in payloads:
            body = decode_record(payload, path, at)
            at += FRAME.size + len(payload)
            seq = int(body["seq"])
            self.seq = max(self.seq, seq)
            if seq > snapshot_seq:
                if seq != self._expected:
                    raise JournalGapError(path, self._expected, seq)
                self._expected = seq + 1
                # the log after the snapshot counts towards the next one, as if appended now
                self.records_since_snapshot += 1
                self.bytes_since_snapshot += FRAME.size + len(payload)
                yield dict(body["record"])

    def _snapshot_size(self) -> int:
        try:
            return self.snapshot_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _snapshot_seq(self) -> int:
        if not self.snapshot_path.exists():
            return 0
        data = self.snapshot_path.read_bytes()
        return int(snapshot_body(data, self.snapshot_path)["seq"]) if data else 0

    def epoch(self) -> str:
        """The identity of this directory's history (made once, kept in ``epoch``): the
        bus announces it with its event numbers, which go on across restarts for as long
        as the directory lives (:mod:`hivemem.memory_bus.event_gaps`)."""
        return directory_epoch(self.dir)

    def written_config(self) -> dict[str, Any] | None:
        """The store configuration the log's records were written under (None: not known,
        a directory from before it was kept)."""
        return read_store_config(self.dir)

    def save_config(self, config: dict[str, Any]) -> None:
        """Keep ``config`` as the one the records from now on are written under (durably:
        a temporary file fsynced and renamed over the old one), unless it is already."""
        save_store_config(self.dir, config)

    def snapshot(self, state: dict[str, Any]) -> None:
        """Write ``state`` (which includes every record so far) and drop the log so far."""
        seq = self.begin_snapshot()
        self.write_snapshot(state, seq)
        self.end_snapshot(seq)

    def begin_snapshot(self) -> int:
        """Close the log so far as a part; later records go to a fresh ``journal.log``.

        Returns:
            The sequence number of the last record so far: the state to snapshot is the
            state after it (pass both to :meth:`write_snapshot`).
        """
        seq = self.seq
        self.sync()  # always: records left for the next fsync; in a closed part a torn
        # tail is damage, not a torn record
        self._last = None  # the log it was in is a closed part now
        if os.fstat(self._fd).st_size:
            part = self.dir / f"journal.{seq:020d}.log"
            os.rename(self.log_path, part)
            try:
                fresh = self._open_log()
            except OSError:
                os.rename(part, self.log_path)  # the log goes on as it was
                raise
            old, self._fd = self._fd, fresh
            if self.policy is FsyncPolicy.EVERYSEC:
                # Not here: the bus's owner thread calls this, and an fsync waits for the
                # disk, which a snapshot being written keeps busy. The syncer flushes the
                # part within its period, as it would have flushed the log.
                self._retired.put(old)
            else:
                os.close(old)  # always: every record was flushed (above, or as appended)
                if self.policy is FsyncPolicy.ALWAYS:
                    try:  # else the fresh log's records might be lost with its name
                        self._fsync_dir()
                    except OSError as exc:
                        raise self._sync_failed(exc) from exc
        self.records_since_snapshot = self.bytes_since_snapshot = 0
        return seq

    def write_snapshot(self, state: dict[str, Any], seq: int) -> None:
        """Write ``state``, the state after record ``seq``, as the snapshot (durably).

        Touches nothing but its own files, so a forked process may call it.
        """
        tmp = self.dir / f"snapshot.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
            with open(fd, "wb") as out:
                write_chunks(out, pack({"seq": seq, "state": state}))
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk: give its room back to the log
                tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.snapshot_path)
        self._fsync_dir()

    def end_snapshot(self, seq: int) -> None:
        """Delete the parts of the log that the snapshot of ``seq`` holds."""
        self._snapshot_at = seq
        self.snapshot_bytes = self._snapshot_size()
        for last, part in log_parts(self.dir):
            if last <= seq:
                part.unlink(missing_ok=True)

    def _fsync_dir(self) -> None:
        fsync_dir(self.dir)

    def close(self) -> None:
        """Stop the fsync thread, flush and close (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._syncer is not None:
            self._syncer.join()
        self._close_retired()
        try:
            os.fsync(self._fd)
        except OSError as exc:  # the directory is released all the same
            log.error("fsync of %s at close failed: %s", self.log_path, exc)
        finally:
            os.close(self._fd)
            os.close(self._lock)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
