"""can_source on a real cross-process-capable bus: python-can's ``udp_multicast`` interface.

Multicast runs only inside a private network namespace: the test re-executes this
file under ``unshare -rn`` (loopback only, multicast routed to ``lo``) and checks the JSON
report the scenarios print. Scenarios:

* **frame for frame**: every datagram a python-can sender puts on the bus is decoded by
  can_source's batched reader exactly as python-can's own ``UdpMulticastBus.recv`` decodes the
  same datagram (a second python-can bus in the same group receives every one of them): all
  fields, the kernel timestamp, software filters and the CAN FD rule included;
* **a datagram that is not a frame** is counted (``bad_frames``) and skipped; reading goes on;
* **kernel drops are counted**: with a tiny ``rcvbuf`` and the event loop stalled while a
  sender floods the bus, ``kernel_drops`` equals the drop count of the kernel's socket table
  (``/proc/net/udp``) and emitted + dropped == sent: nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import can
import pytest

from les02_flow.testing import wait_until

HERE = Path(__file__).resolve()
REPORT = "UDP-REPORT "
GROUP = "239.74.163.9"
NETNS_SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


def _netns_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    for tool in ("unshare", "ip", "sh"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed"
    try:
        done = subprocess.run(
            ["unshare", "-rn", "sh", "-c", NETNS_SETUP],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -rn failed: {exc}"
    if done.returncode != 0:
        return f"unshare -rn is not permitted here: {done.stderr.strip()}"
    return None


def _inside() -> dict[str, Any]:
    done = subprocess.run(
        [
            "unshare",
            "-rn",
            "sh",
            "-c",
            f'{NETNS_SETUP} && exec "$0" "$1" --inside',
            sys.executable,
            str(HERE),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(REPORT)]
    assert done.returncode == 0 and lines, f"scenario failed:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(lines[-1][len(REPORT) :])
    return report


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    problem = _netns_problem()
    if problem:
        if os.environ.get("CI"):  # .ci/run: a fresh CI machine must run it, not skip it
            pytest.fail(f"udp_multicast tests need a private network namespace: {problem}")
        pytest.skip(f"udp_multicast tests need a private network namespace: {problem}")
    return _inside()


def test_batched_reader_decodes_frame_for_frame_like_python_can(report: dict[str, Any]) -> None:
    same = report["same"]
    assert same["reader"] == "udp_multicast"
    assert same["sent"] == 400
    # python-can's own reader of the same group: what it returns, can_source emitted
    assert same["python_can"] == same["ours"]
    assert len(same["ours"]) == same["expected_after_filters"] > 0
    assert same["kernel_drops"] == 0


def test_a_datagram_that_is_no_frame_is_counted_and_skipped(report: dict[str, Any]) -> None:
    bad = report["bad"]
    assert bad["bad_frames"] == 1
    assert bad["frames_after"] == [0x321, 0x322]  # reading went on


def test_kernel_drops_are_counted_exactly(report: dict[str, Any]) -> None:
    drops = report["drops"]
    assert drops["rxq_ovfl"] is True
    assert drops["kernel_drops"] > 0, drops
    # the counter equals what the kernel says it dropped on that socket ...
    assert drops["kernel_drops"] == drops["proc_drops"], drops
    assert drops["ovfl_seen"] == drops["proc_drops"], "SO_RXQ_OVFL reported the same count"
    # ... and together with what was emitted accounts for every frame sent
    assert drops["emitted"] + drops["kernel_drops"] == drops["sent"], drops
    assert drops["warned"], "a warning names the drops"


def test_read_interval_batches_wake_ups_and_loses_nothing(report: dict[str, Any]) -> None:
    rest = report["rest"]
    assert rest["frames"] == list(range(301))
    # 300 frames over >= 150 ms in 30 bursts: a 20 ms interval gathers them into few reads
    assert 1 <= rest["reads"] < 30, rest["reads"]
    # while frames keep coming the socket is polled on the timer, not watched again and
    # again (an epoll_ctl per interval); once they stop it is watched again, exactly once
    assert rest["watches_during"] <= 1, rest
    assert rest["watching_again"] == 1, rest


def test_in_an_engine_frames_go_downstream_in_lists_in_order(report: dict[str, Any]) -> None:
    lists = report["lists"]
    assert lists["frames"] == list(range(300))  # every frame once, in order
    assert 1 < lists["longest"] <= lists["chunk"]  # a burst went as lists, bounded
    assert lists["one_by_one"] == 0  # not also through the port's observers


def test_a_full_backlog_pauses_reading_and_loses_nothing(report: dict[str, Any]) -> None:
    backlog = report["backlog"]
    assert backlog["frames"] == list(range(500))
    assert backlog["pauses"] >= 1  # reading stopped at least once with 40 frames pending
    assert backlog["kernel_drops"] == 0


# -- inside the namespace ----------------------------------------------------------------------


def _fields(msg: can.Message) -> list[Any]:
    return [
        msg.timestamp,
        msg.arbitration_id,
        msg.is_extended_id,
        msg.is_remote_frame,
        msg.is_error_frame,
        msg.channel,
        msg.dlc,
        bytes(msg.data).hex(),
        msg.is_fd,
        msg.is_rx,
        msg.bitrate_switch,
        msg.error_state_indicator,
    ]


def _variety(n: int) -> list[can.Message]:
    out = []
    for i in range(n):
        kind = i % 8
        if kind == 0:
            out.append(can.Message(arbitration_id=0x80 + i % 2, data=bytes([i % 256, 1, 2, 3])))
        elif kind == 1:
            out.append(can.Message(arbitration_id=0x1ABCDE0 + i, is_extended_id=True, data=b""))
        elif kind == 2:
            out.append(can.Message(arbitration_id=0x7FF, is_remote_frame=True, dlc=i % 9))
        elif kind == 3:
            out.append(can.Message(arbitration_id=0x85, data=bytes(range(8)), channel="les02"))
        elif kind == 4:
            out.append(
                can.Message(
                    arbitration_id=0x123,
                    is_fd=True,
                    bitrate_switch=bool(i % 2),
                    error_state_indicator=True,
                    data=bytes(range((0, 8, 12, 24, 48, 64)[i // 8 % 6])),
                )
            )
        elif kind == 5:
            out.append(can.Message(arbitration_id=0x88, data=bytes([255] * 8), timestamp=1e9 + i))
        elif kind == 6:
            out.append(can.Message(is_error_frame=True, arbitration_id=0x4, data=bytes(8)))
        else:
            out.append(can.Message(arbitration_id=0x81, data=bytes([i % 256])))
    return out


def _node(port: int, **extra: Any) -> Any:
    from les02_flow.node import Context
    from les02_flow.nodes.can_source import CanSource, CanSourceConfig

    cfg = CanSourceConfig(
        interface="udp_multicast", channel=GROUP, bus_options={"port": port}, **extra
    )
    return CanSource("bus", cfg, Context("bus", logging.getLogger("udp-test")))


async def _same(port: int) -> dict[str, Any]:
    filters = [{"can_id": 0x80, "can_mask": 0x7F0}, {"can_id": 0x1ABCDE0, "can_mask": 0x1FFFFF00}]
    node = _node(
        port,
        fd=False,
        filters=[
            {"can_id": 0x80, "can_mask": 0x7F0},
            {"can_id": 0x1ABCDE0, "can_mask": 0x1FFFFF00},
        ],
    )
    got: list[can.Message] = []
    node.build(None)["out"].subscribe(got.append)
    await node.start()
    reader = node._session.reader
    ref = can.Bus(
        interface="udp_multicast", channel=GROUP, port=port, fd=False, can_filters=filters
    )
    # room for all 400 datagrams: the reference reads only after the sender is done
    ref._multicast._socket.setsockopt(  # type: ignore[attr-defined]
        socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20
    )
    sender = can.Bus(interface="udp_multicast", channel=GROUP, port=port)
    frames = _variety(400)
    for msg in frames:
        sender.send(msg)
    expected = [m for m in frames if ref._matches_filters(m) and not m.is_fd]
    theirs: list[can.Message] = []
    loop = asyncio.get_running_loop()
    while len(theirs) < len(expected):
        got_one: can.Message | None = await loop.run_in_executor(None, lambda: ref.recv(5.0))
        assert got_one is not None, "python-can's reader got fewer frames than expected"
        theirs.append(got_one)
    await wait_until(lambda: len(got) >= len(expected), "len(got) >= len(expected)")
    drops = node.counters.extra.get("kernel_drops", 0)
    await node.stop()
    ref.shutdown()
    sender.shutdown()
    return {
        "reader": reader.kind if reader is not None else None,
        "sent": len(frames),
        "expected_after_filters": len(expected),
        "python_can": [_fields(m) for m in theirs],
        "ours": [_fields(m) for m in got],
        "kernel_drops": drops,
    }


async def _bad(port: int) -> dict[str, Any]:
    node = _node(port)
    got: list[int] = []
    node.build(None)["out"].subscribe(lambda m: got.append(m.arbitration_id))
    await node.start()
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    raw.sendto(b"\x93\x01\x02\x03 not msgpack of a frame", (GROUP, port))
    raw.close()
    sender = can.Bus(interface="udp_multicast", channel=GROUP, port=port)
    sender.send(can.Message(arbitration_id=0x321, data=b"\x01"))
    sender.send(can.Message(arbitration_id=0x322, data=b"\x02"))
    await wait_until(lambda: len(got) >= 2, "len(got) >= 2")
    result = {"bad_frames": node.counters.extra.get("bad_frames", 0), "frames_after": got}
    await node.stop()
    sender.shutdown()
    return result


def _proc_drops(inode: int) -> int:
    with open("/proc/net/udp", encoding="ascii") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[9] == str(inode):
                return int(cols[12])
    raise AssertionError(f"socket inode {inode} not in /proc/net/udp")


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _drops(port: int) -> dict[str, Any]:
    warnings = _Warnings()
    logging.getLogger("udp-test").addHandler(warnings)
    node = _node(port, rcvbuf=4096)
    emitted = [0]

    def count(_msg: can.Message) -> None:
        emitted[0] += 1

    node.build(None)["out"].subscribe(count)
    await node.start()
    session = node._session
    inode = os.fstat(session.reader.fd).st_ino
    sent = 3000
    sender_done = threading.Event()

    def flood() -> None:
        bus = can.Bus(interface="udp_multicast", channel=GROUP, port=port)
        for i in range(sent):
            bus.send(can.Message(arbitration_id=0x80, data=i.to_bytes(4, "big")))
        bus.shutdown()
        sender_done.set()

    threading.Thread(target=flood, daemon=True).start()
    # the flow is stuck (the loop does not run) while the sender floods the bus
    assert sender_done.wait(30), "sender did not finish"
    time.sleep(0.05)  # noqa: ASYNC251
    await wait_until(
        lambda: emitted[0] + node.counters.extra.get("kernel_drops", 0) >= sent,
        "every frame emitted or counted as a kernel drop",
    )
    # frames queued after the overflow carry the socket's drop count (SO_RXQ_OVFL)
    before = emitted[0]
    late = can.Bus(interface="udp_multicast", channel=GROUP, port=port)
    for i in range(3):
        late.send(can.Message(arbitration_id=0x81, data=i.to_bytes(4, "big")))
    late.shutdown()
    await wait_until(lambda: emitted[0] >= before + 3, "emitted[0] >= before + 3")
    result = {
        "ovfl_seen": session.reader._last_ovfl,
        "sent": sent + 3,
        "emitted": emitted[0],
        "rxq_ovfl": session.reader.rxq_ovfl,
        "kernel_drops": node.counters.extra.get("kernel_drops", 0),
        "proc_drops": _proc_drops(inode),
        "warned": any("dropped" in line for line in warnings.lines),
    }
    await node.stop()
    return result


async def _rest(port: int) -> dict[str, Any]:
    node = _node(port, read_interval=0.02)
    got: list[int] = []
    node.build(None)["out"].subscribe(lambda m: got.append(int.from_bytes(m.data, "big")))
    await node.start()
    await wait_until(
        lambda: node._session is not None and node._session.reader is not None, "reading"
    )
    reader = node._session.reader
    reads = [0]
    real_read = reader.read

    def counting_read(out: Any, limit: int) -> bool:
        reads[0] += 1
        return bool(real_read(out, limit))

    reader.read = counting_read
    loop = asyncio.get_running_loop()
    watches = [0]
    real_add = loop.add_reader

    def counting_add(fd: Any, *args: Any) -> None:
        watches[0] += 1
        real_add(fd, *args)

    loop.add_reader = counting_add  # type: ignore[method-assign,assignment]
    sender = can.Bus(interface="udp_multicast", channel=GROUP, port=port)
    # 300 frames in bursts of 10, 5 ms apart (sent from this loop: a stalled loop stalls both)
    for i in range(300):
        sender.send(can.Message(arbitration_id=0x80, data=i.to_bytes(2, "big")))
        if i % 10 == 9:
            await asyncio.sleep(0.005)
    watches_during = watches[0]
    await wait_until(lambda: len(got) >= 300, "len(got) >= 300")
    # traffic over: the first poll that finds nothing watches the socket again ...
    await wait_until(
        lambda: watches[0] > watches_during and node._session.rest_timer is None,
        "watching the socket again",
    )
    watching_again = watches[0] - watches_during
    # ... so a lone frame is read on readiness
    sender.send(can.Message(arbitration_id=0x80, data=(300).to_bytes(2, "big")))
    await wait_until(lambda: len(got) >= 301, "len(got) >= 301")
    loop.add_reader = real_add  # type: ignore[method-assign]
    await node.stop()
    sender.shutdown()
    return {
        "frames": got,
        "reads": reads[0],
        "watches_during": watches_during,
        "watching_again": watching_again,
    }


async def _backlog(port: int) -> dict[str, Any]:
    """A tiny BACKLOG_LIMIT: reading pauses while the flow catches up, then resumes."""
    import les02_flow.nodes.can_source as can_source

    can_source.BACKLOG_LIMIT = 40
    node = _node(port, read_interval=0)  # every remove_reader is then a pause
    got: list[int] = []
    node.build(None)["out"].subscribe(lambda m: got.append(int.from_bytes(m.data, "big")))
    await node.start()
    pauses = [0]
    real_remove = asyncio.get_running_loop().remove_reader

    def counting_remove(fd: Any) -> bool:
        pauses[0] += 1
        return real_remove(fd)

    asyncio.get_running_loop().remove_reader = counting_remove  # type: ignore[method-assign]
    sender = can.Bus(interface="udp_multicast", channel=GROUP, port=port)
    for i in range(500):  # faster than the loop gets to them: the socket holds a queue
        sender.send(can.Message(arbitration_id=0x80, data=i.to_bytes(2, "big")))
    await wait_until(lambda: len(got) >= 500, "len(got) >= 500")
    asyncio.get_running_loop().remove_reader = real_remove  # type: ignore[method-assign]
    drops = node.counters.extra.get("kernel_drops", 0)
    await node.stop()
    sender.shutdown()
    can_source.BACKLOG_LIMIT = 200_000
    return {"frames": got, "pauses": pauses[0], "kernel_drops": drops}


async def _lists(port: int) -> dict[str, Any]:
    """In an engine (bind_batches): what one read brought goes downstream as lists."""
    from les02_flow.nodes.can_source import EMIT_LIST_CHUNK

    node = _node(port, read_interval=0.02)
    lists: list[list[int]] = []
    one_by_one: list[int] = []
    node.build(None)["out"].subscribe(lambda m: one_by_one.append(1))
    node.bind_batches({"out": lambda ms: lists.append([int.from_bytes(m.data, "big") for m in ms])})
    await node.start()
    sender = can.Bus(interface="udp_multicast", channel=GROUP, port=port)
    for i in range(300):
        sender.send(can.Message(arbitration_id=0x80, data=i.to_bytes(2, "big")))
        if i % 100 == 99:
            await asyncio.sleep(0.01)
    await wait_until(lambda: sum(map(len, lists)) >= 300, "300 frames in lists")
    await node.stop()
    sender.shutdown()
    return {
        "frames": [f for part in lists for f in part],
        "longest": max(map(len, lists)),
        "chunk": EMIT_LIST_CHUNK,
        "one_by_one": len(one_by_one),
    }


async def _scenarios() -> dict[str, Any]:
    return {
        "lists": await _lists(47006),
        "same": await _same(47001),
        "bad": await _bad(47002),
        "drops": await _drops(47003),
        "rest": await _rest(47004),
        "backlog": await _backlog(47005),
    }


if __name__ == "__main__" and "--inside" in sys.argv:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(REPORT + json.dumps(asyncio.run(_scenarios())), flush=True)
