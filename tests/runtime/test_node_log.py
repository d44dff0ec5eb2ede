"""Context.node_log: a node's logger that adds the ``TYPE 'ID': `` prefix once, for every call."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import can
import pytest
import yaml
from websockets.asyncio.client import connect
from zeroconf import IPVersion

from les02_flow.compiler import compile_document
from les02_flow.flowfile import load_flow_text
from les02_flow.node import Context, Node, NodeConfig, NodeLogAdapter, RateLimitedLog
from les02_flow.nodes.ecuconnect.mdns import Advertiser
from les02_flow.nodes.simbus import send_frame, shutdown_bus
from les02_flow.nodes.ws.sink import WsSink, WsSinkConfig
from les02_flow.registry import default_registry
from les02_flow.testing import wait_until

NODES = Path(__file__).resolve().parents[2] / "nodes"
TYPES = list(default_registry())
#: a prefix written by hand: "can_source '%s': ", "node '%s': ", f"ws_sink '{self.node_id}'",
#: "debug %s: " ...; the node's logger (``self.log``) adds it, ``self.log.prefix`` is the text
#: for exception messages. (``debug``'s printed "debug ID: N messages suppressed" is output.)
HAND_PREFIX = re.compile(r"""["'](?:[a-z0-9_]+|node) (?:'%s':|%s:|'\{(?:self\.)?node_id\}')""")


class _Broken(can.BusABC):
    def __init__(self) -> None:
        super().__init__(channel="broken")

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        raise can.CanOperationError("bus off")

    def _recv_internal(self, timeout: float | None) -> tuple[None, bool]:
        return None, False

    def shutdown(self) -> None:
        super().shutdown()
        raise OSError("gone")


def test_node_log_prefixes_every_message_once(caplog: pytest.LogCaptureFixture) -> None:
    ctx = Context("sim", logging.getLogger("les02_flow.node.sim"))
    log = ctx.node_log("les02_sim")
    bus = _Broken()
    with caplog.at_level(logging.INFO, logger="les02_flow.node.sim"):
        log.info("run complete, %d frames sent", 3)
        sent = send_frame(bus, can.Message(arbitration_id=0x80), ctx.counters, RateLimitedLog(log))
        shutdown_bus(bus, log)
    assert not sent
    assert ctx.counters.errors == 1 and ctx.counters.extra == {"send_errors": 1}
    assert caplog.messages == [
        "les02_sim 'sim': run complete, 3 frames sent",
        "les02_sim 'sim': send of id 0x080 failed: CanOperationError: bus off",
        "les02_sim 'sim': bus shutdown failed: OSError: gone",
    ]


def test_no_node_module_formats_the_node_prefix_by_hand() -> None:
    found = [
        f"{path.relative_to(NODES.parent)}:{n}: {line.strip()}"
        for path in sorted(NODES.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if HAND_PREFIX.search(line)
    ]
    assert found == [], "log through self.log (it adds TYPE 'ID': ):\n" + "\n".join(found)


def test_the_hand_prefix_pattern_catches_the_old_forms() -> None:
    old = [
        """self.log.info("can_source '%s': reading", self.node_id)""",
        """log.warning("node '%s': flushing %s failed: %s", node_id, what, exc)""",
        """raise NodeStartError(f"replay_source '{self.node_id}': cannot read")""",
        """self.log.info("debug %s: %s", self.node_id, line)""",
    ]
    assert all(HAND_PREFIX.search(line) for line in old)
    assert not HAND_PREFIX.search("""self.log.info("store '%s' is disabled", store)""")


@pytest.mark.parametrize("cls", TYPES, ids=[c.type_name for c in TYPES])
def test_every_node_logs_through_its_prefixed_logger(cls: type[Node[NodeConfig]]) -> None:
    node_id, body = next(iter(yaml.safe_load(cls.examples[0]).items()))
    body.pop("wires", None)
    text = yaml.safe_dump({"version": 1, "nodes": {node_id: body}})
    spec = compile_document(load_flow_text(text, "example", env={})).nodes[str(node_id)]
    ctx = Context(spec.id, logging.getLogger(f"les02_flow.node.{spec.id}"))
    node = spec.cls(spec.id, spec.config, ctx)
    assert isinstance(node.log, NodeLogAdapter)
    assert node.log.prefix == f"{cls.type_name} '{node_id}'"
    assert node.log.logger is ctx.logger
    limited = [v for v in vars(node).values() if isinstance(v, RateLimitedLog)]
    limited += [
        v
        for d in vars(node).values()
        if isinstance(d, dict)
        for v in d.values()
        if isinstance(v, RateLimitedLog)
    ]
    assert limited, "every node has at least the per-message error log"
    for log in limited:
        assert log._logger is node.log, f"{cls.type_name}: a RateLimitedLog not on self.log"


def test_library_log_is_quiet_below_warning_without_changing_a_level() -> None:
    ctx = Context("ws", logging.getLogger("les02_flow.node.test-liblog"))
    log = ctx.library_log("websockets")
    child = logging.getLogger("les02_flow.node.test-liblog.websockets")
    assert log.logger is child and child.level == logging.NOTSET  # nothing was set
    assert not log.isEnabledFor(logging.INFO) and log.isEnabledFor(logging.WARNING)
    child.setLevel(logging.DEBUG)  # what a user's logging config would do
    try:
        assert log.isEnabledFor(logging.DEBUG)
    finally:
        child.setLevel(logging.NOTSET)


def test_ws_sink_keeps_websockets_info_lines_out_of_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = Context("ws", logging.getLogger("les02_flow.node.ws"))
    sink = WsSink("ws", WsSinkConfig(host="127.0.0.1", port=0), ctx)

    async def main() -> None:
        await sink.start()
        try:
            async with connect(f"ws://127.0.0.1:{sink.port}/", proxy=None):
                await wait_until(lambda: "connected" in caplog.text, "the connect line")
        finally:
            await sink.stop()

    with caplog.at_level(logging.DEBUG, logger="les02_flow"):
        asyncio.run(main())
    assert "ws_sink 'ws': client " in caplog.text  # the node's own line, prefixed
    assert not [r for r in caplog.records if r.name.endswith(".websockets")], caplog.text
    assert logging.getLogger("les02_flow.node.ws.websockets").level == logging.NOTSET


def test_the_zeroconf_advertiser_logs_on_the_sinks_prefixed_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenZeroconf:
        async def async_close(self) -> None:
            raise OSError("socket gone")

    log = Context("tcp", logging.getLogger("les02_flow.node.tcp")).node_log("ecuconnect_tcp_sink")
    advertiser = Advertiser(None, IPVersion.V4Only, log)
    advertiser._azc = BrokenZeroconf()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="les02_flow.node.tcp"):
        asyncio.run(advertiser.close())
    assert caplog.messages == ["ecuconnect_tcp_sink 'tcp': zeroconf: close failed: socket gone"]
