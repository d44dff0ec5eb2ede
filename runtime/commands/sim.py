"""``sim``: put simulated LES02 elevator traffic onto a python-can bus."""

from __future__ import annotations

import argparse

from les02_flow import cliargs
from les02_flow.clirun import run_document
from les02_flow.flowfile import FlowDocument

__all__ = ["ORDER", "register"]

ORDER = 20

#: flag -> the config key it sets
FLAGS = {
    **cliargs.bus_flags("sim"),
    "speed": "sim.speed",
    "trips": "sim.trips",
    "duration": "sim.duration",
    "seed": "sim.seed",
}


def cmd_sim(args: argparse.Namespace) -> int:
    doc = FlowDocument(
        path="les02-flow sim",
        data={"version": 1, "name": "sim", "nodes": {"sim": {"type": "les02_sim"}}},
    )
    cliargs.apply_overrides(doc, cliargs.flag_overrides(args, FLAGS))
    return run_document(doc, args.stats_interval)


def register(sub: cliargs.Subparsers) -> None:
    p = cliargs.add_command(
        sub,
        "sim",
        cmd_sim,
        "put simulated LES02 elevator traffic onto a python-can bus",
        "  les02-flow sim --interface socketcan --channel vcan0\n"
        "  les02-flow sim --interface virtual --channel les02 --speed 4 --trips 3",
    )
    cliargs.add_bus_options(p, interface="virtual", channel="les02")
    p.add_argument(
        "--speed", type=cliargs.positive_float, default=1.0, help="time factor (default 1)"
    )
    p.add_argument(
        "--trips", type=cliargs.positive_int, help="stop after N trips (default endless)"
    )
    p.add_argument("--duration", type=cliargs.positive_float, help="stop after S simulated seconds")
    p.add_argument("--seed", type=int, help="random seed (same seed, same trips)")
    cliargs.add_run_options(p)
