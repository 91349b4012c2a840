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

    if not Path(curve.public_keys_dir).is_dir():  # zmq.auth logs it and lets nobody in
        raise ConfigError(
            f"the allowed clients' public keys: {curve.public_keys_dir} is not a directory"
        )
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
    auth.configure_curve(domain="*", location=str(curve.public_keys_dir))
    for sock in sockets:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_server = public, secret, True
    return auth
