"""Node type registry: every node type comes from the entry-point group ``les02_flow.nodes``.

Built-in node types register exactly the way plugins do: through the entry points of the
``les02-flow`` distribution itself (``[project.entry-points."les02_flow.nodes"]`` in
``pyproject.toml``). A third-party package registers its node types the same way; the object
is a :class:`~les02_flow.node.Node` subclass (or a sequence of them)::

    [project.entry-points."les02_flow.nodes"]
    my_filter = "my_package.nodes:MyFilter"

Registration checks the declaration once, so a broken node type fails at start-up and not on
the first message: a snake_case ``type_name``, a ``config_model`` with a description on every
field, a sink that implements ``consume``, a node with output ports that implements ``build``.
A type name registered twice is an error (:class:`RegistryError`) naming both origins;
nothing is silently overridden.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .node import Node, NodeConfig

__all__ = [
    "DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "NodeType",
    "Registry",
    "RegistryError",
    "default_registry",
]

ENTRY_POINT_GROUP = "les02_flow.nodes"
#: the distribution whose entry points are the built-in node types
DISTRIBUTION = "les02-flow"

#: a node class, whatever its config type
NodeType = type[Node[Any]]

# Built-in node types: entry points in pyproject.toml, [project.entry-points."les02_flow.nodes"].
# tests/runtime/test_registry.py fails when a Node subclass under les02_flow.nodes is not there.

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(Exception):
    """A node type could not be registered (duplicate name, bad declaration, failed import)."""


class Registry:
    """Maps type names to node classes, remembering where each came from."""

    def __init__(self, types: Iterable[NodeType] = (), origin: str = "") -> None:
        self._types: dict[str, NodeType] = {}
        self._origins: dict[str, str] = {}
        for cls in types:
            self.register(cls, origin or cls.__module__)

    def register(self, cls: NodeType, origin: str) -> None:
        """Add one node type; a duplicate name or a malformed declaration raises."""
        if not isinstance(cls, type) or not issubclass(cls, Node):
            raise RegistryError(f"{origin}: {cls!r} is not a les02_flow Node subclass")
        name = cls.type_name
        if not _TYPE_NAME.match(name):
            raise RegistryError(f"{origin}: type name {name!r} is not snake_case")
        model = cls.config_model
        if not isinstance(model, type) or not issubclass(model, NodeConfig):
            raise RegistryError(f"{origin}: {name}.config_model must subclass NodeConfig")
        for field_name, info in model.model_fields.items():
            if not info.description:
                raise RegistryError(f"{origin}: {name}.{field_name} has no description")
        if cls.output_ports and cls.build is Node.build:
            raise RegistryError(
                f"{origin}: {name} declares output ports {sorted(cls.output_ports)} "
                "but does not implement build()"
            )
        if cls.is_sink() and cls.consume is Node.consume:
            raise RegistryError(f"{origin}: {name} is a sink but does not implement consume()")
        if name in self._types:
            raise RegistryError(
                f"node type '{name}' is registered twice: by {self._origins[name]} and by {origin}"
            )
        self._types[name] = cls
        self._origins[name] = origin

    def extended(self, *classes: NodeType, origin: str = "extra") -> Registry:
        """A copy of this registry with ``classes`` added (tests, benchmarks, embedding)."""
        copy = Registry()
        copy._types = dict(self._types)
        copy._origins = dict(self._origins)
        for cls in classes:
            copy.register(cls, origin)
        return copy

    def get(self, name: str) -> NodeType | None:
        return self._types.get(name)

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return list(self._types)

    def closest(self, name: str) -> str | None:
        """The known type name closest to ``name``, if any is close enough."""
        found = difflib.get_close_matches(name, self._types, n=1, cutoff=0.5)
        return found[0] if found else None

    def __iter__(self) -> Iterator[NodeType]:
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types


def _as_classes(obj: object) -> list[NodeType]:
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return [obj]  # type: ignore[list-item]


def _origin(ep: EntryPoint) -> str:
    dist = ep.dist.name if ep.dist else "?"
    if dist == DISTRIBUTION:
        return f"built-in {ep.value}"
    return f"entry point '{ep.name}' ({ep.value}) of {dist}"


def _load(registry: Registry, ep: EntryPoint) -> None:
    origin = _origin(ep)
    try:
        loaded = ep.load()
    except Exception as exc:
        raise RegistryError(f"{origin}: cannot load: {exc}") from exc
    for cls in _as_classes(loaded):
        registry.register(cls, origin)


_default: Registry | None = None


def default_registry(*, plugins: bool = True) -> Registry:
    """The built-in node types plus installed plugins (cached after the first call).

    Built-ins come first (in the order of ``pyproject.toml``), then plugins by entry point name.
    """
    global _default
    if _default is not None and plugins:
        return _default
    found = entry_points(group=ENTRY_POINT_GROUP)
    builtin = [ep for ep in found if ep.dist is not None and ep.dist.name == DISTRIBUTION]
    if not builtin:
        raise RegistryError(
            f"no built-in node types: the {DISTRIBUTION} distribution's entry points are not "
            "installed (run `make install` or `pip install -e .`)"
        )
    registry = Registry()
    for ep in builtin:
        _load(registry, ep)
    if plugins:
        for ep in sorted((ep for ep in found if ep not in builtin), key=lambda e: e.name):
            _load(registry, ep)
        _default = registry
    return registry
