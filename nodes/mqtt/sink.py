"""Node ``mqtt_sink``: publish events and frame batches to an MQTT broker (aiomqtt).

:meth:`MqttSink.consume` never waits on the broker: it encodes the message and appends it to
the spool (QoS 1) or to a bounded in-memory queue (QoS 0), then wakes the publisher task.
The publisher task connects (capped exponential backoff), publishes ``online`` on the status
topic (the last will says ``offline``), and sends the spooled messages oldest first with up to
``max_inflight`` unacknowledged at once; a message leaves the spool only when the broker has
acknowledged it. After a lost connection every unacknowledged message is sent again, in order.
The spool's file I/O runs in a worker thread every ``flush_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import aiomqtt
import can
from pydantic import Field, field_validator, model_validator

from les02_flow.events import Event
from les02_flow.node import Context, Kind, Node, NodeConfig, NodeStartError, RateLimitedLog

from .codec import (
    FRAMES_TYPE,
    STATE_TOPIC,
    STATUS_TOPIC,
    TOPIC,
    TopicTemplate,
    encode_event_batch,
    encode_event_payload,
    encode_frames,
)
from .connection import Backoff, MqttConnectionConfig, client_kwargs, describe_error, is_refused
from .spool import Spool, SpoolError, SpoolRecord

__all__ = ["DEFAULT_QOS", "MqttSink", "MqttSinkConfig"]

#: QoS of the types not named in ``qos`` is 1; these are the exceptions by default
DEFAULT_QOS: dict[str, Literal[0, 1]] = {"position_sample": 0, FRAMES_TYPE: 0}
#: seconds stop() waits for spooled messages to be acknowledged before disconnecting
DRAIN_TIMEOUT = 2.0
_LEVEL = re.compile(r"[^/+#\x00]+\Z")


class MqttSinkConfig(MqttConnectionConfig):
    """Config of ``mqtt_sink``."""

    site: str = Field(
        ...,
        min_length=1,
        description="Site (building, customer) of this lift: the {site} topic level and the "
        "'site' field of every payload.",
    )
    source: str = Field(
        default="les02",
        min_length=1,
        description="{source} of the frame batches and of the status and position topics "
        "(events use their own 'source' field).",
    )
    topic: str = Field(
        default=TOPIC,
        description="Topic template of events and frame batches; placeholders {site}, "
        "{source}, {type} (the event type, or 'frames').",
    )
    status_topic: str = Field(
        default=STATUS_TOPIC,
        description="Retained 'online'/'offline' topic (the last will says 'offline'); "
        "placeholders {site}, {source}.",
    )
    state_topic: str = Field(
        default=STATE_TOPIC,
        description="Retained latest position_sample (state_channel) per source, at most "
        "every state_interval; empty = off. Placeholders {site}, {source}.",
    )
    state_interval: float = Field(
        default=1.0, gt=0, description="Seconds between two retained position updates."
    )
    state_channel: Literal["master", "slave"] = Field(
        default="master", description="Channel whose position the state topic carries."
    )
    qos: dict[str, Literal[0, 1]] = Field(
        default_factory=lambda: dict(DEFAULT_QOS),
        description="QoS per event type ('frames' for frame batches); types not listed get "
        "'default' (1 unless given). QoS 1 messages go through the spool and are never lost "
        "within its limits; QoS 0 are dropped while the broker is unreachable.",
    )
    batch_types: list[str] = Field(
        default_factory=lambda: ["position_sample"],
        description="Event types sent as JSON arrays every batch_interval instead of one "
        "message per event (frames are always batched).",
    )
    batch_interval: float = Field(
        default=0.05, gt=0, le=10, description="Seconds between batch publishes."
    )
    max_batch: int = Field(
        default=1000, ge=1, le=65535, description="Most events or frames in one batch."
    )
    spool_dir: str | None = Field(
        default=None,
        description="Directory of the on-disk spool of QoS 1 messages (created; survives a "
        "restart). Unset = the same bounds in memory only.",
    )
    spool_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=4096,
        description="Most bytes of unacknowledged QoS 1 messages; beyond, the oldest are "
        "dropped, counted (spool_dropped) and logged.",
    )
    spool_max_age: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Seconds a QoS 1 message may wait for the broker before it is dropped.",
    )
    flush_interval: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="Seconds between spool writes: a SIGKILLed flow loses at most the QoS 1 "
        "messages of the last flush_interval (sent ones excepted).",
    )
    fsync: bool = Field(
        default=False, description="fsync the spool on every flush (survives power loss)."
    )
    queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Most QoS 0 messages waiting for the broker; beyond, the oldest are "
        "dropped (qos0_dropped).",
    )
    max_inflight: int = Field(
        default=100, ge=1, le=65535, description="Most QoS 1 messages awaiting a PUBACK."
    )
    ack_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a PUBACK may take before the connection is dropped and rebuilt.",
    )

    @field_validator("site", "source")
    @classmethod
    def _level(cls, value: str) -> str:
        if not _LEVEL.match(value):
            raise ValueError(f"{value!r} cannot be a topic level (no '/', '+', '#')")
        return value

    @model_validator(mode="after")
    def _templates(self) -> MqttSinkConfig:
        TopicTemplate(self.topic)
        for name in ("status_topic", "state_topic"):
            value = getattr(self, name)
            if value:
                TopicTemplate(value, ("site", "source"))
        for key in self.qos:
            if key != "default" and not re.match(r"[a-z][a-z0-9_]*\Z", key):
                raise ValueError(f"qos key {key!r} is not an event type name")
        return self


class MqttSink(Node[MqttSinkConfig]):
    """Publish events and CAN frames to an MQTT broker, with an on-disk spool for QoS 1.

    Events go to ``topic`` (default ``les02/{site}/{source}/{type}``) as the JSON envelope of
    docs/protocol.md plus ``site`` (and ``seq`` for QoS 1); the types in ``batch_types``
    (default ``position_sample``) and frames (type ``frames``, binary) go as batches every
    ``batch_interval``. Ride and diagnostic events default to QoS 1, position samples and
    frames to QoS 0 (``qos``). ``status_topic`` carries a retained ``online``; the last will
    sets it to ``offline``. ``state_topic`` keeps the latest position retained.

    QoS 1 messages wait in the spool (``spool_dir``, bounded by ``spool_max_bytes`` and
    ``spool_max_age``) until the broker acknowledges them, across broker outages and restarts
    of les02-flow. The flow never waits on the broker. Layout, security and scaling:
    docs/fleet.md. Default client id: ``les02-{site}-{source}``.

    Counters: ``published``, ``spooled``, ``spool_pending``, ``spool_dropped``,
    ``qos0_dropped``, ``connects``, ``connect_failures``.
    """

    type_name: ClassVar[str] = "mqtt_sink"
    config_model: ClassVar[type[NodeConfig]] = MqttSinkConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "mqtt:\n  type: mqtt_sink\n  url: mqtt://127.0.0.1:1883\n  site: hq\n",
        "mqtt:\n  type: mqtt_sink\n  url: mqtts://broker.example:8883\n  site: hq\n"
        "  source: lift-3\n  client_id: hq-lift-3\n  username: hq-lift-3\n"
        "  password_env: LES02_MQTT_PASSWORD\n  ca_file: /etc/les02/ca.pem\n"
        "  spool_dir: /var/lib/les02/spool\n  qos: {position_sample: 1}\n",
    )

    def __init__(self, node_id: str, config: MqttSinkConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        cfg = config
        self._topics = TopicTemplate(cfg.topic)
        self._status_topic = TopicTemplate(cfg.status_topic, ("site", "source")).format(
            cfg.site, cfg.source
        )
        self._state_tpl = (
            TopicTemplate(cfg.state_topic, ("site", "source")) if cfg.state_topic else None
        )
        self._qos = {**DEFAULT_QOS, **cfg.qos}
        self._qos_default = int(cfg.qos.get("default", 1))
        self._batch_types = frozenset(cfg.batch_types)
        self._topic_cache: dict[tuple[str, str], str] = {}
        self._spool: Spool | None = None
        self._q0: deque[tuple[str, bytes, bool]] = deque()
        self._frames: list[can.Message] = []
        self._batches: dict[str, list[Event]] = {}
        self._latest: dict[str, Event] = {}
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set when a message was acknowledged or sent
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped = False
        self._connected = False
        self._conn_error: BaseException | None = None
        self._client_id = cfg.client_id or f"les02-{cfg.site}-{cfg.source}"
        self._v5 = cfg.protocol != "3.1.1"
        self._fail_log = RateLimitedLog(self.log, 30.0)
        self._drop_log = RateLimitedLog(self.log, 10.0)

    # -- loop side: never waits -----------------------------------------------------------------

    def consume(self, message: Any) -> None:
        if isinstance(message, can.Message):
            self._frames.append(message)
            if len(self._frames) >= self.config.max_batch:
                self._send_frames()
            return
        if not isinstance(message, dict):
            raise ValueError("neither an event envelope nor a CAN frame")
        type_ = message.get("type")
        source = message.get("source")
        if not isinstance(type_, str) or not isinstance(source, str):
            raise ValueError("event without a string 'type' and 'source'")
        if type_ == "position_sample" and self._state_tpl is not None:
            payload = message.get("payload")
            if isinstance(payload, dict) and payload.get("channel") == self.config.state_channel:
                self._latest[source] = message
        if type_ in self._batch_types:
            batch = self._batches.setdefault(source, [])
            batch.append(message)
            if len(batch) >= self.config.max_batch:
                self._send_batch(source)
            return
        qos = self._qos.get(type_, self._qos_default)
        topic = self._topic(source, type_)
        if qos and self._spool is not None:
            payload_bytes = encode_event_payload(
                message, self.config.site, self._spool.next_seq, self._spool.id
            )
            self._spool_append(topic, payload_bytes)
        else:
            self._queue0(topic, encode_event_payload(message, self.config.site), False)

    def _topic(self, source: str, type_: str) -> str:
        key = (source, type_)
        topic = self._topic_cache.get(key)
        if topic is None:
            topic = self._topics.format(self.config.site, source, type_)
            if len(self._topic_cache) < 4096:
                self._topic_cache[key] = topic
        return topic

    def _spool_append(self, topic: str, payload: bytes) -> None:
        assert self._spool is not None
        self._spool.append(topic, payload, 1, False)
        self.counters.bump("spooled")
        dropped = self._spool.take_dropped()
        if dropped:
            self._spool_dropped(dropped)
        self._wake.set()

    def _spool_dropped(self, n: int) -> None:
        self.counters.dropped += n
        self.counters.bump("spool_dropped", n)
        self._drop_log(
            logging.ERROR,
            "spool limit reached (max %d bytes, %.0f s): %d oldest QoS 1 message(s) dropped",
            self.config.spool_max_bytes,
            self.config.spool_max_age,
            n,
        )

    def _queue0(self, topic: str, payload: bytes, retain: bool) -> None:
        q = self._q0
        q.append((topic, payload, retain))
        if len(q) > self.config.queue_size:
            q.popleft()
            self.counters.dropped += 1
            self.counters.bump("qos0_dropped")
        self._wake.set()

    def _send(self, type_: str, topic: str, payload: bytes) -> None:
        if self._qos.get(type_, self._qos_default) and self._spool is not None:
            self._spool_append(topic, payload)
        else:
            self._queue0(topic, payload, False)

    def _send_frames(self) -> None:
        frames, self._frames = self._frames, []
        if frames:
            self._send(
                FRAMES_TYPE, self._topic(self.config.source, FRAMES_TYPE), encode_frames(frames)
            )

    def _send_batch(self, source: str) -> None:
        events = self._batches.pop(source, [])
        by_type: dict[str, list[Event]] = {}
        for ev in events:
            by_type.setdefault(ev["type"], []).append(ev)
        for t, evs in by_type.items():
            self._send(t, self._topic(source, t), encode_event_batch(evs, self.config.site))

    def _send_batches(self) -> None:
        self._send_frames()
        for source in list(self._batches):
            self._send_batch(source)

    def _send_state(self) -> None:
        if self._state_tpl is None or not self._latest:
            return
        latest, self._latest = self._latest, {}
        for source, ev in latest.items():
            with contextlib.suppress(ValueError):
                topic = self._state_tpl.format(self.config.site, source)
                self._queue0(topic, encode_event_payload(ev, self.config.site), True)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool and start the publisher (never waits for the broker)."""
        if self._tasks or self._stopped:
            return
        cfg = self.config
        # settings errors (missing password variable, TLS files) fail the start
        client_kwargs(cfg, self.log.prefix, self._client_id, self._v5)
        try:
            self._spool = await asyncio.to_thread(
                Spool,
                cfg.spool_dir,
                max_bytes=cfg.spool_max_bytes,
                max_age=cfg.spool_max_age,
                fsync=cfg.fsync,
            )
        except SpoolError as exc:
            raise NodeStartError(f"{self.log.prefix}: {exc}") from exc
        spool = self._spool
        for note in spool.recovery_notes:
            self.log.warning("spool: %s", note)
        if spool.recovered:
            self.log.info(
                "spool %s holds %d unacknowledged message(s) from before; sending them first",
                cfg.spool_dir,
                spool.recovered,
            )
        dropped = spool.take_dropped()
        if dropped:
            self._spool_dropped(dropped)
        self.counters.extra["spool_pending"] = spool.pending
        loop = self.ctx.get_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"mqtt_sink {self.node_id}"),
            loop.create_task(self._ticker(), name=f"mqtt_sink {self.node_id} batches"),
        ]
        if cfg.spool_dir is not None:
            self._tasks.append(
                loop.create_task(self._flusher(), name=f"mqtt_sink {self.node_id} spool")
            )

    def input_completed(self) -> None:
        self._send_batches()
        self._send_state()

    async def stop(self) -> None:
        """Send what is batched, wait up to 2 s for acknowledgements, say ``offline``,
        disconnect and write the spool. Idempotent, bounded, never raises."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._send_batches()
            self._send_state()
            spool = self._spool
            if spool is not None and self._connected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained(spool), DRAIN_TIMEOUT)
            self._stopping = True
            self._wake.set()
            tasks, self._tasks = self._tasks, []
            run = tasks[0] if tasks else None
            if run is not None:
                # the publisher says offline and disconnects by itself when it sees _stopping
                await asyncio.wait({run}, timeout=DRAIN_TIMEOUT)
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
            if spool is not None and self.config.spool_dir is not None:
                await asyncio.to_thread(spool.flush)
                if spool.pending:
                    self.log.info(
                        "%d unacknowledged message(s) stay in the spool %s",
                        spool.pending,
                        self.config.spool_dir,
                    )
        except Exception as exc:
            self.log.warning("error while stopping: %s", exc)

    # -- periodic work ----------------------------------------------------------------------------

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_state = loop.time() + self.config.state_interval
        while True:
            await asyncio.sleep(self.config.batch_interval)
            self._send_batches()
            if loop.time() >= next_state:
                next_state = loop.time() + self.config.state_interval
                self._send_state()
            if self._spool is not None:
                self.counters.extra["spool_pending"] = self._spool.pending

    async def _flusher(self) -> None:
        spool = self._spool
        assert spool is not None
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if not spool.needs_flush():
                spool.expire()  # the age limit, without a trip to the worker thread
                dropped = spool.take_dropped()
                if dropped:
                    self._spool_dropped(dropped)
                continue
            try:
                await asyncio.to_thread(spool.flush)
            except OSError as exc:
                self.counters.errors += 1
                self._error_log(
                    logging.ERROR,
                    "cannot write the spool %s: %s (kept in memory, retrying)",
                    self.config.spool_dir,
                    exc,
                )
            dropped = spool.take_dropped()
            if dropped:
                self._spool_dropped(dropped)

    # -- publisher ------------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.backoff_min, cfg.backoff_max)
        while not self._stopping:
            try:
                kw = client_kwargs(cfg, self.log.prefix, self._client_id, self._v5)
                kw["will"] = aiomqtt.Will(self._status_topic, b"offline", qos=1, retain=True)
                kw["max_inflight_messages"] = cfg.max_inflight
                kw["logger"] = logging.getLogger("les02_flow.mqtt.paho")
                client = aiomqtt.Client(**kw)
                client.pending_calls_threshold = cfg.max_inflight + 10
                async with client:
                    self._connected = True
                    self._conn_error = None
                    self.counters.bump("connects")
                    self.log.info(
                        "connected to %s as %s (MQTT %s)",
                        cfg.broker(),
                        self._client_id,
                        "5" if self._v5 else "3.1.1",
                    )
                    backoff.reset()
                    self.ctx.set_status("ok", f"connected to {cfg.broker()}")
                    await client.publish(self._status_topic, b"online", qos=1, retain=True)
                    await self._pump(client)
                    # stopping: say offline ourselves (a clean disconnect sends no will)
                    with contextlib.suppress(aiomqtt.MqttError):
                        await client.publish(
                            self._status_topic, b"offline", qos=1, retain=True, timeout=1.0
                        )
                return
            except asyncio.CancelledError:
                raise
            except NodeStartError as exc:
                self.log.error("%s", exc)
                return
            except Exception as exc:
                if cfg.protocol == "auto" and self._v5 and is_refused(exc) == "protocol":
                    self.log.info("broker refused MQTT 5, using 3.1.1")
                    self._v5 = False
                    continue
                self.counters.bump("connect_failures")
                pending = self._spool.pending if self._spool else 0
                self.ctx.set_status(
                    "error" if is_refused(exc) == "auth" else "warning",
                    f"{describe_error(exc, cfg)}; {pending} QoS 1 message(s) in the spool",
                )
                if self._connected:
                    self.log.warning(
                        "lost the connection: %s; reconnecting (%d QoS 1 message(s) kept)",
                        describe_error(exc, cfg),
                        self._spool.pending if self._spool else 0,
                    )
                else:
                    self._fail_log(
                        logging.ERROR,
                        "cannot connect: %s; retrying with backoff up to "
                        "%.0f s, messages are kept in the spool",
                        describe_error(exc, cfg),
                        cfg.backoff_max,
                    )
            finally:
                self._connected = False
                self._progress.set()
                if self._spool is not None:
                    self._spool.rewind()
            delay = backoff.next()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested(), delay)

    async def _drained(self, spool: Spool) -> None:
        while (spool.pending or self._q0) and self._connected:
            self._progress.clear()
            await self._progress.wait()

    async def _stop_requested(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _pump(self, client: aiomqtt.Client) -> None:
        spool = self._spool
        assert spool is not None
        inflight: dict[int, asyncio.Task[None]] = {}
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(self._watch(client))
        try:
            while True:
                if self._conn_error is not None:
                    raise self._conn_error
                while self._q0:
                    topic, payload, retain = self._q0[0]
                    await client.publish(topic, payload, qos=0, retain=retain)
                    self._q0.popleft()
                    self.counters.bump("published")
                    self._progress.set()
                room = self.config.max_inflight - len(inflight)
                if room > 0:
                    for rec in spool.next_unsent(room):
                        inflight[rec.seq] = loop.create_task(self._publish1(client, rec, inflight))
                if self._stopping and not inflight:
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            watcher.cancel()
            for t in inflight.values():
                t.cancel()

    async def _publish1(
        self, client: aiomqtt.Client, rec: SpoolRecord, inflight: dict[int, asyncio.Task[None]]
    ) -> None:
        try:
            await client.publish(
                rec.topic,
                rec.payload,
                qos=rec.qos,
                retain=rec.retain,
                timeout=self.config.ack_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._conn_error is None:
                self._conn_error = exc
        else:
            assert self._spool is not None
            self._spool.ack(rec.seq)
            self.counters.bump("published")
        finally:
            inflight.pop(rec.seq, None)
            self._wake.set()
            self._progress.set()

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Turn a lost connection into ``_conn_error`` (the message iterator raises)."""
        try:
            async for _ in client.messages:
                pass
        except aiomqtt.MqttError as exc:
            self._conn_error = exc
            self._wake.set()
