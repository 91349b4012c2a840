"""Who the rows of a batch are: each agent a row names, authenticated by its token.

An agent host batches the writes of many agents into one request, each row naming its
agent and carrying that agent's token. Tokens are credentials, so the journal must not
keep them: a changing request has every row's token checked before it is journaled
(:func:`authenticate_rows`), its record keeps the rows without their tokens
(:func:`journal_args`), and a replay takes the rows on trust (``Context.replaying``).
A replay that checked tokens would also depend on the secret: a bus restarted under a
new secret (the way to revoke a leaked token) dropped every on-behalf write it had
acknowledged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hivemem.memory_bus.arguments import field
from hivemem.memory_bus.auth import AgentRegistry
from hivemem.memory_bus.errors import HivememError, in_row
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.protocol import (
    MAX_BATCH,
    Code,
    Op,
    ProtocolError,
    encode_reply,
    unpack_reply,
)

if TYPE_CHECKING:
    from hivemem.memory_bus.handlers import Context

_VERIFIED_MAX = 1 << 20


def authenticate(
    registry: AgentRegistry, verified: set[tuple[str, str]] | None, agent: str, token: str
) -> Caller:
    """``registry.authenticate`` that remembers the pairs it has accepted in ``verified``.

    A token is an HMAC of the agent id under a secret that never changes while the
    server runs, so a pair once accepted stays valid; a batch of thousands of entries
    from a few hundred agents then costs a set lookup per entry instead of an HMAC.
    The caller's groups and role are still read from the registry every time.
    """
    if verified is not None and (agent, token) in verified:
        caller = registry.agents.get(agent)
        return caller if caller is not None else Caller(agent)
    caller = registry.authenticate(agent, token)
    if verified is not None:
        if len(verified) >= _VERIFIED_MAX:
            verified.clear()
        verified.add((agent, token))
    return caller


def column_callers(ctx: Context, agents: Any, tokens: Any, n: int) -> list[Caller]:
    """Each row's caller: the request's, or the agent (and token) the row names."""
    if agents is None and tokens is None:
        return [ctx.caller] * n
    if ctx.replaying and tokens is None and type(agents) is list:
        tokens = [""] * len(agents)  # the journal keeps no tokens (journal_args)
    if not (type(agents) is list and type(tokens) is list and len(agents) == len(tokens) == n):
        raise ProtocolError(
            Code.BAD_REQUEST, "columns 'agent' and 'token' must be lists of one str per row",
            field="columns.agent",
        )  # fmt: skip
    if n and set(map(type, agents)) | set(map(type, tokens)) != {str}:
        raise ProtocolError(
            Code.BAD_REQUEST, "columns 'agent' and 'token' hold str values", field="columns.agent"
        )
    callers: dict[tuple[str, str], Caller] = {}
    for agent, token in zip(agents, tokens, strict=True):
        if (agent, token) not in callers:
            callers[(agent, token)] = ctx.row_caller(agent, token)
    return [callers[pair] for pair in zip(agents, tokens, strict=True)]


def authenticate_rows(ctx: Context, op: Op, args: dict[str, Any]) -> None:
    """Check the token of every agent a ``write_many``'s rows name, before the request
    is journaled, as its handler will (the same errors; a pair accepted here costs the
    handler a set lookup).

    Rows this cannot read are left to the handler, which refuses them whatever the
    secret, on a replay too.

    Raises:
        ProtocolError: a row's agent or token is not a str, or its token is wrong.
    """
    if op is not Op.WRITE_MANY:
        return
    columns = args.get("columns")
    if isinstance(columns, dict):
        texts = columns.get("text")
        named = "agent" in columns or "token" in columns
        if named and type(texts) is list and len(texts) <= MAX_BATCH:
            column_callers(ctx, columns.get("agent"), columns.get("token"), len(texts))
        return
    rows = args.get("items")
    if type(rows) is not list:
        return
    for i, row in enumerate(rows[: MAX_BATCH + 1]):
        if isinstance(row, dict) and "agent" in row:
            try:
                ctx.entry_caller(row)
            except HivememError as exc:
                raise in_row(exc, i) from None


def journal_args(op: Op, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` as the journal keeps them: a ``write_many``'s rows without their tokens
    (checked already: :func:`authenticate_rows`). Copies only what it changes."""
    if op is not Op.WRITE_MANY:
        return args
    columns = args.get("columns")
    if isinstance(columns, dict):
        if "token" not in columns:
            return args
        return {**args, "columns": {k: v for k, v in columns.items() if k != "token"}}
    rows = args.get("items")
    if type(rows) is not list or not any(isinstance(r, dict) and "token" in r for r in rows):
        return args
    kept = [
        {k: v for k, v in r.items() if k != "token"} if isinstance(r, dict) else r for r in rows
    ]
    return {**args, "items": kept}


def kept_reply(op: Op, reply: bytes) -> bytes:
    """What the retry memory keeps of a change's ``reply``: an applied ``register``'s
    without its token (kept replies go into snapshots, which hold no credential; a retry
    gets the token made again: :func:`reply_again`)."""
    return token_free(reply) if op is Op.REGISTER else reply


def token_free(reply: bytes) -> bytes:
    """``reply`` without a token its result holds (one kept before tokens were left out
    of the retry memory: a snapshot an older bus wrote)."""
    if b"token" not in reply:
        return reply
    try:
        body = unpack_reply(reply)
    except ProtocolError:
        return reply
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, dict) or "token" not in result:
        return reply
    return encode_reply(body["id"], {})


def reply_again(op: Op, args: dict[str, Any], kept: bytes, token: Any) -> bytes:
    """The answer to a retried change, from the reply the memory kept: a ``register``'s
    with the token made again by ``token(agent_id)`` (it depends on the secret alone)."""
    if op is not Op.REGISTER:
        return kept
    body = unpack_reply(kept)
    if not body.get("ok") or body.get("result") != {}:
        return kept
    return encode_reply(body["id"], {"token": token(field(args, "agent_id", str))})
