"""Telling a subscriber which memory events it missed, from their sequence numbers.

The bus numbers each namespace's events 1, 2, 3, ... (``seq``; the numbers go on across
a restart of a bus with a data directory). Events can still go missing between the bus
and a subscriber: ZeroMQ drops a slow subscriber's messages once its queue is full
(``zmq.SNDHWM`` on the bus, ``zmq.RCVHWM`` on the subscriber), nothing is sent while a
subscriber is reconnecting, and a subscription takes a moment to reach the bus.

:class:`EventGaps` counts on from where the subscription started (the ``subscribe``
op's ``seqs``). It learns the latest number from each event and from the bus's *marks*
(``hivemem.memory_bus.publisher``): a namespace's new subscriber gets its last number
at once, and while a namespace is quiet after a change, the bus sends its last number
again every second, for 30 seconds (to subscribers of the namespace and of its tier),
so that events dropped at the end of a burst, or made before the subscription reached
the bus, show too. Where numbers were skipped it says so with a *gap* record, which the
clients' ``events()`` yield in the place of the missing events (``docs/protocol.md``,
Events)::

    {"kind": "gap", "tier": "shared", "namespace": "team", "seq": 41, "missed": 3}

``seq`` is the first number missed and ``missed`` how many. When the numbering started
again (a bus without a data directory was restarted and its memory is gone, or another
bus now serves the address), ``seq`` and ``missed`` are None. The subscriber sees that
from a number that goes *back*, or from a mark of another *epoch*: each bus's numbers
belong to one history, named by its epoch (a data directory's own, kept across restarts;
a new one at each start of a bus without one), which ``subscribe`` returns and every
mark carries. A subscriber that keeps a copy of a namespace reads it afresh on either
kind of gap.
"""

from __future__ import annotations

from typing import Any

from hivemem.memory_bus.arguments import split_topic
from hivemem.memory_bus.protocol import GAP, MARK


class EventGaps:
    """The last event number seen per namespace of one subscription (to one bus).

    Args:
        start: The last event number of each namespace when the subscription began
            (the ``subscribe`` op's answer), by (tier, namespace).
        epoch: The history those numbers belong to (``subscribe``'s ``epoch``; None: not
            known yet, the first mark tells it).
    """

    def __init__(
        self, start: dict[tuple[str, str], int] | None = None, epoch: str | None = None
    ) -> None:
        self._last: dict[tuple[str, str], int] = dict(start or {})
        self.epoch = epoch
        # namespaces whose numbers went back since the epoch was learned: their restart
        # is told already, and they count in the new history (see gaps_before)
        self._restarted: set[tuple[str, str]] = set()

    def gaps_before(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The gap records to yield before ``record``.

        A mark of another ``epoch`` than the subscription's says the bus's numbering
        started again (a bus without a data directory restarted, or another bus serves
        the address): every namespace the subscription had numbers for gets a gap of
        unknown size, whatever the numbers, and counts on afresh; but not one whose
        numbers already went back (its restart was told then, and its numbers since are
        the new history's: a watcher saw two gaps for one restart). Otherwise, at most
        the gap :meth:`gap_before` finds.
        """
        epoch = record.get("epoch") if record.get("kind") == MARK else None
        if isinstance(epoch, str) and epoch != self.epoch:
            known, self.epoch = self.epoch, epoch
            if known is not None:
                told, self._restarted = self._restarted, set()
                restarted = [_unknown_gap(key) for key in sorted(self._last) if key not in told]
                self._last = {key: seq for key, seq in self._last.items() if key in told}
                gap = self.gap_before(record)  # counting on from the mark
                return restarted if gap is None else [*restarted, gap]
        gap = self.gap_before(record)
        return [] if gap is None else [gap]

    def gap_before(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The gap record to yield before ``record`` (an event or a mark), or None.

        A namespace the subscription had no number for shows no gap at its first
        record: it starts where it starts. A record without a number (from a bus before
        events were numbered) is passed over.
        """
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return None
        key = (record["tier"], record["namespace"])
        last = self._last.get(key)
        self._last[key] = seq
        if last is None:
            return None
        # the number of the last event before this record: an event follows it, a mark is it
        before = seq if record["kind"] == MARK else seq - 1
        if before == last:
            return None
        if before < last:
            self._restarted.add(key)
            return _unknown_gap(key)
        return {"kind": GAP, "tier": key[0], "namespace": key[1], "seq": last + 1, "missed": before - last}  # fmt: skip


def _unknown_gap(key: tuple[str, str]) -> dict[str, Any]:
    """The gap of a namespace whose numbers started again: how many is unknown."""
    return {"kind": GAP, "tier": key[0], "namespace": key[1], "seq": None, "missed": None}


def starts(topics: list[str], seqs: Any) -> dict[tuple[str, str], int]:
    """Where a subscription to ``topics`` starts, from the ``subscribe`` op's ``seqs`` (a
    bus before events were numbered sends none: then every namespace starts unknown)."""
    if not isinstance(seqs, list) or len(seqs) != len(topics):
        return {}
    return {
        split_topic(topic): seq
        for topic, seq in zip(topics, seqs, strict=True)
        if isinstance(seq, int) and not isinstance(seq, bool)
    }
