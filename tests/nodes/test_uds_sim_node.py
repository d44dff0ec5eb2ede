"""The ``uds_sim`` node: paced frames on ``out`` (and optionally a virtual python-can bus)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Any

import can
import pydantic
import pytest
import yaml

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import load_flow_text
from les02_flow.node import Context, NodeStartError
from les02_flow.nodes.debug import Debug
from les02_flow.nodes.uds import sim as sim_module
from les02_flow.nodes.uds.generator import UdsSimParams, UdsTrafficGenerator
from les02_flow.nodes.uds.sim import UdsSim, UdsSimConfig
from les02_flow.registry import Registry

WAIT = 10.0  # upper bound for conditions; tests finish far sooner
SPEED = 400.0  # one short session (about 8 simulated seconds) in about 20 ms


def make_node(**config: Any) -> UdsSim:
    cfg = UdsSimConfig(**config)
    return UdsSim("uds", cfg, Context("uds", logging.getLogger("test.uds_sim")))


def expected(seed: int, sessions: int = 1, blocks: int = 3) -> list[tuple[int, bytes, float]]:
    gen = UdsTrafficGenerator(UdsSimParams(seed=seed, transfer_blocks=blocks))
    return [(f.can_id, f.data, f.t) for f in gen.frames(sessions)]


class Collector:
    """Subscribes to a node's ``out`` and records what arrives."""

    def __init__(self, node: UdsSim, fail_first: bool = False) -> None:
        self.messages: list[can.Message] = []
        self.completed = asyncio.Event()
        #: set by the first message
        self.arrived = asyncio.Event()
        self.fail_first = fail_first
        self.sub = node.build(None)["out"].subscribe(self.on_next, on_completed=self.on_done)

    def on_next(self, msg: can.Message) -> None:
        self.messages.append(msg)
        self.arrived.set()
        if self.fail_first and len(self.messages) == 1:
            raise RuntimeError("downstream bug")

    def on_done(self) -> None:
        self.completed.set()


def test_one_session_emits_the_generator_frames_and_completes() -> None:
    node = make_node(loop=False, seed=21, transfer_blocks=3, speed=SPEED)
    want = expected(21)

    async def main() -> Collector:
        col = Collector(node)
        await node.start()
        try:
            await asyncio.wait_for(col.completed.wait(), WAIT)
        finally:
            await node.stop()
        col.sub.dispose()
        return col

    col = asyncio.run(main())
    got = col.messages
    assert [(m.arbitration_id, bytes(m.data)) for m in got] == [(i, d) for i, d, _ in want]
    assert all(not m.is_extended_id and m.dlc == 8 and not m.is_fd for m in got)
    # wall-clock timestamps: start + t / speed (relative times exact to float precision)
    t0 = got[0].timestamp - want[0][2] / SPEED
    for m, (_i, _d, t) in zip(got, want, strict=True):
        assert m.timestamp == pytest.approx(t0 + t / SPEED, abs=1e-6)
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(got))
    assert node.counters.errors == 0


def test_frames_also_go_onto_a_python_can_bus() -> None:
    channel = f"uds-sim-test-{uuid.uuid4().hex}"
    node = make_node(
        loop=False, seed=22, transfer_blocks=3, speed=SPEED, interface="virtual", channel=channel
    )
    want = [(i, d) for i, d, _ in expected(22)]

    async def main() -> tuple[list[can.Message], list[can.Message]]:
        with can.Bus(interface="virtual", channel=channel) as rx:
            col = Collector(node)
            await node.start()
            try:
                await asyncio.wait_for(col.completed.wait(), WAIT)
            finally:
                await node.stop()
            col.sub.dispose()
            received = []
            while (msg := rx.recv(timeout=0)) is not None:
                received.append(msg)
            return col.messages, received

    emitted, on_bus = asyncio.run(main())
    assert [(m.arbitration_id, bytes(m.data)) for m in on_bus] == want
    assert [(m.arbitration_id, bytes(m.data)) for m in emitted] == want
    assert {m.channel for m in emitted} == {channel}
    assert node.bus_info == {"interface": "virtual", "channel": channel, "bitrate": "500000"}


def test_looping_run_goes_on_until_stopped() -> None:
    node = make_node(loop=True, seed=23, transfer_blocks=3, speed=SPEED * 2)
    one = expected(23)

    async def main() -> Collector:
        col = Collector(node)
        await node.start()
        deadline = asyncio.get_running_loop().time() + WAIT
        while len(col.messages) <= len(one) + 5:
            assert asyncio.get_running_loop().time() < deadline, "second session never came"
            await asyncio.sleep(0.005)
        assert not col.completed.is_set()
        await node.stop()
        await node.stop()  # idempotent
        assert col.completed.is_set()  # stop completes 'out'
        col.sub.dispose()
        return col

    col = asyncio.run(main())
    got = [(m.arbitration_id, bytes(m.data)) for m in col.messages]
    # a loaded machine may let several sessions go by before the poll above sees the second:
    # compare with as many sessions of the endless generator as were sent
    gen = UdsTrafficGenerator(UdsSimParams(seed=23, transfer_blocks=3))
    endless = itertools.islice(gen.frames(None), len(got))
    assert got == [(f.can_id, f.data) for f in endless]


