"""Command-line building blocks: the subcommand helper, ONE set of value parsers, the shared
options, and one way to turn a command's flags into config overrides.

Every command module (``les02_flow.commands.*``) builds its parser from these, so that the
same kind of value is parsed, bounded and reported the same way in every command.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .flowfile import FlowDocument, FlowError, Location

__all__ = [
    "UDP_MULTICAST_GROUP",
    "Overrides",
    "Subparsers",
    "add_bus_options",
    "add_command",
    "add_options",
    "add_run_options",
    "add_server_options",
    "add_set_option",
    "apply_overrides",
    "bus_flags",
    "can_id",
    "can_ids",
    "count_or_forever",
    "flag_overrides",
    "non_negative_float",
    "number",
    "one_of",
    "port_or_auto",
    "positive_float",
    "positive_int",
    "seconds_or_none",
    "speed_or_max",
]

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction

N = TypeVar("N", int, float)

#: the channel of ``-i udp_multicast`` without ``-c``: python-can's default IPv4 group
#: (``can.interfaces.udp_multicast.UdpMulticastBus.DEFAULT_GROUP_IPv4``)
UDP_MULTICAST_GROUP = "239.74.163.2"


def number(
    kind: Callable[[str], N],
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    words: tuple[str, ...] = (),
    example: str = "",
    what: str = "",
) -> Callable[[str], Any]:
    """An argparse ``type=``: a number of ``kind`` within the bounds, or one of ``words``.

    >>> number(float, gt=0)("2.5"), number(int, ge=1, words=("forever",))("FOREVER")
    (2.5, 'forever')
    >>> number(float, gt=0)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be > 0: '0'
    """
    extra = "".join(f" (or '{w}')" for w in words)

    def out_of_range(bound: str, text: str) -> argparse.ArgumentTypeError:
        if what:
            return argparse.ArgumentTypeError(f"not {what}{extra}: {text!r}")
        return argparse.ArgumentTypeError(f"must be {bound}{extra}: {text!r}")

    def parse(text: str) -> Any:
        word = text.strip().lower()
        if word in words:
            return word
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            hint = f" (e.g. {example})" if example else ""
            alts = "".join(f" or '{w}'" for w in words)
            raise argparse.ArgumentTypeError(f"not {what}{alts}: {text!r}{hint}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number{extra}: {text!r}")
        if gt is not None and not value > gt:
            raise out_of_range(f"> {gt:g}", text)
        if ge is not None and not value >= ge:
            raise out_of_range(f">= {ge:g}", text)
        if le is not None and not value <= le:
            raise out_of_range(f"<= {le:g}", text)
        return value

    parse.__name__ = getattr(kind, "__name__", "number")  # argparse names it in errors
    return parse


def _int0(text: str) -> int:
    return int(text, 0)


_int0.__name__ = "int"

#: seconds, factors: > 0 (a zero duration or speed means nothing)
positive_float = number(float, gt=0)
#: intervals where 0 means "off"
non_negative_float = number(float, ge=0)
positive_int = number(int, ge=1)
#: a TCP port or ``auto``
port_or_auto = number(int, ge=0, le=65535, words=("auto",), what="a TCP port (0..65535)")
#: a time factor or ``max``
speed_or_max = number(float, gt=0, words=("max",))
#: seconds, or ``none`` for no limit
seconds_or_none = number(float, gt=0, words=("none",))
#: a repeat count or ``forever``
count_or_forever = number(int, ge=1, words=("forever",))
#: an 11-bit CAN id, decimal or 0x hex
can_id = number(_int0, ge=0, le=0x7FF, example="0x7E0", what="an 11-bit CAN id (0..0x7FF)")


def can_ids(text: str) -> list[int]:
    """``0x80,0x81``: CAN ids (11 or 29 bit), decimal or 0x hex.

    >>> can_ids("0x80, 129")
    [128, 129]
    """
    try:
        ids = [int(part.strip(), 0) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ids like 0x80,0x81: {text!r}") from None
    for value in ids:
        if not 0 <= value <= 0x1FFFFFFF:
            raise argparse.ArgumentTypeError(f"not a CAN id (0..0x1FFFFFFF): {value:#x}")
    return ids


def add_command(
    sub: Subparsers,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_: str,
    examples: str,
) -> argparse.ArgumentParser:
    """Add a subcommand whose ``--help`` ends with its examples."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    return p


def one_of(*words: str) -> Callable[[str], str]:
    """An argparse ``type=``: one of ``words`` (``choices`` that :func:`add_options` can use).

    >>> one_of("original", "now")("now")
    'now'
    """

    def parse(text: str) -> str:
        if text not in words:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(words)}: {text!r}")
        return text

    parse.__name__ = "choice"
    return parse


#: ``{"-s --speed": (type, METAVAR, help)}``; type ``None`` is a switch (``store_true``)
OptionTable = Mapping[str, tuple[Callable[[str], Any] | None, str | None, str]]


def add_options(
    p: argparse.ArgumentParser, table: OptionTable, *, flow: bool = True, **defaults: Any
) -> None:
    """Add a command's own options from one table (so commands declare options as data, not
    as runs of ``add_argument`` calls); ``defaults`` are ``dest=value`` defaults. ``flow``:
    the command runs a flow, so ``--set`` and :func:`add_run_options` come too."""
    for flags, (kind, metavar, help_) in table.items():
        if kind is None:
            p.add_argument(*flags.split(), action="store_true", help=help_)
        else:
            p.add_argument(*flags.split(), type=kind, metavar=metavar, help=help_)
    p.set_defaults(**defaults)
    if flow:
        add_set_option(p)
        add_run_options(p)


