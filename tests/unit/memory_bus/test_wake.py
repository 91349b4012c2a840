"""Busy polling spins only while requests come within the spin window of each other."""

from __future__ import annotations

import os

import pytest
from hivemem.memory_bus.wake import IDLE_CHUNK, SPIN_CHUNK, BusyPoll, Wake

SLEEP_MS = 100


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(poll: BusyPoll, clock: Clock, after: float) -> None:
    """A request arrives ``after`` seconds after the last answer and is answered at once."""
    clock.now += after
    poll.arrived()
    poll.answered()


def test_a_bus_idle_between_requests_never_spins() -> None:
    clock = Clock()
    poll = BusyPoll(200e-6, clock)
    assert poll.timeout_ms(SLEEP_MS) == SLEEP_MS
    for _ in range(5):
        request(poll, clock, after=0.5)
        assert poll.timeout_ms(SLEEP_MS) == SLEEP_MS


def test_requests_in_a_burst_keep_it_spinning_until_the_window_passes() -> None:
    clock = Clock()
    poll = BusyPoll(200e-6, clock)
    request(poll, clock, after=1.0)  # the first of a burst: it came after a pause
    assert poll.timeout_ms(SLEEP_MS) == SLEEP_MS
    request(poll, clock, after=50e-6)
    assert poll.timeout_ms(SLEEP_MS) == 0
    clock.now += 150e-6
    assert poll.timeout_ms(SLEEP_MS) == 0
    clock.now += 60e-6  # 210 us after the answer: the window is over
    assert poll.timeout_ms(SLEEP_MS) == SLEEP_MS
    request(poll, clock, after=1.0)  # the burst ended: the next request finds it asleep
    assert poll.timeout_ms(SLEEP_MS) == SLEEP_MS


def test_no_spin_configured_never_spins() -> None:
    clock = Clock()
    poll = BusyPoll(0.0, clock)
    for _ in range(3):
        request(poll, clock, after=0.0)
        assert poll.timeout_ms(SLEEP_MS) == SLEEP_MS


def test_idle_work_goes_before_the_poll_in_chunks_and_keeps_it_from_sleeping() -> None:
    clock = Clock()
    chunks: list[int] = []
    work = [3]  # chunks of idle work waiting

    def idle(chunk: int) -> bool:
        if not work[0]:
            return False
        work[0] -= 1
        chunks.append(chunk)
        return True

    poll = BusyPoll(200e-6, clock, idle)
    request(poll, clock, after=1.0)
    request(poll, clock, after=50e-6)  # spinning from here
    assert poll.timeout_ms(SLEEP_MS) == 0
    clock.now += 1.0  # the spin is over
    assert [poll.timeout_ms(SLEEP_MS) for _ in range(3)] == [0, 0, SLEEP_MS]
    assert chunks == [SPIN_CHUNK, IDLE_CHUNK, IDLE_CHUNK]  # a small chunk while spinning


def test_a_wake_up_while_the_pipe_closes_writes_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM handler (request_stop) may run between the two closes of stop(): it
    must not write to an fd just closed, which another thread may have reopened."""
    wake = Wake()
    real_close, written = os.close, []
    real_write = os.write

    def close_then_signal(fd: int) -> None:
        real_close(fd)
        wake.wake()  # the handler, run between two bytecodes of close()

    def recording_write(fd: int, data: bytes) -> int:
        written.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(os, "close", close_then_signal)
    monkeypatch.setattr(os, "write", recording_write)
    wake.close()
    assert written == []  # before: os.write on the closed write end (EBADF)
    assert wake.fd == -1
    wake.wake()  # closed: nothing to wake, and no error
