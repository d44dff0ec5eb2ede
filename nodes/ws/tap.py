"""``tap``: the debug client -- print a ``ws_sink`` stream, one JSON per line.

Wired to ``les02-flow tap [URL] [--types a,b] [--count N] [--reconnect S]``. The messages go
to ``out`` unchanged (one per line, flushed per line, so ``| jq`` and ``| head`` work);
everything else (connected, closed, errors, reconnecting) goes to stderr.
"""

from __future__ import annotations

import asyncio
import difflib
import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidProxy,
    InvalidStatus,
    InvalidURI,
)

from les02_flow.events import KNOWN_TYPES
from les02_flow.nodes.ws.sink import TypeFilterError, parse_types_query

#: environment variable whose value tap sends as `Authorization: Bearer <token>`
TOKEN_ENV = "LES02_WS_TOKEN"

__all__ = ["DEFAULT_URL", "EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "run_tap", "tap", "tap_url"]

DEFAULT_URL = "ws://localhost:8765"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
_HINT = "is `les02-flow run` running?"


def tap_url(url: str = DEFAULT_URL, types: Sequence[str] | str | None = None) -> str:
    """``url`` with ``?types=...`` added; raises ``ValueError`` for a bad URL or type list.

    ``types`` items may themselves be comma-separated (``["a,b", "c"]``); a plain string is
    one comma-separated list. A URL without a scheme gets ``ws://``.

    >>> tap_url("ws://localhost:8765", ["position_sample", "ride_end"])
    'ws://localhost:8765/?types=position_sample,ride_end'
    >>> tap_url("127.0.0.1:9000", "ride_start")
    'ws://127.0.0.1:9000/?types=ride_start'
    >>> tap_url("ws://localhost:8765")
    'ws://localhost:8765'
    """
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r} (expected ws://HOST:PORT)")
    if types is None:
        return url
    items = [types] if isinstance(types, str) else list(types)
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    query = urlencode([("types", ",".join(names))], safe=",")
    try:
        parse_types_query("/?" + query)  # the server's rules, checked before connecting
    except TypeFilterError as exc:
        raise ValueError(f"--types: {exc}") from None
    if parts.query:
        query = parts.query + "&" + query
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, parts.fragment))


#: first wait before reconnecting; it doubles up to the ``reconnect`` cap
RECONNECT_INITIAL = 0.5
#: close codes after which a restarted sink is worth waiting for: going away (a sink that
#: stops or restarts), connection lost, server restart, try again later
_RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013})


async def tap(
    url: str = DEFAULT_URL,
    types: Sequence[str] | None = None,
    out: TextIO = sys.stdout,
    count: int | None = None,
    reconnect: float = 0.0,
) -> int:
    """Connect to a ``ws_sink`` and write each message to ``out`` as one line.

    Stops after ``count`` messages when given. Returns an exit code: 0 when ``count`` messages
    arrived or the server closed normally (1000/1001); 1 when it cannot connect (stderr says
    the URL, the cause and "is `les02-flow run` running?") or the server closed it with an
    error code (for example 1008 for a bad ``--types`` filter or a too slow client); 2 for a
    bad argument (URL, types, count < 1). Cancellation propagates (after the connection is
    closed): a CLI should call :func:`run_tap`, which turns Ctrl-C into exit code 0.

    ``reconnect`` > 0: once connected, a connection that ends because the sink went away
    (1001, e.g. it was stopped or restarted), was lost (1006) or restarts (1011-1013) is
    reconnected, waiting ``RECONNECT_INITIAL`` seconds and doubling up to ``reconnect``
    seconds between attempts (reset after each successful connection), until ``count``
    messages arrived or the task is cancelled. A refused connection (HTTP 401/403, 1008) or
    a normal close (1000) still ends it. The first connection is never retried: a wrong URL
    says so at once.
    """
    err = sys.stderr
    if count is not None and count < 1:
        print(f"tap: --count must be at least 1, got {count}", file=err)
        return EXIT_USAGE
    if not reconnect >= 0:
        print(f"tap: --reconnect must be >= 0, got {reconnect}", file=err)
        return EXIT_USAGE
    try:
        full_url = tap_url(url, types)
    except ValueError as exc:
        print(f"tap: {exc}", file=err)
        return EXIT_USAGE

    for name in _unknown_types(types):
        close = difflib.get_close_matches(name, sorted(KNOWN_TYPES), n=1)
        maybe = f" (did you mean '{close[0]}'?)" if close else ""
        print(
            f"tap: warning: no les02-flow node emits events of type '{name}'{maybe}; "
            "waiting for them anyway (a flow or plugin may)",
            file=err,
        )
    options: dict[str, Any] = {}
    token = os.environ.get(TOKEN_ENV)
    if token:
        options["additional_headers"] = {"Authorization": f"Bearer {token}"}
    if _is_loopback(urlsplit(full_url).hostname or ""):
        options["proxy"] = None  # a proxy cannot reach this machine's loopback

    received = 0
    connected = False
    delay = RECONNECT_INITIAL
    while True:
        ws, code, retry = await _connect(full_url, options, token, quiet=connected)
        if ws is None:
            if not (connected and retry and reconnect):
                return code
        else:
            connected = True
            delay = RECONNECT_INITIAL
            print(f"tap: connected to {full_url}", file=err, flush=True)
            received, done = await _stream(ws, out, count, received)
            if done:
                return EXIT_OK
            code = _closed(ws, full_url)
            if not (reconnect and ws.close_code in _RECONNECT_CODES | {None}):
                return code
        print(f"tap: reconnecting to {full_url} in {delay:g} s", file=err, flush=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, reconnect)


