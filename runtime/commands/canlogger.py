"""``les02-flow canlogger``: the seed's ``canlogger.py``, built from ``flows/canlogger.yaml``.

Same flags as the seed (``-i/--interface``, ``-c/--channel``, ``-b/--bitrate``, ``-p/--port``,
``-v/--verbose``, ``--auto``, ``--service-name``, ``--no-zeroconf``) plus ``--host``. The flags
become overrides of the flow file (as typed values, before ``--set``), so ``canlogger``
behaves like ``run`` (signals, stats, exit codes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import can

from les02_flow import cliargs
from les02_flow.clirun import run_document
from les02_flow.flowfile import apply_sets, load_flow
from les02_flow.resources import builtin_flow

__all__ = ["AUTO_CANDIDATES", "ORDER", "auto_detect", "flow_path", "register"]

ORDER = 40

#: tried by ``--auto`` after ``can.detect_available_configs()``, in this order
AUTO_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("socketcan", "can0"),
    ("gs_usb", "0"),
    ("slcan", "/dev/ttyACM0"),
    ("slcan", "/dev/ttyUSB0"),
    ("pcan", "PCAN_USBBUS1"),
    ("kvaser", "0"),
)

#: interfaces ``--auto`` does not ask python-can to detect: no hardware behind them, or
#: detection that listens on the network (socketcand waits seconds for UDP beacons)
_NOT_HARDWARE = frozenset({"virtual", "udp_multicast", "socketcand"})


def _detect_hardware() -> Sequence[Any]:
    from can.interfaces import VALID_INTERFACES

    return can.detect_available_configs(sorted(set(VALID_INTERFACES) - _NOT_HARDWARE))


def flow_path() -> Path:
    """``flows/canlogger.yaml``, installed as package data."""
    return builtin_flow("canlogger.yaml")


def _try_open(interface: str, channel: str, bitrate: int | None) -> None:
    kwargs: dict[str, Any] = {"interface": interface, "channel": channel, "ignore_config": True}
    if bitrate is not None:
        kwargs["bitrate"] = bitrate
    bus = can.Bus(**kwargs)
    bus.shutdown()


def auto_detect(
    bitrate: int | None,
    *,
    detect: Callable[[], Sequence[Any]] = _detect_hardware,
    candidates: Sequence[tuple[str, str]] = AUTO_CANDIDATES,
    opener: Callable[[str, str, int | None], None] = _try_open,
    out: Any = None,
) -> tuple[str, str] | None:
    """Find a CAN adapter: what ``detect()`` reports, then ``candidates``; print each attempt.

    Returns ``(interface, channel)`` of the first that opens, or ``None``. Every attempt is
    printed to ``out`` (stderr) with the reason it failed.
    """
    out = out or sys.stderr
    tried: list[tuple[str, str]] = []
    try:
        found = [
            (str(c.get("interface")), str(c.get("channel")))
            for c in detect()
            if c.get("interface") not in _NOT_HARDWARE
        ]
        print(f"--auto: python-can detected {len(found)} configuration(s)", file=out)
    except Exception as exc:
        found = []
        print(f"--auto: can.detect_available_configs failed: {exc}", file=out)
    for interface, channel in [*found, *candidates]:
        if (interface, channel) in tried:
            continue
        tried.append((interface, channel))
        try:
            opener(interface, channel, bitrate)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            print(f"--auto: {interface} {channel}: failed: {reason}", file=out)
            continue
        print(f"--auto: {interface} {channel}: ok, using it", file=out)
        return interface, channel
    print(f"--auto: no CAN adapter found ({len(tried)} tried)", file=out)
    return None


#: flag -> the config key it sets
FLAGS = {
    **cliargs.bus_flags("bus"),
    "host": "tcp.host",
    "port": "tcp.port",
    "service_name": "tcp.service_name",
}
SWITCHES = {"no_zeroconf": ("tcp.zeroconf", False)}


def cmd_canlogger(args: argparse.Namespace) -> int:
    if args.auto:
        if args.interface is not None:
            print("--auto and --interface exclude each other", file=sys.stderr)
            return 2
        found = auto_detect(args.bitrate if args.bitrate is not None else 500000)
        if found is None:
            return 1
        args.interface, args.channel = found
    doc = load_flow(args.flow or flow_path())
    if doc.data is not None:
        cliargs.apply_overrides(doc, cliargs.flag_overrides(args, FLAGS, SWITCHES))
        apply_sets(doc, args.set)
        if args.verbose and isinstance(doc.data.get("nodes"), dict):
            nodes = doc.data["nodes"]
            bus = nodes.get("bus")
            if isinstance(bus, dict):
                wires = bus.get("wires")
                bus["wires"] = [*(wires if isinstance(wires, list) else []), "verbose"]
                nodes["verbose"] = {"type": "debug", "stream": "stdout"}
    return run_document(doc, args.stats_interval)


HELP = (
    "ECUconnect Logger for CANcorder: serve a CAN bus over TCP, advertised by zeroconf "
    "(a drop-in for canlogger.py)"
)
EXAMPLES = """\
  les02-flow canlogger -i socketcan -c can0
  les02-flow canlogger -i slcan -c /dev/ttyACM0 -b 250000 -p 42421 -v
  les02-flow canlogger --auto --service-name 'ECUconnect-Logger bench'
  les02-flow canlogger -i virtual -c test --host 127.0.0.1 --no-zeroconf"""


def register(sub: cliargs.Subparsers) -> None:
    p = cliargs.add_command(sub, "canlogger", cmd_canlogger, HELP, EXAMPLES)
    cliargs.add_bus_options(
        p, interface=None, channel=None, what=" (default: socketcan can0, 500000)"
    )
    cliargs.add_server_options(p, host="0.0.0.0", host_help=", as the seed", port="auto")
    auto = ", ".join(f"{i} {c}" for i, c in AUTO_CANDIDATES)
    cliargs.add_options(
        p,
        {
            "--auto": (None, None, f"find a CAN adapter: python-can's detection, then {auto}"),
            "--flow": (str, "FLOW", "use this flow file instead of flows/canlogger.yaml"),
        },
    )
