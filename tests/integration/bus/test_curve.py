"""CURVE: a client with an allowed key is served, events too; one with an unknown key is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq.auth
from hivemem.memory_bus.client import AsyncMemoryClient, BusTimeoutError, MemoryClient
from hivemem.memory_bus.curve import CurveConfig
from hivemem.memory_bus.item import NewItem

from .conftest import make_server, subscribed


def keys(directory: Path, name: str) -> tuple[bytes, bytes]:
    _, secret_file = zmq.auth.create_certificates(directory, name)
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None
    return public, secret


def folders(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """The allowed clients' key folder, one beside it for keys not allowed, and the
    server's public key (its certificate made in ``tmp_path``)."""
    allowed, others = tmp_path / "allowed", tmp_path / "others"
    allowed.mkdir()
    others.mkdir()
    server_public, _ = keys(tmp_path, "server")
    return allowed, others, server_public


def test_curve_right_and_wrong_key(tmp_path: Path) -> None:
    allowed, others, server_public = folders(tmp_path)
    good_public, good_secret = keys(allowed, "client")
    bad_public, bad_secret = keys(others, "intruder")
    server, tokens = make_server(curve=CurveConfig(tmp_path / "server.key_secret", allowed))
    with server:
        good = {"public": good_public, "secret": good_secret, "server": server_public}
        with MemoryClient(
            server.address, "alice", tokens["alice"], curve=good, timeout=5.0
        ) as client:
            assert client.ping()["agent"] == "alice"
        bad = {"public": bad_public, "secret": bad_secret, "server": server_public}
        with (
            MemoryClient(
                server.address, "alice", tokens["alice"], curve=bad, timeout=0.5, retries=1
            ) as client,
            pytest.raises(BusTimeoutError),
        ):
            client.ping()
        plain = MemoryClient(server.address, "alice", tokens["alice"], timeout=0.5, retries=0)
        with pytest.raises(BusTimeoutError):
            plain.ping()
        plain.close()


def test_events_over_curve(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, _ = keys(tmp_path, "server")
    public, secret = keys(allowed, "client")
    server, tokens = make_server(curve=CurveConfig(tmp_path / "server.key_secret", allowed))
    curve = {"public": public, "secret": secret, "server": server_public}

    async def run() -> dict[str, object]:
        client = AsyncMemoryClient(
            server.address, "alice", tokens["alice"], curve=curve, timeout=5.0
        )
        stream = client.events(["shared/team"])
        first = asyncio.ensure_future(stream.__anext__())
        await subscribed(server, 1)  # the SUB socket's handshake and subscription
        written = await client.write("shared", "team", NewItem("over CURVE"), now=0.0)
        event = await asyncio.wait_for(first, 5)
        await stream.aclose()
        client.close()
        return {**event, "expected": written.item_id}

    with server:
        event = asyncio.run(run())
    assert event["namespace"] == "team" and event["item_id"] == event["expected"]


@pytest.mark.parametrize("broken", ["missing keys dir", "public key as secret"])
def test_a_curve_setup_that_lets_nobody_in_is_refused_at_start(tmp_path: Path, broken: str) -> None:
    """zmq.auth only logs a missing directory; the bus then served, refusing everyone."""
    from hivemem.memory_bus.errors import ConfigError, HivememError

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    keys(tmp_path, "server")
    secret_file, keys_dir = tmp_path / "server.key_secret", allowed
    if broken == "missing keys dir":
        keys_dir = tmp_path / "alowed"
    else:
        secret_file = tmp_path / "server.key"
    server, _ = make_server(curve=CurveConfig(secret_file, keys_dir))
    with pytest.raises(HivememError) as info:
        server.start()
    assert isinstance(info.value.__cause__, ConfigError)
    assert str(keys_dir if broken == "missing keys dir" else secret_file) in str(info.value)
    server.stop()


def _served(server_address: str, token: str, curve: dict[str, bytes]) -> bool:
    client = MemoryClient(server_address, "alice", token, curve=curve, timeout=0.5, retries=0)
    try:
        return bool(client.ping()["agent"] == "alice")
    except BusTimeoutError:
        return False
    finally:
        client.close()


def test_keys_taken_out_or_put_in_count_once_reloaded(tmp_path: Path) -> None:
    """Before, the folder was read once, at start: a key taken out to revoke a client
    was let in until a restart. Now ``reload_curve_keys`` (SIGHUP in ``bus serve``)
    reads it again."""
    allowed, others, server_public = folders(tmp_path)
    old_public, old_secret = keys(allowed, "old")
    new_public, new_secret = keys(others, "new")
    server, tokens = make_server(curve=CurveConfig(tmp_path / "server.key_secret", allowed))
    old = {"public": old_public, "secret": old_secret, "server": server_public}
    new = {"public": new_public, "secret": new_secret, "server": server_public}
    with server:
        assert _served(server.address, tokens["alice"], old)
        assert not _served(server.address, tokens["alice"], new)
        (allowed / "old.key").unlink()
        (others / "new.key").rename(allowed / "new.key")
        assert server.reload_curve_keys() == (1, [])
        assert not _served(server.address, tokens["alice"], old)
        assert _served(server.address, tokens["alice"], new)
        # a half-copied key: zmq.auth kept the keys it had then, the revoked one too
        (allowed / "new.key").rename(others / "new.key")
        (allowed / "half.key").write_text("metadata\n")
        count, unreadable = server.reload_curve_keys()
        assert count == 0 and len(unreadable) == 1 and "half.key" in unreadable[0]
        assert not _served(server.address, tokens["alice"], new)


def test_a_keys_folder_lets_in_its_own_keys_not_its_siblings(tmp_path: Path) -> None:
    """zmq.auth reads a folder by a glob of its path: ``keys/*`` let in the keys of every
    folder beside it."""
    keys_root = tmp_path / "keys"
    (keys_root / "*").mkdir(parents=True)
    (keys_root / "revoked").mkdir()
    server_public, _ = keys(tmp_path, "server")
    mine_public, mine_secret = keys(keys_root / "*", "mine")
    gone_public, gone_secret = keys(keys_root / "revoked", "gone")
    curve = CurveConfig(tmp_path / "server.key_secret", keys_root / "*")
    server, tokens = make_server(curve=curve)
    with server:
        mine = {"public": mine_public, "secret": mine_secret, "server": server_public}
        gone = {"public": gone_public, "secret": gone_secret, "server": server_public}
        assert _served(server.address, tokens["alice"], mine)
        assert not _served(server.address, tokens["alice"], gone)


def test_a_keys_folder_named_star_lets_in_only_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zmq.auth reads the location "*" as "let every key in": a relative folder of that
    name let in a client with any key."""
    monkeypatch.chdir(tmp_path)
    Path("*").mkdir()  # holds no key at all
    server_public, _ = keys(tmp_path, "server")
    intruder_public, intruder_secret = keys(tmp_path, "intruder")
    server, tokens = make_server(curve=CurveConfig(tmp_path / "server.key_secret", Path("*")))
    intruder = {"public": intruder_public, "secret": intruder_secret, "server": server_public}
    with server:
        assert not _served(server.address, tokens["alice"], intruder)
