"""What the ``hivemem bus`` client commands share: their options, who they act as and the
client they open; and how every ``hivemem`` command ends on an error (:func:`fail`).

The convention of the whole command line: an error ends a command with one line on
stderr, ``error: ...`` (a scenario's problems: ``error: NAME: N problem(s)`` and an
indented ``- ...`` line for each), never a traceback, and exit status

- 2 (:data:`BAD_INPUT`): the command line is wrong: a flag's value, a name, a file or
  folder it names (missing, unreadable, invalid); nothing was started. Click's own usage
  errors (an unknown option, a missing argument, a value out of an option's range) exit
  2 as well, with click's usage message;
- 1 (:data:`FAILED`): the command started and failed: a bus refused or did not answer, a
  socket could not be bound, a data directory is held or damaged, a run failed.

``validate`` and ``bus check`` exit 1 for what they find (an invalid scenario file, a
damaged data directory), as a linter does: that is their result, not bad input.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer
from hivemem.memory_bus.errors import HivememError

ADDRESS = typer.Option(
    "tcp://127.0.0.1:7777",
    "--address",
    "-a",
    help=(
        "The bus's ROUTER address (several, comma-separated, in shard order: the shards"
        " of a bus a run or start_bus_shards started)."
    ),
)
SECRET_FILE = typer.Option(
    None, help="The bus secret (as given to serve): tokens are made from it."
)
AGENT = typer.Option(None, help="Act as this agent (default: the admin).")
TOKEN = typer.Option(
    None,
    help="The agent's token, for when you do not hold the secret. Without it and without"
    " --secret-file, $HIVEMEM_TOKEN: prefer that, as a command line is visible to every"
    " user of the machine.",
)
TOKEN_VARIABLE = "HIVEMEM_TOKEN"
TIMEOUT = typer.Option(5.0, min=0.001, max=86_400.0, help="Seconds to wait for each reply.")
CURVE_KEY = typer.Option(
    None, help="This client's CURVE secret certificate (zmq.auth), for a bus that uses CURVE."
)
CURVE_SERVER_KEY = typer.Option(None, help="The bus's public CURVE certificate.")


def read_secret(path: Path) -> bytes:
    """The bus secret in ``path``; one that cannot be read, or is empty, ends the command
    (bad input)."""
    try:
        secret = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read the secret file {path} (--secret-file): {exc.strerror}", BAD_INPUT)
    if not secret:  # a bus given it would refuse to start; tokens from it would mean nothing
        fail(f"the secret file {path} is empty (--secret-file)", BAD_INPUT)
    return secret


def identity(secret_file: Path | None, agent: str | None, token: str | None) -> tuple[str, str]:
    """(agent id, token) to act as: the admin unless an agent is named.

    The token given, else one made from the secret file, else ``$HIVEMEM_TOKEN``: a
    variable exported for one agent must not stand in for a secret file given on the
    command line (the admin's commands then sent that agent's token).
    """
    from hivemem.memory_bus.auth import token_for
    from hivemem.memory_bus.protocol import ADMIN_AGENT

    if agent == "":
        fail("--agent names an agent: leave it out to act as the admin", BAD_INPUT)
    agent_id = agent or ADMIN_AGENT
    if token is not None:
        return agent_id, token
    if secret_file is not None:
        return agent_id, token_for(read_secret(secret_file), agent_id)
    from_environment = os.environ.get(TOKEN_VARIABLE)
    if not from_environment:
        fail(
            f"give --secret-file (tokens are made from it), --token or ${TOKEN_VARIABLE}", BAD_INPUT
        )
    return agent_id, from_environment


def client_args(
    secret_file: Path | None,
    agent: str | None,
    token: str | None,
    timeout: float,
    curve_key: Path | None,
    curve_server_key: Path | None,
) -> tuple[str, str, dict[str, Any]]:
    """Who to act as, and the client's keyword arguments (timeout, CURVE keys)."""
    agent_id, agent_token = identity(secret_file, agent, token)
    return (
        agent_id,
        agent_token,
        {"timeout": timeout, "curve": curve_of(curve_key, curve_server_key)},
    )


def check_name(parse: Callable[[str], object], name: str) -> None:
    """A name given on the command line (a tier, a retrieval method) is bad input unless
    ``parse`` knows it (its error says "did you mean"), before any bus is asked: the bus
    would refuse it too, but as a failure (exit 1)."""
    try:
        parse(name)
    except HivememError as exc:
        fail(exc, BAD_INPUT)


def open_client(address: str, agent: str, token: str, kw: dict[str, Any]) -> Any:
    from hivemem.memory_bus.client import MemoryClient

    try:
        return MemoryClient(address, agent, token, retries=0, **kw)
    except ValueError as exc:  # an address that names no bus ('', ',')
        fail(f"{exc} (--address)", BAD_INPUT)


def curve_of(key: Path | None, server_key: Path | None) -> dict[str, bytes] | None:
    """The client's CURVE keys from certificate files (``zmq.auth``), or None for none."""
    from hivemem.memory_bus.sockets import curve_keys

    if key is None and server_key is None:
        return None
    if key is None or server_key is None:
        fail("CURVE needs both --curve-key and --curve-server-key", BAD_INPUT)
    try:
        return curve_keys(key, server_key)
    except HivememError as exc:
        fail(exc, BAD_INPUT)


def asked(call: Callable[[], Any]) -> Any:
    """``call()``, with the bus's refusals and timeouts as a message and exit status 1."""

    try:
        return call()
    except HivememError as exc:
        fail(exc)


FAILED = 1
"""Exit status of a command that started and failed: a bus refused or did not answer, a
socket could not be bound, a run failed."""
BAD_INPUT = 2
"""Exit status of a command given bad input (a flag's value, a name, a file or folder it
names), refused before it started anything; click's own usage errors exit 2 too."""


def fail(problem: Exception | str, code: int = FAILED) -> NoReturn:
    """End the command with ``error: PROBLEM`` on stderr and exit status ``code``.

    Every command ends this way on an error it can name, so a script sees one line and a
    status that says whether to fix the command line (:data:`BAD_INPUT`) or try again
    (:data:`FAILED`). ``problem`` is one line, or a scenario's problems (``NAME: N
    problem(s)`` and an indented line for each).
    """
    text = problem if isinstance(problem, str) else f"{problem}{_hint(problem)}"
    typer.echo(f"error: {text}", err=True)
    raise typer.Exit(code)


def _hint(exc: Exception) -> str:
    """What to do about a refusal a person at a terminal meets first."""
    from hivemem.memory_bus.protocol import ADMIN_AGENT

    if isinstance(exc, HivememError) and exc.details.get("agent_id") == ADMIN_AGENT:
        return (
            " (the admin registers agents and reads no namespace: act as one that may,"
            " with --agent)"
        )
    return ""
