"""``hivemem bus token | ping | stats | items | edges | search | watch | check`` as a user runs
them, against a real bus."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.server_process import free_port

CLI = [sys.executable, "-m", "hivemem.platform.cli", "bus"]


def bus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def until(met: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Wait until ``met()``, for up to ``within`` seconds (then fail, saying ``what``)."""
    deadline = time.monotonic() + within
    while not met():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.05)


def subscribed(server: BusServer, count: int = 1) -> bool:
    """Whether ``server`` has granted ``count`` event subscriptions. A watcher says
    "watching" before it asks: its subscription reaches the bus later, and the events
    written before that never reach it (a loaded machine took more than a second)."""
    held = server.inspect(
        lambda _: server.metrics.registry.get_sample_value("hivemem_bus_event_subscriptions")
    )
    return (held or 0.0) >= count


def subscribed_at(metrics_url: str, count: int = 1) -> bool:
    """:func:`subscribed` for a bus in another process, by its /metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return f"hivemem_bus_event_subscriptions {float(count)}" in text


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BusServer, Path]]:
    secret = new_secret()
    (tmp_path / "secret").write_bytes(secret)
    with BusServer(MemoryStore(StoreConfig(dim=16)), secret=secret) as server:
        yield server, tmp_path / "secret"


def test_a_token_can_come_from_the_environment(served: tuple[BusServer, Path]) -> None:
    """A command line is visible to every user of the machine (``ps``)."""
    server, secret_file = served
    token = token_for(secret_file.read_bytes(), "alice")
    env = {**os.environ, "HIVEMEM_TOKEN": token}
    ping = subprocess.run([*CLI, "ping", "-a", server.address, "--agent", "alice"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert ping.returncode == 0 and json.loads(ping.stdout)["agent"] == "alice"
    # a secret file given stands: the variable is not the admin's token
    stats = subprocess.run([*CLI, "stats", "-a", server.address, "--secret-file", str(secret_file)],
                           capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert stats.returncode == 0, stats.stderr


def test_token_ping_and_stats(served: tuple[BusServer, Path]) -> None:
    server, secret_file = served
    secret = secret_file.read_bytes()
    with MemoryClient(server.address, "alice", token_for(secret, "alice")) as alice:
        alice.write("private", "alice", NewItem("one"), now=0.0)
    token = bus("token", "alice", "--secret-file", str(secret_file))
    assert token.returncode == 0 and token.stdout.strip() == token_for(secret, "alice")
    ping = bus("ping", "-a", server.address, "--secret-file", str(secret_file), "--agent", "alice")
    assert ping.returncode == 0, ping.stderr
    answer = json.loads(ping.stdout)
    assert (answer["agent"], answer["pub"]) == ("alice", server.pub_address)
    stats = bus("stats", "-a", server.address, "--secret-file", str(secret_file))
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["private"]["items"] == 1


def test_items_prints_a_namespace_page_after_page(served: tuple[BusServer, Path]) -> None:
    server, secret_file = served
    with MemoryClient(
        server.address, "alice", token_for(secret_file.read_bytes(), "alice")
    ) as alice:
        ids = [r.item_id for r in alice.write_many("private", [("alice", NewItem(f"fact {i}", meta={"n": i})) for i in range(7)], now=1.0)]  # fmt: skip
        alice.write("private", "alice", NewItem("old", valid_from=0.0, valid_to=2.0), now=0.0)
    listed = bus("items", "private", "alice", "--page", "3", "--agent", "alice", "-a", server.address, "--secret-file", str(secret_file))  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in rows[:7]] == ids and [r["meta"]["n"] for r in rows[:7]] == list(
        range(7)
    )
    assert rows[7]["text"] == "old" and rows[7]["valid_to"] == 2.0 and rows[0]["valid_to"] is None
    assert "vector" not in rows[0]
    then = bus("items", "private", "alice", "--as-of", "5", "--agent", "alice", "-a", server.address, "--secret-file", str(secret_file))  # fmt: skip
    assert [json.loads(line)["text"] for line in then.stdout.splitlines()] == [f"fact {i}" for i in range(7)]  # fmt: skip
    refused = bus("items", "private", "alice", "--agent", "bob", "-a", server.address, "--secret-file", str(secret_file))  # fmt: skip
    assert refused.returncode == 1 and "error:" in refused.stderr and not refused.stdout


def test_edges_prints_a_graph_page_after_page(served: tuple[BusServer, Path]) -> None:
    server, secret_file = served
    with MemoryClient(server.address, ADMIN_AGENT, server.admin_token) as admin:
        token = admin.register("alice", ["team"])["token"]
    with MemoryClient(server.address, "alice", token) as alice:
        a, b, c = (alice.write("graph", "team", NewItem(t), now=0.0).item_id for t in "abc")
        made = [alice.add_edge("team", x, y, kind, now=1.0) for x, y, kind in ((a, b, "knows"), (b, c, "likes"), (a, c, "knows"))]  # fmt: skip
        alice.invalidate_edge("team", made[0], at=3.0)
    listed = bus("edges", "team", "--page", "2", "--agent", "alice", "-a", server.address, "--secret-file", str(secret_file))  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in rows] == made and (rows[0]["valid_to"], rows[1]["valid_to"]) == (3.0, None)  # fmt: skip
    knows = bus("edges", "team", "--type", "knows", "--as-of", "5", "--agent", "alice", "-a", server.address, "--secret-file", str(secret_file))  # fmt: skip
    assert [json.loads(line)["id"] for line in knows.stdout.splitlines()] == [made[2]]
    at_c = bus("edges", "team", "--node", str(c), "--page", "1", "--agent", "alice", "-a", server.address, "--secret-file", str(secret_file))  # fmt: skip
    assert [json.loads(line)["id"] for line in at_c.stdout.splitlines()] == made[1:]


def test_search_prints_what_a_text_finds_and_recalls_nothing(
    served: tuple[BusServer, Path],
) -> None:
    server, secret_file = served
    with MemoryClient(server.address, ADMIN_AGENT, server.admin_token) as admin:
        token = admin.register("alice", ["team"])["token"]
    texts = ["vault code 4711", "cats sleep all day", "the train leaves at noon"]
    with MemoryClient(server.address, "alice", token) as alice:
        ids = [alice.write("shared", "team", NewItem(t), now=1.0).item_id for t in texts]
        node = alice.write("graph", "team", NewItem("vault code 4711"), now=1.0).item_id
    who = ("--agent", "alice", "-a", server.address, "--secret-file", str(secret_file))
    found = bus("search", "shared", "team", "vault code 4711", "-k", "2", *who)
    assert found.returncode == 0, found.stderr
    rows = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(rows) == 2 and rows[0]["id"] == ids[0] and rows[0]["score"] > rows[1]["score"]
    assert rows[0]["text"] == texts[0] and "vector" not in rows[0]
    ranked = bus("search", "graph", "team", "vault code", "--method", "ppr", *who)
    assert [json.loads(line)["id"] for line in ranked.stdout.splitlines()] == [node]
    with MemoryClient(server.address, "alice", token) as alice:
        assert [alice.get("shared", "team", i).hits for i in ids] == [0, 0, 0]  # looked at
    misplaced = bus("search", "shared", "team", "x", "--method", "ppr", *who)
    assert misplaced.returncode == 2 and "graph tier" in misplaced.stderr
    as_admin = bus("search", "shared", "team", "x", "-a", server.address, "--secret-file", str(secret_file))  # fmt: skip
    assert as_admin.returncode == 1 and "--agent" in as_admin.stderr


def test_watch_prints_the_events_an_agent_may_read(served: tuple[BusServer, Path]) -> None:
    server, secret_file = served
    secret = secret_file.read_bytes()
    watch = subprocess.Popen(
        [*CLI, "watch", "private/alice", "-a", server.address, "--secret-file", str(secret_file),
         "--agent", "alice", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watch.stderr is not None
        assert "watching" in watch.stderr.readline()  # started, asking to subscribe
        until(lambda: subscribed(server), "the watcher's subscription granted")
        with MemoryClient(server.address, "alice", token_for(secret, "alice")) as alice:
            ids = [alice.write("private", "alice", NewItem(f"n{i}"), now=i).item_id for i in range(2)]  # fmt: skip
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["namespace"], e["item_id"]) for e in events] == [
        ("add", "alice", i) for i in ids
    ]


def test_refusals_and_an_absent_bus_are_errors_not_hangs(served: tuple[BusServer, Path]) -> None:
    server, secret_file = served
    refused = bus("watch", "private/alice", "-a", server.address,
                  "--secret-file", str(secret_file), "--agent", "bob")  # fmt: skip
    assert refused.returncode == 1 and "may not subscribe to private/alice" in refused.stderr
    wrong = bus("ping", "-a", server.address, "--agent", "bob", "--token", "0" * 64)
    assert wrong.returncode == 1 and "token" in wrong.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    absent = bus("ping", "-a", f"tcp://127.0.0.1:{port}", "--secret-file", str(secret_file),
                 "--timeout", "0.5")  # fmt: skip
    assert absent.returncode == 1 and "no reply" in absent.stderr
    unsigned = bus("ping", "-a", server.address)
    assert unsigned.returncode != 0 and "--secret-file" in unsigned.stderr


def test_a_curve_bus_answers_the_cli_with_keys_and_not_without(tmp_path: Path) -> None:
    import zmq.auth
    from hivemem.memory_bus.curve import CurveConfig

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    zmq.auth.create_certificates(tmp_path, "server")
    _, client_secret = zmq.auth.create_certificates(allowed, "client")
    secret = new_secret()
    (tmp_path / "secret").write_bytes(secret)
    curve = CurveConfig(tmp_path / "server.key_secret", allowed)
    with BusServer(MemoryStore(StoreConfig(dim=16)), secret=secret, curve=curve) as server:
        args = ["-a", server.address, "--secret-file", str(tmp_path / "secret")]
        keyed = bus("ping", *args, "--curve-key", client_secret,
                    "--curve-server-key", str(tmp_path / "server.key"))  # fmt: skip
        plain = bus("ping", *args, "--timeout", "0.5")
        half = bus("ping", *args, "--curve-key", client_secret)
    assert keyed.returncode == 0, keyed.stderr
    assert json.loads(keyed.stdout)["agent"] == "__admin__"
    assert plain.returncode == 1 and "no reply" in plain.stderr
    assert half.returncode != 0 and "--curve-server-key" in half.stderr


def test_a_damaged_data_dir_is_refused_named_and_fixed(tmp_path: Path) -> None:
    """A real bus's journal, damaged in the middle: `serve` refuses it and says what to
    run, `check` names the damage, `check --fix` keeps the writes before it."""
    from hivemem.memory_bus.testing.server_process import ServerProcess

    server = ServerProcess(tmp_path / "data", snapshot_every=1_000_000)
    server.start()
    with MemoryClient(server.address, "w0", server.token("w0")) as client:
        ids = [
            client.write("private", "w0", NewItem(f"fact {n}"), now=0.0).item_id for n in range(10)
        ]
    server.stop()
    log = server.data_dir / "journal.log"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))

    serve = subprocess.run(
        server.command(), capture_output=True, text=True, timeout=60, check=False
    )
    assert serve.returncode == 1 and "corrupt journal record" in serve.stderr
    assert f"hivemem bus check {server.data_dir}" in serve.stderr
    assert "Traceback" not in serve.stderr

    check = bus("check", str(server.data_dir), "--json")
    report = json.loads(check.stdout)
    assert check.returncode == 1 and not report["ok"]
    assert report["damage"]["path"] == str(log) and report["damage"]["records_after"] >= 1

    fixed = bus("check", str(server.data_dir), "--fix")
    assert fixed.returncode == 0 and "ok: a restart replays" in fixed.stdout
    assert len(list(server.data_dir.glob("damaged-*/journal.log"))) == 1
    server.start()
    try:
        with MemoryClient(server.address, "w0", server.token("w0")) as client:
            kept = client.stats()["private"]["items"]
            assert 0 < kept < 10  # the writes before the damage, in order
            assert [client.get("private", "w0", i).text for i in ids[:kept]] == [
                f"fact {n}" for n in range(kept)
            ]
    finally:
        server.stop()


def test_a_damaged_snapshot_is_named_and_not_offered_to_fix(tmp_path: Path) -> None:
    """--fix cuts a log back; a snapshot replaced the log before it, so the way out is a
    backup, which is what serve and check must say (serve offered --fix)."""
    from hivemem.memory_bus.testing.server_process import ServerProcess

    server = ServerProcess(tmp_path / "data", snapshot_every=3, fork_snapshots=False)
    server.start()
    with MemoryClient(server.address, "w0", server.token("w0")) as client:
        for n in range(5):
            client.write("private", "w0", NewItem(f"fact {n}"), now=0.0)
    server.stop()
    snapshot = server.data_dir / "snapshot.msgpack"
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    serve = subprocess.run(
        server.command(), capture_output=True, text=True, timeout=60, check=False
    )
    assert serve.returncode == 1 and "corrupt snapshot" in serve.stderr
    assert "backup" in serve.stderr and "--fix keeps" not in serve.stderr
    check = json.loads(bus("check", str(server.data_dir), "--json").stdout)
    assert check["damage"]["records_after"] >= 1 and check["store_config"] == "kept"


def test_a_second_bus_on_a_data_dir_in_use_is_refused(tmp_path: Path) -> None:
    from hivemem.memory_bus.testing.server_process import ServerProcess

    first = ServerProcess(tmp_path / "data")
    first.start()
    try:
        second = ServerProcess(tmp_path / "data")  # its own port, the same directory
        run = subprocess.run(second.command(), capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert f"in use by another process (pid {first.proc.pid})" in run.stderr  # type: ignore[union-attr]
        with MemoryClient(first.address, "w0", first.token("w0")) as client:
            assert client.write("private", "w0", NewItem("still served"), now=0.0).item_id
    finally:
        first.stop()


def test_a_bus_started_with_another_embedder_on_its_items_says_which(tmp_path: Path) -> None:
    from hivemem.memory_bus.testing.server_process import ServerProcess

    (tmp_path / "two.yaml").write_text("dim: 32\nembedder: {hashes: 2}\n")
    (tmp_path / "four.yaml").write_text("dim: 32\n")
    first = ServerProcess(tmp_path / "data", config=tmp_path / "two.yaml")
    first.start()
    try:
        with MemoryClient(first.address, "w0", first.token("w0")) as client:
            client.write("private", "w0", NewItem("the red fox"), now=0.0)
    finally:
        first.stop()
    again = ServerProcess(tmp_path / "data", config=tmp_path / "four.yaml")
    run = subprocess.run(again.command(), capture_output=True, text=True, timeout=60)
    # bad input: the store config given does not fit the data directory given
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert (
        "holds 1 item(s) embedded by hashing (bigrams=True, hashes=2); this bus embeds with "
        "hashing (bigrams=True, hashes=4)"
    ) in run.stderr


def test_a_data_dir_that_cannot_be_made_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    run = bus("serve", "--data-dir", str(tmp_path / "file" / "data"), "--port", "0")
    assert run.returncode == 2 and "Traceback" not in run.stderr  # bad input
    assert f"cannot use the data directory {tmp_path / 'file' / 'data'}" in run.stderr


SERVE_REFUSALS = {
    "unknown policy": (
        ["--config", "{tmp}/store.yaml"],
        "private: {eviction: lrx}\n",
        ["store.yaml: unknown eviction policy 'lrx'; did you mean 'lru'?"],
    ),
    "invalid fields": (
        ["--config", "{tmp}/store.yaml"],
        "dim: 0\nprivate: {evict: lru}\n",
        [
            "store.yaml: dim (line 1): Input should be greater than or equal to 1",
            "private.evict (line 2): unknown key 'evict'; did you mean 'eviction'",
        ],
    ),
    "an oracle": (  # accepted; each write then stored its item and was refused
        ["--config", "{tmp}/store.yaml"],
        "shared: {capacity: 2, eviction: oracle}\n",
        ["store.yaml: shared evicts by the future (oracle)"],
    ),
    "missing config": (
        ["--config", "{tmp}/nonexist.yaml"],
        None,
        ["cannot read the store config {tmp}/nonexist.yaml (--config): No such file or directory"],
    ),
    "bad fsync": (
        ["--fsync", "sometimes", "--data-dir", "{tmp}/data"],
        None,
        ["--fsync 'sometimes' is not an fsync policy (known: always, everysec, no)"],
    ),
    "bad fsync, no data dir": (
        ["--fsync", "sometimes"],
        None,
        ["--fsync 'sometimes' is not an fsync policy"],
    ),
    "empty secret file": (
        ["--secret-file", "/dev/null"],
        None,
        ["the secret file /dev/null is empty"],
    ),
    "short secret file": (  # found offline from any one token, then the admin's made
        ["--secret-file", "{tmp}/store.yaml"],
        "guessable\n",
        ["the secret file {tmp}/store.yaml holds 10 bytes: a secret that short is found"],
    ),
    "secret file that is a folder": (
        ["--secret-file", "{tmp}"],
        None,
        ["cannot use the secret file {tmp} (--secret-file): Is a directory"],
    ),
    "request port in use": (
        ["--port", "{port}"],
        None,
        ["cannot bind the requests socket to tcp://127.0.0.1:{port}: Address already in use"],
    ),
    "event port in use": (
        ["--pub-port", "{port}"],
        None,
        ["cannot bind the events socket to tcp://127.0.0.1:{port}: Address already in use"],
    ),
    "metrics port in use": (
        ["--metrics-port", "{port}"],
        None,
        ["cannot serve /metrics on 127.0.0.1:{port} (--metrics-port): Address already in use"],
    ),
}


SERVE_FAILURES = {"request port in use", "event port in use", "metrics port in use"}
"""The refusals that are no bad input (exit 2) but a failure to start (exit 1)."""


@pytest.mark.parametrize("name", SERVE_REFUSALS)
def test_bad_serve_input_is_one_clear_line(tmp_path: Path, name: str) -> None:
    args, config, expected = SERVE_REFUSALS[name]
    if config is not None:
        (tmp_path / "store.yaml").write_text(config)
    with socket.socket() as taken:  # a port something else already listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = bus("serve", "--port", "0", *(a.format(tmp=tmp_path, port=port) for a in args))
    assert run.returncode == (1 if name in SERVE_FAILURES else 2), run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1, run.stderr
    for words in expected:
        assert words.format(tmp=tmp_path, port=port) in run.stderr
    assert not (tmp_path / "data").exists()  # refused before the data directory was made


def test_a_watcher_follows_a_bus_restarted_with_the_default_ports(tmp_path: Path) -> None:
    """The event port was any free one, new at every start: a subscriber kept knocking
    at the old one and heard nothing more, without a word."""
    port, secret_file = free_port(following=1), tmp_path / "secret"
    metrics_port = free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    serve = [*CLI, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"),
             "--secret-file", str(secret_file), "--spin-us", "0",
             "--metrics-port", str(metrics_port)]  # fmt: skip

    def started() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ping = ["ping", "-a", f"tcp://127.0.0.1:{port}", "--secret-file", str(secret_file)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if secret_file.exists() and bus(*ping, "--timeout", "0.5").returncode == 0:
                return proc
            time.sleep(0.2)
        proc.kill()
        raise AssertionError("the bus did not start")

    proc = started()
    address = f"tcp://127.0.0.1:{port}"
    token = token_for(secret_file.read_bytes(), "alice")
    watch = subprocess.Popen(
        [*CLI, "watch", "private/alice", "-a", address, "--secret-file", str(secret_file),
         "--agent", "alice", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watch.stderr is not None and "watching" in watch.stderr.readline()
        until(lambda: subscribed_at(metrics), "the watcher's subscription granted")
        with MemoryClient(address, "alice", token, timeout=2.0) as alice:
            alice.write("private", "alice", NewItem("before"), now=0.0)
        proc.terminate()
        proc.wait(timeout=30)
        proc = started()
        # the watcher's SUB reconnects by itself, and subscribes again
        until(lambda: subscribed_at(metrics), "the watcher's subscription granted again")
        with MemoryClient(address, "alice", token, timeout=2.0) as alice:
            alice.write("private", "alice", NewItem("after"), now=1.0)
        out, _ = watch.communicate(timeout=30)
    finally:
        watch.kill()
        proc.terminate()
        proc.wait(timeout=30)
    assert [(e["kind"], e["seq"]) for e in map(json.loads, out.splitlines())] == [
        ("add", 1),
        ("add", 2),
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "99999"], "'--port'"),  # listened on 99999 mod 65536, printed 99999
        (["--port", "0", "--pub-port", "70000"], "'--pub-port'"),
        (["--port", "65535"], "leaves no --port + 1"),
        (["--snapshot-every", "0"], "'--snapshot-every'"),  # 0 snapshotted after every record
    ],
)
def test_impossible_serve_options_are_usage_errors(args: list[str], words: str) -> None:
    run = bus("serve", *args)
    assert run.returncode == 2 and "Traceback" not in run.stderr and words in run.stderr


def test_serve_makes_its_secret_file_private_and_its_folders(tmp_path: Path) -> None:
    """README's command, in a fresh checkout where runs/ does not exist: a traceback."""
    secret = tmp_path / "runs" / "deeper" / "bus.secret"
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--secret-file", str(secret)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None and "serving on" in proc.stderr.readline()
        assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) >= 32
        for folder in (tmp_path / "runs", tmp_path / "runs" / "deeper"):  # were 0755
            assert folder.stat().st_mode & 0o777 == 0o700, folder
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # closes the pipes
    assert proc.returncode == 0


