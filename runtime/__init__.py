"""les02-flow: reactive YAML flows for CAN bus data.

The public API is what ``__all__`` lists (``tests/runtime/test_public_api.py`` checks it);
node authors use :mod:`les02_flow.node` (the node contract) and the typed events
(``RideEndEvent``, ``RideEndPayload``, ... from :mod:`les02_flow.events`, exported here too).
Everything else is internal.
"""

from __future__ import annotations

from .compiler import CompiledFlow, CompiledNode, compile_document, compile_file
from .engine import Engine
from .events import (
    BatchEvent,
    BatchPayload,
    CanInvalidEvent,
    CanInvalidPayload,
    CanMessageEvent,
    CanMessagePayload,
    Channel,
    ChannelMismatchEvent,
    ChannelMismatchPayload,
    DropoutEvent,
    DropoutPayload,
    EdgeStatusEvent,
    EdgeStatusPayload,
    Envelope,
    EnvelopeFields,
    ErrorEvent,
    Event,
    FramePayload,
    KnownEvent,
    MovePayload,
    PositionSampleEvent,
    PositionSamplePayload,
    RelevelEvent,
    RelevelPayload,
    RideEndEvent,
    RideEndPayload,
    RideStartEvent,
    RideStartPayload,
    StatusEvent,
    SystemEvent,
    encode_event,
    make_event,
)
from .flowfile import FlowDocument, FlowError, FlowErrors, Location, load_flow, load_flow_text
from .node import Context, Counters, Kind, Node, NodeConfig, NodeStartError
from .registry import ENTRY_POINT_GROUP, Registry, RegistryError, default_registry

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "BatchEvent",
    "BatchPayload",
    "CanInvalidEvent",
    "CanInvalidPayload",
    "CanMessageEvent",
    "CanMessagePayload",
    "Channel",
    "ChannelMismatchEvent",
    "ChannelMismatchPayload",
    "CompiledFlow",
    "CompiledNode",
    "Context",
    "Counters",
    "DropoutEvent",
    "DropoutPayload",
    "EdgeStatusEvent",
    "EdgeStatusPayload",
    "Engine",
    "Envelope",
    "EnvelopeFields",
    "ErrorEvent",
    "Event",
    "FlowDocument",
    "FlowError",
    "FlowErrors",
    "FramePayload",
    "Kind",
    "KnownEvent",
    "Location",
    "MovePayload",
    "Node",
    "NodeConfig",
    "NodeStartError",
    "PositionSampleEvent",
    "PositionSamplePayload",
    "Registry",
    "RegistryError",
    "RelevelEvent",
    "RelevelPayload",
    "RideEndEvent",
    "RideEndPayload",
    "RideStartEvent",
    "RideStartPayload",
    "StatusEvent",
    "SystemEvent",
    "__version__",
    "compile_document",
    "compile_file",
    "default_registry",
    "encode_event",
    "load_flow",
    "load_flow_text",
    "make_event",
]
