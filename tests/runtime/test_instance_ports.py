"""Per-instance output ports (switch) and pass-through kinds (filter/switch) in the compiler,
the graph and the engine."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import pytest

from les02_flow.compiler import CompiledFlow, compile_document
from les02_flow.describe import render_graph
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowErrors, load_flow_text
from les02_flow.node import Kind


def compile_text(text: str) -> CompiledFlow:
    return compile_document(load_flow_text(textwrap.dedent(text), "p.yaml", env={}))


def errors_of(text: str) -> list[str]:
    with pytest.raises(FlowErrors) as info:
        compile_text(text)
    return [str(e) for e in info.value.errors]


ROUTE = """\
    version: 1
    nodes:
      bus: {type: can_source, interface: virtual, channel: ports-test, wires: [parse]}
      parse: {type: les02_parse, wires: {out: [route]}}
      route:
        type: switch
        rules:
          - port: rides
            when: [{field: type, op: in, value: [ride_start, ride_end]}]
          - port: diagnostics
            when: [{field: type, op: in, value: [status, error, system]}]
        wires: {rides: [ws], diagnostics: [log], otherwise: [drop]}
      ws: {type: ws_sink, port: 0}
      log: {type: debug}
      drop: {type: debug}
    """


def test_switch_ports_come_from_its_rules() -> None:
    flow = compile_text(ROUTE)
    route = flow.nodes["route"]
    assert route.ports == {"rides": Kind.ANY, "diagnostics": Kind.ANY, "otherwise": Kind.ANY}
    # the switch passes on what it receives: events from les02_parse
    assert route.kinds == {"rides": Kind.EVENT, "diagnostics": Kind.EVENT, "otherwise": Kind.EVENT}
    assert route.wires == {"rides": ["ws"], "diagnostics": ["log"], "otherwise": ["drop"]}
    assert "route -->|rides: event| ws" in render_graph(flow)


def test_wire_to_a_port_no_rule_names_is_an_error() -> None:
    text = ROUTE.replace("diagnostics: [log]", "diagnostic: [log]")
    assert errors_of(text) == [
        "p.yaml:12:26: node 'route': switch has no output port 'diagnostic' "
        "(ports: rides, diagnostics, otherwise) (did you mean 'diagnostics'?)"
    ]


def test_kind_mismatch_through_a_switch_is_an_error() -> None:
    # frames through a switch into ws_sink (takes events)
    text = textwrap.dedent(ROUTE).replace(
        "parse: {type: les02_parse, wires: {out: [route]}}",
        "parse: {type: les02_parse, wires: {invalid: [route]}}",
    )
    text = text.replace(
        "[{field: type, op: in, value: [ride_start, ride_end]}]",
        "[{field: dlc, op: eq, value: 4}]",
    ).replace("[{field: type, op: in, value: [status, error, system]}]", "[{field: dlc, value: 8}]")
    errors = errors_of(text)
    assert errors == [
        "p.yaml:12:21: node 'route': kind mismatch: port 'rides' carries frame messages but "
        "'ws' (ws_sink) takes event"
    ]


def test_frame_filter_fed_events_is_an_error_and_its_ports_carry_frames() -> None:
    text = """\
        version: 1
        nodes:
          bus: {type: can_source, interface: virtual, channel: x, wires: [parse, ids]}
          parse: {type: les02_parse, wires: {out: [ids2]}}
          ids: {type: filter, ids: [0x80], wires: [ws]}
          ids2: {type: filter, ids: [0x80], wires: [log]}
          ws: {type: ws_sink, port: 0}
          log: {type: debug}
        """
    assert errors_of(text) == [
        "p.yaml:4:44: node 'parse': kind mismatch: port 'out' carries event messages but "
        "'ids2' (filter) takes frame",
        "p.yaml:5:44: node 'ids': kind mismatch: port 'out' carries frame messages but "
        "'ws' (ws_sink) takes event",
    ]


def test_kinds_resolve_along_a_chain_of_pass_through_nodes() -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          bus: {type: can_source, interface: virtual, channel: x, wires: [a]}
          a: {type: switch, rules: [{port: p, when: [{field: dlc, value: 4}]}], wires: {p: [b]}}
          b: {type: switch, rules: [{port: q, when: [{field: dlc, value: 4}]}], wires: {q: [c]}}
          c: {type: debug}
        """
    )
    assert flow.nodes["b"].kinds["q"] is Kind.FRAME


def test_invalid_switch_config_reports_only_the_config_error() -> None:
    text = ROUTE.replace("port: rides", "port: Rides!")
    errors = errors_of(text)
    assert len(errors) == 1, errors
    assert errors[0].startswith("p.yaml:8:15: node 'route': 'rules.0.port': Value error, port name")


def test_otherwise_is_reserved_and_rules_need_conditions() -> None:
    text = ROUTE.replace("port: rides", "port: otherwise")
    assert "'otherwise' is the port for messages no rule matches" in errors_of(text)[0]
    text = ROUTE.replace("when: [{field: type, op: in, value: [ride_start, ride_end]}]", "when: []")
    assert "'rules.0.when': List should have at least 1 item" in errors_of(text)[0]


def _run(flow: CompiledFlow) -> Engine:
    async def main() -> Engine:
        engine = Engine(flow)
        await asyncio.wait_for(engine.run(), 20)
        return engine

    return asyncio.run(main())


def test_engine_runs_a_switch_end_to_end(tmp_path: Any) -> None:
    log = tmp_path / "in.log"
    log.write_text(
        "(1.000000) can0 080#00000100\n"
        "(1.002000) can0 081#00000200\n"
        "(1.004000) can0 123#00\n"
        "(1.006000) can0 080#00000300\n",
        encoding="utf-8",
    )
    out = {p: tmp_path / f"{p}.log" for p in ("master", "slave", "rest")}
    flow = compile_text(
        f"""\
        version: 1
        nodes:
          src: {{type: replay_source, path: {log}, speed: max, wires: [route]}}
          route:
            type: switch
            rules:
              - {{port: master, when: [{{field: arbitration_id, op: eq, value: 0x80}}]}}
              - {{port: slave, when: [{{field: arbitration_id, op: eq, value: 0x81}}]}}
            wires: {{master: [m], slave: [s], otherwise: [r]}}
          m: {{type: file_recorder, path: {out["master"]}}}
          s: {{type: file_recorder, path: {out["slave"]}}}
          r: {{type: file_recorder, path: {out["rest"]}}}
        """
    )
    engine = _run(flow)
    c = engine.counters()
    assert (c["route"].received, c["m"].received, c["s"].received, c["r"].received) == (4, 2, 1, 1)
    master = out["master"].read_text(encoding="utf-8")
    assert "080#00000100" in master and "080#00000300" in master and "081#" not in master
    assert "081#00000200" in out["slave"].read_text(encoding="utf-8")
    assert "123#00" in out["rest"].read_text(encoding="utf-8")


def test_flow_view_shows_instance_ports_and_resolved_kinds() -> None:
    flow = compile_text(ROUTE)

    async def main() -> dict[str, Any]:
        engine = Engine(flow, stats_interval=0)  # built, not started: no I/O
        view = engine.nodes["route"].ctx.flow
        assert view is not None
        return {n["id"]: n for n in view.graph()["nodes"]}

    nodes = asyncio.run(main())
    assert nodes["route"]["outputs"] == {
        "rides": "event",
        "diagnostics": "event",
        "otherwise": "event",
    }
    assert nodes["route"]["input"] == "event"
    assert nodes["parse"]["outputs"] == {"out": "event", "invalid": "frame"}
