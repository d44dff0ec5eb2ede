"""Node ``mqtt_source``: subscribe to what ``mqtt_sink`` publishes and emit events and frames.

One aiomqtt connection (persistent session, capped exponential backoff); each message is
decoded by its payload and topic (docs/fleet.md): a JSON object is one event, a JSON array a
batch of events, a ``frames`` topic a binary frame batch, a status topic ``online``/
``offline`` an ``edge_status`` event. Every event keeps its ``source`` and gets ``site``; QoS 1
duplicates (a ``seq`` already seen from that site, source and spool) are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import aiomqtt
import can
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import Field, field_validator, model_validator
from reactivex import Observable

from les02_flow.events import EdgeStatusPayload, Event, make_event
from les02_flow.node import Context, Kind, Node, NodeConfig, RateLimitedLog
from les02_flow.nodes.background import ConnectTask
from les02_flow.streams import HotPort

from .codec import (
    FRAMES_TYPE,
    STATE_TOPIC,
    STATUS_TOPIC,
    TOPIC,
    CodecError,
    TopicTemplate,
    decode_event_payload,
    decode_frames,
)
from .connection import (
    Backoff,
    MqttConnectionConfig,
    client_kwargs,
    describe_error,
    is_refused,
    session_properties,
)

__all__ = ["MqttSource", "MqttSourceConfig"]

STOP_TIMEOUT = 2.0


class MqttSourceConfig(MqttConnectionConfig):
    """Config of ``mqtt_source``."""

    topics: list[str] = Field(
        default_factory=lambda: ["les02/#"],
        min_length=1,
        description="Topic filters to subscribe to (wildcards + and #; MQTT 5 shared "
        "subscriptions $share/GROUP/FILTER split the messages between several subscribers).",
    )
    qos: Literal[0, 1] = Field(default=1, description="Subscription QoS (1: nothing lost).")
    topic: str = Field(
        default=TOPIC,
        description="The publishers' topic template: tells site, source and type of frame "
        "batches and of events without a 'site' field.",
    )
    status_topic: str = Field(
        default=STATUS_TOPIC,
        description="The publishers' status topic template ('online'/'offline' become "
        "edge_status events).",
    )
    state_topic: str = Field(
        default=STATE_TOPIC,
        description="The publishers' retained position topic; its messages are skipped "
        "unless emit_state is true. Empty = none.",
    )
    emit_state: bool = Field(
        default=False,
        description="Emit the retained position messages too (as position_sample events).",
    )
    session_expiry: int = Field(
        default=3600,
        ge=0,
        description="Seconds the broker keeps this subscriber's session (and queues its QoS 1 "
        "messages) while it is disconnected; 0 = clean session each time.",
    )
    backoff_max: float = Field(
        default=5.0,
        gt=0,
        description="Longest reconnect delay in seconds (shorter than mqtt_sink's 30 s: after a "
        "broker restart the central should be subscribed again before the edges send their "
        "spools, in case the broker lost its sessions).",
    )
    dedup: bool = Field(
        default=True,
        description="Drop QoS 1 duplicates (a seq already seen from that site, source and spool).",
    )

    @field_validator("topics")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for f in value:
            check_filter(f)
        return value

    @model_validator(mode="after")
    def _templates(self) -> MqttSourceConfig:
        TopicTemplate(self.topic)
        TopicTemplate(self.status_topic, ("site", "source"))
        if self.state_topic:
            TopicTemplate(self.state_topic, ("site", "source"))
        return self


def check_filter(f: str) -> None:
    """Validate one topic filter (MQTT 3.1.1/5 rules, ``$share/GROUP/...`` allowed).

    >>> check_filter("les02/+/lift-3/#"); check_filter("$share/central/les02/#")
    >>> check_filter("les02/#/x")
    Traceback (most recent call last):
    ...
    ValueError: topic filter 'les02/#/x': '#' must be the last level
    """
    if not f:
        raise ValueError("empty topic filter")
    body = f
    if f.startswith("$share/"):
        parts = f.split("/", 2)
        if len(parts) < 3 or not parts[1] or "+" in parts[1] or "#" in parts[1] or not parts[2]:
            raise ValueError(f"topic filter {f!r}: expected $share/GROUP/FILTER")
        body = parts[2]
    levels = body.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic filter {f!r}: '#' must be the last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {f!r}: '+' must be a whole level")


class MqttSource(Node[MqttSourceConfig]):
    """Subscribe to MQTT topics and emit the events and frames ``mqtt_sink`` publishes.

    ``topics`` (default ``les02/#``) may use wildcards and MQTT 5 shared subscriptions
    (``$share/central/les02/#``: several central flows split a fleet). Events come out on
    ``event`` exactly as the edge had them, plus ``site`` (from the payload, else the topic);
    QoS 1 duplicates are dropped by ``seq``. Frame batches come out on ``frame``, one
    ``can.Message`` each, ``channel`` = ``SITE/SOURCE``. ``online``/``offline`` on a status
    topic become an ``edge_status`` event (payload ``{"state": ...}``, ``ts`` = arrival).
    The session is persistent (``session_expiry``): the broker queues QoS 1 messages while
    this flow is away. Default client id: ``les02-central-{node id}``. See docs/fleet.md.

    Counters: ``messages``, ``bad_messages``, ``duplicates``, ``connects``,
    ``connect_failures``.
    """

    type_name: ClassVar[str] = "mqtt_source"
    config_model: ClassVar[type[NodeConfig]] = MqttSourceConfig
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {"event": Kind.EVENT, "frame": Kind.FRAME}
    examples: ClassVar[tuple[str, ...]] = (
        "fleet:\n  type: mqtt_source\n  url: mqtt://127.0.0.1:1883\n  topics: ['les02/#']\n",
        "fleet:\n  type: mqtt_source\n  url: mqtts://broker.example:8883\n"
        "  topics: ['$share/central/les02/+/+/+']\n  client_id: central-1\n"
        "  username: central\n  password_env: LES02_MQTT_PASSWORD\n  ca_file: /etc/les02/ca.pem\n",
    )

    def __init__(self, node_id: str, config: MqttSourceConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self._events: HotPort[Event] = HotPort()
        self._frames: HotPort[can.Message] = HotPort()
        self._topics = TopicTemplate(config.topic)
        self._status = TopicTemplate(config.status_topic, ("site", "source"))
        self._state = (
            TopicTemplate(config.state_topic, ("site", "source")) if config.state_topic else None
        )
        self._last_seq: dict[tuple[str, str, str], int] = {}
        self._connect = ConnectTask(f"mqtt_source {node_id}", STOP_TIMEOUT)
        self._client_id = config.client_id or f"les02-central-{node_id}"
        self._v5 = config.protocol != "3.1.1"
        self._fail_log = RateLimitedLog(self.log, 30.0)
        self._bad_log = RateLimitedLog(self.log, 5.0)
        #: True while connected and subscribed
        self.subscribed = False

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        return {"event": self._events.observable, "frame": self._frames.observable}

    async def start(self) -> None:
        """Check the settings and start connecting in the background."""
        if self._connect.task is None and not self._connect.stopped:
            client_kwargs(self.config, self.log.prefix, self._client_id, self._v5)
            self._connect.start(self.ctx.get_loop(), self._run)

    async def stop(self) -> None:
        """Disconnect and complete both ports. Idempotent, bounded, never raises."""
        await self._connect.stop(self.log, self._events.on_completed, self._frames.on_completed)

    # -- decoding (plain, on the loop) -------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message and emit what it holds (errors counted and logged)."""
        self.counters.bump("messages")
        try:
            self._handle(topic, payload)
        except (CodecError, ValueError) as exc:
            self.counters.errors += 1
            self.counters.bump("bad_messages")
            self._bad_log(
                logging.WARNING,
                "message on %s not decoded: %s -- skipped",
                topic,
                exc,
            )

    def _handle(self, topic: str, payload: bytes) -> None:
        status = self._status.parse(topic)
        if status is not None:
            text = payload.decode("utf-8", "replace").strip()
            if text not in ("online", "offline"):
                raise CodecError(f"status {text[:40]!r}, expected 'online' or 'offline'")
            state: EdgeStatusPayload = {"state": "online" if text == "online" else "offline"}
            event = make_event("edge_status", time.time(), state, status["source"])
            event["site"] = status["site"]
            self._events.on_next(event)
            return
        is_state = self._state is not None and self._state.parse(topic) is not None
        if is_state and not self.config.emit_state:
            return
        parts = self._topics.parse(topic)
        if parts is not None and parts.get("type") == FRAMES_TYPE:
            site, source = parts.get("site", ""), parts.get("source", "")
            for frame in decode_frames(payload, f"{site}/{source}"):
                self._frames.on_next(frame)
            return
        events = decode_event_payload(payload)
        emit = self._events.on_next
        for ev in events:
            if "site" not in ev:
                ev["site"] = (parts or {}).get("site", "")
            seq = ev.pop("seq", None)
            spool = ev.pop("spool", None)
            if self.config.dedup and isinstance(seq, int):
                key = (str(ev["site"]), ev["source"], str(spool))
                last = self._last_seq.get(key)
                if last is not None and seq <= last:
                    self.counters.bump("duplicates")
                    continue
                self._last_seq[key] = seq
            emit(ev)

    # -- connection --------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.backoff_min, cfg.backoff_max)
        while not self._connect.stopped:
            try:
                kw = client_kwargs(cfg, self.log.prefix, self._client_id, self._v5)
                kw["logger"] = logging.getLogger("les02_flow.mqtt.paho")
                persistent = cfg.session_expiry > 0
                if self._v5:
                    if persistent:
                        kw["clean_start"] = False
                        kw["properties"] = session_properties(cfg.session_expiry)
                else:
                    kw["clean_session"] = not persistent
                client = aiomqtt.Client(**kw)
                async with client:
                    self.counters.bump("connects")
                    backoff.reset()
                    if self._v5:
                        opts = SubscribeOptions(qos=cfg.qos)
                        await client.subscribe([(t, opts) for t in cfg.topics])
                    else:
                        subs: list[tuple[str, int]] = [(t, cfg.qos) for t in cfg.topics]
                        await client.subscribe(subs)
                    self.subscribed = True
                    self.ctx.set_status("ok", f"subscribed at {cfg.broker()}")
                    self.log.info(
                        "connected to %s as %s (MQTT %s), subscribed to %s",
                        cfg.broker(),
                        self._client_id,
                        "5" if self._v5 else "3.1.1",
                        ", ".join(cfg.topics),
                    )
                    async for message in client.messages:
                        self.handle(message.topic.value, bytes(message.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if cfg.protocol == "auto" and self._v5 and is_refused(exc) == "protocol":
                    self.log.info("broker refused MQTT 5, using 3.1.1")
                    self._v5 = False
                    continue
                self.counters.bump("connect_failures")
                self.ctx.set_status(
                    "error" if is_refused(exc) == "auth" else "warning", describe_error(exc, cfg)
                )
                if self.subscribed:
                    self.log.warning(
                        "lost the connection: %s; reconnecting",
                        describe_error(exc, cfg),
                    )
                else:
                    self._fail_log(
                        logging.ERROR,
                        "cannot connect: %s; retrying with backoff up to %.0f s",
                        describe_error(exc, cfg),
                        cfg.backoff_max,
                    )
            finally:
                self.subscribed = False
            await asyncio.sleep(backoff.next())
