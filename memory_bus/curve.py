"""CURVE encryption and client authentication for the bus's sockets (``zmq.auth``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from hivemem.memory_bus.errors import ConfigError


@dataclass(frozen=True)
class CurveConfig:
    """CURVE encryption and client authentication (``zmq.auth``).

    Attributes:
        secret_key_file: The server's secret certificate (``zmq.auth.create_certificates``).
        public_keys_dir: A directory of the public certificates of allowed clients.
    """

    secret_key_file: Path
    public_keys_dir: Path


class AllowedKeys:
    """The public keys of the clients a bus lets in, as ``zmq.auth``'s credentials
    provider: read here, from the ``*.key`` files of one folder, not by ``zmq.auth``.

    ``zmq.auth`` reads a folder by a glob of its path: a folder named ``*`` let every
    key in (``CURVE_ALLOW_ANY``), ``/keys/*`` let in the keys of every sibling folder,
    and a path with ``[`` loaded none; and it keeps the keys it had, with a log line
    alone, when a file cannot be read, so that a key taken out to revoke a client
    stayed good.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.keys: frozenset[bytes] = frozenset()

    def callback(self, domain: str, client_key: bytes) -> bool:
        """Whether ``client_key`` (z85) may connect (``zmq.auth`` asks, per connection)."""
        return client_key in self.keys

    def read(self) -> list[str]:
        """Read the folder again: from now on, exactly the keys of its readable ``*.key``
        files are allowed (an unreadable one lets nobody in by it). Returns what could
        not be read, one line each.

        Raises:
            ConfigError: the folder is not a directory.
        """
        from zmq.auth import load_certificate

        if not self.folder.is_dir():
            raise ConfigError(f"the allowed clients' public keys: {self.folder} is not a directory")
        keys, unreadable = set(), []
        for path in sorted(self.folder.iterdir()):
            if path.suffix != ".key" or not path.is_file():
                continue
            try:
                public, _ = load_certificate(path)
            except (OSError, ValueError) as exc:
                unreadable.append(f"{path}: {exc}")
                continue
            if public:
                keys.add(public)
            else:
                unreadable.append(f"{path}: no public key in it")
        self.keys = frozenset(keys)
        return unreadable


def secure(
    ctx: zmq.Context[Any], curve: CurveConfig, *sockets: zmq.Socket[Any]
) -> tuple[Any, AllowedKeys]:
    """Turn on CURVE for ``sockets``: clients must hold a key from ``public_keys_dir``.

    Returns:
        The running authenticator thread (``stop()`` it with the sockets), and the keys
        it lets in (:meth:`AllowedKeys.read` reads them again).

    Raises:
        ConfigError: the server's key cannot be loaded, or the folder of client keys is
            not a directory or holds a ``*.key`` file that cannot be read.
    """
    from zmq.auth import load_certificate
    from zmq.auth.thread import ThreadAuthenticator

    allowed = AllowedKeys(curve.public_keys_dir)
    unreadable = allowed.read()
    if unreadable:
        raise ConfigError("cannot read a client's public key: " + "; ".join(unreadable))
    try:
        public, secret = load_certificate(curve.secret_key_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the CURVE secret key {curve.secret_key_file}: {exc}"
        ) from exc
    if secret is None:
        raise ConfigError(f"{curve.secret_key_file} holds no secret key (a public certificate?)")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allowed)
    for sock in sockets:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_server = public, secret, True
    return auth, allowed
