"""A standalone bus server in its own process (``hivemem bus serve``), to kill and restart.

Fault and load tests need a server they can SIGKILL without killing themselves, and that
is served the way a deployment serves it. Also :func:`scan_data_dir`, which loads what a
data directory holds (the same recovery the server runs on start) so a test can count
every item it holds, not only the ones it asks for.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.forking import die_with_parent
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore


def free_port(following: int = 0) -> int:
    """A TCP port on loopback that nothing listens on right now, and the ``following``
    ports after it free too (``hivemem bus serve``'s events default to ``--port + 1``).

    Taken below the kernel's ephemeral range where there is one (Linux): a port from that
    range may become some connection's source port before a server binds it, or between
    its stop and its restart on it, which tests running in parallel made happen.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(100):
        port = random.randrange(10_000, low - following) if low > 10_100 else 0
        with contextlib.ExitStack() as held:
            try:
                socks = [held.enter_context(socket.socket()) for _ in range(following + 1)]
                socks[0].bind(("127.0.0.1", port))
                port = int(socks[0].getsockname()[1])
                for i, sock in enumerate(socks[1:], 1):
                    sock.bind(("127.0.0.1", port + i))
            except OSError:
                continue
            return port
    raise HivememError(f"no {following + 1} free ports in a row on loopback")


class ServerProcess:
    """``hivemem bus serve`` on loopback over ``data_dir``, its secret beside it.

    Args:
        data_dir: Journal and snapshots (kept across restarts).
        snapshot_every: Journal records between snapshots.
        fsync: The journal's fsync policy.
        config: A StoreConfig file (JSON or YAML) or None for the defaults.
        spin_us: ``--spin-us``: busy polling after each answer (0: off; None: the
            command's default).
        fork_snapshots: False passes ``--no-fork-snapshots``.
        snapshot_log_mb: ``--snapshot-log-mb`` (None: the command's default).
    """

    def __init__(
        self,
        data_dir: Path,
        snapshot_every: int = 150,
        fsync: str = "no",
        config: Path | None = None,
        spin_us: int | None = None,
        fork_snapshots: bool = True,
        snapshot_log_mb: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.snapshot_log_mb = snapshot_log_mb
        self.spin_us, self.fork_snapshots = spin_us, fork_snapshots
        self.secret_file = data_dir.parent / "secret"
        data_dir.parent.mkdir(parents=True, exist_ok=True)  # else the server exits at once
        self.snapshot_every, self.fsync, self.config = snapshot_every, fsync, config
        self.port, self.pub_port = free_port(), free_port()  # kept across restarts
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        cmd = [
            sys.executable,
            "-m",
            "hivemem.platform.cli",
            "bus",
            "serve",
            "--port",
            str(self.port),
            "--pub-port",
            str(self.pub_port),
            "--data-dir",
            str(self.data_dir),
            "--secret-file",
            str(self.secret_file),
            "--snapshot-every",
            str(self.snapshot_every),
            "--fsync",
            self.fsync,
            "--fork-snapshots" if self.fork_snapshots else "--no-fork-snapshots",
        ]
        if self.spin_us is not None:
            cmd += ["--spin-us", str(self.spin_us)]
        if self.snapshot_log_mb is not None:
            cmd += ["--snapshot-log-mb", str(self.snapshot_log_mb)]
        return cmd + (["--config", str(self.config)] if self.config is not None else [])

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until it answers a ping; returns the seconds that took."""
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_ends_with_this_process(),
        )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise HivememError(f"bus server exited with {self.proc.returncode}")
            try:
                with MemoryClient(
                    self.address, "probe", self.token("probe"), timeout=0.5, retries=0
                ) as client:
                    client.ping()
                    return time.monotonic() - started
            except HivememError:
                continue
        raise HivememError(f"bus server did not answer within {timeout} s")

    def token(self, agent: str) -> str:
        """The token of ``agent`` under the server's secret ("" before the first start)."""
        return token_for(self.secret_file.read_bytes(), agent) if self.secret_file.exists() else ""

    def admin(self, **kw: object) -> MemoryClient:
        """A client acting as the administrator (may register agents)."""
        return MemoryClient(self.address, ADMIN_AGENT, self.token(ADMIN_AGENT), **kw)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed by the server."""
        if self.proc is None:
            raise HivememError("the server was never started")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait, if still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _ends_with_this_process() -> Callable[[], object] | None:
    """A ``preexec_fn`` that has the server sent SIGTERM when this process ends, so a
    test or script killed outright (a CI timeout, the out-of-memory killer) leaves no
    server behind. The kernel signals when the *thread* that started the child ends, so
    only a start from the main thread asks (from another one, the server would stop
    with that thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return partial(die_with_parent, signal.SIGTERM)


def scan_data_dir(data_dir: Path, config: StoreConfig, tier: str, key: str) -> Counter[str]:
    """How many items of ``tier`` carry each value of ``meta[key]``, as a restart would see.

    Recovers a store from ``data_dir`` exactly as a starting server does (snapshot, then
    the journal replayed through the handlers), without binding sockets. Call it only
    while no server process has the directory open.
    """
    server = BusServer(MemoryStore(config), journal=Journal(data_dir, "no"))
    try:
        server._recover()
    finally:
        if server.journal is not None:
            server.journal.close()
    counts: Counter[str] = Counter()
    for namespace in server.store.tier(tier).namespaces.values():
        for item in namespace.items.values():
            counts[str(item.meta.get(key, ""))] += 1
    return counts
