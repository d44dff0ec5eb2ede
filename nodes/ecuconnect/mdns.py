"""Zeroconf (mDNS/DNS-SD) for ECUconnect loggers: names, TXT, addresses, register, browse.

Pure helpers: :func:`check_name_template`, :func:`format_service_name`, :func:`txt_record`.
I/O helpers: :func:`advertised_addresses` (reads the host's interface list),
:class:`Advertiser` (registers one service, says goodbye on close) and :func:`browse`
(finds loggers). The service type is ``_ecuconnect-log._tcp.local.`` and every instance name
starts with ``ECUconnect-Logger`` (CANcorder lists only those).

mDNS is multicast: the interfaces used follow the address the server is bound to (a loopback
server is advertised on loopback only; 0.0.0.0/:: on every interface).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceListener, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from les02_flow.node import Logger

__all__ = [
    "DEFAULT_NAME_TEMPLATE",
    "NAME_PREFIX",
    "SERVICE_TYPE",
    "Advertiser",
    "LoggerInfo",
    "advertised_addresses",
    "browse",
    "check_name_template",
    "format_service_name",
    "short_hostname",
    "txt_record",
    "zeroconf_options",
]

SERVICE_TYPE = "_ecuconnect-log._tcp.local."
NAME_PREFIX = "ECUconnect-Logger"
DEFAULT_NAME_TEMPLATE = "ECUconnect-Logger {hostname}:{port}"
#: DNS labels (the instance name is one) are at most 63 bytes
MAX_NAME_BYTES = 63
_FIELDS = frozenset({"hostname", "port"})
#: seconds to wait for a service's details after it was seen
RESOLVE_TIMEOUT_MS = 3000

log = logging.getLogger("les02_flow.ecuconnect.mdns")


def short_hostname() -> str:
    """This machine's host name without the domain (``socket.gethostname()`` up to the dot)."""
    return socket.gethostname().split(".")[0] or "localhost"


def check_name_template(template: str) -> None:
    """Raise ``ValueError`` (saying why) unless ``template`` makes a valid instance name.

    Placeholders: ``{hostname}`` (short host name) and ``{port}`` (the bound port); ``{{``/``}}``
    for literal braces. The name must start with ``ECUconnect-Logger`` and, with a 5-digit
    port, fit in 63 bytes (with the real host name it is checked again when registering).

    >>> check_name_template("ECUconnect-Logger lab {port}")
    >>> check_name_template("Logger {port}")
    Traceback (most recent call last):
    ...
    ValueError: service name must start with 'ECUconnect-Logger' (CANcorder lists only those): 'Logger {port}'
    >>> check_name_template("ECUconnect-Logger {host}")
    Traceback (most recent call last):
    ...
    ValueError: unknown placeholder {host} in service name (use {hostname} and {port})
    """  # noqa: E501
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad braces in service name {template!r}: {exc}") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in _FIELDS or spec or conv:
            raise ValueError(
                f"unknown placeholder {{{name}}} in service name (use {{hostname}} and {{port}})"
            )
    sample = template.format(hostname="h", port=65535)
    if not sample.startswith(NAME_PREFIX):
        raise ValueError(
            f"service name must start with {NAME_PREFIX!r} (CANcorder lists only those): "
            f"{template!r}"
        )
    if len(sample.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"service name is longer than {MAX_NAME_BYTES} bytes: {template!r}")


def format_service_name(template: str, hostname: str, port: int) -> str:
    """The instance name for ``template`` (see :func:`check_name_template`).

    A name over 63 bytes (long host name) is cut at 63 bytes on a character boundary.

    >>> format_service_name("ECUconnect-Logger {hostname}:{port}", "lab", 42420)
    'ECUconnect-Logger lab:42420'
    """
    check_name_template(template)
    name = template.format(hostname=hostname, port=port)
    data = name.encode()
    if len(data) > MAX_NAME_BYTES:
        name = data[:MAX_NAME_BYTES].decode(errors="ignore")
    return name


