"""Tests of the ``les02_parse`` node: both ports, counters, logging, one upstream subscription,
and real frames from a python-can virtual bus."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

import can
import pydantic
import pytest
import reactivex
import yaml
from reactivex import Observable, abc
from reactivex.subject import Subject

from les02_flow.node import Context, Kind
from les02_flow.nodes.les02.parse import Les02Parse, Les02ParseConfig


def make_node(node_id: str = "parse", **config: Any) -> Les02Parse:
    ctx = Context(node_id, logging.getLogger(f"test.les02_parse.{node_id}"))
    return Les02Parse(node_id, Les02ParseConfig(**config), ctx)


def frame(can_id: int, data: bytes, ts: float = 10.0, **flags: bool) -> can.Message:
    flags.setdefault("is_extended_id", False)
    return can.Message(timestamp=ts, arbitration_id=can_id, data=data, **flags)


class Counting:
    """Wraps a Subject and counts subscriptions to it."""

    def __init__(self) -> None:
        self.subject: Subject[Any] = Subject()
        self.subscriptions = 0

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self.subscriptions += 1
            return self.subject.subscribe(observer, scheduler=scheduler)

        self.observable: Observable[Any] = Observable(subscribe)

    def push(self, frames: Iterable[Any]) -> None:
        for f in frames:
            self.subject.on_next(f)


MIXED = [
    frame(0x80, bytes([0, 0, 0x90, 0]), ts=1.0),  # position master 144
    frame(0x81, bytes([0, 1, 0, 9]), ts=1.002),  # position slave 256
    frame(0x30, bytes(range(8)), ts=1.004),  # status master
    frame(0x80, bytes(8), ts=1.006),  # bad_dlc
    frame(0x123, bytes(8), ts=1.008),  # unknown_id
    frame(0x80, bytes(4), ts=1.01, is_extended_id=True),  # extended_id
    frame(0x80, bytes(4), ts=1.012, is_error_frame=True),  # error_frame
    frame(0x180, bytes([0, 0, 1, 0]), ts=1.014),  # default: position master 1
    frame(0x80, bytes(3), ts=1.016, is_remote_frame=True),  # remote_frame
    frame(0x21, bytes([0xFF] * 8), ts=1.018),  # error slave
    frame(0x80, bytes(4), ts=1.02, is_fd=True),  # fd_frame
    frame(0x80, bytes(4), ts=1.022),  # bad_dlc again
]
MIXED[-1].dlc = 5


def run(node: Les02Parse, frames: Iterable[Any]) -> tuple[list[Any], list[Any], Counting]:
    src = Counting()
    ports = node.build(src.observable)
    assert set(ports) == {"out", "invalid"}
    out: list[Any] = []
    invalid: list[Any] = []
    done: list[str] = []
    d1 = ports["out"].subscribe(out.append, on_completed=lambda: done.append("out"))
    d2 = ports["invalid"].subscribe(invalid.append, on_completed=lambda: done.append("invalid"))
    src.push(frames)
    src.subject.on_completed()
    assert sorted(done) == ["invalid", "out"]
    d1.dispose()
    d2.dispose()
    return out, invalid, src


def test_declaration() -> None:
    assert Les02Parse.type_name == "les02_parse"
    assert Les02Parse.input_kind is Kind.FRAME
    assert dict(Les02Parse.output_ports) == {"out": Kind.EVENT, "invalid": Kind.FRAME}
    assert Les02Parse.summary().startswith("Decode LES02 CAN frames")
    cfg = Les02ParseConfig()
    assert (cfg.source, cfg.strict_ids, cfg.log_invalid) == ("les02", False, True)
    for name, f in Les02ParseConfig.model_fields.items():
        assert f.description, name


def test_examples_validate() -> None:
    assert Les02Parse.examples
    for text in Les02Parse.examples:
        ((node_id, entry),) = yaml.safe_load(text).items()
        assert entry.pop("type") == "les02_parse", node_id
        Les02ParseConfig.model_validate(entry)


def test_config_rejects_unknown_and_wrong_keys() -> None:
    with pytest.raises(pydantic.ValidationError, match="strict_id"):
        Les02ParseConfig.model_validate({"strict_id": True})
    with pytest.raises(pydantic.ValidationError, match="source"):
        Les02ParseConfig.model_validate({"source": ""})


def test_ports_counters_and_single_subscription() -> None:
    node = make_node(log_invalid=False)
    out, invalid, src = run(node, MIXED)

    assert src.subscriptions == 1
    assert not src.subject.observers  # disposing both ports released the upstream

    assert [(e["type"], e["ts"], e["payload"]) for e in out] == [
        ("position_sample", 1.0, {"channel": "master", "position_raw": 144}),
        ("position_sample", 1.002, {"channel": "slave", "position_raw": 256}),
        (
            "status",
            1.004,
            {"channel": "master", "can_id": 0x30, "data": "0001020304050607"},
        ),
        ("position_sample", 1.014, {"channel": "master", "position_raw": 1}),
        ("error", 1.018, {"channel": "slave", "can_id": 0x21, "data": "ff" * 8}),
    ]
    assert all(e["source"] == "les02" and e["proto"] == 1 for e in out)
    # invalid frames go out unchanged, in order
    expected_invalid = [MIXED[i] for i in (3, 4, 5, 6, 8, 10, 11)]
    assert len(invalid) == len(expected_invalid)
    assert all(a is b for a, b in zip(invalid, expected_invalid, strict=True))

    c = node.counters
    assert c.dropped == 7
    assert c.errors == 0
    assert c.extra == {
        "invalid_bad_dlc": 2,
        "invalid_unknown_id": 1,
        "invalid_extended_id": 1,
        "invalid_error_frame": 1,
        "invalid_remote_frame": 1,
        "invalid_fd_frame": 1,
    }


def test_strict_ids_and_source() -> None:
    node = make_node(strict_ids=True, source="shaft-a", log_invalid=False)
    out, invalid, _ = run(node, [frame(0x180, bytes(4)), frame(0x81, bytes([0, 0, 5, 0]))])
    assert [e["payload"] for e in out] == [{"channel": "slave", "position_raw": 5}]
    assert out[0]["source"] == "shaft-a"
    assert [m.arbitration_id for m in invalid] == [0x180]
    assert node.counters.extra == {"invalid_unknown_id": 1}


def test_only_out_subscribed_still_counts_invalid() -> None:
    node = make_node(log_invalid=False)
    src = Counting()
    out: list[Any] = []
    node.build(src.observable)["out"].subscribe(out.append)
    src.push([frame(0x80, bytes(4)), frame(0x99, bytes(8))])
    assert len(out) == 1
    assert node.counters.dropped == 1
    assert src.subscriptions == 1


def test_never_raises_and_stream_goes_on() -> None:
    node = make_node(log_invalid=False)
    junk = [None, "not a frame", 7, frame(0x80, bytes(4))]
    out, invalid, _ = run(node, junk)
    assert len(out) == 1
    assert invalid[:3] == junk[:3]
    assert node.counters.extra == {"invalid_malformed": 3}
    assert node.counters.errors == 0


def test_log_invalid_rate_limited_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    node = make_node("p1")
    with caplog.at_level(logging.WARNING, logger="test.les02_parse.p1"):
        run(
            node,
            [
                frame(0x80, bytes(8)),
                frame(0x80, bytes(7)),  # same reason: suppressed
                frame(0x7F0, bytes(8)),  # other reason: logged
            ],
        )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "les02_parse 'p1':" in lines[0] and "(bad_dlc)" in lines[0] and "needs DLC 4" in lines[0]
    assert "les02_parse 'p1':" in lines[1] and "(unknown_id)" in lines[1] and "0x7F0" in lines[1]
    assert node.counters.dropped == 3


def test_log_invalid_off(caplog: pytest.LogCaptureFixture) -> None:
    node = make_node("p2", log_invalid=False)
    with caplog.at_level(logging.DEBUG, logger="test.les02_parse.p2"):
        run(node, [frame(0x80, bytes(8)), frame(0x7F0, bytes(8))])
    assert caplog.records == []
    assert node.counters.dropped == 2


def test_build_without_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs an input"):
        make_node().build(None)


def test_from_iterable_source() -> None:
    node = make_node(log_invalid=False)
    ports = node.build(reactivex.from_iterable(MIXED[:3]))
    out: list[Any] = []
    ports["out"].subscribe(out.append)
    assert [e["payload"]["channel"] for e in out] == ["master", "slave", "master"]


def test_real_frames_over_virtual_bus() -> None:
    channel = f"les02-parse-{uuid.uuid4().hex}"
    sent = [
        frame(0x80, bytes([0x00, 0x12, 0x34, 0x99])),
        frame(0x81, bytes([0x00, 0x12, 0x35, 0x00])),
        frame(0x31, bytes([1, 2, 3, 4, 5, 6, 7, 8])),
        frame(0x81, bytes([1, 2])),  # bad DLC
    ]
    received: list[can.Message] = []
    with (
        can.Bus(interface="virtual", channel=channel) as tx,
        can.Bus(interface="virtual", channel=channel) as rx,
    ):
        for msg in sent:
            tx.send(msg)
        while len(received) < len(sent):
            got = rx.recv(timeout=5.0)
            assert got is not None, f"only {len(received)} of {len(sent)} frames arrived"
            received.append(got)

    node = make_node(log_invalid=False)
    out, invalid, _ = run(node, received)
    assert [e["payload"] for e in out] == [
        {"channel": "master", "position_raw": 0x1234},
        {"channel": "slave", "position_raw": 0x1235},
        {"channel": "slave", "can_id": 0x31, "data": "0102030405060708"},
    ]
    assert [e["ts"] for e in out] == [m.timestamp for m in received[:3]]
    assert all(isinstance(e["ts"], float) and e["ts"] > 0 for e in out)
    assert invalid == [received[3]]
    assert node.counters.extra == {"invalid_bad_dlc": 1}
