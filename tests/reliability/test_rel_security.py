"""Security (issue 9, item 7): allow lists, loopback defaults, flows that cannot run code.

The ws_sink token / origin / max_clients checks live in tests/nodes/test_ws_sink_security.py;
here: ecuconnect_tcp_sink ``allow`` (a client from another address is closed at accept and
counted), both sinks bind loopback by default, and a flow file is plain data (YAML object tags
rejected with a location, node types only from the registry, no evaluation anywhere).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from les02_flow.compiler import compile_document
from les02_flow.flowfile import FlowErrors, load_flow_text
from les02_flow.node import Context
from les02_flow.nodes.ecuconnect.sink import (
    EcuconnectTcpSink,
    EcuconnectTcpSinkConfig,
    peer_allowed,
)
from les02_flow.nodes.recording.file_recorder import FileRecorderConfig
from les02_flow.nodes.ws.sink import WsSink, WsSinkConfig
from les02_flow.registry import default_registry
from les02_flow.testing import wait_until as until

ROOT = Path(__file__).resolve().parents[2]


def tcp_sink(**cfg: Any) -> EcuconnectTcpSink:
    config = EcuconnectTcpSinkConfig(**{"port": 0, "zeroconf": False, **cfg})
    return EcuconnectTcpSink("tcp", config, Context("tcp", logging.getLogger("test.rel.sec")))


async def connect_from(source: str, port: int) -> tuple[bytes, bool]:
    """Connect from ``source`` (a loopback address), return (data, closed by server)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 100), 2.0)
            return data, data == b""
        except ConnectionResetError:
            return b"", True
        except TimeoutError:
            return b"", False
    finally:
        sock.close()


def test_allow_list_closes_other_networks_at_accept(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        sink = tcp_sink(allow=["127.0.0.1/32"])
        await sink.start()
        assert sink.port is not None
        try:
            # 127.0.0.2 is loopback on Linux, but not in the allow list
            _, closed = await connect_from("127.0.0.2", sink.port)
            assert closed, "a client outside the allow list was not closed"
            await until(lambda: sink.counters.extra.get("clients_denied") == 1, "denied count")
            assert sink.client_count == 0
            assert "clients_connected" not in sink.counters.extra
            # an allowed client stays connected
            reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
            await until(lambda: sink.client_count == 1, "allowed client")
            writer.close()
            await writer.wait_closed()
            del reader
        finally:
            await sink.stop()
        assert sink.counters.extra["clients_denied"] == 1

    asyncio.run(main())
    assert "refused client 127.0.0.2:" in caplog.text and "not in the allow list" in caplog.text


def test_allow_list_matching_and_config_errors() -> None:
    nets = EcuconnectTcpSink(
        "t",
        EcuconnectTcpSinkConfig(allow=["10.1.0.0/16", "fd00::/8"]),
        Context("t", logging.getLogger("x")),
    )._allow
    assert peer_allowed("10.1.200.3", nets)
    assert peer_allowed("::ffff:10.1.2.3", nets)  # IPv4 client on a dual-stack socket
    assert peer_allowed("fd12::1", nets)
    assert not peer_allowed("10.2.0.1", nets)
    assert not peer_allowed("192.168.1.1", nets)
    assert peer_allowed("203.0.113.9", [])  # no list: anyone who can reach the port
    with pytest.raises(ValidationError, match=r"'10\.0\.0\.0/33' is not an IP network"):
        EcuconnectTcpSinkConfig(allow=["10.0.0.0/33"])
    with pytest.raises(ValidationError, match="'lan' is not an IP network"):
        EcuconnectTcpSinkConfig(allow=["lan"])


def test_sinks_bind_loopback_by_default() -> None:
    assert EcuconnectTcpSinkConfig().host == "127.0.0.1"
    assert WsSinkConfig().host == "localhost"

    async def main() -> None:
        ws = WsSink("ws", WsSinkConfig(port=0), Context("ws", logging.getLogger("t.ws")))
        tcp = tcp_sink()
        await ws.start()
        await tcp.start()
        try:
            assert ws._server is not None and tcp._server is not None
            for server in (ws._server, tcp._server):
                for sock in server.sockets:
                    host = sock.getsockname()[0]
                    assert ipaddress.ip_address(host).is_loopback, host
        finally:
            await ws.stop()
            await tcp.stop()

    asyncio.run(main())


def flow_errors(text: str) -> list[str]:
    doc = load_flow_text(text, "evil.yaml", env={})
    with pytest.raises(FlowErrors) as info:
        compile_document(doc, default_registry())
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!python/object/apply:os.system ['touch {marker}']", "python/object/apply:os.system"),
        ("!!python/object/new:os.system ['touch {marker}']", "python/object/new:os.system"),
        ("!!python/name:os.system", "python/name:os.system"),
        ("!!python/module:os", "python/module:os"),
        ("!include /etc/passwd", "!include"),
        ("!!binary aGVsbG8=", "binary"),
    ],
)
def test_yaml_object_tags_are_rejected_with_a_location(
    tmp_path: Path, value: str, tag: str
) -> None:
    marker = tmp_path / "pwned"
    text = (
        f"version: 1\nnodes:\n  ws:\n    type: ws_sink\n    port: {value.format(marker=marker)}\n"
    )
    errors = flow_errors(text)
    assert any(
        e.startswith("evil.yaml:5:11: node 'ws': YAML tag") and tag in e and "not allowed" in e
        for e in errors
    ), errors
    assert not marker.exists()


def test_tags_on_mappings_sequences_and_keys_are_rejected_too(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (
        "version: 1\n"
        "nodes:\n"
        "  ws: !!python/object/apply:os.system\n"
        f"    args: ['touch {marker}']\n"
        "  dbg:\n"
        "    type: debug\n"
        f"    wires: !!python/object/apply:os.system ['touch {marker}']\n"
        "    !!python/name:os.system : 1\n"
    )
    errors = flow_errors(text)
    assert any(e.startswith("evil.yaml:3:7: node 'ws': YAML tag") for e in errors), errors
    assert any(e.startswith("evil.yaml:7:12: node 'dbg': YAML tag") for e in errors), errors
    assert any(e.startswith("evil.yaml:8:5:") and "YAML tag" in e for e in errors), errors
    assert not marker.exists()


@pytest.mark.parametrize(
    "type_name",
    [
        "os.system",
        "les02_flow.nodes.debug:Debug",
        "les02_flow.nodes.debug.Debug",
        "__import__('os').system('id')",
        "subprocess:Popen",
    ],
)
def test_node_types_come_only_from_the_registry(type_name: str) -> None:
    errors = flow_errors(f"version: 1\nnodes:\n  x:\n    type: {type_name!r}\n")
    assert any(e.startswith("evil.yaml:4:11: node 'x': unknown node type") for e in errors), errors


def test_substitution_and_values_are_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    text = (
        "version: 1\n"
        "nodes:\n"
        "  rec:\n"
        "    type: file_recorder\n"
        f'    path: "{tmp_path}/${{X:-{payload}}}.log"\n'
    )
    doc = load_flow_text(text, "evil.yaml", env={})
    flow = compile_document(doc, default_registry())
    config = flow.nodes["rec"].config
    assert isinstance(config, FileRecorderConfig)
    path = config.path
    assert payload in path  # kept as text: a flow's paths are plain paths
    assert not marker.exists()
