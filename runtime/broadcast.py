"""One broadcast core for sinks that serve many clients: plain Python, no asyncio, no sockets.

``ws_sink``, ``ecuconnect_tcp_sink`` (and any node that fans a stream out to network clients,
e.g. a web console's browser clients) keep the same rules, implemented once here:

* every client has a bounded :class:`ClientQueue` of ready-made bytes (encoded once for all
  clients); what is queued goes out in ONE write per client per flush;
* while a client's transport is above its high-water mark the queue is *paused* and the
  bound applies; beyond it, ``policy`` decides: ``drop_oldest`` drops the oldest queued
  messages (counted), ``disconnect`` discards the queue and the client is kicked;
* a :class:`Broadcaster` owns the client set: ``max_clients`` (refusals counted and logged
  rate-limited), the connect/disconnect log lines with totals, the per-node counters
  (``out``, ``dropped``, ``clients_connected``, ``clients_disconnected``,
  ``clients_refused``, ``clients_too_slow``) and the flush.

The I/O is a thin adapter: an object with the :class:`Transport` methods (``ready``, ``write``,
``kick``). :mod:`les02_flow.wscompat` has the WebSocket one; the ECUconnect sink's
``asyncio.Protocol`` is the TCP one. Use it like this (on the event-loop thread)::

    core = Broadcaster(node.counters, node.log, limit=1000,   # node.log adds "TYPE 'ID': "
                       policy="drop_oldest", max_clients=16)
    client = core.admit(transport, peer="127.0.0.1:50312")   # None: refused (max_clients)
    core.publish(data, topic="ride_end")                      # queue for who wants it
    core.flush()                                              # one write per ready client
    core.remove(client, "closed")                             # on disconnect
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import Field

from .node import Counters, Logger, Node, RateLimitedLog

__all__ = [
    "Broadcaster",
    "Client",
    "ClientQueue",
    "Policy",
    "Transport",
    "Unit",
    "format_peer",
    "server_fields",
]

Policy = Literal["drop_oldest", "disconnect"]
#: what a queue's ``limit`` counts
Unit = Literal["messages", "bytes"]


class ClientQueue:
    """What one client still has to receive beyond its transport (bounded, plain Python).

    :meth:`push` queues ``data`` carrying ``n`` messages (a ready-made frame, or a batch of
    packets joined into one ``bytes``); :meth:`take` returns everything queued as ONE
    ``bytes``. The bound is ``limit`` messages or bytes (``unit``). While the queue is not
    :attr:`paused` (the client keeps up and is flushed every loop iteration) it may hold
    ``slack`` more -- the burst one loop iteration hands over (``None``: unbounded, for
    sinks whose flush always takes everything). When a push would exceed the bound:

    * ``drop_oldest``: the oldest queued chunks are dropped (their messages counted in
      :attr:`dropped`) until the new one fits; a single chunk larger than the bound is still
      kept alone, so the client resumes with the newest data;
    * ``disconnect``: everything is discarded (counted), :attr:`overflowed` is set and
      ``push`` returns ``False`` from then on: the caller must disconnect the client.

    >>> q = ClientQueue(2, "drop_oldest")
    >>> q.pause(); [q.push(m) for m in (b"1", b"2", b"3")], q.take(), q.dropped
    ([True, True, True], (b'23', 2), 1)
    >>> q = ClientQueue(4, "disconnect", unit="bytes"); q.pause()
    >>> q.push(b"xx", 1), q.push(b"yyy", 1), q.overflowed, q.dropped, q.take()
    (True, False, True, 2, (b'', 0))
    >>> q = ClientQueue(2, "disconnect", slack=8)  # not paused: a burst fits
    >>> all(q.push(b"m") for _ in range(5)), len(q)
    (True, 5)
    """

    __slots__ = (
        "_bytes",
        "_items",
        "_messages",
        "_slack",
        "dropped",
        "limit",
        "overflowed",
        "paused",
        "policy",
        "sent",
        "unit",
    )

    def __init__(
        self, limit: int, policy: Policy, *, unit: Unit = "messages", slack: int | None = 0
    ) -> None:
        if limit < 1:
            raise ValueError(f"queue limit must be >= 1 {unit}, got {limit}")
        self.limit = limit
        self.policy: Policy = policy
        self.unit: Unit = unit
        self._slack = slack
        self.paused = False
        self.overflowed = False
        #: messages this client did not get because of the policy
        self.dropped = 0
        #: messages taken for writing
        self.sent = 0
        self._items: deque[tuple[bytes, int]] = deque()
        self._bytes = 0
        self._messages = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._messages

    def __bool__(self) -> bool:
        return bool(self._items)

    def push(self, data: bytes, n: int = 1) -> bool:
        """Queue ``data`` (``n`` messages); ``False``: overflowed under ``disconnect``."""
        if self.overflowed:
            self.dropped += n
            return False
        by_bytes = self.unit == "bytes"
        size = len(data) if by_bytes else n
        used = self._bytes if by_bytes else self._messages
        if self.paused:
            bound = self.limit
        elif self._slack is None:
            bound = used + size
        else:
            bound = self.limit + self._slack
        if used + size > bound:
            items = self._items
            if self.policy == "disconnect":
                self.dropped += self._messages + n
                items.clear()
                self._bytes = self._messages = 0
                self.overflowed = True
                return False
            while items and used + size > bound:
                old, k = items.popleft()
                self._bytes -= len(old)
                self._messages -= k
                self.dropped += k
                used = self._bytes if by_bytes else self._messages
        self._items.append((data, n))
        self._bytes += len(data)
        self._messages += n
        return True

    def take(self) -> tuple[bytes, int]:
        """Everything queued as one ``bytes``, and how many messages; empty afterwards."""
        items = self._items
        if not items:
            return b"", 0
        n = self._messages
        data = items[0][0] if len(items) == 1 else b"".join([d for d, _ in items])
        items.clear()
        self._bytes = self._messages = 0
        self.sent += n
        return data, n

    def pause(self) -> None:
        """The transport's write buffer is above its high-water mark: the bound applies."""
        self.paused = True

    def resume(self) -> None:
        """The transport drained below its low-water mark."""
        self.paused = False