async def _connect(
    url: str, options: dict[str, Any], token: str | None, *, quiet: bool
) -> tuple[ClientConnection | None, int, bool]:
    """``(connection, 0, _)`` or ``(None, exit code, worth retrying)``; says why on stderr
    (only the first time the sink is unreachable while reconnecting: ``quiet``)."""
    err = sys.stderr
    try:
        return await connect(url, **options), EXIT_OK, False
    except InvalidURI as exc:
        print(f"tap: invalid URL {url!r}: {exc}", file=err)
        return None, EXIT_USAGE, False
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = _HINT
        if status == 401:
            hint = (
                f"the sink wants a token: ${TOKEN_ENV} is set but wrong"
                if token
                else f"the sink wants a token: export {TOKEN_ENV}=<the sink's token_env value>"
            )
        print(f"tap: cannot connect to {url}: HTTP {status} ({hint})", file=err)
        return None, EXIT_ERROR, status >= 500
    except (OSError, TimeoutError, InvalidHandshake, InvalidProxy) as exc:
        if not quiet:
            cause = str(exc) or type(exc).__name__
            print(f"tap: cannot connect to {url}: {cause} ({_HINT})", file=err)
        return None, EXIT_ERROR, True


async def _stream(
    ws: ClientConnection, out: TextIO, count: int | None, received: int
) -> tuple[int, bool]:
    """Copy messages to ``out`` until the connection ends; ``(received, count reached)``."""
    try:
        async with ws:  # closes the connection (code 1000) on every way out
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                out.write(text + "\n")
                out.flush()
                received += 1
                if count is not None and received >= count:
                    return received, True
    except ConnectionClosed:
        pass
    return received, False


def run_tap(
    url: str = DEFAULT_URL,
    types: Sequence[str] | None = None,
    out: TextIO = sys.stdout,
    count: int | None = None,
    reconnect: float = 0.0,
) -> int:
    """Run :func:`tap` in a fresh event loop; Ctrl-C ends it with exit code 0."""
    try:
        return asyncio.run(tap(url, types, out, count, reconnect))
    except KeyboardInterrupt:
        return EXIT_OK


def _closed(ws: ClientConnection, url: str) -> int:
    """Report how the server ended the stream and pick the exit code."""
    code = ws.close_code
    reason = ws.close_reason or ""
    what = f"code {code}" + (f" {reason!r}" if reason else "") if code else "connection lost"
    if code in (1000, 1001):
        print(f"tap: {url} closed the connection ({what})", file=sys.stderr)
        return EXIT_OK
    print(f"tap: connection to {url} ended: {what}", file=sys.stderr)
    return EXIT_ERROR


def _unknown_types(types: Sequence[str] | None) -> list[str]:
    items = [types] if isinstance(types, str) else list(types or ())
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    return [n for n in names if n not in KNOWN_TYPES]


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
