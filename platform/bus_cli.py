"""``hivemem bus``: run a bus server, and talk to one from the shell.

``serve`` runs a standalone server. The others are a client for people at a terminal
(``redis-cli`` is the model): ``token`` prints an agent's token, ``ping`` and ``stats``
ask a running bus, ``watch`` prints the memory events of the namespaces an agent may
read, one JSON line each. They act as the admin unless ``--agent`` names someone else,
with a token made from ``--secret-file`` (or given with ``--token``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import HivememError

if TYPE_CHECKING:
    from hivemem.memory_bus.data_check import DataCheck

bus_app = typer.Typer(no_args_is_help=True, help="The memory bus service.")

ADDRESS = typer.Option(
    "tcp://127.0.0.1:7777",
    "--address",
    "-a",
    help="The bus's ROUTER address (several, comma-separated: a sharded bus).",
)
SECRET_FILE = typer.Option(
    None, help="The bus secret (as given to serve): tokens are made from it."
)
AGENT = typer.Option(None, help="Act as this agent (default: the admin).")
TOKEN = typer.Option(None, help="The agent's token, for when you do not hold the secret.")
TIMEOUT = typer.Option(5.0, help="Seconds to wait for each reply.")
CURVE_KEY = typer.Option(
    None, help="This client's CURVE secret certificate (zmq.auth), for a bus that uses CURVE."
)
CURVE_SERVER_KEY = typer.Option(None, help="The bus's public CURVE certificate.")


@bus_app.command("serve")
def bus_serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(7777, help="ROUTER port for requests (0: any free port)."),
    pub_port: int = typer.Option(0, help="PUB port for memory events (0: any free port)."),
    data_dir: Path | None = typer.Option(
        None, help="Journal and snapshots; without it nothing survives a restart."
    ),
    fsync: str = typer.Option("everysec", help="always | everysec | no (as Redis's appendfsync)."),
    snapshot_every: int = typer.Option(50_000, min=0, help="Journal records between snapshots."),
    snapshot_log_mb: int = typer.Option(
        64,
        min=0,
        help="Also snapshot once the journal since the last snapshot holds this many MiB "
        "and as many bytes as that snapshot, as Redis's auto-aof-rewrite-min-size with "
        "auto-aof-rewrite-percentage 100 (0: by records only).",
    ),
    fork_snapshots: bool = typer.Option(
        True,
        help="Write snapshots from a forked process, as Redis's BGSAVE (with --no-: on the "
        "serving thread, which makes every client wait meanwhile).",
    ),
    secret_file: Path | None = typer.Option(
        None, help="Bus secret for agent tokens; created if missing."
    ),
    config: Path | None = typer.Option(
        None, help="Store configuration (JSON or YAML of StoreConfig)."
    ),
    metrics_port: int | None = typer.Option(None, help="Expose Prometheus /metrics on this port."),
    metrics_host: str = typer.Option("127.0.0.1", help="Interface for /metrics."),
    curve_secret_key: Path | None = typer.Option(None, help="Server CURVE secret certificate."),
    curve_public_keys: Path | None = typer.Option(
        None, help="Directory of allowed client certificates."
    ),
    spin_us: int = typer.Option(
        200,
        min=0,
        help="Busy-poll this many microseconds after answering, while requests come that "
        "close together: lower latency for the next one, for CPU while clients keep the "
        "bus busy (0: always sleep).",
    ),
    freeze_old_objects: bool = typer.Option(
        True,
        help="Freeze what outlives a full garbage collection, so full collections walk "
        "only newer objects, not the whole store (garbage cycles among frozen objects "
        "wait for an occasional whole collection).",
    ),
    event_queue: int = typer.Option(
        1000,
        min=0,
        help="Event messages queued for each subscriber; past it a slow subscriber's "
        "newest are dropped, and its client yields a gap record (0: no bound).",
    ),
) -> None:
    """Run a standalone bus server until interrupted."""
    from hivemem.memory_bus.auth import new_secret
    from hivemem.memory_bus.curve import CurveConfig
    from hivemem.memory_bus.embedder import describe_embedder
    from hivemem.memory_bus.journal import Journal
    from hivemem.memory_bus.server import BusServer
    from hivemem.memory_bus.store import MemoryStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    secret = _secret(secret_file, new_secret)
    curve = None
    if curve_secret_key is not None or curve_public_keys is not None:
        if curve_secret_key is None or curve_public_keys is None:
            raise typer.BadParameter("CURVE needs both --curve-secret-key and --curve-public-keys")
        curve = CurveConfig(curve_secret_key, curve_public_keys)
    try:
        journal = Journal(data_dir, fsync) if data_dir is not None else None
    except HivememError as exc:  # another bus holds the directory
        _fail(exc)
    except OSError as exc:
        _fail(HivememError(f"cannot use the data directory {data_dir}: {exc.strerror}"))
    server = BusServer(
        MemoryStore(_store_config(config)),
        host=host,
        port=port,
        pub_port=pub_port,
        secret=secret,
        journal=journal,
        snapshot_every=snapshot_every,
        snapshot_log_bytes=snapshot_log_mb << 20,
        fork_snapshots=fork_snapshots,
        curve=curve,
        spin_us=spin_us,
        freeze_old_objects=freeze_old_objects,
        event_queue=event_queue,
    )
    if metrics_port is not None:
        server.metrics.serve(metrics_port, metrics_host)
    try:
        server.start(timeout=None)  # recovering a large store takes as long as it takes
    except HivememError as exc:
        _fail_to_start(exc, data_dir)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    store = server.store
    typer.echo(
        f"hivemem bus serving on {server.address} (events on {server.pub_address}); dim "
        f"{store.config.dim}, embedder {describe_embedder(store.embedder_settings)}",
        err=True,
    )
    server.serve_forever()


def _fail_to_start(exc: HivememError, data_dir: Path | None) -> None:
    from hivemem.memory_bus.journal import JournalCorruptError, JournalGapError

    typer.echo(f"error: {exc.__cause__ or exc}", err=True)
    if isinstance(exc.__cause__, JournalCorruptError | JournalGapError):
        typer.echo(
            f"the data directory is damaged: `hivemem bus check {data_dir}` says where, and "
            "with --fix keeps the records before the damage (the rest is set aside)",
            err=True,
        )
    raise typer.Exit(1)


def _secret(path: Path | None, make: Callable[[], bytes]) -> bytes | None:
    if path is None:
        return None
    if not path.exists():
        path.write_bytes(make())
        path.chmod(0o600)
    return path.read_bytes()


def _store_config(path: Path | None) -> StoreConfig:
    if path is None:
        return StoreConfig()
    import yaml

    return StoreConfig.model_validate(yaml.safe_load(path.read_text()))


@bus_app.command("check")
def bus_check(
    data_dir: Path = typer.Argument(..., help="The data directory of a bus (not running)."),
    fix: bool = typer.Option(
        False,
        help="Cut the log back to the records before the first damage; the rest goes "
        "into a damaged-<time> folder in the directory, nothing is deleted.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a data directory as a restart would read it (redis-check-aof is the model).

    Exits 0 if a bus would start on it, 1 if it is damaged (and not fixed).
    """
    from hivemem.memory_bus.data_check import check_data_dir, fix_data_dir

    aside = None
    try:
        report = check_data_dir(data_dir)
        if fix and not report.ok:
            _print_check(report, as_json=False, err=True)
            report, aside = fix_data_dir(data_dir)
    except HivememError as exc:
        _fail(exc)
    if aside is not None:
        typer.echo(f"fixed: what followed the damage is in {aside}", err=True)
    _print_check(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


def _print_check(report: DataCheck, as_json: bool, err: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2), err=err)
        return
    if report.snapshot_seq is not None:
        size = report.snapshot_bytes / 1e6
        typer.echo(f"snapshot: records up to {report.snapshot_seq} ({size:.1f} MB)", err=err)
    for f in report.files:
        seqs = f"records {f.first_seq}..{f.last_seq}" if f.records else "no records"
        typer.echo(f"{Path(f.path).name}: {seqs} ({f.bytes / 1e6:.1f} MB)", err=err)
    if report.torn_tail_bytes:
        typer.echo(
            f"an unfinished last record ({report.torn_tail_bytes} bytes): a restart cuts it off",
            err=err,
        )
    if report.store_config == "none":
        typer.echo("store config: not kept (the log replays under the bus's own)", err=err)
    elif report.store_config == "kept":
        typer.echo("store config: kept (a restart under another replays the log under it)", err=err)
    if report.checkpoints_missing:
        typer.echo(
            f"checkpoints missing: {', '.join(report.checkpoints_missing)}: a restart under "
            "another store config would be refused",
            err=err,
        )
    damage = report.damage
    if damage is None:
        typer.echo(
            f"ok: a restart replays {_count(report.to_replay, 'record')}, up to record "
            f"{report.last_seq}",
            err=err,
        )
        return
    typer.echo(
        f"DAMAGED: {damage.path} at byte {damage.offset}: {damage.reason}; "
        f"{_count(damage.records_after, 'whole record')} after it. Sound: up to record "
        f"{report.last_seq} ({report.to_replay} to replay after the snapshot).",
        err=err,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- a client at the terminal ------------------------------------------------------------


@bus_app.command("token")
def bus_token(
    agent: str = typer.Argument(..., help="The agent id."),
    secret_file: Path = typer.Option(..., help="The bus secret (as given to serve)."),
) -> None:
    """Print an agent's token: the HMAC of its id under the bus secret."""
    from hivemem.memory_bus.auth import token_for

    typer.echo(token_for(_read_secret(secret_file), agent))


@bus_app.command("ping")
def bus_ping(
    address: str = ADDRESS,
    secret_file: Path | None = SECRET_FILE,
    agent: str | None = AGENT,
    token: str | None = TOKEN,
    timeout: float = TIMEOUT,
    curve_key: Path | None = CURVE_KEY,
    curve_server_key: Path | None = CURVE_SERVER_KEY,
) -> None:
    """Ask a bus who it thinks you are; print its answer and the round trip."""
    connection = _connection(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with _client(address, *connection) as client:
        started = time.perf_counter()
        answer = _asked(client.ping)
        answer["round_trip_ms"] = round((time.perf_counter() - started) * 1000, 3)
    typer.echo(json.dumps(answer, indent=2))


@bus_app.command("stats")
def bus_stats(
    address: str = ADDRESS,
    secret_file: Path | None = SECRET_FILE,
    agent: str | None = AGENT,
    token: str | None = TOKEN,
    timeout: float = TIMEOUT,
    curve_key: Path | None = CURVE_KEY,
    curve_server_key: Path | None = CURVE_SERVER_KEY,
) -> None:
    """Print the bus's counts per tier: namespaces, items, tokens, bytes, evictions, decisions."""
    connection = _connection(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with _client(address, *connection) as client:
        typer.echo(json.dumps(_asked(client.stats), indent=2, default=str))


@bus_app.command("items")
def bus_items(
    tier: str = typer.Argument(..., help="private, shared or graph."),
    namespace: str = typer.Argument(..., help="The namespace to list."),
    as_of: float | None = typer.Option(None, help="List only the items valid at this time."),
    page: int = typer.Option(500, min=1, max=4096, help="Items asked for per request."),
    address: str = ADDRESS,
    secret_file: Path | None = SECRET_FILE,
    agent: str | None = AGENT,
    token: str | None = TOKEN,
    timeout: float = TIMEOUT,
    curve_key: Path | None = CURVE_KEY,
    curve_server_key: Path | None = CURVE_SERVER_KEY,
) -> None:
    """Print a namespace's items in id order, one JSON line each (without vectors); the
    bus pages them out (its 'scan' op), and counts no recall."""
    connection = _connection(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with _client(address, *connection) as client:
        after: int | None = 0
        while after is not None:
            listed = _asked(
                partial(
                    client.scan,
                    tier,
                    namespace,
                    after=after,
                    limit=page,
                    as_of=as_of,
                    vectors=False,
                )
            )
            for item in listed.items:
                state = item.to_state()
                del state["vector"]
                typer.echo(_json_line(state))
            after = listed.next


@bus_app.command("edges")
def bus_edges(
    namespace: str = typer.Argument(..., help="The graph namespace to list."),
    as_of: float | None = typer.Option(None, help="List only the edges valid at this time."),
    type_: str | None = typer.Option(None, "--type", help="List only the edges of this type."),
    node: int | None = typer.Option(None, help="List only the edges at this node."),
    page: int = typer.Option(1000, min=1, max=4096, help="Edges asked for per request."),
    address: str = ADDRESS,
    secret_file: Path | None = SECRET_FILE,
    agent: str | None = AGENT,
    token: str | None = TOKEN,
    timeout: float = TIMEOUT,
    curve_key: Path | None = CURVE_KEY,
    curve_server_key: Path | None = CURVE_SERVER_KEY,
) -> None:
    """Print a graph namespace's edges in id order, one JSON line each, ended ones too
    (valid_to is then a time); the bus pages them out."""
    connection = _connection(secret_file, agent, token, timeout, curve_key, curve_server_key)
    asked = {"as_of": as_of, "type": type_, "node": node}
    with _client(address, *connection) as client:
        after = 0
        while True:
            listed = _asked(
                partial(
                    client.edges,
                    namespace,
                    after=after,
                    limit=page,
                    **{k: v for k, v in asked.items() if v is not None},
                )
            )
            for edge in listed:
                typer.echo(_json_line(edge))
            if len(listed) < page:
                return
            after = listed[-1]["id"]


def _json_line(state: dict[str, Any]) -> str:
    """An item's or an edge's state as one JSON line (an open ``valid_to`` as null)."""
    if math.isinf(state["valid_to"]):
        state = {**state, "valid_to": None}
    return json.dumps(state)


@bus_app.command("watch")
def bus_watch(
    topics: list[str] = typer.Argument(
        ...,
        help='"tier/namespace" (one the agent may read); the admin may also give "tier/" '
        '(a whole tier) or "" (everything).',
    ),
    address: str = ADDRESS,
    secret_file: Path | None = SECRET_FILE,
    agent: str | None = AGENT,
    token: str | None = TOKEN,
    timeout: float = TIMEOUT,
    count: int = typer.Option(0, min=0, help="Stop after this many events (0: never)."),
    curve_key: Path | None = CURVE_KEY,
    curve_server_key: Path | None = CURVE_SERVER_KEY,
) -> None:
    """Print memory events (add/update/delete/evict, and graph edges) as they happen, one
    JSON line each.

    Events this watcher missed (it fell behind, or reconnected) come as one line of kind
    "gap" in their place, with how many ("missed"; null if the bus lost its memory).
    """
    connection = _connection(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops watching
        asyncio.run(_watch(address, *connection, topics, count))


async def _watch(
    address: str, agent: str, token: str, kw: dict[str, Any], topics: list[str], count: int
) -> None:
    from hivemem.memory_bus.sharding import AsyncShardedClient, split_addresses

    addresses = split_addresses(address)
    client: Any = AsyncShardedClient(addresses, agent, token, **kw)
    stream = client.events(topics)
    typer.echo(f"watching {', '.join(map(repr, topics))} on {address} as {agent}", err=True)
    seen = 0
    try:
        async for event in stream:
            typer.echo(json.dumps(event))
            seen += 1
            if seen == count:
                break
    except HivememError as exc:
        _fail(exc)
    finally:
        await stream.aclose()
        client.close()


def _read_secret(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the secret: {exc}") from None


def _identity(secret_file: Path | None, agent: str | None, token: str | None) -> tuple[str, str]:
    """(agent id, token) to act as: the admin unless an agent is named."""
    from hivemem.memory_bus.auth import token_for
    from hivemem.memory_bus.protocol import ADMIN_AGENT

    agent_id = agent or ADMIN_AGENT
    if token is not None:
        return agent_id, token
    if secret_file is None:
        raise typer.BadParameter("give --secret-file (tokens are made from it) or --token")
    return agent_id, token_for(_read_secret(secret_file), agent_id)


def _connection(
    secret_file: Path | None,
    agent: str | None,
    token: str | None,
    timeout: float,
    curve_key: Path | None,
    curve_server_key: Path | None,
) -> tuple[str, str, dict[str, Any]]:
    """Who to act as, and the client's keyword arguments (timeout, CURVE keys)."""
    agent_id, agent_token = _identity(secret_file, agent, token)
    return agent_id, agent_token, {"timeout": timeout, "curve": _curve(curve_key, curve_server_key)}


def _client(address: str, agent: str, token: str, kw: dict[str, Any]) -> Any:
    from hivemem.memory_bus.client import MemoryClient

    return MemoryClient(address, agent, token, retries=0, **kw)


def _curve(key: Path | None, server_key: Path | None) -> dict[str, bytes] | None:
    """The client's CURVE keys from certificate files (``zmq.auth``), or None for none."""
    from hivemem.memory_bus.transport import curve_keys

    if key is None and server_key is None:
        return None
    if key is None or server_key is None:
        raise typer.BadParameter("CURVE needs both --curve-key and --curve-server-key")
    try:
        return curve_keys(key, server_key)
    except HivememError as exc:
        raise typer.BadParameter(str(exc)) from None


def _asked(call: Callable[[], Any]) -> Any:
    """``call()``, with the bus's refusals and timeouts as a message and exit status 1."""

    try:
        return call()
    except HivememError as exc:
        _fail(exc)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)