class Transport(Protocol):
    """The I/O side of one client, implemented by each protocol adapter."""

    def ready(self) -> bool:
        """True when :meth:`write` may be called now. An adapter whose transport is behind
        pauses the client's queue (and starts whatever waits for it to drain) and says
        ``False``."""

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport (never blocks)."""

    def kick(self, reason: str) -> None:
        """Close this client because it is too slow (``reason`` says why)."""


T = TypeVar("T", bound=Transport)


class Client(Generic[T]):
    """One admitted client: its transport adapter, queue, event-type filter and peer name."""

    __slots__ = ("closed", "kicked", "peer", "queue", "topics", "transport")

    def __init__(
        self, transport: T, peer: str, queue: ClientQueue, topics: frozenset[str] | None
    ) -> None:
        self.transport = transport
        self.peer = peer
        self.queue = queue
        #: the message topics (event types) it wants; ``None`` = all
        self.topics = topics
        #: why the server dropped it (empty while it is connected or left by itself)
        self.kicked = ""
        #: :meth:`Broadcaster.remove` ran
        self.closed = False


class Broadcaster(Generic[T]):
    """The client set of one sink: admission, publish, flush, counters and log lines.

    ``counters`` and ``log`` are the node's (its :attr:`Node.log` adds the ``TYPE 'ID': ``
    prefix to every line);
    ``limit``/``policy``/``unit``/``slack`` configure every client's :class:`ClientQueue`;
    ``noun`` names what a message is in the disconnect line (``"message"``, ``"frame"``).
    """

    def __init__(
        self,
        counters: Counters,
        log: Logger,
        *,
        limit: int,
        policy: Policy,
        max_clients: int,
        unit: Unit = "messages",
        slack: int | None = 0,
        noun: str = "message",
    ) -> None:
        self.counters = counters
        self.log = log
        self.limit = limit
        self.policy: Policy = policy
        self.unit: Unit = unit
        self.slack = slack
        self.max_clients = max_clients
        self.noun = noun
        self._clients: dict[Client[T], None] = {}  # insertion-ordered set
        self._refusal_log = RateLimitedLog(log)

    @classmethod
    def for_node(cls, node: Node[Any], **options: Any) -> Broadcaster[T]:
        """The core of a node whose config has ``buffer``, ``policy`` and ``max_clients``
        (:func:`server_fields`); ``options`` are ``unit``, ``slack``, ``noun`` and ``policy``
        (for a config without one)."""
        config = node.config
        options.setdefault("policy", getattr(config, "policy", "drop_oldest"))
        return cls(
            node.counters,
            node.log,
            limit=config.buffer,
            max_clients=config.max_clients,
            **options,
        )

    # -- the set -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client[T]]:
        return iter(list(self._clients))

    def __contains__(self, client: object) -> bool:
        return client in self._clients

    def admit(
        self, transport: T, peer: str, topics: frozenset[str] | None = None, detail: str = ""
    ) -> Client[T] | None:
        """Add a client, or ``None`` when ``max_clients`` are connected (counted in
        ``clients_refused`` and logged, at most one line per 5 s with a suppressed count)."""
        if len(self._clients) >= self.max_clients:
            self.counters.bump("clients_refused")
            self._refusal_log(
                logging.WARNING,
                "refused client %s: already %d clients (max_clients)",
                peer,
                len(self._clients),
            )
            return None
        queue = ClientQueue(self.limit, self.policy, unit=self.unit, slack=self.slack)
        client = Client(transport, peer, queue, topics)
        self._clients[client] = None
        self.counters.bump("clients_connected")
        self.log.info(
            "client %s connected%s. Total clients: %d",
            peer,
            f" ({detail})" if detail else "",
            len(self._clients),
        )
        return client

    def remove(self, client: Client[T], why: str) -> None:
        """The client's connection is gone: forget it and log the line with its totals
        (once per client; ``why`` is replaced by the kick reason when it was kicked)."""
        if client.closed:
            return
        client.closed = True
        self._clients.pop(client, None)
        self.counters.bump("clients_disconnected")
        queue = client.queue
        self.log.info(
            "client %s disconnected (%s): %d %s(s) sent, %d dropped. Total clients: %d",
            client.peer,
            client.kicked or why,
            queue.sent,
            self.noun,
            queue.dropped,
            len(self._clients),
        )

    # -- the stream ----------------------------------------------------------------------

    def wants(self, topic: str | None) -> bool:
        """Whether some client wants messages of ``topic`` (worth encoding one)."""
        for client in self._clients:
            topics = client.topics
            if topics is None or topic in topics:
                return True
        return False

    def publish(self, data: bytes, n: int = 1, topic: str | None = None) -> bool:
        """Queue ``data`` (``n`` messages) for every client that wants ``topic``; ``True``
        when at least one did (then ask for a flush)."""
        return self.publish_lazy(lambda: data, topic, n)

    def publish_lazy(self, make: Callable[[], bytes], topic: str | None, n: int = 1) -> bool:
        """Like :meth:`publish`, building the bytes with ``make()`` only when some client
        wants ``topic`` (an exception from ``make`` propagates before anything is queued)."""
        data: bytes | None = None
        slow: list[Client[T]] | None = None
        for client in self._clients:
            topics = client.topics
            if topics is not None and topic not in topics:
                continue
            if data is None:
                data = make()
            if not self._offer(client, data, n):
                slow = [*(slow or ()), client]
        for client in slow or ():
            self._kick(client)
        return data is not None

    def publish_many(self, items: list[bytes], topics: list[str]) -> bool:
        """Queue a batch of messages (``items[i]`` of topic ``topics[i]``, in order) as ONE
        chunk per client: a client that wants every topic gets all of them joined (joined
        once, the same ``bytes`` for all such clients), a filtered client the join of the
        ones it wants (joined once per distinct filter). ``True`` when a client got any."""
        if not items:
            return False
        every: bytes | None = None
        chosen: dict[frozenset[str], tuple[bytes, int]] = {}
        slow: list[Client[T]] | None = None
        queued = False
        for client in self._clients:
            wanted = client.topics
            if wanted is None:
                if every is None:
                    every = items[0] if len(items) == 1 else b"".join(items)
                data, n = every, len(items)
            else:
                got = chosen.get(wanted)
                if got is None:
                    mine = [d for d, t in zip(items, topics, strict=True) if t in wanted]
                    got = chosen[wanted] = (b"".join(mine), len(mine))
                data, n = got
                if not n:
                    continue
            queued = True
            if not self._offer(client, data, n):
                slow = [*(slow or ()), client]
        for client in slow or ():
            self._kick(client)
        return queued

    def flush(self) -> int:
        """One write per client for everything queued; clients whose transport is behind
        (not ``ready``) keep their queue. Returns the messages written."""
        written = 0
        for client in self._clients:
            queue = client.queue
            if not queue or queue.paused or not client.transport.ready():
                continue
            data, n = queue.take()
            client.transport.write(data)
            written += n
        self.counters.emitted += written
        return written

    def write_backlog(self, client: Client[T]) -> int:
        """The client's transport drained: write its whole queue at once (and resume it)."""
        queue = client.queue
        queue.resume()
        data, n = queue.take()
        if n:
            client.transport.write(data)
            self.counters.emitted += n
        return n

    def _offer(self, client: Client[T], data: bytes, n: int) -> bool:
        """Push ``data`` (``n`` messages) to one client's queue, counting what its policy
        dropped; ``False`` when the client is too slow (the caller kicks it afterwards)."""
        queue = client.queue
        before = queue.dropped
        ok = queue.push(data, n)
        if queue.dropped != before:
            self.counters.dropped += queue.dropped - before
        return ok

    def _kick(self, client: Client[T]) -> None:
        """Overflow under ``disconnect``: out of the set at once, closed by the adapter."""
        self._clients.pop(client, None)
        if client.kicked:
            return
        self.counters.bump("clients_too_slow")
        unit = "messages" if self.unit == "messages" else "bytes"
        client.kicked = f"too slow: more than {self.limit} {unit} queued (policy: disconnect)"
        client.transport.kick(client.kicked)


