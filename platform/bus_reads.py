"""``hivemem bus items | edges | search``: what a namespace holds, from the shell.

One JSON line per item or edge, paged out by the bus (``scan``, and ``edges`` with
``limit``), so a namespace of any size prints without one reply over the message limit;
``search`` prints what a text query finds, best first. None of them is a recall: no
item's hits or access time change, so looking does not steer LRU, LFU or retention.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import typer
from hivemem.platform.bus_connect import (
    ADDRESS,
    AGENT,
    BAD_INPUT,
    CURVE_KEY,
    CURVE_SERVER_KEY,
    SECRET_FILE,
    TIMEOUT,
    TOKEN,
    asked,
    check_name,
    client_args,
    fail,
    open_client,
)


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
    from hivemem.memory_bus.item import TierName

    check_name(TierName.parse, tier)
    connection = client_args(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with open_client(address, *connection) as client:
        after: int | None = 0
        while after is not None:
            listed = asked(
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
                typer.echo(json_line(state))
            after = listed.next


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
    connection = client_args(secret_file, agent, token, timeout, curve_key, curve_server_key)
    filters = {"as_of": as_of, "type": type_, "node": node}
    with open_client(address, *connection) as client:
        after = 0
        while True:
            listed = asked(
                partial(
                    client.edges,
                    namespace,
                    after=after,
                    limit=page,
                    **{k: v for k, v in filters.items() if v is not None},
                )
            )
            for edge in listed:
                typer.echo(json_line(edge))
            if len(listed) < page:
                return
            after = listed[-1]["id"]


def bus_search(
    tier: str = typer.Argument(..., help="private, shared or graph."),
    namespace: str = typer.Argument(..., help="The namespace to search."),
    query: str = typer.Argument(..., help="The query's text; the bus embeds it."),
    k: int = typer.Option(5, "--k", "-k", min=1, max=1000, help="How many hits."),
    as_of: float | None = typer.Option(None, help="Only items valid at this time."),
    method: str | None = typer.Option(
        None,
        help="Graph tier: rank the matched nodes by 'khop' or 'ppr' (the graph's retrieval),"
        " or 'vector' (by similarity alone, as without it).",
    ),
    address: str = ADDRESS,
    secret_file: Path | None = SECRET_FILE,
    agent: str | None = AGENT,
    token: str | None = TOKEN,
    timeout: float = TIMEOUT,
    curve_key: Path | None = CURVE_KEY,
    curve_server_key: Path | None = CURVE_SERVER_KEY,
) -> None:
    """Print what a text query finds in a namespace, best first, one JSON line each
    (score and item, without its vector); a look, not a recall."""
    from hivemem.memory_bus.item import TierName
    from hivemem.memory_bus.walks import retrieval_method

    check_name(TierName.parse, tier)
    if method is not None and tier != "graph":
        fail("--method ranks graph nodes: give it with the graph tier", BAD_INPUT)
    if method is not None:
        check_name(retrieval_method, method)
    connection = client_args(secret_file, agent, token, timeout, curve_key, curve_server_key)
    with open_client(address, *connection) as client:
        if method is None:
            call = partial(
                client.search, tier, namespace, query, k, now=None, as_of=as_of, vectors=False
            )
        else:
            call = partial(
                client.retrieve, namespace, query, k, now=None, method=method, as_of=as_of
            )
        for hit in asked(call):
            state = hit.item.to_state()
            del state["vector"]
            typer.echo(json_line({"score": hit.score, **state}))


def json_line(state: dict[str, Any]) -> str:
    """An item's, an edge's or an event's state as one line of strict JSON: an infinite
    time (an open ``valid_to``) as null, bytes (in ``meta``) as ``{"hex": "..."}``."""
    state = {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in state.items()}
    return json.dumps(state, default=_bytes_as_hex, allow_nan=False)


def _bytes_as_hex(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"hex": bytes(value).hex()}
    raise TypeError(f"{type(value).__name__} is not JSON")
