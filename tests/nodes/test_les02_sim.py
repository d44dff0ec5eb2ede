"""The ``les02_sim`` node on real python-can virtual buses."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import can
import pydantic
import pytest
import yaml

from les02_flow.node import Context, NodeStartError
from les02_flow.nodes.les02.elevator import (
    POSITION_MASTER_ID,
    POSITION_SLAVE_ID,
    STATUS_MASTER_ID,
    STATUS_SLAVE_ID,
    ElevatorSim,
)
from les02_flow.nodes.les02.sim import Les02Sim, Les02SimConfig

WAIT = 10.0  # upper bound for conditions; tests finish far sooner


def channel() -> str:
    return f"les02-sim-test-{uuid.uuid4().hex}"


def make_node(**config: Any) -> Les02Sim:
    cfg = Les02SimConfig(**config)
    return Les02Sim("sim", cfg, Context("sim", logging.getLogger("test.les02_sim")))


def short_config(ch: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "interface": "virtual",
        "channel": ch,
        "floors_mm": [0, 1000, 1800],
        "dwell_min": 0.2,
        "dwell_max": 0.4,
        "trips": 2,
        "seed": 1234,
        "speed": 20.0,
        "status_interval": 0.5,
    }
    base.update(overrides)
    return base


def drain(bus: can.BusABC) -> list[can.Message]:
    out: list[can.Message] = []
    while (msg := bus.recv(timeout=0)) is not None:
        out.append(msg)
    return out


def test_finite_run_sends_the_model_frames_onto_the_bus() -> None:
    ch = short_config(channel())
    node = make_node(**ch)
    expected_sim = ElevatorSim(Les02SimConfig(**ch).params())
    expected = list(expected_sim.frames())
    end_t = expected_sim.end_t
    assert end_t is not None

    async def main() -> list[can.Message]:
        with can.Bus(interface="virtual", channel=ch["channel"]) as rx:
            await node.start()
            try:
                await asyncio.wait_for(node.finished(), WAIT)
            finally:
                await node.stop()
            return drain(rx)

    received = asyncio.run(main())
    assert len(received) == len(expected)
    for msg, frame in zip(received, expected, strict=True):
        assert msg.arbitration_id == frame.can_id
        assert not msg.is_extended_id
        assert not msg.is_remote_frame
        assert bytes(msg.data) == frame.data
        assert msg.dlc == (4 if frame.can_id in (POSITION_MASTER_ID, POSITION_SLAVE_ID) else 8)
    ids = {m.arbitration_id for m in received}
    assert ids == {POSITION_MASTER_ID, POSITION_SLAVE_ID, STATUS_MASTER_ID, STATUS_SLAVE_ID}
    # positions are the model's: the master reads the exact car position at its tick
    for msg, frame in zip(received, expected, strict=True):
        if frame.can_id == POSITION_MASTER_ID:
            assert int.from_bytes(msg.data[:3], "big") == expected_sim.master_raw(frame.t)
    assert node.counters.emitted == len(expected)
    assert node.counters.errors == 0
    assert node.sim.trips == expected_sim.trips
    assert len(node.sim.trips) == 2
    # paced, not dumped: a frame is never sent before its due time (speed 20)
    span = received[-1].timestamp - received[0].timestamp
    assert span >= (expected[-1].t - expected[0].t) / 20.0 - 0.01


def test_stop_is_idempotent_and_ends_an_endless_run() -> None:
    ch = channel()
    node = make_node(interface="virtual", channel=ch, seed=5, speed=5.0, status_interval=0)

    async def main() -> None:
        await node.stop()  # before start: nothing to do
        with can.Bus(interface="virtual", channel=ch) as rx:
            await node.start()
            first = await asyncio.to_thread(rx.recv, WAIT)
            assert first is not None
            assert first.arbitration_id == POSITION_MASTER_ID
            await node.stop()
            await node.stop()
            await asyncio.wait_for(node.finished(), WAIT)  # a stopped node has finished
            sent = node.counters.emitted
            assert sent >= 1
            assert len(drain(rx)) == sent - 1  # exactly what was sent arrived, nothing after

    asyncio.run(main())
    assert node.counters.errors == 0


def test_silent_run_sends_no_positions_while_standing() -> None:
    ch = short_config(
        channel(), trips=1, silent_when_stopped=True, silent_hold=0.1, status_interval=0.1
    )
    node = make_node(**ch)

    async def main() -> list[can.Message]:
        with can.Bus(interface="virtual", channel=ch["channel"]) as rx:
            await node.start()
            await asyncio.wait_for(node.finished(), WAIT)
            await node.stop()
            return drain(rx)

    received = asyncio.run(main())
    expected = list(ElevatorSim(Les02SimConfig(**ch).params()).frames())
    assert [(m.arbitration_id, bytes(m.data)) for m in received] == [
        (f.can_id, f.data) for f in expected
    ]
    (trip,) = node.sim.trips
    standing = [
        f
        for f in expected
        if f.can_id in (POSITION_MASTER_ID, POSITION_SLAVE_ID)
        and (0.1 < f.t < trip.start_t or f.t > trip.end_t + 0.1)
    ]
    assert standing == []
    assert any(f.can_id == STATUS_MASTER_ID and f.t > trip.end_t + 0.1 for f in expected)


def test_send_errors_are_counted_not_fatal() -> None:
    ch = short_config(channel(), trips=1, speed=50.0)
    node = make_node(**ch)
    total = len(list(ElevatorSim(Les02SimConfig(**ch).params()).frames()))

    async def main() -> None:
        # a receiver whose queue holds one frame and is never read: every later send fails
        with can.Bus(interface="virtual", channel=ch["channel"], rx_queue_size=1) as rx:
            await node.start()
            try:
                await asyncio.wait_for(node.finished(), WAIT)
            finally:
                await node.stop()
            assert len(drain(rx)) == 1

    asyncio.run(main())
    assert node.counters.emitted == 1
    assert node.counters.errors == total - 1
    assert node.counters.extra["send_errors"] == total - 1


def test_restart_replays_the_same_run_even_unseeded() -> None:
    ch = short_config(channel(), trips=1, seed=None, speed=50.0, status_interval=0)
    node = make_node(**ch)

    async def run_once(rx: can.BusABC) -> list[tuple[int, bytes]]:
        await node.start()
        await asyncio.wait_for(node.finished(), WAIT)
        await node.stop()
        return [(m.arbitration_id, bytes(m.data)) for m in drain(rx)]

    async def main() -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        with can.Bus(interface="virtual", channel=ch["channel"]) as rx:
            return await run_once(rx), await run_once(rx)

    first, second = asyncio.run(main())
    assert first
    assert first == second


def test_bus_open_failure_is_a_clear_start_error() -> None:
    node = make_node(interface="nonexistent", channel="x0")

    async def main() -> None:
        with pytest.raises(NodeStartError) as info:
            await node.start()
        message = str(info.value)
        assert message.startswith("les02_sim: cannot open bus interface='nonexistent'")
        assert "channel='x0'" in message
        await node.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"speed": 0}, "speed"),
        ({"dwell_min": 5, "dwell_max": 1}, "dwell_max"),
        ({"floors_mm": [0, 100, 50]}, "floors_mm"),
        ({"start_floor": 6}, "start_floor"),
        ({"trips": 0}, "trips"),
        ({"colour": "red"}, "colour"),
        ({"bitrate": -1}, "bitrate"),
    ],
)
def test_invalid_config_is_rejected(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment):
        Les02SimConfig(**config)


def test_declaration_and_examples() -> None:
    assert Les02Sim.type_name == "les02_sim"
    assert Les02Sim.input_kind is None
    assert dict(Les02Sim.output_ports) == {}
    assert Les02Sim.summary()
    for field in Les02SimConfig.model_fields.values():
        assert field.description
    for snippet in Les02Sim.examples:
        ((_node_id, entry),) = yaml.safe_load(snippet).items()
        assert entry.pop("type") == "les02_sim"
        Les02SimConfig(**entry)
    assert make_node().build(None) == {}


def test_start_while_running_restarts_the_run() -> None:
    ch = short_config(channel(), trips=1, speed=50.0, status_interval=0)
    node = make_node(**ch)
    expected = [(f.can_id, f.data) for f in ElevatorSim(Les02SimConfig(**ch).params()).frames()]

    async def main() -> list[tuple[int, bytes]]:
        with can.Bus(interface="virtual", channel=ch["channel"]) as rx:
            await node.start()
            first = await asyncio.to_thread(rx.recv, WAIT)
            assert first is not None
            await node.start()  # stops the running run, then starts from the beginning
            await asyncio.wait_for(node.finished(), WAIT)
            await node.stop()
            return [(m.arbitration_id, bytes(m.data)) for m in [first, *drain(rx)]]

    received = asyncio.run(main())
    assert len(received) > len(expected)
    assert received[-len(expected) :] == expected
