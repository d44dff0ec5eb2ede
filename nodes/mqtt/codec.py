"""What goes over MQTT (plain Python): broker URLs, topics, event and frame-batch payloads.

``docs/fleet.md`` is the normative description; the functions here implement it.

* Event message: one JSON object, the event envelope of ``docs/protocol.md`` plus ``site``
  and, for messages that went through the spool (QoS 1), ``seq`` (the publisher's message
  number; grows by one per spooled message and survives restarts; a repeated ``seq`` is a
  QoS 1 duplicate) and ``spool`` (the id of the spool that numbered it: a new spool starts
  ``seq`` at 1 again).
* Event batch: a JSON array of such objects (without ``seq``), oldest first.
* Frame batch (topic type ``frames``): binary, little-endian::

      magic  b"LF"  | version u8 = 1 | count u16
      count x ( ts f64 | id u32 | flags u8 | dlc u8 | len u8 | data[len] )

  ``id`` is the CAN arbitration id; ``flags`` bit 0 extended id, bit 1 remote frame, bit 2
  error frame, bit 3 CAN FD, bit 4 bitrate switch, bit 5 error state indicator; ``ts`` is the
  frame's timestamp (epoch seconds).
* Edge status (topic ``les02/{site}/{source}/edge/status``, retained): the text ``online`` or
  ``offline`` (also the last will).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import can

from les02_flow.events import Event

__all__ = [
    "FRAMES_TYPE",
    "FRAME_MAGIC",
    "STATE_TOPIC",
    "STATUS_TOPIC",
    "TOPIC",
    "BrokerUrl",
    "CodecError",
    "TopicTemplate",
    "decode_event_payload",
    "decode_frames",
    "encode_event_batch",
    "encode_event_payload",
    "encode_frames",
    "parse_url",
]

FRAMES_TYPE = "frames"
#: the default topic layout, the contract between mqtt_sink (publishes) and mqtt_source
#: (subscribes): both nodes' ``topic``, ``status_topic`` and ``state_topic`` default to these
TOPIC = "les02/{site}/{source}/{type}"
STATUS_TOPIC = "les02/{site}/{source}/edge/status"
STATE_TOPIC = "les02/{site}/{source}/position"
FRAME_MAGIC = b"LF"
_HEAD = struct.Struct("<2sBH")
_FRAME = struct.Struct("<dIBBB")
_MAX_FRAMES = 0xFFFF

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class CodecError(ValueError):
    """A payload or topic does not follow docs/fleet.md; the message says what is wrong."""


# -- broker URL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> BrokerUrl:
    """``mqtt://host[:port]`` (default 1883) or ``mqtts://host[:port]`` (default 8883).

    >>> parse_url("mqtt://127.0.0.1:1884"), str(parse_url("mqtts://broker.example"))
    (BrokerUrl(host='127.0.0.1', port=1884, tls=False), 'mqtts://broker.example:8883')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"url {url!r}: the scheme must be mqtt:// or mqtts://")
    if parts.username or parts.password:
        raise ValueError(
            f"url {url!r}: put no credentials in the URL; use username and password_env"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"url {url!r}: only scheme://host:port is allowed")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url {url!r}: {exc}") from None
    host = unquote(parts.hostname or "")
    if not host:
        raise ValueError(f"url {url!r}: no host")
    tls = parts.scheme == "mqtts"
    return BrokerUrl(host, port or (8883 if tls else 1883), tls)


# -- topics --------------------------------------------------------------------------------------

_FIELD = re.compile(r"\{([a-z_]+)\}")
_SEGMENT_OK = re.compile(r"[^/+#\x00]+\Z")


class TopicTemplate:
    """A topic template with ``{site}``, ``{source}`` and ``{type}`` placeholders.

    >>> t = TopicTemplate("les02/{site}/{source}/{type}")
    >>> t.format("hq", "lift-3", "ride_end")
    'les02/hq/lift-3/ride_end'
    >>> t.parse("les02/hq/lift-3/ride_end")
    {'site': 'hq', 'source': 'lift-3', 'type': 'ride_end'}
    >>> t.parse("other/x") is None
    True
    """

    FIELDS = ("site", "source", "type")

    def __init__(self, template: str, fields: tuple[str, ...] = FIELDS) -> None:
        self.template = template
        names = _FIELD.findall(template)
        unknown = sorted(set(names) - set(fields))
        if unknown:
            raise ValueError(
                f"topic template {template!r}: unknown placeholder(s) {unknown}; "
                f"allowed: {', '.join('{' + f + '}' for f in fields)}"
            )
        if "+" in template or "#" in template or template.startswith("$"):
            raise ValueError(f"topic template {template!r}: no wildcards, no leading '$'")
        rest = _FIELD.sub("x", template)
        if "{" in rest or "}" in rest:
            raise ValueError(f"topic template {template!r}: stray brace")
        pattern = ""
        pos = 0
        for m in _FIELD.finditer(template):
            pattern += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
            pos = m.end()
        pattern += re.escape(template[pos:])
        self._regex = re.compile(pattern + r"\Z")
        self.names = tuple(names)

    def format(self, site: str, source: str, type_: str = "") -> str:
        values = {"site": site, "source": source, "type": type_}
        for name in self.names:
            if not _SEGMENT_OK.match(values[name]):
                raise CodecError(
                    f"{name} {values[name]!r} cannot be a topic level (empty, '/', '+' or '#')"
                )
        return _FIELD.sub(lambda m: values[m.group(1)], self.template)

    def parse(self, topic: str) -> dict[str, str] | None:
        m = self._regex.match(topic)
        return None if m is None else m.groupdict()