def test_register_gives_an_agent_its_groups_from_the_shell(served: tuple[BusServer, Path]) -> None:
    server, secret_file = served
    common = ["-a", server.address, "--secret-file", str(secret_file)]
    made = bus("register", "carol", "-g", "team", "--role", "worker", *common)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == token_for(secret_file.read_bytes(), "carol")
    assert bus("edges", "team", "--agent", "carol", *common).returncode == 0
    assert bus("edges", "ops", "--agent", "carol", *common).returncode == 1
    again = bus("register", "carol", *common)  # anew, without groups
    assert again.returncode == 0
    assert bus("edges", "team", "--agent", "carol", *common).returncode == 1


def test_output_is_strict_json_with_bytes_and_open_ends(served: tuple[BusServer, Path]) -> None:
    """Bytes in meta crashed items and search midway; watch printed Infinity."""
    server, secret_file = served
    common = ["-a", server.address, "--secret-file", str(secret_file)]
    with MemoryClient(server.address, ADMIN_AGENT, server.admin_token) as admin:
        token = admin.register("alice", ["team"])["token"]
    watch = subprocess.Popen(
        [*CLI, "watch", "graph/team", "--agent", "alice", "--count", "3", *common],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watch.stderr is not None and "watching" in watch.stderr.readline()
        until(lambda: subscribed(server), "the watcher's subscription granted")
        with MemoryClient(server.address, "alice", token) as alice:
            a = alice.write("graph", "team", NewItem("a", meta={"raw": b"\x00\x01"}), now=0.0).item_id  # fmt: skip
            b = alice.write("graph", "team", NewItem("b"), now=0.0).item_id
            alice.add_edge("team", a, b, "x", now=1.0)
        out, _ = watch.communicate(timeout=30)
    finally:
        watch.kill()

    def strict(line: str) -> dict[str, object]:
        return json.loads(line, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))  # type: ignore[no-any-return]

    assert [strict(line)["kind"] for line in out.splitlines()] == ["add", "add", "edge"]
    assert strict(out.splitlines()[2])["valid_to"] is None
    for command in (["items", "graph", "team"], ["search", "graph", "team", "a"]):
        run = bus(*command, "--agent", "alice", *common)
        assert run.returncode == 0, run.stderr
        metas = [strict(line)["meta"] for line in run.stdout.splitlines()]
        assert {"raw": {"hex": "0001"}} in metas and len(metas) == 2


