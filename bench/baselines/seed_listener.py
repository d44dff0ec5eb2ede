"""The seed project's LES02 listener design (the one-file "LES02 Python Listener" this project
started from; its document is not part of this repo) plus the seed logger's blocking TCP
broadcast, as the peer system under test of ``bench.live``.

    python -m bench.baselines.seed_listener --rate 2000 --duration 5 --tmp /tmp/x

Implemented as the design document describes, deliberately NOT improved:

* ``CANBusReader.frames()``: a generator over python-can's blocking iterator
  (``for msg in bus``), building a ``CANFrame`` dataclass per frame (channel by parity,
  message type by ``can_id & 0xFE``);
* ``run_can_loop``: ``ThreadPoolExecutor(max_workers=1)`` runs the blocking reader, which puts
  every frame into a ``queue.Queue``; the asyncio loop polls it with ``get_nowait()`` (on
  ``Empty`` it sleeps 1 ms -- the doc only says "non-blocking poll"; 1 ms is the shortest
  sleep that does not spin a core), keeps position frames with DLC 4, parses the 24-bit
  position, builds an ``EventEnvelope`` dataclass and awaits ``broadcast``;
* ``WebSocketEventServer.broadcast``: ``json.dumps(event.to_dict())`` per event, then
  ``asyncio.gather(*(send_to_client(c) for c in self._clients), return_exceptions=True)``;
  clients are kept in a set guarded by an ``asyncio.Lock`` in the connection handler.
  (websockets' current asyncio API instead of the deprecated legacy one: same ``send``.)

ECUconnect part, the seed logger's way (``canlogger.py``, as in ``bench.ecuconnect``): a second
reader of the same bus in its own thread packs each frame and, under one lock, ``sendall``\\s
it to each client in turn on blocking sockets; an acceptor thread adds clients.

The seed ran listener and logger as two programs on a SocketCAN bus; python-can ``virtual``
buses are in-process only, so both run here in one process, fed by the same
:class:`bench.traffic.PacedSender` thread as the les02-flow SUT. The only additions are
what the harness needs: ports picked by the OS, a stop flag for the reader threads, and the
protocol of :mod:`bench.traffic`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from queue import Empty
from queue import Queue as ThreadQueue
from typing import Any

import can
import websockets
from websockets.asyncio.server import ServerConnection, serve

from bench.ecuconnect import _pack
from bench.traffic import (
    drive,
    emit,
    les02_traffic,
    read_command,
)

DRAIN_TIMEOUT = 3.0
CONNECT_TIMEOUT = 15.0


# -- frames.py -------------------------------------------------------------------------------


class Channel(Enum):
    MASTER = "master"
    SLAVE = "slave"


class MessageType(Enum):
    POSITION = "position"
    STATUS = "status"
    ERROR = "error"
    SYSTEM = "system"
    UNKNOWN = "unknown"


def parse_position(data: bytes) -> int:
    """Extract 24-bit position from first 3 bytes (MSB first)."""
    return (data[0] << 16) | (data[1] << 8) | data[2]


# -- can_reader.py ---------------------------------------------------------------------------


@dataclass
class CANFrame:
    arbitration_id: int
    dlc: int
    data: bytes
    timestamp: float
    channel: Channel
    message_type: MessageType


class CANBusReader:
    def __init__(self, channel: str, interface: str = "socketcan") -> None:
        self.channel = channel
        self.interface = interface
        self.stopped = False  # harness addition: lets the benchmark end the thread
        self.bus = can.Bus(channel=channel, interface=interface)

    def frames(self) -> Iterator[CANFrame]:
        for msg in self.bus:
            if self.stopped:
                return
            can_id = msg.arbitration_id
            channel = Channel.MASTER if can_id % 2 == 0 else Channel.SLAVE
            base_id = can_id & 0xFE
            if base_id == 0x80:
                message_type = MessageType.POSITION
            elif base_id == 0x30:
                message_type = MessageType.STATUS
            elif base_id == 0x20:
                message_type = MessageType.ERROR
            elif base_id == 0x10:
                message_type = MessageType.SYSTEM
            else:
                message_type = MessageType.UNKNOWN
            yield CANFrame(
                arbitration_id=can_id,
                dlc=msg.dlc,
                data=bytes(msg.data),
                timestamp=msg.timestamp,
                channel=channel,
                message_type=message_type,
            )


# -- events.py -------------------------------------------------------------------------------


@dataclass
class EventEnvelope:
    proto: int
    type: str
    ts: float
    source: str
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "type": self.type,
            "ts": self.ts,
            "source": self.source,
            "payload": self.payload,
        }


# -- websocket_server.py ---------------------------------------------------------------------


class WebSocketEventServer:
    def __init__(self, host: str = "localhost", port: int = 8765) -> None:
        self._host = host
        self._port = port
        self._clients: set[ServerConnection] = set()
        self._lock = asyncio.Lock()
        self.broadcasts = 0  # harness addition: events broadcast

    async def start(self) -> Any:
        server = await serve(self._handler, self._host, self._port, ping_interval=None)
        self._port = server.sockets[0].getsockname()[1]
        return server

    @property
    def port(self) -> int:
        return self._port

    async def broadcast(self, event: EventEnvelope) -> None:
        message = json.dumps(event.to_dict())
        self.broadcasts += 1

        async def send_to_client(client: ServerConnection) -> None:
            try:
                await client.send(message)
            except websockets.exceptions.ConnectionClosed:
                self._clients.discard(client)

        await asyncio.gather(*(send_to_client(c) for c in self._clients), return_exceptions=True)

    async def _handler(self, websocket: ServerConnection) -> None:
        async with self._lock:
            self._clients.add(websocket)
        try:
            async for _message in websocket:
                pass
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            async with self._lock:
                self._clients.discard(websocket)


# -- main.py ---------------------------------------------------------------------------------


async def run_can_loop(reader: CANBusReader, ws_server: WebSocketEventServer) -> None:
    frame_queue: ThreadQueue[CANFrame] = ThreadQueue()
    executor = ThreadPoolExecutor(max_workers=1)

    def read_can_frames_blocking() -> None:
        for frame in reader.frames():
            frame_queue.put(frame)

    executor.submit(read_can_frames_blocking)
    try:
        while True:
            try:
                frame = frame_queue.get_nowait()  # Non-blocking poll
            except Empty:
                await asyncio.sleep(0.001)
                continue
            if frame.message_type == MessageType.POSITION and frame.dlc == 4:
                position = parse_position(frame.data)
                event = EventEnvelope(
                    proto=1,
                    type="position_sample",
                    ts=frame.timestamp,
                    source="les02",
                    payload={"channel": frame.channel.value, "position_raw": position},
                )
                await ws_server.broadcast(event)
    finally:
        reader.stopped = True
        executor.shutdown(wait=False)


# -- canlogger.py (the seed logger's TCP broadcast) --------------------------------------------


class SeedLogger:
    """Blocking accept thread + bus reader thread: sendall per frame per client, one lock."""

    def __init__(self, channel: str, interface: str = "virtual", port: int = 0) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(16)
        self.port: int = self.server.getsockname()[1]
        self.clients: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.sent = 0
        self.bus = can.Bus(channel=channel, interface=interface)
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._forward, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.clients.append(conn)

    def _forward(self) -> None:
        try:
            self._forward_frames()
        except can.CanError:  # harness: the bus was shut down at the end of the run
            return

    def _forward_frames(self) -> None:
        for msg in self.bus:
            if self.stopped:
                return
            pkt = _pack(msg)
            with self.lock:
                for c in list(self.clients):
                    try:
                        c.sendall(pkt)
                    except OSError:
                        self.clients.remove(c)
            self.sent += 1

    def close(self) -> None:
        self.stopped = True
        self.server.close()
        with self.lock:
            for c in self.clients:
                c.close()


# -- harness ---------------------------------------------------------------------------------


async def _stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, read_command)


async def run(rate: float, duration: float, ws_clients: int, tcp_clients: int) -> int:
    channel = f"bench-seed-{os.getpid()}"
    traffic = les02_traffic(rate, duration)
    positions = sum(1 for _, m in traffic if m.arbitration_id & 0xFE == 0x80 and m.dlc == 4)
    ws_server = WebSocketEventServer("127.0.0.1", 0)
    server = await ws_server.start()
    reader = CANBusReader(channel, interface="virtual")
    logger = SeedLogger(channel)
    can_task = asyncio.create_task(run_can_loop(reader, ws_server))
    try:
        emit({"ready": True, "ws_port": ws_server.port, "tcp_port": logger.port})
        if await _stdin_line() != "go":
            return 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        while len(ws_server._clients) < ws_clients or len(logger.clients) < tcp_clients:
            if loop.time() > deadline:
                emit({"error": "clients did not connect"})
                return 1
            await asyncio.sleep(0.01)
        result = await drive(
            channel,
            traffic,
            lambda sent: ws_server.broadcasts >= positions and logger.sent >= sent,
            DRAIN_TIMEOUT,
        )
        emit(
            {
                **result,
                "ws_expected": positions,
                "tcp_expected": result["sent"],
                "ws_dropped": 0,
                "tcp_dropped": 0,
                "bus_out": result["sent"],
            }
        )
        await _stdin_line()  # "quit": the clients have stopped counting
        emit({"ws_expected": positions, "tcp_expected": result["sent"], "bus_out": result["sent"]})
        return 0
    finally:
        can_task.cancel()
        await asyncio.gather(can_task, return_exceptions=True)
        logger.close()
        server.close()
        reader.bus.shutdown()
        logger.bus.shutdown()


async def serve_bus(interface: str, channel: str, ws_port: int, tcp_port: int) -> int:
    """``bench.crossbus``: listener and logger on a real bus fed by another process, until
    stdin closes or says ``quit`` (the harness measures from outside)."""
    ws_server = WebSocketEventServer("127.0.0.1", ws_port)
    server = await ws_server.start()
    reader = CANBusReader(channel, interface=interface)
    logger = SeedLogger(channel, interface, tcp_port)
    can_task = asyncio.create_task(run_can_loop(reader, ws_server))
    try:
        emit({"ready": True, "ws_port": ws_server.port, "tcp_port": logger.port})
        await _stdin_line()
        return 0
    finally:
        can_task.cancel()
        await asyncio.gather(can_task, return_exceptions=True)
        logger.close()
        server.close()
        reader.bus.shutdown()
        logger.bus.shutdown()


def main() -> int:
    if "--serve" in sys.argv:
        q = argparse.ArgumentParser(description=__doc__)
        q.add_argument("--serve", action="store_true")
        q.add_argument("--interface", default="udp_multicast")
        q.add_argument("--channel", required=True)
        q.add_argument("--ws-port", type=int, required=True)
        q.add_argument("--tcp-port", type=int, required=True)
        b = q.parse_args()
        return asyncio.run(serve_bus(b.interface, b.channel, b.ws_port, b.tcp_port))
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--tmp", default="")
    p.add_argument("--ws-clients", type=int, default=10)
    p.add_argument("--tcp-clients", type=int, default=2)
    a = p.parse_args()
    return asyncio.run(run(a.rate, a.duration, a.ws_clients, a.tcp_clients))


if __name__ == "__main__":
    sys.exit(main())
