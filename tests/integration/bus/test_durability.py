"""SIGKILL the server under write load, restart it on the same data dir: nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.codec import encode_new_item
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import decode_reply, encode_request
from hivemem.memory_bus.testing.server_process import ServerProcess

WRITERS = 3


@pytest.fixture(params=[True, False], ids=["forked-snapshots", "inline-snapshots"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", fork_snapshots=request.param)
    proc.start()
    yield proc
    proc.stop()


def writer(server: ServerProcess, agent: str, acked: dict[int, str], stop: threading.Event) -> None:
    # (a timeout ends the writer, and the kill ends each by one: 1 s ended some early on
    # a loaded machine)
    with MemoryClient(server.address, agent, server.token(agent), timeout=2.0, retries=0) as client:
        n = 0
        while not stop.is_set():
            text = f"{agent} fact {n}"
            try:
                result = client.write("private", agent, NewItem(text), now=float(n))
            except HivememError:
                return  # the server died under us
            acked[result.item_id] = text
            n += 1


def test_sigkill_under_load_loses_no_acknowledged_write(server: ServerProcess) -> None:
    acked: dict[str, dict[int, str]] = {f"w{i}": {} for i in range(WRITERS)}
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(server, a, acked[a], stop)) for a in acked]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30  # under load: at least 2 s, and enough writes
    started = time.monotonic()
    while time.monotonic() < deadline and (
        time.monotonic() - started < 2.0 or sum(len(v) for v in acked.values()) <= 300
    ):
        time.sleep(0.05)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    total = sum(len(v) for v in acked.values())
    assert total > 300, "too little load to mean anything"
    server.start()
    with server.admin() as admin:  # an agent's stats count its own namespace alone
        items = admin.stats()["private"]["items"]
    with MemoryClient(server.address, "w0", server.token("w0")) as client:
        # Each writer may have had one write applied whose reply the kill swallowed.
        assert total <= items <= total + WRITERS
        for agent, writes in acked.items():
            me = client.as_agent(agent, server.token(agent))
            for item_id, text in writes.items():
                assert me.get("private", agent, item_id).text == text


def test_a_retry_after_restart_is_not_applied_twice(server: ServerProcess) -> None:
    ctx = zmq.Context()
    frames = encode_request(
        1,
        4242,
        "write",
        "w0",
        server.token("w0"),
        {
            "tier": "private",
            "namespace": "w0",
            "item": encode_new_item(NewItem("once")),
            "now": 0.0,
        },
    )

    def send() -> object:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(server.address)
        sock.send_multipart(frames)
        reply = decode_reply(sock.recv_multipart())
        sock.close(linger=0)
        return reply

    first = send()
    server.kill()
    server.start()
    assert send() == first
    with MemoryClient(server.address, "w0", server.token("w0")) as client:
        assert client.stats()["private"]["items"] == 1
    ctx.term()
    assert os.path.exists(server.data_dir / "journal.log")


def test_the_snapshot_writer_is_a_child_process_that_reports_failure(tmp_path: Path) -> None:
    from hivemem.memory_bus.forking import fork_to

    out = tmp_path / "pid"
    pid = fork_to(lambda: out.write_text(str(os.getpid())))
    assert pid is not None and pid != os.getpid()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert int(out.read_text()) == pid  # written there, not here
    failing = fork_to(lambda: out.write_text(str(1 / 0)))
    assert failing is not None
    assert os.waitstatus_to_exitcode(os.waitpid(failing, 0)[1]) == 1


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_snapshot_writer_dies_with_its_server() -> None:
    """A writer that outlived a killed server could rename an old snapshot over the
    restarted server's newer one, whose log parts are gone: it must die with it."""
    script = (
        "import time\n"
        "from hivemem.memory_bus.forking import fork_to\n"
        "print(fork_to(lambda: time.sleep(120)), flush=True)\n"
        "time.sleep(120)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert _alive(child)
        proc.kill()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _outlives_its_parent(script: str, wait_s: float) -> bool:
    """Run ``script`` (it prints the pid of a process it started, then waits), kill it
    with SIGKILL, and say whether that process still runs ``wait_s`` later (or sooner,
    once it has gone)."""
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        try:
            assert _alive(child)
            parent.kill()
            parent.wait()
            deadline = time.monotonic() + wait_s
            while _alive(child) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(child):  # shown if the test fails: where each of its threads waits
                print(f"process {child} still runs:", *_threads_of(child), sep="\n  ")
            return _alive(child)
        finally:
            if _alive(child):
                os.kill(child, signal.SIGKILL)


def _threads_of(pid: int) -> list[str]:
    """Each thread of ``pid``: its name, state and the kernel function it waits in."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            name = (task / "comm").read_text().strip()
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = (task / "wchan").read_text().strip()
        except OSError:
            continue
        out.append(f"{task.name} {name} {state} {wchan}")
    return out


@pytest.mark.parametrize("asked", [True, False])
def test_a_child_asked_to_die_with_its_parent_goes_when_the_parent_is_killed(asked: bool) -> None:
    """``die_with_parent`` as a ``preexec_fn``: a parent killed outright (SIGKILL, as the
    out-of-memory killer does) takes the child along; without it the child lives on."""
    script = (
        "import subprocess, sys\n"
        "from hivemem.memory_bus.forking import die_with_parent\n"
        f"child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent if {asked} else None)\n"
        "print(child.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    assert _outlives_its_parent(script, wait_s=10 if asked else 0) is not asked


def test_a_server_process_ends_when_the_process_that_started_it_is_killed(
    tmp_path: Path,
) -> None:
    """ServerProcess started from a main thread: the test process killed outright (a CI
    timeout) takes its ``hivemem bus serve`` along instead of leaving it serving."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from hivemem.memory_bus.testing.server_process import ServerProcess\n"
        f"server = ServerProcess(Path({str(tmp_path / 'data')!r}))\n"
        "server.start()\n"
        "print(server.proc.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    assert not _outlives_its_parent(script, wait_s=30)