def test_serve_warns_of_a_secret_file_others_may_read(tmp_path: Path) -> None:
    secret = tmp_path / "bus.secret"
    secret.write_bytes(new_secret())
    secret.chmod(0o644)
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--secret-file", str(secret)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert f"warning: the secret file {secret} is open to others (0o644)" in first
        assert "serving on" in proc.stderr.readline()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_sighup_reads_the_curve_client_keys_again(tmp_path: Path) -> None:
    """Revoking a client: its key taken out of the folder, then SIGHUP. Before, the folder
    was read once, and the client was let in until a restart."""
    import zmq.auth

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    zmq.auth.create_certificates(tmp_path, "server")
    _, client_secret = zmq.auth.create_certificates(allowed, "client")
    port, secret_file = free_port(following=1), tmp_path / "secret"
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--secret-file", str(secret_file), "--spin-us", "0",
         "--curve-secret-key", str(tmp_path / "server.key_secret"),
         "--curve-public-keys", str(allowed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ping = ["ping", "-a", f"tcp://127.0.0.1:{port}", "--secret-file", str(secret_file),
            "--curve-key", client_secret, "--curve-server-key", str(tmp_path / "server.key"),
            "--timeout", "1"]  # fmt: skip
    try:
        assert proc.stderr is not None and "serving on" in proc.stderr.readline()
        assert bus(*ping).returncode == 0
        (allowed / "client.key").unlink()
        proc.send_signal(signal.SIGHUP)
        assert "read the CURVE client keys again: 0 allowed" in proc.stderr.readline()
        assert bus(*ping).returncode != 0
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
