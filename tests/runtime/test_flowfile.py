"""Reading flow files: locations, env substitution, duplicates, --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from les02_flow.flowfile import apply_sets, load_flow, load_flow_text, parse_set, substitute

FLOW = """\
version: 1
nodes:
  ws:
    type: ws_sink
    port: ${WS_PORT:-8765}
    host: "${WS_HOST:-localhost}"
"""


def test_values_and_keys_have_locations() -> None:
    doc = load_flow_text(FLOW, "f.yaml", env={})
    assert doc.errors == []
    assert str(doc.where(("nodes", "ws", "type"))) == "f.yaml:4:11"
    assert str(doc.where(("nodes", "ws", "port"), key=True)) == "f.yaml:5:5"
    # a missing path falls back to its closest parent
    assert str(doc.where(("nodes", "ws", "nope"))) == "f.yaml:4:5"


def test_env_default_is_typed_like_yaml_and_quoted_stays_string() -> None:
    doc = load_flow_text(FLOW, "f.yaml", env={})
    assert doc.data["nodes"]["ws"]["port"] == 8765
    doc = load_flow_text(FLOW, "f.yaml", env={"WS_PORT": "9000", "WS_HOST": "0.0.0.0"})
    assert doc.data["nodes"]["ws"]["port"] == 9000
    assert doc.data["nodes"]["ws"]["host"] == "0.0.0.0"


def test_substitute_forms() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert substitute("x${A}y", env) == ("x1y", [])
    assert substitute("${EMPTY:-d}", env) == ("d", [])
    assert substitute("$${A}", env) == ("${A}", [])
    _, problems = substitute("${MISSING:?set it to the CAN channel}", env)
    assert problems == ["environment variable 'MISSING' is not set: set it to the CAN channel"]


def test_unset_variable_is_an_error_at_its_scalar() -> None:
    doc = load_flow_text("version: 1\nnodes:\n  bus:\n    channel: ${CH}\n", "f")
    assert [str(e) for e in doc.errors] == [
        "f:4:14: node 'bus': environment variable 'CH' is not set "
        "(use ${CH:-default} for a default)"
    ]


def test_duplicate_node_ids_and_keys() -> None:
    text = "version: 1\nnodes:\n  a: {type: debug}\n  a: {type: debug, prefix: x, prefix: y}\n"
    doc = load_flow_text(text, "f")
    messages = sorted(str(e) for e in doc.errors)
    assert messages == ["f:4:3: node 'a': duplicate node id 'a' (first defined at line 3)"]


def test_duplicate_key_inside_node() -> None:
    doc = load_flow_text("version: 1\nnodes:\n  a: {type: debug, prefix: x, prefix: y}\n", "f")
    assert [str(e) for e in doc.errors] == [
        "f:3:31: duplicate key 'prefix' (first defined at line 3)"
    ]


def test_yaml_syntax_error_has_location() -> None:
    doc = load_flow_text("version: 1\nnodes:\n  a: {type: debug\n", "f")
    assert len(doc.errors) == 1
    assert str(doc.errors[0]).startswith("f:4:1: invalid YAML:")


def test_unreadable_file(tmp_path: Path) -> None:
    doc = load_flow(tmp_path / "missing.yaml")
    assert [str(e) for e in doc.errors] == [
        f"{tmp_path / 'missing.yaml'}: cannot read flow file: No such file or directory"
    ]


def test_parse_set() -> None:
    assert parse_set("ws.port=9000") == (["ws", "port"], 9000)
    assert parse_set("bus.bus_options.serial=abc") == (["bus", "bus_options", "serial"], "abc")
    assert parse_set("sim.silent_when_stopped=true") == (["sim", "silent_when_stopped"], True)
    for bad in ("ws", "ws=1", ".port=1", "ws.=1"):
        with pytest.raises(ValueError, match=r"expected NODE\.KEY=VALUE"):
            parse_set(bad)


def test_apply_sets_overrides_and_reports_unknown_node() -> None:
    doc = load_flow_text(FLOW, "f.yaml", env={})
    apply_sets(doc, ["ws.port=9001", "nope.port=1"])
    assert doc.data["nodes"]["ws"]["port"] == 9001
    assert str(doc.where(("nodes", "ws", "port"))) == "--set ws.port=9001"
    assert [str(e) for e in doc.errors] == [
        "--set nope.port=1: node 'nope': no node 'nope' in the flow (nodes: ws)"
    ]
