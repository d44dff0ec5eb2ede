"""``les02-flow replay FILE``: print a recording, or run it through a flow.

Without ``--flow`` the recording goes to a ``debug`` node (frames candump-style, events as
JSON). With ``--flow FLOW`` every ``can_source`` in FLOW becomes a ``replay_source`` of FILE
with the same id and wires, so the same pipeline runs on recorded data. Because a replay
replaces the bus, nodes that only *feed* a bus (sources without output ports, e.g.
``les02_sim``) are disabled, and so are ``file_recorder`` nodes (a replay is not re-recorded)
unless ``--keep-recorders`` is given. The flow is edited as loaded data before validation, so
errors still point at FLOW:LINE:COL; ``--set`` applies afterwards (``--set bus.speed=2``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from les02_flow import cliargs
from les02_flow.clirun import run_document
from les02_flow.flowfile import FlowDocument, FlowError, Location, apply_sets, load_flow
from les02_flow.registry import default_registry

__all__ = ["ORDER", "register", "replace_sources", "replay_options"]

ORDER = 31

log = logging.getLogger("les02_flow")

EXAMPLES = """\
  les02-flow replay session.log                                  print the frames (real time)
  les02-flow replay session.log --speed max | grep ' 080#'
  les02-flow replay session.log --flow flows/default.yaml --speed max
  les02-flow replay ride.blf --flow flows/default.yaml --loop forever --max-gap 5
  les02-flow replay events.jsonl --speed 10                      print recorded events"""


def replay_options(args: argparse.Namespace, progress: float) -> dict[str, Any]:
    """The ``replay_source`` config from the command line (pure)."""
    opts: dict[str, Any] = {"path": args.file, "speed": args.speed, "loop": args.loop}
    for key in ("max_gap", "loop_gap", "start", "end", "ids", "timestamps"):
        value = getattr(args, key)
        if value is not None:
            opts[key] = None if value == "none" else value
    if progress > 0:
        opts["progress"] = progress
    return opts


def replace_sources(
    doc: FlowDocument, options: dict[str, Any], keep_recorders: bool = False
) -> list[str]:
    """Turn every ``can_source`` in ``doc`` into a ``replay_source`` (same id, wires, label,
    disabled flag); disable bus feeders and, unless ``keep_recorders``, file recorders.

    Returns what was changed, one line each. Adds an error to ``doc.errors`` when there is no
    ``can_source`` to replace.
    """
    changes: list[str] = []
    data = doc.data
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict):
        return changes  # compile_document reports the shape problem
    registry = default_registry()
    replaced = 0
    for nid, node in nodes.items():
        if not isinstance(node, dict):
            continue
        type_name = node.get("type")
        if type_name == "can_source":
            new: dict[str, Any] = {"type": "replay_source", **options}
            for key in ("wires", "label", "disabled"):
                if key in node:
                    new[key] = node[key]
            nodes[nid] = new
            replaced += 1
            changes.append(
                f"node '{nid}': can_source replaced by replay_source of {options['path']}"
            )
            if _holds_events(str(options["path"])):
                changes.extend(_route_events(doc, nodes, nid, new))
            continue
        if node.get("disabled") is True or not isinstance(type_name, str):
            continue
        cls = registry.get(type_name)
        if cls is None:
            continue
        if cls.is_source() and not cls.output_ports:
            node["disabled"] = True
            changes.append(f"node '{nid}' ({type_name}) disabled: it only feeds the bus")
        elif type_name == "file_recorder" and not keep_recorders:
            node["disabled"] = True
            changes.append(
                f"node '{nid}' (file_recorder) disabled: a replay is not re-recorded "
                "(--keep-recorders keeps it)"
            )
    if not replaced:
        doc.errors.append(
            FlowError(
                doc.where(("nodes",)) if nodes else Location(doc.path, 1, 1),
                "the flow has no can_source node for the replay to replace",
            )
        )
    return changes


def _holds_events(path: str) -> bool:
    return path.endswith((".jsonl", ".jsonl.gz"))


def _port_targets(wires: Any, port: str = "out") -> list[str]:
    if isinstance(wires, list):
        return [str(t) for t in wires] if port == "out" else []
    if isinstance(wires, dict) and isinstance(wires.get(port), list):
        return [str(t) for t in wires[port]]
    return []


def _route_events(
    doc: FlowDocument, nodes: dict[str, Any], nid: str, new: dict[str, Any]
) -> list[str]:
    """An events recording replaces a bus: its events go where the nodes the bus feeds (e.g.
    ``les02_parse``) send their events, since they are what those nodes produced when it was
    recorded. No such node: an error saying so (instead of an idle flow)."""
    decoders = _port_targets(new.get("wires"))
    targets: list[str] = []
    for t in decoders:
        node = nodes.get(t)
        if isinstance(node, dict) and node.get("disabled") is not True:
            targets += [x for x in _port_targets(node.get("wires")) if x not in targets]
    if not targets:
        doc.errors.append(
            FlowError(
                doc.where(("nodes", nid)),
                f"{new['path']} holds events, but no node fed by can_source '{nid}' sends "
                "events anywhere: replay it without --flow, or use a flow that wires a "
                "replay_source's 'events' port",
                nid,
            )
        )
        return []
    new["wires"] = {"events": targets}
    via = ", ".join(decoders)
    return [f"node '{nid}': its events go where {via} sends events: {', '.join(targets)}"]


def standalone_flow(options: dict[str, Any]) -> dict[str, Any]:
    """The flow without ``--flow``: replay -> debug (pure)."""
    return {
        "version": 1,
        "name": "replay",
        "nodes": {
            "replay": {
                "type": "replay_source",
                **options,
                "wires": {"out": ["print"], "events": ["print"]},
            },
            "print": {"type": "debug", "stream": "stdout"},
        },
    }


def cmd_replay(args: argparse.Namespace) -> int:
    progress = args.progress
    if progress is None:
        if sys.stderr.isatty():
            # a bar only when it does not fight with frames printed to the same terminal
            progress = 0.25 if (args.flow or not sys.stdout.isatty()) else 0.0
        else:
            progress = 10.0
    options = replay_options(args, progress)
    if args.flow:
        doc = load_flow(args.flow)
        if doc.data is not None:
            for line in replace_sources(doc, options, args.keep_recorders):
                log.info("replay: %s", line)
    else:
        doc = FlowDocument(path="les02-flow replay", data=standalone_flow(options))
    if doc.data is not None:
        apply_sets(doc, args.set)
    return run_document(doc, args.stats_interval)


HELP = "replay a recording: print it, or run it through a flow in place of its can_source"

#: the options of ``replay`` (see :func:`les02_flow.cliargs.add_options`)
OPTIONS: cliargs.OptionTable = {
    "--flow": (str, "FLOW", "run FLOW with its can_source(s) replaced"),
    "--speed": (cliargs.speed_or_max, "X|max", "time factor or max (default 1)"),
    "--loop": (cliargs.count_or_forever, "N|forever", "play N times (default 1)"),
    "--max-gap": (
        cliargs.seconds_or_none,
        "S",
        "shorten silences to S seconds (default 60; 'none' keeps every gap)",
    ),
    "--loop-gap": (
        cliargs.non_negative_float,
        "S",
        "with --loop: each pass continues S seconds after the previous one's last frame "
        "(timestamps shifted by the recording's length plus S; default 1)",
    ),
    "--start": (cliargs.non_negative_float, "S", "skip the first S seconds"),
    "--end": (cliargs.non_negative_float, "S", "stop S seconds after the first frame"),
    "--ids": (cliargs.can_ids, "ID,...", "only these CAN ids, e.g. 0x80,0x81"),
    "--timestamps": (
        cliargs.one_of("original", "now"),
        "original|now",
        "keep recorded times (default) or re-stamp to the replay clock",
    ),
    "--keep-recorders": (None, None, "with --flow: keep file_recorder nodes"),
    "--progress": (
        cliargs.non_negative_float,
        "S",
        "seconds between progress reports (0 = off; default: a bar on a terminal, "
        "a log line every 10 s otherwise)",
    ),
}


def register(sub: cliargs.Subparsers) -> None:
    p = cliargs.add_command(sub, "replay", cmd_replay, HELP, EXAMPLES)
    p.add_argument("file", metavar="FILE", help="recording (.log .asc .blf .csv .trc .db .jsonl)")
    cliargs.add_options(p, OPTIONS, speed=1.0, loop=1)
