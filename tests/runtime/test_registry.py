"""The registry: built-ins come from the package's own entry points, declarations are checked at
registration, and the config model is derived from ``Node[ConfigT]``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import Field
from reactivex import Observable

import les02_flow.nodes
from les02_flow.node import Kind, Node, NodeConfig
from les02_flow.registry import Registry, RegistryError, default_registry


def _node_classes_in_package() -> list[type[Node[Any]]]:
    found: dict[str, type[Node[Any]]] = {}
    for info in pkgutil.walk_packages(les02_flow.nodes.__path__, "les02_flow.nodes."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Node) and obj is not Node and obj.__module__ == module.__name__:
                found[f"{obj.__module__}:{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_node_class_in_the_package_is_registered() -> None:
    registered = set(default_registry(plugins=False))
    missing = [
        f'{cls.type_name or "?"} = "{cls.__module__}:{cls.__qualname__}"'
        for cls in _node_classes_in_package()
        if cls.type_name and cls not in registered
    ]
    assert not missing, (
        'add to [project.entry-points."les02_flow.nodes"] in pyproject.toml, then '
        "`make install` (pip install -e .): " + "; ".join(missing)
    )
    assert len(registered) >= 12


def test_builtins_are_named_built_in() -> None:
    registry = default_registry()
    assert registry.origin("ws_sink") == "built-in les02_flow.nodes.ws.sink:WsSink"


class _Config(NodeConfig):
    n: int = Field(default=1, description="a number")


def test_config_model_is_derived_from_the_type_argument() -> None:
    class Derived(Node[_Config]):
        """Derived."""

        type_name = "derived"
        input_kind = Kind.ANY

        def consume(self, message: Any) -> None:
            pass

    class Explicit(Node[_Config]):  # the pre-derivation style keeps working
        """Explicit."""

        type_name = "explicit"
        config_model = _Config
        input_kind = Kind.ANY

        def consume(self, message: Any) -> None:
            pass

    class Sub(Derived):
        """A subclass inherits the parent's model."""

        type_name = "sub"

    assert Derived.config_model is _Config
    assert Explicit.config_model is _Config
    assert Sub.config_model is _Config
    Registry([Derived, Explicit, Sub], "tests")


def test_a_config_model_that_contradicts_the_type_argument_is_refused() -> None:
    class Other(NodeConfig):
        pass

    with pytest.raises(TypeError, match="does not match Node\\[_Config\\]"):

        class Wrong(Node[_Config]):
            type_name = "wrong"
            config_model = Other


def test_a_sink_without_consume_is_refused_at_registration() -> None:
    class NoConsume(Node[_Config]):
        """A sink that forgot consume."""

        type_name = "no_consume"
        input_kind = Kind.EVENT

    with pytest.raises(RegistryError, match="no_consume is a sink but does not implement consume"):
        Registry().register(NoConsume, "tests")


def test_a_transform_without_build_is_refused_at_registration() -> None:
    class NoBuild(Node[_Config]):
        """A transform that forgot build."""

        type_name = "no_build"
        input_kind = Kind.EVENT
        output_ports = {"out": Kind.EVENT}

    with pytest.raises(RegistryError, match=r"no_build declares output ports .* build"):
        Registry().register(NoBuild, "tests")

    class WithBuild(NoBuild):
        type_name = "with_build"

        def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
            assert source is not None
            return {"out": source}

    Registry().register(WithBuild, "tests")


def test_extended_copies_and_adds() -> None:
    class Extra(Node[_Config]):
        """Extra."""

        type_name = "extra_sink"
        input_kind = Kind.ANY

        def consume(self, message: Any) -> None:
            pass

    base = default_registry()
    more = base.extended(Extra)
    assert "extra_sink" in more and "extra_sink" not in base
    assert set(base.names()) < set(more.names())
    with pytest.raises(RegistryError, match="registered twice"):
        more.extended(Extra)
