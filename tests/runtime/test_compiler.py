"""Validation: every error kind, with its FILE:LINE:COL and node id; all errors at once."""

from __future__ import annotations

import textwrap

import pytest

from les02_flow.compiler import compile_document
from les02_flow.flowfile import FlowErrors, apply_sets, load_flow_text
from les02_flow.registry import Registry

from .conftest import AddConfig


def errors_of(text: str, registry: Registry, sets: tuple[str, ...] = ()) -> list[str]:
    doc = load_flow_text(textwrap.dedent(text), "f.yaml", env={})
    apply_sets(doc, sets)
    with pytest.raises(FlowErrors) as info:
        compile_document(doc, registry)
    return [str(e) for e in info.value.errors]


def test_valid_flow_compiles_in_topological_order(registry: Registry) -> None:
    doc = load_flow_text(
        "version: 1\nnodes:\n"
        "  sink: {type: collect}\n"
        "  plus: {type: add, n: 2, wires: [sink]}\n"
        "  src: {type: numbers, values: [1], wires: [plus]}\n",
        "f.yaml",
    )
    flow = compile_document(doc, registry)
    assert list(flow.nodes) == ["src", "plus", "sink"]
    config = flow.nodes["plus"].config
    assert isinstance(config, AddConfig) and config.n == 2
    assert flow.nodes["src"].wires == {"out": ["plus"]}


def test_unknown_type_suggests_closest(registry: Registry) -> None:
    assert errors_of("version: 1\nnodes:\n  a:\n    type: colect\n", registry) == [
        "f.yaml:4:11: node 'a': unknown node type 'colect' (did you mean 'collect'?)"
    ]


def test_unknown_config_key_suggests_closest(registry: Registry) -> None:
    assert errors_of("version: 1\nnodes:\n  a:\n    type: add\n    nn: 3\n", registry) == [
        "f.yaml:5:5: node 'a': unknown config key 'nn' for add (did you mean 'n'?)"
    ]


def test_bad_value_type_and_range(registry: Registry) -> None:
    text = (
        "version: 1\nnodes:\n  a:\n    type: add\n    n: lots\n  b:\n    type: add\n    n: 5000\n"
    )
    errors = errors_of(text, registry)
    assert errors[0].startswith("f.yaml:5:8: node 'a': 'n': Input should be a valid integer")
    assert errors[1].startswith("f.yaml:8:8: node 'b': 'n': Input should be less than or equal")
    assert len(errors) == 2


def test_wire_to_missing_node_and_port(registry: Registry) -> None:
    text = """\
        version: 1
        nodes:
          src:
            type: numbers
            wires: [sinx]
          r:
            type: route
            wires:
              evn: [k]
          k: {type: collect}
        """
    assert errors_of(text, registry) == [
        "f.yaml:5:13: node 'src': wire to missing node 'sinx'",
        "f.yaml:9:7: node 'r': route has no output port 'evn' (ports: even, odd) "
        "(did you mean 'even'?)",
    ]


def test_kind_mismatch(registry: Registry) -> None:
    text = """\
        version: 1
        nodes:
          f:
            type: frames
            wires: [plus]
          plus: {type: add}
        """
    assert errors_of(text, registry) == [
        "f.yaml:5:13: node 'f': kind mismatch: port 'out' carries frame messages "
        "but 'plus' (add) takes event"
    ]


def test_wire_into_source_and_out_of_sink(registry: Registry) -> None:
    text = """\
        version: 1
        nodes:
          a: {type: numbers, wires: [b]}
          b: {type: numbers}
          k: {type: collect, wires: [a]}
        """
    assert errors_of(text, registry) == [
        "f.yaml:3:30: node 'a': 'b' (numbers) is a source: it takes no input",
        "f.yaml:5:29: node 'k': collect is a sink: it has no output to wire",
    ]


def test_cycle(registry: Registry) -> None:
    text = """\
        version: 1
        nodes:
          a: {type: add, wires: [b]}
          b: {type: add, wires: [c]}
          c: {type: add, wires: [a]}
        """
    assert errors_of(text, registry) == ["f.yaml:3:3: node 'a': cycle: a -> b -> c -> a"]


def test_unset_variable_and_duplicate_id(registry: Registry) -> None:
    text = """\
        version: 1
        nodes:
          a:
            type: add
            n: ${COUNT}
          a:
            type: collect
        """
    assert errors_of(text, registry) == [
        "f.yaml:5:8: node 'a': environment variable 'COUNT' is not set "
        "(use ${COUNT:-default} for a default)",
        "f.yaml:6:3: node 'a': duplicate node id 'a' (first defined at line 3)",
    ]


def test_top_level_problems(registry: Registry) -> None:
    errors = errors_of("version: 2\nnode: {}\n", registry)
    assert errors == [
        "f.yaml:1:1: 'nodes' must be a non-empty mapping of id -> node",
        "f.yaml:1:10: 'version' must be 1, got 2",
        "f.yaml:2:1: unknown top-level key 'node' (did you mean 'nodes'?) "
        "(allowed: version, name, description, nodes, and x-... for YAML anchors)",
    ]
    assert errors_of("", registry) == ["f.yaml:1:1: the flow file is empty"]
    assert errors_of("- 1\n", registry) == ["f.yaml:1:1: a flow must be a mapping with 'nodes'"]


def test_missing_type_and_reserved_key_types(registry: Registry) -> None:
    text = """\
        version: 1
        nodes:
          a: {n: 1}
          b: {type: collect, disabled: maybe, label: 3}
        """
    assert errors_of(text, registry) == [
        "f.yaml:3:3: node 'a': missing 'type'",
        "f.yaml:4:32: node 'b': 'disabled' must be true or false",
        "f.yaml:4:46: node 'b': 'label' must be a string",
    ]


def test_set_errors_point_at_the_option(registry: Registry) -> None:
    text = "version: 1\nnodes:\n  a: {type: add}\n"
    assert errors_of(text, registry, ("a.n=-1", "a.bogus=1")) == [
        "--set a.bogus=1: node 'a': unknown config key 'bogus' for add",
        "--set a.n=-1: node 'a': 'n': Input should be greater than or equal to 0 (got -1)",
    ]


def test_all_errors_are_collected_at_once(registry: Registry) -> None:
    text = """\
        version: 1
        nodes:
          a: {type: numbrs}
          b: {type: add, n: x, wires: [zz]}
          c: {type: collect, extra: 1}
          d: {type: frames, wires: [c2]}
          c2: {type: add}
        """
    errors = errors_of(text, registry)
    assert len(errors) == 5, errors
    assert [e.split(":")[1] for e in errors] == ["3", "4", "4", "5", "6"]
