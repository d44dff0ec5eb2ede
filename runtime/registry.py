"""Node type registry: built-in node types plus the entry-point group ``les02_flow.nodes``.

A third-party package registers node types with an entry point whose object is a
:class:`~les02_flow.node.Node` subclass (or a sequence of them)::

    [project.entry-points."les02_flow.nodes"]
    my_filter = "my_package.nodes:MyFilter"

A type name registered twice is an error (:class:`RegistryError`) naming both origins; nothing
is silently overridden.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points

from .node import Node, NodeConfig

__all__ = ["ENTRY_POINT_GROUP", "Registry", "RegistryError", "default_registry"]

ENTRY_POINT_GROUP = "les02_flow.nodes"

# module:Class of every built-in node type, in the order `les02-flow nodes` lists them.
BUILTIN_NODES: tuple[str, ...] = (
    "les02_flow.nodes.les02.sim:Les02Sim",
    "les02_flow.nodes.can_source:CanSource",
    "les02_flow.nodes.les02.parse:Les02Parse",
    "les02_flow.nodes.ws.sink:WsSink",
    "les02_flow.nodes.debug:Debug",
    # -- recording (issue 3) --
    "les02_flow.nodes.recording.file_recorder:FileRecorder",
    "les02_flow.nodes.recording.replay_source:ReplaySource",
    # -- ecuconnect (issue 4) --
    "les02_flow.nodes.ecuconnect.sink:EcuconnectTcpSink",
    "les02_flow.nodes.ecuconnect.source:EcuconnectSource",
    # -- rides (issue 5) --
    "les02_flow.nodes.rides.detect:RideDetect",
    "les02_flow.nodes.rides.store:RideStore",
    # -- uds (issue 7) --
    "les02_flow.nodes.uds.sim:UdsSim",
)

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(Exception):
    """A node type could not be registered (duplicate name, bad declaration, failed import)."""


class Registry:
    """Maps type names to node classes, remembering where each came from."""

    def __init__(self) -> None:
        self._types: dict[str, type[Node[NodeConfig]]] = {}
        self._origins: dict[str, str] = {}

    def register(self, cls: type[Node[NodeConfig]], origin: str) -> None:
        """Add one node type; a duplicate name or a malformed declaration raises."""
        name = getattr(cls, "type_name", "")
        if not isinstance(cls, type) or not issubclass(cls, Node):
            raise RegistryError(f"{origin}: {cls!r} is not a les02_flow Node subclass")
        if not _TYPE_NAME.match(name):
            raise RegistryError(f"{origin}: type name {name!r} is not snake_case")
        if not issubclass(cls.config_model, NodeConfig):
            raise RegistryError(f"{origin}: {name}.config_model must subclass NodeConfig")
        for field_name, info in cls.config_model.model_fields.items():
            if not info.description:
                raise RegistryError(f"{origin}: {name}.{field_name} has no description")
        if name in self._types:
            raise RegistryError(
                f"node type '{name}' is registered twice: by {self._origins[name]} and by {origin}"
            )
        self._types[name] = cls
        self._origins[name] = origin

    def get(self, name: str) -> type[Node[NodeConfig]] | None:
        return self._types.get(name)

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return list(self._types)

    def closest(self, name: str) -> str | None:
        """The known type name closest to ``name``, if any is close enough."""
        found = difflib.get_close_matches(name, self._types, n=1, cutoff=0.5)
        return found[0] if found else None

    def __iter__(self) -> Iterator[type[Node[NodeConfig]]]:
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types


def _load_object(spec: str) -> object:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def _as_classes(obj: object) -> Iterable[type[Node[NodeConfig]]]:
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return [obj]  # type: ignore[list-item]


_default: Registry | None = None


def default_registry(*, plugins: bool = True) -> Registry:
    """The built-in node types plus installed plugins (cached after the first call)."""
    global _default
    if _default is not None and plugins:
        return _default
    registry = Registry()
    for spec in BUILTIN_NODES:
        registry.register(_load_object(spec), f"built-in {spec}")  # type: ignore[arg-type]
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            origin = f"entry point '{ep.name}' ({ep.value}) of {ep.dist.name if ep.dist else '?'}"
            try:
                loaded = ep.load()
            except Exception as exc:
                raise RegistryError(f"{origin}: cannot load: {exc}") from exc
            for cls in _as_classes(loaded):
                registry.register(cls, origin)
        _default = registry
    return registry
