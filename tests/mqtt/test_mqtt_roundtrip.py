"""mqtt_sink -> real mosquitto -> mqtt_source, plus an independent paho client that checks
the documented topics and payloads (docs/fleet.md)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiomqtt
import can

from les02_flow.nodes.mqtt.broker import Mosquitto
from les02_flow.nodes.mqtt.codec import decode_frames

from .helpers import ev, ride_end, sink, source, stop_all, until


def inputs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(20):
        out.append(
            ev("position_sample", 100.0 + i * 0.004, {"channel": "master", "position_raw": i})
        )
        if i % 5 == 0:
            out.append(
                ev(
                    "status",
                    100.0 + i * 0.004,
                    {"channel": "slave", "can_id": 49, "data": "01" * 8},
                )
            )
    out.append(ride_end(1))
    out.append(ev("dropout", 101.0, {"channel": "master", "gap_s": 0.1}, source="lift-2"))
    return out


def test_round_trip_event_for_event_and_documented_layout(broker: Mosquitto) -> None:
    sent = inputs()
    frames = [
        can.Message(
            timestamp=50.0 + i,
            arbitration_id=0x80 + (i % 2),
            data=bytes([0, 1, i, 0]),
            is_extended_id=False,
        )
        for i in range(30)
    ]
    frames.append(
        can.Message(
            timestamp=90.0,
            arbitration_id=0x1ABCDE,
            data=b"",
            is_extended_id=True,
            is_remote_frame=True,
            dlc=3,
        )
    )

    async def main() -> tuple[list[Any], list[Any], dict[str, list[bytes]]]:
        raw: dict[str, list[bytes]] = {}
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="checker") as checker:
            await checker.subscribe("les02/#", qos=1)
            src, events, got_frames = source(url=broker.url)
            await src.start()
            await until(lambda: src.subscribed, "source subscribed")
            sk = sink(url=broker.url, source="edge-a", state_interval=0.05)
            await sk.start()
            for m in sent:
                sk.consume(m)
            for f in frames:
                sk.consume(f)
            n_events = len(sent)

            async def collect() -> None:
                async for msg in checker.messages:
                    assert isinstance(msg.payload, bytes)
                    raw.setdefault(msg.topic.value, []).append(msg.payload)

            task = asyncio.create_task(collect())
            await until(
                lambda: len(events) >= n_events + 1 and len(got_frames) >= len(frames),
                "all events and frames at the source",
            )
            await until(lambda: "les02/hq/lift-1/position" in raw, "retained position")
            await stop_all(sk)
            await until(lambda: raw.get("les02/hq/edge-a/edge/status", [])[-1:] == [b"offline"],
                        "offline on stop")  # fmt: skip
            await stop_all(src)
            task.cancel()
        return events, got_frames, raw

    events, got_frames, raw = asyncio.run(main())
    status = [e for e in events if e["type"] == "edge_status"]
    data = [e for e in events if e["type"] != "edge_status"]
    assert status[0]["payload"] == {"state": "online"}
    assert status[0]["site"] == "hq" and status[0]["source"] == "edge-a"
    # event for event: the inputs plus site, same order per type and topic
    expected = [dict(m, site="hq") for m in sent]

    def key(e: dict[str, Any]) -> tuple[str, str]:
        return e["source"], e["type"]

    for k in {key(e) for e in expected}:
        assert [e for e in data if key(e) == k] == [e for e in expected if key(e) == k], k
    assert sorted(map(json.dumps, data)) == sorted(map(json.dumps, expected))
    assert len(got_frames) == len(frames)
    for a, b in zip(got_frames, frames, strict=True):
        assert a.channel == "hq/edge-a"
        b.channel = a.channel
        assert a.equals(b, timestamp_delta=None) and a.timestamp == b.timestamp

    # the documented layout, read by an independent client
    assert set(raw) >= {
        "les02/hq/lift-1/position_sample",
        "les02/hq/lift-1/status",
        "les02/hq/lift-1/ride_end",
        "les02/hq/lift-2/dropout",
        "les02/hq/edge-a/frames",
        "les02/hq/edge-a/edge/status",
        "les02/hq/lift-1/position",
    }
    one = json.loads(raw["les02/hq/lift-1/ride_end"][0])
    assert one == dict(ride_end(1), site="hq", seq=one["seq"], spool=one["spool"])
    assert isinstance(one["seq"], int) and re.fullmatch(r"[0-9a-f]{8}", one["spool"])
    batch = [x for p in raw["les02/hq/lift-1/position_sample"] for x in json.loads(p)]
    assert batch == [dict(m, site="hq") for m in sent if m["type"] == "position_sample"]
    blob = b"".join(raw["les02/hq/edge-a/frames"][:1])
    assert blob[:3] == b"LF\x01" and len(decode_frames(blob)) >= 1
    pos = json.loads(raw["les02/hq/lift-1/position"][-1])
    assert pos["type"] == "position_sample" and pos["payload"]["channel"] == "master"


def test_mqtt_3_1_1_round_trip_and_status(broker: Mosquitto) -> None:
    """protocol '3.1.1' on both sides (what 'auto' falls back to), persistent v3 session."""

    async def main() -> tuple[list[Any], str, str]:
        src, events, _ = source(url=broker.url, protocol="3.1.1")
        await src.start()
        await until(lambda: src.subscribed, "subscribed")
        sk = sink(url=broker.url, protocol="3.1.1", source="edge-3")
        await sk.start()
        for i in range(5):
            sk.consume(ride_end(i))
        await until(lambda: len([e for e in events if e["type"] == "ride_end"]) == 5, "rides")
        status = sk.ctx.status.text
        await stop_all(sk, src)
        return events, status, src.ctx.status.text

    events, sink_status, src_status = asyncio.run(main())
    assert [e["payload"]["ride_id"] for e in events if e["type"] == "ride_end"] == [
        f"r{i:05d}" for i in range(5)
    ]
    assert sink_status.startswith("connected to mqtt://127.0.0.1:")
    assert src_status.startswith("subscribed at")


def test_refusals_are_classified() -> None:
    from aiomqtt.exceptions import MqttConnectError
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from les02_flow.nodes.mqtt.connection import is_refused

    assert is_refused(MqttConnectError(1)) == "protocol"  # 3.1.1 CONNACK: bad version
    assert is_refused(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=132))) == (
        "protocol"
    )
    assert is_refused(MqttConnectError(4)) == "auth"
    assert is_refused(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=135))) == "auth"
    assert is_refused(aiomqtt.MqttCodeError(4, "The client is not currently connected.")) is None


def test_source_drops_duplicates_but_not_a_new_spools_sequence() -> None:
    src, events, _ = source()

    def msg(seq: int, spool: str) -> bytes:
        return json.dumps(dict(ride_end(seq), site="hq", seq=seq, spool=spool)).encode()

    topic = "les02/hq/lift-1/ride_end"
    for seq in (1, 2, 3, 2, 3, 4):  # 2, 3 again: QoS 1 resends after a reconnect
        src.handle(topic, msg(seq, "aaaaaaaa"))
    for seq in (1, 2):  # the edge got a new spool (replaced, spool deleted): seq from 1
        src.handle(topic, msg(seq, "bbbbbbbb"))
    src.handle(topic, b'{"not": "an event"}')
    ids = [e["payload"]["ride_id"] for e in events]
    assert ids == ["r00001", "r00002", "r00003", "r00004", "r00001", "r00002"]
    assert all("seq" not in e and "spool" not in e for e in events)
    assert src.counters.extra["duplicates"] == 2 and src.counters.extra["bad_messages"] == 1
