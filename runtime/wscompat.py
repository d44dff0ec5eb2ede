"""The websockets internals les02-flow relies on, in one place, and the WebSocket adapter of
the broadcast core (:mod:`les02_flow.broadcast`).

Sinks write ready-made text frames straight to the connection's transport (one write per
client per flush, the frame bytes built once for all clients) instead of awaiting ``send``
per message and client. That needs four things ``websockets.asyncio`` does not promise as
public API; they are used only here:

* ``ServerConnection.transport`` -- the asyncio transport (``write``, ``abort``,
  ``get_write_buffer_size``, ``pause_reading``);
* ``ServerConnection.paused`` -- set by the transport's ``pause_writing`` callback;
* ``ServerConnection.drain()`` -- waits until the transport resumes writing;
* ``ServerConnection.data_received`` -- the ``asyncio.Protocol`` callback, extended by
  :class:`GuardedServerConnection` to bound what websockets writes by itself.

``pyproject.toml`` pins websockets below the next major release (:data:`TESTED`), and
``tests/nodes/test_wscompat.py`` fails loudly when a release changes any of them.

Use for a node that serves WebSocket clients (``ws_sink``, a web console)::

    server = await serve(handler, host, port, create_connection=GuardedServerConnection, ...)

    async def handler(ws):
        peer = WsPeer(ws)
        client = core.admit(peer, format_peer(ws.remote_address))
        if client is None:
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many clients"); return
        await peer.serve(core, client)      # returns when the client is gone
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from .broadcast import Broadcaster, Client, ClientQueue

__all__ = [
    "CONTROL_LIMIT",
    "TESTED",
    "GuardedServerConnection",
    "WsPeer",
    "describe_close",
    "text_frame",
]

#: the websockets releases this module is tested with (pyproject.toml pins the same)
TESTED = ">=13.0,<18"
#: bytes websockets may write on its own (pongs, close frames) that the client does not read
#: before the connection is closed with 1008
CONTROL_LIMIT = 64 * 1024

_log = logging.getLogger(__name__)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2) as a server sends it.

    Server frames are never masked, so the bytes are the same for every client: sinks build
    them once per event.

    >>> text_frame(b"hi")
    b'\\x81\\x02hi'
    >>> text_frame(bytes(200))[:4], text_frame(bytes(70000))[:10]
    (b'\\x81~\\x00\\xc8', b'\\x81\\x7f\\x00\\x00\\x00\\x00\\x00\\x01\\x11p')
    """
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class GuardedServerConnection(ServerConnection):
    """A ``ServerConnection`` that bounds what websockets writes in reply to the client.

    websockets answers every ping with a pong written straight to the transport, whatever
    the client reads: a client that sends pings and never reads would grow the server's
    write buffer without bound (the ping flood). This class counts the bytes websockets
    writes while handling inbound data and forgets them whenever the write buffer empties
    (the client reads); beyond :data:`CONTROL_LIMIT` it stops reading from the client (TCP
    back-pressure stops the flood), sends a close frame with 1008 and aborts the connection
    if the close has not completed ``close_timeout`` seconds later. ``on_control_flood`` (set
    by the node) is called once, with the peer's unread byte count.
    """

    control_limit: ClassVar[int] = CONTROL_LIMIT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control_unread = 0
        self.flooded = False
        self.on_control_flood: Callable[[int], None] | None = None

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        before = transport.get_write_buffer_size()
        super().data_received(data)
        after = transport.get_write_buffer_size()
        if before == 0:
            self.control_unread = 0
        if after > before:
            self.control_unread += after - before
            if self.control_unread > self.control_limit and not self.flooded:
                self._flood()

    def _flood(self) -> None:
        self.flooded = True
        transport = self.transport
        transport.pause_reading()
        if self.on_control_flood is not None:
            try:
                self.on_control_flood(self.control_unread)
            except Exception:  # a callback bug must not keep the flood going
                _log.exception("on_control_flood failed")
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            self.close(CloseCode.POLICY_VIOLATION, "too many unread control frames")
        )
        task.add_done_callback(_ignore_result)
        timeout = self.close_timeout if self.close_timeout is not None else 2.0
        loop.call_later(timeout, _abort_if_open, transport)


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _abort_if_open(transport: asyncio.Transport) -> None:
    transport.abort()  # a no-op once the connection is gone