def txt_record(
    *, system: str, process: str, port: int, bus_info: Mapping[str, str]
) -> dict[str, str]:
    """The TXT properties the seed's logger publishes (empty string where unknown).

    >>> txt_record(system="lab", process="les02-flow", port=42420,
    ...            bus_info={"interface": "socketcan", "channel": "can0"})
    {'system': 'lab', 'process': 'les02-flow', 'interface': 'socketcan', 'channel': 'can0', 'bitrate': '', 'port': '42420'}
    """  # noqa: E501
    return {
        "system": system,
        "process": process,
        "interface": str(bus_info.get("interface", "")),
        "channel": str(bus_info.get("channel", "")),
        "bitrate": str(bus_info.get("bitrate", "")),
        "port": str(port),
    }


def _is_usable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast)


def advertised_addresses(bound: str) -> list[str]:
    """Addresses to publish for a server bound to ``bound`` (an IP literal).

    A specific address is published as itself. ``0.0.0.0`` publishes every non-loopback IPv4
    address of the host, ``::`` every non-loopback IPv4 and IPv6 address (IPv6 link-local ones
    included); when the host has none, the loopback addresses are published instead.
    """
    ip = ipaddress.ip_address(bound.split("%")[0])
    if not ip.is_unspecified:
        return [str(ip)]
    want_v6 = ip.version == 6
    found: list[str] = []
    loopback: list[str] = []
    for adapter in ifaddr.get_adapters():
        for a in adapter.ips:
            if isinstance(a.ip, tuple):
                if not want_v6:
                    continue
                text = a.ip[0]
            else:
                text = a.ip
            try:
                addr = ipaddress.ip_address(text.split("%")[0])
            except ValueError:
                continue
            target = found if _is_usable(addr) else loopback if addr.is_loopback else None
            if target is not None and str(addr) not in target:
                target.append(str(addr))
    return found or loopback


def zeroconf_options(bound: str) -> tuple[Any, IPVersion]:
    """``(interfaces, ip_version)`` for :class:`AsyncZeroconf` for a server bound to ``bound``.

    Loopback servers use the IPv4 loopback interface only; a specific IPv4 address that
    interface; 0.0.0.0 all IPv4 interfaces; everything else all interfaces.
    """
    ip = ipaddress.ip_address(bound.split("%")[0])
    if ip.is_loopback:
        return ["127.0.0.1"], IPVersion.V4Only
    if ip.version == 4:
        if ip.is_unspecified:
            return InterfaceChoice.All, IPVersion.V4Only
        return [str(ip)], IPVersion.V4Only
    return InterfaceChoice.All, IPVersion.All


def _packed(addresses: Sequence[str]) -> list[bytes]:
    return [ipaddress.ip_address(a).packed for a in addresses]


class Advertiser:
    """Registers one ECUconnect service; :meth:`close` sends the goodbye and releases sockets.

    ``interfaces``/``ip_version`` as :func:`zeroconf_options` returns them. Errors from
    :meth:`register` propagate (the caller logs them); :meth:`close` never raises and logs
    its failures on ``log`` (the node's prefixed logger; this module's by default).
    """

    def __init__(self, interfaces: Any, ip_version: IPVersion, log: Logger = log) -> None:
        self.log = log
        self._interfaces = interfaces
        self._ip_version = ip_version
        self._azc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    @property
    def name(self) -> str | None:
        """The registered instance name (without the service type), or ``None``."""
        if self._info is None:
            return None
        return self._info.name[: -len(SERVICE_TYPE) - 1]

    async def register(
        self, name: str, port: int, properties: Mapping[str, str], addresses: Sequence[str]
    ) -> str:
        """Register ``name`` (renamed ``name (2)`` etc. on a conflict); returns the name used."""
        self._azc = AsyncZeroconf(interfaces=self._interfaces, ip_version=self._ip_version)
        host = "".join(c if c.isalnum() or c == "-" else "-" for c in short_hostname())
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=port,
            properties=dict(properties),
            addresses=_packed(addresses),
            server=f"{host or 'les02-flow'}.local.",
        )
        announced = await self._azc.async_register_service(info, allow_name_change=True)
        self._info = info
        await announced
        return self.name or name

    async def close(self) -> None:
        """Unregister (mDNS goodbye) and close; idempotent, never raises."""
        azc, info = self._azc, self._info
        self._azc = self._info = None
        if azc is None:
            return
        try:
            if info is not None:
                done = await azc.async_unregister_service(info)
                await asyncio.wait_for(done, 3.0)
        except Exception as exc:
            self.log.warning("zeroconf: goodbye for %s failed: %s", info and info.name, exc)
        try:
            await asyncio.wait_for(azc.async_close(), 3.0)
        except Exception as exc:
            self.log.warning("zeroconf: close failed: %s", exc)


