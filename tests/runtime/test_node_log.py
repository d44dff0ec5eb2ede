"""Context.node_log: a node's logger that adds the ``TYPE 'ID': `` prefix once, for every call."""

from __future__ import annotations

import logging

import can
import pytest

from les02_flow.node import Context, RateLimitedLog
from les02_flow.nodes.simbus import send_frame, shutdown_bus


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