# -- events --------------------------------------------------------------------------------------


def encode_event_payload(
    event: Event, site: str, seq: int | None = None, spool: str | None = None
) -> bytes:
    """One event as an MQTT payload: the envelope plus ``site`` (and ``seq``, ``spool``),
    compact JSON.

    >>> ev = {"proto": 1, "type": "ride_end", "ts": 2.5, "source": "lift-3", "payload": {}}
    >>> encode_event_payload(ev, "hq", 7, "0a1b2c3d")
    b'{"proto":1,"type":"ride_end","ts":2.5,"source":"lift-3","payload":{},"site":"hq","seq":7,"spool":"0a1b2c3d"}'
    """
    doc = dict(event)
    doc["site"] = site
    doc.pop("seq", None)
    doc.pop("spool", None)
    if seq is not None:
        doc["seq"] = seq
        if spool is not None:
            doc["spool"] = spool
    return _dumps(doc).encode()


def encode_event_batch(events: list[Event], site: str) -> bytes:
    """Several events as one JSON array (each element as :func:`encode_event_payload`)."""
    docs = []
    for ev in events:
        d = dict(ev)
        d["site"] = site
        d.pop("seq", None)
        d.pop("spool", None)
        docs.append(d)
    return _dumps(docs).encode()


def _check_event(doc: Any, where: str) -> Event:
    if not isinstance(doc, dict):
        raise CodecError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    for key, typ in (("type", str), ("source", str), ("payload", dict)):
        if not isinstance(doc.get(key), typ):
            raise CodecError(f"{where}: field {key!r} missing or not a {typ.__name__}")
    ts = doc.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise CodecError(f"{where}: field 'ts' missing or not a number")
    return doc


def decode_event_payload(payload: bytes) -> list[Event]:
    """Events of one message (an object or an array of objects), validated.

    >>> decode_event_payload(b'{"proto":1,"type":"x","ts":1,"source":"a","payload":{}}')
    [{'proto': 1, 'type': 'x', 'ts': 1, 'source': 'a', 'payload': {}}]
    """
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    if isinstance(doc, list):
        return [_check_event(d, f"batch element {i}") for i, d in enumerate(doc)]
    return [_check_event(doc, "event")]


# -- frames --------------------------------------------------------------------------------------

_EXT, _RTR, _ERR, _FD, _BRS, _ESI = 1, 2, 4, 8, 16, 32


def encode_frames(frames: list[can.Message]) -> bytes:
    """A frame batch (layout in the module docstring); at most 65535 frames.

    >>> m = can.Message(timestamp=1.5, arbitration_id=0x80, data=b"\\x00\\x01\\x02\\x03",
    ...                 is_extended_id=False)
    >>> blob = encode_frames([m]); blob[:5], len(blob)
    (b'LF\\x01\\x01\\x00', 24)
    >>> decode_frames(blob)[0].equals(m)
    True
    """
    if len(frames) > _MAX_FRAMES:
        raise ValueError(f"{len(frames)} frames: a batch holds at most {_MAX_FRAMES}")
    parts = [_HEAD.pack(FRAME_MAGIC, 1, len(frames))]
    for m in frames:
        flags = (
            (_EXT if m.is_extended_id else 0)
            | (_RTR if m.is_remote_frame else 0)
            | (_ERR if m.is_error_frame else 0)
            | (_FD if m.is_fd else 0)
            | (_BRS if m.bitrate_switch else 0)
            | (_ESI if m.error_state_indicator else 0)
        )
        data = bytes(m.data or b"")
        parts.append(_FRAME.pack(m.timestamp, m.arbitration_id, flags, m.dlc, len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_frames(blob: bytes, channel: str | None = None) -> list[can.Message]:
    """The frames of a batch; raises :class:`CodecError` on a malformed one."""
    if len(blob) < _HEAD.size:
        raise CodecError(f"frame batch of {len(blob)} bytes is shorter than its header")
    magic, version, count = _HEAD.unpack_from(blob)
    if magic != FRAME_MAGIC:
        raise CodecError(f"frame batch magic {magic!r}, expected {FRAME_MAGIC!r}")
    if version != 1:
        raise CodecError(f"frame batch version {version}, this les02-flow reads 1")
    out: list[can.Message] = []
    pos = _HEAD.size
    for i in range(count):
        if pos + _FRAME.size > len(blob):
            raise CodecError(f"frame batch cut short in frame {i} of {count}")
        ts, arb, flags, dlc, length = _FRAME.unpack_from(blob, pos)
        pos += _FRAME.size
        data = blob[pos : pos + length]
        if len(data) != length:
            raise CodecError(f"frame batch cut short in the data of frame {i} of {count}")
        pos += length
        out.append(
            can.Message(
                timestamp=ts,
                arbitration_id=arb,
                is_extended_id=bool(flags & _EXT),
                is_remote_frame=bool(flags & _RTR),
                is_error_frame=bool(flags & _ERR),
                is_fd=bool(flags & _FD),
                bitrate_switch=bool(flags & _BRS),
                error_state_indicator=bool(flags & _ESI),
                dlc=dlc,
                data=data,
                channel=channel,
                check=False,
            )
        )
    if pos != len(blob):
        raise CodecError(f"frame batch has {len(blob) - pos} bytes after its {count} frames")
    return out