class WsPeer:
    """The broadcast core's :class:`~les02_flow.broadcast.Transport` for one WebSocket.

    Queued frames are written straight to the transport from the core's flush; while the
    connection is above its write limit the client's queue is paused and this peer's writer
    task (in :meth:`serve`) waits for the socket to drain and then writes the whole backlog at
    once. Frames are written only while the connection is OPEN, so they never follow a close
    frame; websockets still does the handshake, pings and the closing handshake.
    """

    __slots__ = ("_queue", "_tasks", "shutdown", "wake", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self._queue: ClientQueue | None = None
        self.wake = asyncio.Event()
        #: set by :meth:`close_gracefully`: write what is queued, then close with 1001
        self.shutdown = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- Transport ----------------------------------------------------------------------

    def ready(self) -> bool:
        ws = self.ws
        if ws.protocol.state is not State.OPEN:
            return False
        if ws.paused:
            if self._queue is not None:
                self._queue.pause()
            self.wake.set()
            return False
        return True

    def write(self, data: bytes) -> None:
        self.ws.transport.write(data)

    def kick(self, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self.ws.close(CloseCode.POLICY_VIOLATION, reason)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_ignore_result)

    # -- helpers --------------------------------------------------------------------------

    def write_buffer_size(self) -> int:
        """Bytes in the transport's write buffer (beyond the kernel's)."""
        return self.ws.transport.get_write_buffer_size()

    def abort(self) -> None:
        self.ws.transport.abort()

    def close_gracefully(self) -> None:
        """Flush what is queued, then close with 1001 "server shutting down"."""
        self.shutdown = True
        self.wake.set()

    async def serve(
        self,
        core: Broadcaster[WsPeer],
        client: Client[WsPeer],
        on_inbound: Callable[[str | bytes], None] | None = None,
    ) -> None:
        """Run this client until it is gone: its writer, and reading inbound messages (each
        handed to ``on_inbound``, else ignored). ``core.remove`` is left to the caller (it
        knows why the client left: :func:`describe_close`)."""
        self._queue = client.queue
        writer = asyncio.get_running_loop().create_task(self._write(core, client))
        try:
            async for message in self.ws:
                if on_inbound is not None:
                    on_inbound(message)
        except ConnectionClosed:
            pass
        finally:
            if not writer.done():
                writer.cancel()
            await asyncio.wait([writer])
            if not writer.cancelled() and writer.exception() is not None:
                core.log.error("writer for %s failed", client.peer, exc_info=writer.exception())

    async def _write(self, core: Broadcaster[WsPeer], client: Client[WsPeer]) -> None:
        ws, queue, wake = self.ws, client.queue, self.wake
        try:
            while True:
                await wake.wait()
                wake.clear()
                while queue.paused or (self.shutdown and queue):
                    if ws.protocol.state is not State.OPEN:
                        return
                    if ws.paused:  # behind: let the socket drain first
                        await ws.drain()
                        continue
                    core.write_backlog(client)
                    await asyncio.sleep(0)  # let other clients run
                if self.shutdown:
                    await ws.close(CloseCode.GOING_AWAY, "server shutting down")
                    return
        except ConnectionClosed:
            return


def describe_close(ws: ServerConnection) -> str:
    """``code 1000 'bye'``, or ``connection lost`` when no close frame came."""
    code = ws.close_code
    if code is None:
        return "connection lost"
    reason = ws.close_reason
    return f"code {code}" + (f" {reason!r}" if reason else "")
