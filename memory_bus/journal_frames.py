"""The journal's frames: how a record is framed and checksummed, how a file of frames is
read back, and the damage a log can hold.

Every record of the log, and every chunk of a snapshot, is one frame:

- ``length``: u32 LE, the bytes of the payload (never 0: no record is empty);
- ``crc32``: u32 LE, :func:`zlib.crc32` of the payload;
- ``payload``: the msgpack body.

The reading side is here too because a torn last record must be told from damage, and
that takes scanning for whole, checksummed frames after the tear (:func:`next_frame`).
They are apart from :mod:`hivemem.memory_bus.journal`, which writes and replays the log,
because the offline checker (:mod:`hivemem.memory_bus.data_check`) reads the same frames
the same way without a :class:`~hivemem.memory_bus.journal.Journal`.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import msgpack
from hivemem.memory_bus.data_files import SNAPSHOT_NAME
from hivemem.memory_bus.errors import HivememError

FRAME = struct.Struct("<II")


class JournalCorruptError(HivememError):
    """A damaged record that is not the torn tail of the log."""

    code = "journal_corrupt"

    def __init__(self, path: Path, offset: int) -> None:
        super().__init__(
            f"corrupt {'snapshot' if path.name == SNAPSHOT_NAME else 'journal record'} in "
            f"{path} at byte {offset}",
            path=str(path),
            offset=offset,
        )


class JournalGapError(HivememError):
    """Records missing from the log: a part deleted or lost, or a log older than its
    snapshot."""

    code = "journal_gap"

    def __init__(self, path: Path, expected: int, found: int) -> None:
        if found > expected:
            what = f"journal records {expected}..{found - 1} are missing before record {found}"
        else:
            what = f"journal record {found} comes out of order (expected {expected})"
        super().__init__(f"{what} in {path}", path=str(path), expected=expected, found=found)


def frame(payload: bytes) -> bytes:
    """``payload`` with its length and CRC32 in front."""
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes, path: Path, before: int | None = None) -> tuple[list[memoryview], int]:
    """Payloads of the whole frames in ``data`` (views of it, not copies) and the length
    of the valid prefix; ``before``: the seq of the record before the first (None: not
    known), for telling a torn first record from damage (:func:`next_frame`)."""
    payloads: list[memoryview] = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        end = frame_end(data, offset)
        if end is None:
            if next_frame(data, offset + 1, _seq_of(payloads[-1]) if payloads else before):
                raise JournalCorruptError(path, offset)
            break
        payloads.append(view[offset + FRAME.size : end])
        offset = end
    return payloads, offset


def frame_end(data: bytes, offset: int) -> int | None:
    """Where the frame at ``offset`` ends, if it is whole and its checksum holds."""
    if offset + FRAME.size > len(data):
        return None
    length, crc = FRAME.unpack_from(data, offset)
    end = offset + FRAME.size + length
    # No record is empty: zeros (the usual shape of a write torn by a crash on XFS, or
    # on ext4 with data=writeback) would pass as empty frames, as crc32(b"") is 0.
    if (
        length == 0
        or end > len(data)
        or zlib.crc32(memoryview(data)[offset + FRAME.size : end]) != crc
    ):
        return None
    return end


def next_frame(data: bytes, start: int, after: int | None = None) -> int | None:
    """Where the first whole, checksummed frame holding a record (a map with a ``seq``,
    past ``after + 1`` if given) at or after ``start`` begins (None: none).

    A torn last record is told from damage by whether records follow it. Its bytes are
    partly a client's (vectors, texts, meta), which may hold a whole frame by chance or by
    design; one that is no record, or whose seq could not follow the record ``after``
    and the damaged one after it, does not make the tear damage.
    """
    for offset in range(start, len(data) - FRAME.size):
        end = frame_end(data, offset)
        if end is not None and _is_record(data, offset, end, after):
            return offset
    return None


def _is_record(data: bytes, offset: int, end: int, after: int | None) -> bool:
    try:
        body = msgpack.unpackb(
            memoryview(data)[offset + FRAME.size : end], raw=False, strict_map_key=False
        )
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return False
    seq = body.get("seq") if isinstance(body, dict) else None
    return type(seq) is int and (after is None or seq > after + 1)


def _seq_of(payload: memoryview) -> int | None:
    """The seq of a whole frame's record (None: it holds none)."""
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return None
    seq = body.get("seq") if isinstance(body, dict) else None
    return seq if type(seq) is int else None


SNAPSHOT_CHUNK = 1 << 30
"""Bytes of a snapshot's packed state per frame (a frame's length is 32 bits; a store of
3.2 million 384-float items packs to over 4 GiB)."""


def write_chunks(out: BinaryIO, data: bytes) -> None:
    """Write ``data`` (a snapshot's packed record) to ``out`` as frames of at most
    :data:`SNAPSHOT_CHUNK` bytes each (:func:`~hivemem.memory_bus.journal.snapshot_body`
    reads them back)."""
    packed = memoryview(data)
    for start in range(0, len(packed), SNAPSHOT_CHUNK):  # a frame holds < 4 GiB
        chunk = packed[start : start + SNAPSHOT_CHUNK]
        out.write(FRAME.pack(len(chunk), zlib.crc32(chunk)))
        out.write(chunk)
