"""From a test to the flow that runs: overrides, the target sub-graph, input and captures.

The flow under test is read and compiled as usual (its errors point at FLOW:LINE:COL; an
override from ``set:`` points at the test file). Then, for the nodes of the target:

* sources are replaced by the test input (same id and ports), or the input goes in front of
  the target's first node; sources that only feed a bus (no output ports) do not run;
* every sink is replaced by a capture (``keep:`` keeps real ones);
* every port an expectation names gets a capture.

Everything the test file says about the flow is checked here and reported at the test file's
``FILE:LINE:COL`` (unknown node or port, a sink that cannot be kept, kinds that do not fit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from les02_flow.compiler import CompiledFlow, CompiledNode, compile_document
from les02_flow.conditions import Condition, conditions_kind
from les02_flow.flowfile import FlowError, FlowErrors, Location, load_flow
from les02_flow.node import DEFAULT_PORT, Kind
from les02_flow.nodes.recording.formats import detect_format

from .inputs import input_kind, input_path
from .load import LoadedTestFile, yaml_path
from .model import Expectation, FlowTest
from .nodes import CaptureConfig, InputConfig, capture_class, input_class

__all__ = ["INPUT_ID", "Plan", "Probe", "plan_test"]

Path_ = tuple[str | int, ...]

#: node id of an input put in front of a target node (not a valid YAML-looking id on purpose)
INPUT_ID = "<test input>"


@dataclass
class Probe:
    """One place expectations look at: a node's output port, or what a sink received."""

    key: str  #: as written in ``expect:``
    node_id: str
    port: str | None  #: None = the sink's input
    kind: Kind
    capture_id: str
    node: CompiledNode  #: the node in the flow under test (type, location)

    def label(self) -> str:
        return self.node_id if self.port is None else f"{self.node_id}.{self.port}"

    def where(self) -> str:
        what = "sink" if self.port is None else "node"
        return f"{what} '{self.node_id}' ({self.node.type_name}) at {self.node.location}"


@dataclass
class Plan:
    """A test ready to run."""

    test: FlowTest
    index: int
    file: LoadedTestFile
    flow: CompiledFlow  #: what runs
    original: CompiledFlow  #: the flow under test, with the test's overrides
    input_kind: Kind
    #: (input node id, port for this input's kind) for every node that gets the input
    feeds: list[tuple[str, str]] = field(default_factory=list)
    #: every input node (those that get nothing just complete)
    inputs: list[str] = field(default_factory=list)
    probes: dict[str, Probe] = field(default_factory=dict)
    #: what the runner did to the flow, one line each (shown with -v)
    changes: list[str] = field(default_factory=list)

    @property
    def location(self) -> Location:
        return self.file.where(("tests", self.index), key=False)

    def expect_location(
        self, key: str, index: int, check: str | None = None, entry: int | None = None
    ) -> Location:
        """Where expectation ``index`` of ``key`` is (the mapping itself when it is alone),
        or one of its checks (``count``, ``ordered`` entry 2, ...)."""
        path: Path_ = ("expect", key, index)
        if check is not None:
            path = (*path, check) if entry is None else (*path, check, entry)
        base: Path_ = ("tests", self.index)
        return self.file.where(yaml_path(self.file.doc, base, path))


class _Errors:
    def __init__(self, file: LoadedTestFile, index: int, name: str) -> None:
        self.file = file
        self.base: Path_ = ("tests", index)
        self.prefix = f"test '{name}': "
        self.items: list[FlowError] = []

    def add(self, path: Path_, message: str, key: bool = False) -> None:
        found = yaml_path(self.file.doc, self.base, path)
        where = self.file.where(found, key=key and found == (*self.base, *path))
        self.items.append(FlowError(where, self.prefix + message))


def _apply_set(
    doc: Any, file: LoadedTestFile, base: Path_, sets: dict[str, Any], errs: _Errors
) -> None:
    """``set:`` overrides, like ``--set``; errors in them point at the test file."""
    nodes = doc.data.get("nodes") if isinstance(doc.data, dict) else None
    if not isinstance(nodes, dict):
        return
    for key, value in sets.items():
        parts = str(key).split(".")
        loc = file.where((*base, "set", key))
        if parts[0] not in nodes:
            errs.add(
                ("set", key),
                f"set: no node '{parts[0]}' in the flow (nodes: {', '.join(map(str, nodes))})",
                key=True,
            )
            continue
        target: Any = nodes[parts[0]]
        path: Path_ = ("nodes", parts[0])
        for step in parts[1:-1]:
            if not isinstance(target, dict):
                break
            target = target.setdefault(step, {})
            path = (*path, step)
        if not isinstance(target, dict):
            errs.add(("set", key), f"set: cannot set '{key}'", key=True)
            continue
        target[parts[-1]] = value
        path = (*path, parts[-1])
        doc.values[path] = loc
        doc.keys[path] = file.where((*base, "set", key), key=True)