def format_peer(address: object) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a socket address, ``?`` when unknown.

    >>> format_peer(("127.0.0.1", 5000)), format_peer(("::1", 5000, 0, 0)), format_peer(None)
    ('127.0.0.1:5000', '[::1]:5000', '?')
    """
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "?"


def server_fields(
    *,
    host: tuple[str, str],
    buffer: int,
    buffer_unit: str,
    dropped: str,
    on_full: str,
    refusal: str,
) -> dict[str, Any]:
    """The ``host`` / ``buffer`` / ``policy`` / ``max_clients`` config fields of a
    broadcasting sink, worded for it: ``host`` is (default, description), ``buffer_unit``
    what ``buffer`` counts, ``dropped`` what ``drop_oldest`` drops, ``on_full`` what
    ``disconnect`` does, ``refusal`` what happens to clients beyond ``max_clients``.

    >>> sorted(server_fields(host=("127.0.0.1", "where"), buffer=10, buffer_unit="messages",
    ...                      dropped="messages", on_full="closes it", refusal="closed"))
    ['buffer', 'host', 'max_clients', 'policy']
    """
    return {
        "host": Field(default=host[0], min_length=1, description=host[1]),
        "buffer": Field(
            default=buffer,
            ge=1,
            description=f"Most {buffer_unit} queued per client; beyond that `policy` applies.",
        ),
        "policy": Field(
            default="drop_oldest",
            description=f"When a client's queue is full: 'drop_oldest' drops its oldest queued "
            f"{dropped} and counts them; 'disconnect' {on_full}.",
        ),
        "max_clients": Field(
            default=64,
            ge=1,
            description=f"Most clients at once; further ones are {refusal} and counted "
            "(logged at most once every 5 s).",
        ),
    }