def add_server_options(
    p: argparse.ArgumentParser, *, host: str, host_help: str, port: str | None
) -> None:
    """The ECUconnect logger server options of ``canlogger`` and ``uds-sim``: ``-p/--port``,
    ``--host``, ``-v/--verbose``, ``--service-name``, ``--no-zeroconf``."""
    add_options(
        p,
        {
            "-p --port": (
                port_or_auto,
                "PORT",
                "TCP port, or auto: the first free from 42420 (default auto)",
            ),
            "--host": (str, "HOST", f"address to listen on (default {host}{host_help})"),
            "-v --verbose": (None, None, "print every frame (candump -L)"),
            "--service-name": (
                str,
                "NAME",
                "zeroconf instance name, must start with 'ECUconnect-Logger' (placeholders "
                "{hostname}, {port})",
            ),
            "--no-zeroconf": (None, None, "do not advertise by zeroconf"),
        },
        flow=False,
        host=host,
        port=port,
    )


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="override a node's config value (repeatable), e.g. --set ws.port=9000",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs a flow: logging and the stats interval."""
    p.add_argument(
        "--log-level",
        type=str.upper,
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    p.add_argument("--log-file", help="also log to this file (rotated at 10 MB, 5 kept)")
    p.add_argument(
        "--stats-interval",
        type=non_negative_float,
        default=60.0,
        metavar="S",
        help="log per-node counters every S seconds (0 = only at exit; default 60)",
    )


#: ``{"node.key": (value, "--flag")}``: config values a command's flags stand for
Overrides = dict[str, tuple[Any, str]]


def add_bus_options(
    p: argparse.ArgumentParser, *, interface: str | None, channel: str | None, what: str = ""
) -> None:
    """``-i/--interface``, ``-c/--channel``, ``-b/--bitrate`` of a command that opens a bus
    (``what`` is appended to the first two helps, e.g. the flow file's defaults); their config
    keys are :func:`bus_flags`."""
    shown = f" (default {interface})" if interface else what
    if interface == "virtual":
        shown = (
            " (default virtual: this process only; udp_multicast reaches other processes "
            "on this host)"
        )
    p.add_argument("-i", "--interface", default=interface, help=f"python-can interface{shown}")
    shown = f" (default {channel}; {UDP_MULTICAST_GROUP} on udp_multicast)" if channel else what
    p.add_argument("-c", "--channel", help=f"bus channel{shown}")
    # resolved by flag_overrides: the default channel depends on the interface
    p.set_defaults(bus_default_channel=channel)
    p.add_argument(
        "-b", "--bitrate", type=positive_int, help="bitrate in bit/s (hardware interfaces)"
    )


def bus_flags(node: str) -> dict[str, str]:
    """The ``flag_overrides`` targets of :func:`add_bus_options` for the bus node ``node``."""
    return {key: f"{node}.{key}" for key in ("interface", "channel", "bitrate")}


def flag_overrides(
    args: argparse.Namespace,
    targets: Mapping[str, str],
    switches: Mapping[str, tuple[str, Any]] | None = None,
) -> Overrides:
    """The one way commands turn flags into config overrides.

    ``targets`` maps a flag's ``dest`` to the ``node.key`` it sets when given (not ``None``);
    ``switches`` maps a ``store_true`` flag to ``(node.key, value)`` set when it is on.

    >>> ns = argparse.Namespace(interface="socketcan", channel=None, no_loop=True)
    >>> flag_overrides(ns, {"interface": "bus.interface", "channel": "bus.channel"},
    ...                {"no_loop": ("sim.loop", False)})
    {'bus.interface': ('socketcan', '--interface'), 'sim.loop': (False, '--no-loop')}
    """
    out: Overrides = {}
    default_channel = getattr(args, "bus_default_channel", None)
    if default_channel is not None and getattr(args, "channel", None) is None:
        # a virtual bus name is not a multicast group: udp_multicast gets python-can's own
        udp = getattr(args, "interface", None) == "udp_multicast"
        args.channel = UDP_MULTICAST_GROUP if udp else default_channel
    for dest, target in targets.items():
        value = getattr(args, dest)
        if value is not None:
            out[target] = (value, "--" + dest.replace("_", "-"))
    for dest, (target, value) in (switches or {}).items():
        if getattr(args, dest):
            out[target] = (value, "--" + dest.replace("_", "-"))
    return out


def apply_overrides(doc: FlowDocument, overrides: Overrides) -> None:
    """Set each ``node.key[.sub]`` of ``overrides`` in a loaded document as a typed value (no
    string parsing, unlike ``--set``); errors and later validation messages point at the
    flag. An unknown node is an error in ``doc.errors``."""
    nodes = doc.data.get("nodes") if isinstance(doc.data, dict) else None
    for dotted, (value, flag) in overrides.items():
        parts = dotted.split(".")
        loc = Location(flag)
        if not isinstance(nodes, dict) or not isinstance(nodes.get(parts[0]), dict):
            msg = f"{flag}: the flow has no node '{parts[0]}'"
            doc.errors.append(FlowError(loc, msg, parts[0]))
            continue
        target: Any = nodes[parts[0]]
        for key in parts[1:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                doc.errors.append(FlowError(loc, f"{flag}: cannot set '{dotted}'", parts[0]))
                break
        else:
            target[parts[-1]] = value
            path = ("nodes", *parts)
            doc.values[path] = loc
            doc.keys[path] = loc