def _descendants(flow: CompiledFlow, start: str, alive: set[str]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        nid = todo.pop()
        for targets in flow.nodes[nid].wires.values():
            for t in targets:
                if t in alive and t not in seen:
                    seen.add(t)
                    todo.append(t)
    return seen


def _ancestors(flow: CompiledFlow, end: str, alive: set[str]) -> set[str]:
    parents: dict[str, set[str]] = {nid: set() for nid in alive}
    for nid in alive:
        for targets in flow.nodes[nid].wires.values():
            for t in targets:
                if t in alive:
                    parents[t].add(nid)
    seen = {end}
    todo = [end]
    while todo:
        nid = todo.pop()
        for p in parents[nid]:
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def _port_for(node: CompiledNode, kind: Kind) -> str | None:
    ports = node.kinds
    if DEFAULT_PORT in ports and ports[DEFAULT_PORT].accepts(kind):
        return DEFAULT_PORT
    return next((p for p, k in ports.items() if k.accepts(kind)), None)


def _matches_kind(matches: Iterable[list[Condition]]) -> set[str]:
    kinds: set[str] = set()
    for conds in matches:
        try:
            k = conditions_kind(conds)
        except ValueError:
            kinds.add("mixed")
            continue
        if k is not None:
            kinds.add(k)
    return kinds


def _check_expectation(
    exp: Expectation, probe: Probe, path: Path_, errs: _Errors, base_dir: Path
) -> None:
    carried = probe.kind
    if carried is Kind.ANY:
        return
    what = f"'{probe.label()}' carries {carried.value} messages"
    if exp.type is not None and carried is Kind.FRAME:
        errs.add((*path, "type"), f"expect '{probe.key}': 'type' selects events, but {what}")
    groups: list[tuple[str, list[list[Condition]]]] = [
        ("where", [exp.where]),
        ("every", [exp.every] if exp.every is not None else []),
        ("contains", exp.contains),
        ("ordered", exp.ordered),
        ("none_of", exp.none_of),
    ]
    for name, matches in groups:
        kinds = _matches_kind(matches)
        if "mixed" in kinds:
            errs.add(
                (*path, name),
                f"expect '{probe.key}': {name}: a match mixes frame fields and event fields",
            )
        wrong = Kind.EVENT.value if carried is Kind.FRAME else Kind.FRAME.value
        if wrong in kinds:
            errs.add(
                (*path, name),
                f"expect '{probe.key}': {name} reads {wrong} fields, but {what}",
            )
    if exp.equals_file is not None:
        try:
            fmt = detect_format(exp.equals_file)
        except ValueError as exc:
            errs.add((*path, "equals_file"), f"expect '{probe.key}': equals_file: {exc}")
            return
        holds = Kind.EVENT if fmt.events else Kind.FRAME
        if holds is not carried:
            errs.add(
                (*path, "equals_file"),
                f"expect '{probe.key}': equals_file {fmt.suffix} holds {holds.value}s, but {what}"
                + (" (use .jsonl)" if carried is Kind.EVENT else " (use .log, candump -L)"),
            )
        target = base_dir / exp.equals_file
        if target.exists() and not target.is_file():
            errs.add(
                (*path, "equals_file"), f"expect '{probe.key}': equals_file {target} is not a file"
            )


def _split_key(key: str, flow: CompiledFlow) -> tuple[str, str | None]:
    """``rides`` -> (rides, None); ``parse.invalid`` -> (parse, invalid); a node id that
    contains a dot wins over the split."""
    if key in flow.nodes or "." not in key:
        return key, None
    node_id, _, port = key.rpartition(".")
    return node_id, port


def plan_test(
    file: LoadedTestFile, index: int, also: Sequence[str] = ()
) -> tuple[Plan | None, list[FlowError]]:
    """Build the flow of test ``index`` of ``file``; every error found, at once.

    ``also``: more ``expect`` keys to capture (those of tests that share this run)."""
    assert file.flow_path is not None
    test = file.tests[index]
    errs = _Errors(file, index, test.name)
    base: Path_ = ("tests", index)

    doc = load_flow(file.flow_path)
    if doc.data is not None:
        _apply_set(doc, file, base, test.set, errs)
    flow_errors: list[FlowError] = []
    try:
        original = compile_document(doc)
    except FlowErrors as exc:
        flow_errors = list(exc.errors)
        if not test.set:
            return None, [*errs.items, *flow_errors]
        try:  # an override is wrong: check the rest of the test against the flow as it is
            original = compile_document(load_flow(file.flow_path))
        except FlowErrors:
            return None, [*errs.items, *flow_errors]

    spec = test.input
    kind = input_kind(spec)
    path = input_path(spec, file.base_dir)
    if path is not None:
        if not path.is_file():
            errs.add(
                ("input", "file"),
                f"input: recording '{spec.file}' not found ({path}; paths are relative to "
                "the test file)",
            )
        if kind is Kind.EVENT and spec.ids:
            errs.add(
                ("input", "ids"), "input: 'ids' selects frames, but the recording holds events"
            )
        if kind is Kind.FRAME and spec.types:
            errs.add(
                ("input", "types"), "input: 'types' selects events, but the recording holds frames"
            )
    elif spec.ids or spec.types or spec.start or spec.end is not None:
        errs.add(("input",), "input: start, end, ids and types apply to a recording file only")

    enabled = {n.id: n for n in original.enabled()}
    # sources that only feed a bus (les02_sim, uds_sim) have nothing to give a test
    feeders = {nid for nid, n in enabled.items() if n.cls.is_source() and not n.ports}
    alive = set(enabled) - feeders

    def known(nid: str, path: Path_, what: str, key: bool = False) -> bool:
        if nid in alive:
            return True
        if nid in feeders:
            kind = enabled[nid].type_name
            why = f"node '{nid}' ({kind}) only feeds a bus; it does not run in tests"
        elif nid in original.nodes:
            why = f"node '{nid}' is disabled in the flow"
        else:
            why = f"no node '{nid}' in the flow (nodes: {', '.join(original.nodes)})"
        errs.add(path, f"{what}: {why}", key=key)
        return False

    target = test.target
    first = target.first if target is not None else None
    last = target.last if target is not None else None
    tpath: Path_ = ("target",)
    ok = True
    if first is not None:
        ok &= known(first, (*tpath, "node" if target and target.node else "from"), "target")
    if last is not None and last != first:
        ok &= known(last, (*tpath, "to"), "target")
    if not ok:
        return None, errs.items

    if first is not None and last is not None:
        chosen = _descendants(original, first, alive) & _ancestors(original, last, alive)
        if last not in chosen:
            errs.add(tpath, f"target: node '{last}' is not downstream of '{first}'")
            return None, errs.items
    elif first is not None:
        chosen = _descendants(original, first, alive)
    elif last is not None:
        chosen = _ancestors(original, last, alive)
    else:
        chosen = set(alive)

    # -- entries: who gets the input ----------------------------------------------------------
    entry_first = first is not None and not enabled[first].cls.is_source()
    sources = [nid for nid in original.nodes if nid in chosen and enabled[nid].cls.is_source()]
    plan_changes: list[str] = []
    if spec.into:
        if target is not None:
            errs.add(
                ("input", "into"),
                "input: 'into' is for whole-flow tests; with a target the input goes into "
                "the target's first node",
            )
        for i, nid in enumerate(spec.into):
            if known(nid, ("input", "into", i), "input.into") and not enabled[nid].cls.is_source():
                errs.add(
                    ("input", "into", i),
                    f"input.into: '{nid}' ({enabled[nid].type_name}) is not a source",
                )
    if entry_first:
        assert first is not None
        taker = enabled[first].cls.input_kind_for(enabled[first].config)
        if taker is not None and not taker.accepts(kind):
            errs.add(
                ("input",),
                f"input holds {kind.value}s but '{first}' ({enabled[first].type_name}) takes "
                f"{taker.value}",
            )
    else:
        wanted = [s for s in sources if not spec.into or s in spec.into]
        able = [s for s in wanted if _port_for(enabled[s], kind) is not None]
        if not sources:
            errs.add(
                tpath if target else ("input",), "the target has no source for the input to replace"
            )
        elif not able:
            names = ", ".join(f"'{s}' ({enabled[s].type_name})" for s in wanted)
            errs.add(("input",), f"input holds {kind.value}s but no source emits them ({names})")
        for s in spec.into:
            if s in enabled and enabled[s].cls.is_source() and s not in able:
                errs.add(
                    ("input", "into"),
                    f"input.into: '{s}' ({enabled[s].type_name}) emits no {kind.value}s",
                )

    # -- probes ------------------------------------------------------------------------------------
    probes: dict[str, Probe] = {}
    for key in [*test.expect, *(k for k in also if k not in test.expect)]:
        epath: Path_ = ("expect", key)
        node_id, port = _split_key(key, original)
        if not known(node_id, epath, f"expect '{key}'", key=True):
            continue
        node = enabled[node_id]
        if node_id not in chosen:
            errs.add(epath, f"expect '{key}': node '{node_id}' is not part of the target", key=True)
            continue
        cls = node.cls
        if port is None and not cls.is_sink():
            port = _port_for(node, Kind.ANY) if DEFAULT_PORT not in node.ports else DEFAULT_PORT
        if cls.is_sink():
            if port is not None:
                errs.add(
                    epath,
                    f"expect '{key}': '{node_id}' ({cls.type_name}) is a sink, it has no port "
                    f"'{port}'; write '{node_id}' for what it received",
                    key=True,
                )
                continue
            upstream = [(u, p) for u, p in original.upstream(node_id) if u in chosen]
            kinds = {enabled[u].kinds[p] for u, p in upstream}
            carried = kinds.pop() if len(kinds) == 1 else Kind.ANY
            cap = node_id if node_id not in test.keep else f"<expect {node_id}>"
        else:
            assert port is not None
            if port not in node.ports:
                errs.add(
                    epath,
                    f"expect '{key}': {cls.type_name} '{node_id}' has no port '{port}' "
                    f"(ports: {', '.join(node.ports)})",
                    key=True,
                )
                continue
            carried = node.kinds[port]
            cap = f"<expect {node_id}.{port}>"
        probe = Probe(key, node_id, port, carried, cap, node)
        probes[key] = probe
        for i, exp in enumerate(test.expect.get(key, [])):
            _check_expectation(exp, probe, (*epath, i), errs, file.base_dir)

    for i, nid in enumerate(test.keep):
        if known(nid, ("keep", i), "keep"):
            if not enabled[nid].cls.is_sink():
                errs.add(
                    ("keep", i),
                    f"keep: '{nid}' ({enabled[nid].type_name}) is not a sink; "
                    "only sinks are replaced",
                )
            elif nid not in chosen:
                errs.add(("keep", i), f"keep: '{nid}' is not part of the target")

    if errs.items or flow_errors:
        return None, [*errs.items, *flow_errors]

    # -- build the test flow --------------------------------------------------------------------
    nodes: dict[str, CompiledNode] = {}
    probed_sinks = {p.node_id for p in probes.values() if p.port is None}
    feeds: list[tuple[str, str]] = []
    inputs: list[str] = []
    for nid, node in original.nodes.items():
        if nid not in chosen:
            continue
        wires = {port: [t for t in ts if t in chosen] for port, ts in node.wires.items()}
        if node.cls.is_source():
            cls = input_class(node.cls, kind)
            nodes[nid] = dataclasses.replace(node, cls=cls, config=InputConfig(), wires=wires)
            inputs.append(nid)
            port = _port_for(node, kind)
            if port is not None and (not spec.into or nid in spec.into):
                feeds.append((nid, port))
                plan_changes.append(f"source '{nid}' ({node.type_name}) replaced by the test input")
            else:
                plan_changes.append(f"source '{nid}' ({node.type_name}) replaced by an empty input")
        elif node.cls.is_sink() and nid not in test.keep:
            cap_cls = capture_class(node.cls, keep=nid in probed_sinks)
            nodes[nid] = dataclasses.replace(node, cls=cap_cls, config=CaptureConfig(), wires={})
            plan_changes.append(f"sink '{nid}' ({node.type_name}) replaced by a capture")
        else:
            nodes[nid] = dataclasses.replace(node, wires=wires)
    for nid in sorted(feeders):
        if target is None:
            plan_changes.append(
                f"source '{nid}' ({enabled[nid].type_name}) does not run: it only feeds a bus"
            )
    if entry_first:
        assert first is not None
        cls = input_class(None, kind)
        nodes = {
            INPUT_ID: CompiledNode(
                id=INPUT_ID,
                cls=cls,
                config=InputConfig(),
                wires={"out": [first]},
                location=file.where((*base, "input")),
            ),
            **nodes,
        }
        feeds.append((INPUT_ID, "out"))
        inputs.append(INPUT_ID)
        plan_changes.append(f"the test input goes into '{first}'")
    for probe in probes.values():
        if probe.capture_id in nodes:
            continue  # a replaced sink records itself
        cap_node = CompiledNode(
            id=probe.capture_id,
            cls=capture_class(None, keep=True),
            config=CaptureConfig(),
            location=probe.node.location,
        )
        nodes[probe.capture_id] = cap_node
        if probe.port is None:  # a kept sink: a capture beside it, on the same wires
            for u, p in original.upstream(probe.node_id):
                if u in nodes:
                    nodes[u].wires.setdefault(p, []).append(probe.capture_id)
        else:
            nodes[probe.node_id].wires.setdefault(probe.port, []).append(probe.capture_id)
    flow = CompiledFlow(
        name=f"{original.name} [test: {test.name}]", path=original.path, nodes=nodes
    )
    plan = Plan(
        test=test,
        index=index,
        file=file,
        flow=flow,
        original=original,
        input_kind=kind,
        feeds=feeds,
        inputs=inputs,
        probes=probes,
        changes=plan_changes,
    )
    return plan, []
