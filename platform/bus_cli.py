"""``hivemem bus``: run a bus server, and talk to one from the shell.

``serve`` runs a standalone server (its input files, the store configuration and the
secret, are read and checked in :mod:`hivemem.platform.bus_setup`), ``check`` checks its
data directory. The others are
a client for people at a terminal (``redis-cli`` is the model): ``token`` prints an
agent's token, ``ping`` and ``stats`` ask a running bus, ``watch`` prints the memory
events of the namespaces an agent may read, one JSON line each, and ``items``,
``edges`` and ``search`` (:mod:`hivemem.platform.bus_reads`) what a namespace holds. They act as the
admin unless ``--agent`` names someone else, with a token made from ``--secret-file``
(or given with ``--token``; :mod:`hivemem.platform.bus_connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from hivemem.memory_bus.errors import HivememError
from hivemem.platform.bus_connect import (
    ADDRESS,
    AGENT,
    BAD_INPUT,
    CURVE_KEY,
    CURVE_SERVER_KEY,
    FAILED,
    SECRET_FILE,
    TIMEOUT,
    TOKEN,
    asked,
    check_name,
    client_args,
    fail,
    open_client,
    read_secret,
)
from hivemem.platform.bus_reads import bus_edges, bus_items, bus_search, json_line
from hivemem.platform.bus_setup import empty_store, fsync_policy, read_or_make_secret

if TYPE_CHECKING:
    from hivemem.memory_bus.data_check import DataCheck
    from hivemem.memory_bus.server import BusServer

bus_app = typer.Typer(no_args_is_help=True, help="The memory bus service.")


@bus_app.command("serve")
def bus_serve(
    host: str = typer.Option(
        "127.0.0.1",
        help="Interface to bind (an IPv6 one too: ::1; clients then use tcp://[::1]:PORT).",
    ),
    port: int = typer.Option(
        7777, min=0, max=65535, help="ROUTER port for requests (0: any free port)."
    ),
    pub_port: int | None = typer.Option(
        None,
        min=0,
        max=65535,
        help="PUB port for memory events (default: --port + 1, so that subscribers find it"
        " again after a restart; 0: any free port).",
    ),
    data_dir: Path | None = typer.Option(
        None, help="Journal and snapshots; without it nothing survives a restart."
    ),
    fsync: str = typer.Option("everysec", help="always | everysec | no (as Redis's appendfsync)."),
    snapshot_every: int = typer.Option(50_000, min=1, help="Journal records between snapshots."),
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
        None,
        help="Bus secret for agent tokens; created (readable by its owner only) if missing. "
        "Without it the secret lives in this process alone: no client can make a token.",
    ),
    config: Path | None = typer.Option(
        None, help="Store configuration (JSON or YAML of StoreConfig)."
    ),
    metrics_port: int | None = typer.Option(
        None, min=0, max=65535, help="Expose Prometheus /metrics on this port."
    ),
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

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # The policy and the config file are checked before the secret is written or the
    # data directory locked.
    policy = fsync_policy(fsync)
    if pub_port is None and port == 65535:
        fail("--port 65535 leaves no --port + 1 for events: give --pub-port", BAD_INPUT)
    store = empty_store(config)
    secret = read_or_make_secret(secret_file, new_secret)
    curve = None
    if curve_secret_key is not None or curve_public_keys is not None:
        if curve_secret_key is None or curve_public_keys is None:
            fail("CURVE needs both --curve-secret-key and --curve-public-keys", BAD_INPUT)
        curve = CurveConfig(curve_secret_key, curve_public_keys)
    try:
        journal = Journal(data_dir, policy) if data_dir is not None else None
    except HivememError as exc:  # another bus holds the directory
        fail(exc)
    except OSError as exc:
        fail(f"cannot use the data directory {data_dir} (--data-dir): {exc.strerror}", BAD_INPUT)
    server = BusServer(
        store,
        host=host,
        port=port,
        pub_port=(port + 1 if port else 0) if pub_port is None else pub_port,
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
    metrics = ""
    if metrics_port is not None:
        metrics = f", metrics on {serve_metrics(server.metrics.serve, metrics_port, metrics_host)}"
    # Before the recovery, which may take long: a SIGTERM meanwhile stops it once bound.
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    if curve is not None:  # revoking a client: take its key out of the folder, then HUP
        signal.signal(signal.SIGHUP, lambda *_: _reload_keys(server))
    try:
        server.start(timeout=None)  # recovering a large store takes as long as it takes
    except HivememError as exc:
        _fail_to_start(exc, data_dir)
    if secret is None:
        typer.echo(
            "warning: no --secret-file: this bus's secret lives in this process alone, so "
            "no client can make a token for it",
            err=True,
        )
    typer.echo(
        f"hivemem bus serving on {server.address} (events on {server.pub_address}"
        f"{metrics}); dim "
        f"{store.config.dim}, embedder {describe_embedder(store.embedder_settings)}",
        err=True,
    )
    try:
        server.serve_forever()
    except HivememError as exc:  # it stopped by itself (an fsync failed): say why, exit 1
        fail(exc)


def _fail_to_start(exc: HivememError, data_dir: Path | None) -> NoReturn:
    """End ``serve`` whose server did not start: a CURVE key file it cannot load is bad
    input (exit 2); a socket it cannot bind or a damaged data directory a failure (exit
    1), the latter with a second line that says the way out."""
    from hivemem.memory_bus.data_files import SNAPSHOT_NAME
    from hivemem.memory_bus.errors import ConfigError
    from hivemem.memory_bus.journal_frames import JournalCorruptError, JournalGapError

    cause = exc.__cause__
    text = str(cause or exc)
    if isinstance(cause, JournalCorruptError) and cause.details["path"].endswith(SNAPSHOT_NAME):
        text += (
            "\nthe snapshot is damaged: restore it from a backup (the log it replaced is gone,"
            f" so --fix cannot rebuild it); `hivemem bus check {data_dir}` says more"
        )
    elif isinstance(cause, JournalCorruptError | JournalGapError):
        text += (
            f"\nthe data directory is damaged: `hivemem bus check {data_dir}` says where, and "
            "with --fix keeps the records before the damage (the rest is set aside)"
        )
    fail(text, BAD_INPUT if isinstance(cause or exc, ConfigError) else FAILED)


def _reload_keys(server: BusServer) -> None:
    """Read the allowed clients' CURVE keys again (on SIGHUP) and say how many there are."""
    try:
        allowed, unreadable = server.reload_curve_keys()
    except HivememError as exc:
        typer.echo(f"warning: the CURVE client keys were not read again: {exc}", err=True)
        return
    typer.echo(f"read the CURVE client keys again: {allowed} allowed", err=True)
    for line in unreadable:
        typer.echo(f"warning: no client gets in by {line}", err=True)


