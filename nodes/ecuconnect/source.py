"""The ``ecuconnect_source`` node: frames from an ECUconnect Logger (TCP) into the flow.

Connects to ``host:port`` (or finds a logger by zeroconf), decodes the byte stream with
:class:`.codec.Decoder` and emits each frame on ``out`` with the packet's timestamp, on the
event-loop thread. A refused, lost or corrupt connection is logged once and retried with
capped exponential backoff (:class:`les02_flow.nodes.can_source.Backoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any, ClassVar

import can
from pydantic import Field, model_validator
from reactivex import Observable
from reactivex.subject import Subject

from les02_flow.configfields import RetryFields
from les02_flow.node import Context, Kind, Node, NodeConfig
from les02_flow.nodes.background import ConnectTask
from les02_flow.nodes.can_source import Backoff

from .codec import Decoder, EcuconnectProtocolError
from .mdns import browse

__all__ = ["EcuconnectSource", "EcuconnectSourceConfig"]

#: bytes asked for per socket read
READ_SIZE = 256 * 1024
#: seconds ``stop()`` waits for the connection task
STOP_TIMEOUT = 2.0


class EcuconnectSourceConfig(NodeConfig, RetryFields):
    """Config of ``ecuconnect_source``."""

    host: str | None = Field(
        default=None,
        description="Logger address (name or IP). Unset: find one by zeroconf (discover).",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Logger TCP port (needed with host)."
    )
    discover: bool = Field(
        default=False,
        description="Find the logger by zeroconf (_ecuconnect-log._tcp.local.) before each "
        "connection attempt instead of using host/port. Sends mDNS multicast.",
    )
    service_name: str | None = Field(
        default=None,
        description="With discover: only a logger whose instance name equals or starts with "
        "this (e.g. 'ECUconnect-Logger lab'); unset = the first one found.",
    )
    zeroconf_interfaces: list[str] = Field(
        default_factory=list,
        description="With discover: IPv4 addresses of the interfaces to browse on (e.g. "
        "[127.0.0.1]); empty = all interfaces.",
    )
    discover_timeout: float = Field(
        default=5.0, gt=0, description="Seconds one discovery attempt waits for a logger."
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a TCP connection attempt may take."
    )

    @model_validator(mode="after")
    def _check(self) -> EcuconnectSourceConfig:
        if self.discover:
            if self.host is not None or self.port is not None:
                raise ValueError("set either host/port or discover: true, not both")
        else:
            if self.host is None or self.port is None:
                raise ValueError("set host and port, or discover: true to find a logger")
            if self.service_name is not None:
                raise ValueError("service_name needs discover: true")
        for addr in self.zeroconf_interfaces:
            try:
                ipaddress.IPv4Address(addr)
            except ValueError:
                raise ValueError(f"zeroconf_interfaces: {addr!r} is not an IPv4 address") from None
        return self


class _NotFound(Exception):
    """Discovery found no matching logger."""


def _pick_address(addresses: tuple[str, ...]) -> str | None:
    """First IPv4 address, else the first one (IPv6 with scope)."""
    for a in addresses:
        if ":" not in a:
            return a
    return addresses[0] if addresses else None


class EcuconnectSource(Node[EcuconnectSourceConfig]):
    """Read CAN frames from an ECUconnect Logger over TCP (another les02-flow, canlogger.py).

    Connects to ``host``:``port``, or with ``discover: true`` finds a logger by zeroconf
    (optionally the one whose name starts with ``service_name``), and emits every frame it
    receives on ``out`` as a ``can.Message`` with the packet's timestamp and flags (EXT, FD,
    BRS, ESI) and ``channel`` = ``host:port``. This lets one les02-flow consume another's bus
    across the network.

    A connection that is refused, lost, or sends an impossible packet (the stream cannot be
    resynchronised, so the connection is dropped) is logged once with the reason and retried
    with capped exponential backoff (``retry_initial`` doubling up to ``retry_max``); a line is
    logged when it is back. The node never finishes by itself.

    Counters: ``out`` = frames emitted (counted by the runtime); extra: ``connects``,
    ``connect_failures``, ``protocol_errors``.
    """

    type_name: ClassVar[str] = "ecuconnect_source"
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.FRAME}
    examples: ClassVar[tuple[str, ...]] = (
        "remote:\n  type: ecuconnect_source\n  host: 127.0.0.1\n  port: 42420\n",
        "remote:\n"
        "  type: ecuconnect_source\n"
        "  discover: true\n"
        "  service_name: ECUconnect-Logger lab\n"
        "  retry_max: 30\n",
    )

    def __init__(self, node_id: str, config: EcuconnectSourceConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self._subject: Subject[can.Message] = Subject()
        self._connect = ConnectTask(f"ecuconnect_source {node_id}", STOP_TIMEOUT)
        self._writer: asyncio.StreamWriter | None = None
        #: ``host:port`` of the current connection, or ``None``
        self.connected_to: str | None = None

    @property
    def bus_info(self) -> dict[str, str]:
        """interface ``ecuconnect``, channel ``host:port`` (or ``zeroconf:<name>``)."""
        cfg = self.config
        if cfg.discover:
            channel = f"zeroconf:{cfg.service_name or '*'}"
        else:
            channel = f"{cfg.host}:{cfg.port}"
        return {"interface": "ecuconnect", "channel": channel}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        return {"out": self._subject}

    async def start(self) -> None:
        """Start connecting in the background (never raises for an unreachable logger)."""
        self._connect.start(self.ctx.get_loop(), self._run)

    async def stop(self) -> None:
        """Close the connection, complete ``out``. Idempotent, bounded, never raises."""
        await self._connect.stop(self.log, self._abort, self._subject.on_completed)

    def _abort(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.transport.abort()

    # -- connection loop ---------------------------------------------------------------------

    async def _target(self) -> tuple[str, int, str]:
        cfg = self.config
        if not cfg.discover:
            assert cfg.host is not None and cfg.port is not None
            return cfg.host, cfg.port, f"{cfg.host}:{cfg.port}"
        found = await browse(
            cfg.discover_timeout,
            interfaces=cfg.zeroconf_interfaces,
            name=cfg.service_name,
            first=True,
        )
        for info in found:
            addr = _pick_address(info.addresses)
            if addr is not None:
                self.log.info(
                    "discovered '%s' at %s port %d",
                    info.name,
                    addr,
                    info.port,
                )
                return addr, info.port, info.name
        wanted = f"named '{cfg.service_name}*'" if cfg.service_name else "at all"
        raise _NotFound(f"no ECUconnect logger {wanted} found within {cfg.discover_timeout} s")

    async def _run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.retry_initial, cfg.retry_max)
        failing = False
        while True:
            try:
                host, port, label = await self._target()
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, limit=READ_SIZE), cfg.connect_timeout
                )
            except (OSError, TimeoutError, _NotFound) as exc:
                self.counters.bump("connect_failures")
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                level = self.log.debug if failing else self.log.warning
                level(
                    "cannot connect to %s: %s (retrying with backoff)",
                    self.bus_info["channel"],
                    reason,
                )
                failing = True
                await asyncio.sleep(backoff.next())
                continue
            self._writer = writer
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self.counters.bump("connects")
            self.connected_to = f"{host}:{port}"
            self.log.info(
                "connected to %s (%s)%s",
                self.connected_to,
                label,
                " -- back after a failure" if failing else "",
            )
            failing = False
            backoff.reset()
            why = await self._pump(reader, Decoder(channel=self.connected_to))
            self.connected_to = None
            self._writer = None
            writer.transport.abort()
            self.log.warning(
                "connection to %s:%d ended: %s (reconnecting)",
                host,
                port,
                why,
            )
            failing = True
            await asyncio.sleep(backoff.next())

    async def _pump(self, reader: asyncio.StreamReader, decoder: Decoder) -> str:
        """Emit frames until the connection ends; returns why it ended."""
        emit = self._subject.on_next
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except OSError as exc:
                return f"{type(exc).__name__}: {exc}"
            if not data:
                return "closed by the logger"
            try:
                frames = decoder.feed(data)
            except EcuconnectProtocolError as exc:
                for frame in exc.frames:
                    emit(frame)
                self.counters.bump("protocol_errors")
                return f"protocol error: {exc}"
            for frame in frames:
                emit(frame)