def test_a_flow_with_a_one_session_sim_ends_by_itself() -> None:
    registry = Registry()
    registry.register(UdsSim, "test")
    registry.register(Debug, "test")
    text = (
        "version: 1\nnodes:\n"
        "  uds: {type: uds_sim, loop: false, seed: 24, transfer_blocks: 2, speed: 400,"
        " tester_id: '0x7E2', ecu_id: 0x7EA, wires: [sink]}\n"
        "  sink: {type: debug, stream: log}\n"
    )
    flow = compile_document(load_flow_text(text, "uds-test.yaml", env={}), registry)
    want = UdsTrafficGenerator(
        UdsSimParams(seed=24, transfer_blocks=2, tester_id=0x7E2, ecu_id=0x7EA)
    )
    n = len(list(want.frames(1)))

    async def main() -> tuple[str, Engine]:
        engine = Engine(flow)
        why = await asyncio.wait_for(engine.run(), WAIT)
        return why, engine

    why, engine = asyncio.run(main())
    assert why == "all sources finished"
    counters = engine.counters()
    assert counters["uds"].emitted == n
    assert counters["sink"].received == n


def test_a_downstream_error_is_counted_and_the_run_goes_on() -> None:
    node = make_node(loop=False, seed=25, transfer_blocks=2, speed=SPEED)
    n = len(list(UdsTrafficGenerator(UdsSimParams(seed=25, transfer_blocks=2)).frames(1)))

    async def main() -> Collector:
        col = Collector(node, fail_first=True)
        await node.start()
        try:
            await asyncio.wait_for(col.completed.wait(), WAIT)
        finally:
            await node.stop()
        return col

    col = asyncio.run(main())
    assert len(col.messages) == n
    assert node.counters.errors == 1


def test_send_errors_are_counted_not_fatal() -> None:
    channel = f"uds-sim-test-{uuid.uuid4().hex}"
    node = make_node(
        loop=False, seed=26, transfer_blocks=2, speed=SPEED, interface="virtual", channel=channel
    )
    n = len(list(UdsTrafficGenerator(UdsSimParams(seed=26, transfer_blocks=2)).frames(1)))

    async def main() -> Collector:
        # a receiver whose queue holds one frame and is never read: every later send fails
        with can.Bus(interface="virtual", channel=channel, rx_queue_size=1):
            col = Collector(node)
            await node.start()
            try:
                await asyncio.wait_for(col.completed.wait(), WAIT)
            finally:
                await node.stop()
            return col

    col = asyncio.run(main())
    assert len(col.messages) == n  # the graph still got everything
    assert node.counters.extra["send_errors"] == n - 1
    assert node.counters.errors == n - 1


def test_start_while_running_restarts_and_unseeded_replays() -> None:
    # more frames than the pacer sends without yielding: even a run that is all overdue
    # (a loaded machine) yields to the restart below before it ends
    node = make_node(loop=False, transfer_blocks=10, speed=SPEED)  # no seed: drawn once
    want = [(f.can_id, f.data) for f in node.generator.frames(1)]
    assert len(want) > sim_module._BURST

    async def main() -> Collector:
        col = Collector(node)
        await node.start()
        # woken by the first frame, ahead of the sender's next step: the run is still going
        await asyncio.wait_for(col.arrived.wait(), WAIT)
        assert not col.completed.is_set()
        await node.start()  # from the beginning again
        await asyncio.wait_for(col.completed.wait(), WAIT)
        await node.stop()
        await node.start()  # after completion: not restarted
        return col

    col = asyncio.run(main())
    got = [(m.arbitration_id, bytes(m.data)) for m in col.messages]
    assert len(got) > len(want)
    assert got[-len(want) :] == want
    assert got[: len(got) - len(want)] == want[: len(got) - len(want)]


def test_bus_open_failure_is_a_clear_start_error() -> None:
    node = make_node(interface="nonexistent", channel="x0")

    async def main() -> None:
        with pytest.raises(NodeStartError) as info:
            await node.start()
        assert str(info.value).startswith("uds_sim: cannot open bus interface='nonexistent'")
        assert "channel='x0'" in str(info.value)
        await node.stop()

    asyncio.run(main())


def test_hex_strings_are_accepted_for_ids() -> None:
    cfg = UdsSimConfig.model_validate(
        {"tester_id": "0x7E2", "ecu_id": "0x7EA", "functional_id": " 0x7DF ", "padding": "0x55"}
    )
    assert (cfg.tester_id, cfg.ecu_id, cfg.functional_id, cfg.padding) == (
        0x7E2,
        0x7EA,
        0x7DF,
        0x55,
    )


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"speed": 0}, "speed"),
        ({"tester_id": 0x800}, "tester_id"),
        ({"tester_id": "seven"}, "not an integer"),
        ({"ecu_id": 0x7E0}, "must differ"),
        ({"padding": 300}, "padding"),
        ({"transfer_blocks": 0}, "transfer_blocks"),
        ({"interface": "virtual"}, "interface needs a channel"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_config_is_rejected(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment):
        UdsSimConfig(**config)


def test_declaration_and_examples() -> None:
    assert UdsSim.type_name == "uds_sim"
    assert UdsSim.input_kind is None
    assert {p: k.value for p, k in UdsSim.output_ports.items()} == {"out": "frame"}
    assert UdsSim.summary()
    for info in UdsSimConfig.model_fields.values():
        assert info.description
    for snippet in UdsSim.examples:
        ((_node_id, entry),) = yaml.safe_load(snippet).items()
        assert entry.pop("type") == "uds_sim"
        entry.pop("wires", None)
        UdsSimConfig(**entry)
    assert make_node().bus_info == {
        "interface": "uds_sim",
        "channel": "mock-uds",
        "bitrate": "500000",
    }