def serve_metrics(serve: Callable[[int, str], int], port: int, host: str) -> str:
    """``serve(port, host)``: expose a registry's /metrics (``hivemem run``'s or ``bus
    serve``'s); its URL, with the port it got (port 0: any free one, which only the
    server knows). A port or interface it cannot bind (in use, or no address of this
    machine) ends the command with one line, exit status 1."""
    try:
        bound = serve(port, host)
    except OSError as exc:  # socket.gaierror too: a host that names no address
        why = exc.strerror or exc
        fail(f"cannot serve /metrics on {host}:{port} (--metrics-port): {why}")
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{bound}/metrics"


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

    Exits 0 if a bus would start on it, 1 if it is damaged (and not fixed), 2 if there is
    no such directory.
    """
    from hivemem.memory_bus.data_check import check_data_dir, fix_data_dir

    aside = None
    try:
        report = check_data_dir(data_dir)
    except HivememError as exc:  # no such directory
        fail(exc, BAD_INPUT)
    except OSError as exc:  # a file where a folder belongs, or the other way round
        fail(f"cannot read {exc.filename or data_dir}: {exc.strerror or exc}", BAD_INPUT)
    if fix and not report.ok:
        _print_check(report, as_json=False, err=True)
        try:
            report, aside = fix_data_dir(data_dir)
        except (HivememError, OSError) as exc:  # a damaged snapshot it will not cut
            fail(exc)
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
            f"an unfinished (or damaged) last record ({report.torn_tail_bytes} bytes): a restart"
            " cuts it off",
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

    _check_agent_id(agent)
    typer.echo(token_for(read_secret(secret_file), agent))


def _check_agent_id(agent_id: str, groups: list[str] | tuple[()] = ()) -> None:
    """An empty agent id or group is bad input: no request authenticates as the one, no
    namespace is named by the other."""
    if not agent_id:
        fail("an agent id cannot be empty", BAD_INPUT)
    if "" in groups:
        fail("--group '' names no group", BAD_INPUT)


@bus_app.command("register")
def bus_register(
    agent_id: str = typer.Argument(..., help="The agent id."),
    group: list[str] = typer.Option(
        [], "--group", "-g", help="A group whose shared and graph namespaces it may use (repeat)."
    ),
    role: str = typer.Option("agent", help="Its role: which graph levels it may touch."),
    address: str = ADDRESS,
    secret_file: Path | None = SECRET_FILE,
    token: str | None = typer.Option(
        None, help="The admin's token, if you do not hold the secret."
    ),
    timeout: float = TIMEOUT,
    curve_key: Path | None = CURVE_KEY,
    curve_server_key: Path | None = CURVE_SERVER_KEY,
) -> None:
    """Register an agent (as the admin), or register it anew: its groups and role replace
    the ones it had. Prints its token."""
    _check_agent_id(agent_id, group)
    connection = client_args(secret_file, None, token, timeout, curve_key, curve_server_key)
    with open_client(address, *connection) as client:
        answer = asked(lambda: client.register(agent_id, group, role))
    typer.echo(answer["token"])


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
    connection = client_args(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with open_client(address, *connection) as client:
        started = time.perf_counter()
        answer = asked(client.ping)
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
    connection = client_args(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with open_client(address, *connection) as client:
        typer.echo(json.dumps(asked(client.stats), indent=2, default=str))


bus_app.command("items")(bus_items)
bus_app.command("edges")(bus_edges)
bus_app.command("search")(bus_search)


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
    connection = client_args(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops watching
        asyncio.run(_watch(address, *connection, topics, count))


async def _watch(
    address: str, agent: str, token: str, kw: dict[str, Any], topics: list[str], count: int
) -> None:
    from hivemem.memory_bus.arguments import split_topic
    from hivemem.memory_bus.item import TierName
    from hivemem.memory_bus.sharding import AsyncShardedClient, split_addresses

    try:
        addresses = split_addresses(address)
        for topic in topics:
            tier, _ = split_topic(topic)
            if tier:  # "": every tier
                check_name(TierName.parse, tier)
    except ValueError as exc:
        fail(f"{exc} (--address)", BAD_INPUT)
    except HivememError as exc:
        fail(exc, BAD_INPUT)
    client: Any = AsyncShardedClient(addresses, agent, token, **kw)
    stream = client.events(topics)
    typer.echo(f"watching {', '.join(map(repr, topics))} on {address} as {agent}", err=True)
    seen = 0
    try:
        async for event in stream:
            typer.echo(json_line(event))
            seen += 1
            if seen == count:
                break
    except HivememError as exc:
        fail(exc)
    finally:
        await stream.aclose()
        client.close()
