"""les02-flow: reactive YAML flows for CAN bus data.

The public API is what ``__all__`` lists (``tests/runtime/test_public_api.py`` checks it);
node authors use :mod:`les02_flow.node` (the node contract) and the typed events
(``RideEndEvent``, ``RideEndPayload``, ... from :mod:`les02_flow.events`, exported here too).
Everything else is internal.
"""

from __future__ import annotations

from . import events
from .compiler import CompiledFlow, CompiledNode, compile_document, compile_file
from .engine import Engine
from .events import *  # noqa: F403 - the names of events.__all__ (Event, the typed events)
from .flowfile import FlowDocument, FlowError, FlowErrors, Location, load_flow, load_flow_text
from .node import Context, Counters, Kind, Node, NodeConfig, NodeStartError
from .registry import ENTRY_POINT_GROUP, Registry, RegistryError, default_registry

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "CompiledFlow",
    "CompiledNode",
    "Context",
    "Counters",
    "Engine",
    "FlowDocument",
    "FlowError",
    "FlowErrors",
    "Kind",
    "Location",
    "Node",
    "NodeConfig",
    "NodeStartError",
    "Registry",
    "RegistryError",
    "__version__",
    "compile_document",
    "compile_file",
    "default_registry",
    "load_flow",
    "load_flow_text",
]
__all__ += events.__all__
