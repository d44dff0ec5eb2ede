"""Every built-in node type's declaration is complete and every example in it validates."""

from __future__ import annotations

import pytest
import yaml

from les02_flow.compiler import compile_document
from les02_flow.flowfile import load_flow_text
from les02_flow.node import Node, NodeConfig
from les02_flow.registry import default_registry

TYPES = list(default_registry())


@pytest.mark.parametrize("cls", TYPES, ids=[c.type_name for c in TYPES])
def test_declaration_is_complete(cls: type[Node[NodeConfig]]) -> None:
    assert cls.summary(), "the docstring's first line is the summary"
    assert cls.examples, "at least one example"
    assert cls.config_model.model_config.get("extra") == "forbid"
    for name, info in cls.config_model.model_fields.items():
        assert info.description, name


@pytest.mark.parametrize("cls", TYPES, ids=[c.type_name for c in TYPES])
def test_examples_validate(cls: type[Node[NodeConfig]]) -> None:
    for example in cls.examples:
        entries = yaml.safe_load(example)
        assert isinstance(entries, dict) and len(entries) == 1, example
        node_id, body = next(iter(entries.items()))
        assert body["type"] == cls.type_name
        body.pop("wires", None)  # examples may wire to nodes they do not show
        text = yaml.safe_dump({"version": 1, "nodes": {node_id: body}})
        flow = compile_document(load_flow_text(text, f"{cls.type_name} example", env={}))
        assert flow.nodes[str(node_id)].cls is cls
