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


def secure(ctx: zmq.Context[Any], curve: CurveConfig, *sockets: zmq.Socket[Any]) -> Any:
    """Turn on CURVE for ``sockets``: clients must hold a key from ``public_keys_dir``.

    Returns:
        The running authenticator thread (``stop()`` it with the sockets).
    """
    from zmq.auth import load_certificate
    from zmq.auth.thread import ThreadAuthenticator

    _keys_dir(curve)
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
    auth.configure_curve(domain="*", location=_keys_dir(curve))
    for sock in sockets:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_server = public, secret, True
    return auth


def reload_keys(auth: Any, curve: CurveConfig) -> int:
    """Have ``auth`` (from :func:`secure`) read the allowed clients' keys again; how many
    there are now."""
    auth.configure_curve(domain="*", location=_keys_dir(curve))
    return len(auth.certs.get("*", {}))


def _keys_dir(curve: CurveConfig) -> str:
    """The folder of allowed clients' keys, as an absolute path for ``zmq.auth``.

    Absolute, because ``zmq.auth`` reads the location ``*`` as "let every key in"
    (``CURVE_ALLOW_ANY``): a folder named ``*`` in the working directory let in clients
    with any key.

    Raises:
        ConfigError: it is not a directory (``zmq.auth`` would log it and let nobody in).
    """
    path = Path(curve.public_keys_dir)
    if not path.is_dir():
        raise ConfigError(f"the allowed clients' public keys: {path} is not a directory")
    return str(path.resolve())