@dataclass(frozen=True)
class LoggerInfo:
    """One ECUconnect logger found by :func:`browse`."""

    name: str
    server: str
    addresses: tuple[str, ...]
    port: int
    properties: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.addresses[0] if self.addresses else self.server,
            "server": self.server,
            "addresses": list(self.addresses),
            "port": self.port,
            "txt": dict(self.properties),
        }


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")


def name_matches(instance: str, wanted: str | None) -> bool:
    """True when ``instance`` (without the service type) is ``wanted`` or starts with it.

    >>> name_matches("ECUconnect-Logger lab:42420", "ECUconnect-Logger lab")
    True
    >>> name_matches("ECUconnect-Logger lab:42420", None)
    True
    """
    return wanted is None or instance == wanted or instance.startswith(wanted)


class _Collector(ServiceListener):
    def __init__(self) -> None:
        self.names: dict[str, None] = {}
        self.changed = asyncio.Event()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names[name] = None
        self.changed.set()

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names[name] = None
        self.changed.set()

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.pop(name, None)
        self.changed.set()


async def _resolve(zc: Zeroconf, name: str) -> LoggerInfo | None:
    info = AsyncServiceInfo(SERVICE_TYPE, name)
    if not await info.async_request(zc, RESOLVE_TIMEOUT_MS) or info.port is None:
        return None
    props = {_text(k): _text(v) for k, v in info.properties.items()}
    return LoggerInfo(
        name=name[: -len(SERVICE_TYPE) - 1] if name.endswith("." + SERVICE_TYPE) else name,
        server=info.server or "",
        addresses=tuple(info.parsed_scoped_addresses()),
        port=int(info.port),
        properties=props,
    )


async def browse(
    duration: float,
    *,
    interfaces: Sequence[str] = (),
    name: str | None = None,
    first: bool = False,
) -> list[LoggerInfo]:
    """ECUconnect loggers seen within ``duration`` seconds, sorted by name.

    ``interfaces``: IPv4 addresses of the interfaces to browse on (empty = all). ``name``:
    only instances equal to or starting with it. ``first``: return as soon as one matching
    logger is resolved.
    """
    choice: Any = list(interfaces) if interfaces else InterfaceChoice.All
    version = IPVersion.V4Only if interfaces else IPVersion.All
    azc = AsyncZeroconf(interfaces=choice, ip_version=version)
    collector = _Collector()
    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, listener=collector)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    found: dict[str, LoggerInfo] = {}
    try:
        while True:
            if first:
                for full in list(collector.names):
                    short = full[: -len(SERVICE_TYPE) - 1]
                    if full not in found and name_matches(short, name):
                        info = await _resolve(azc.zeroconf, full)
                        if info is not None:
                            return [info]
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            collector.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.changed.wait(), remaining)
        names = [n for n in collector.names if name_matches(n[: -len(SERVICE_TYPE) - 1], name)]
        results = await asyncio.gather(*(_resolve(azc.zeroconf, n) for n in names))
        for info in results:
            if info is not None:
                found[info.name] = info
        return [found[k] for k in sorted(found)]
    finally:
        with contextlib.suppress(Exception):
            await browser.async_cancel()
        with contextlib.suppress(Exception):
            await azc.async_close()
