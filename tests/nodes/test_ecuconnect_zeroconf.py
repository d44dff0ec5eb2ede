"""Zeroconf registration, TXT, discovery (node, source and `les02-flow discover`) and goodbye.

mDNS sends multicast, so the scenario runs only inside a private network namespace: the test
re-executes this file under ``unshare -n``, where only a loopback interface exists,
and checks the JSON report it prints. Skipped with the reason when that is impossible (failed
in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import can
import pytest

HERE = Path(__file__).resolve()
REPORT = "ECU-REPORT "


def _netns_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed"
    try:
        done = subprocess.run(
            ["unshare", "-n", "true"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if done.returncode != 0:
        return f"unshare -n is not permitted here: {done.stderr.strip()}"
    return None


def test_zeroconf_in_private_network_namespace() -> None:
    problem = _netns_problem()
    if problem:
        if os.environ.get("CI"):  # .ci/run: a fresh CI machine must run it, not skip it
            pytest.fail(f"zeroconf test needs a private network namespace: {problem}")
        pytest.skip(f"zeroconf test needs a private network namespace: {problem}")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(HERE), "--inside"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(REPORT)]
    assert done.returncode == 0 and lines, f"scenario failed:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(lines[-1][len(REPORT) :])
    port = report["port"]
    name = f"ECUconnect-Logger test {port}"
    assert report["registered"] == name
    (found,) = report["browsed"]
    assert found["name"] == name
    assert found["port"] == port
    assert found["addresses"] == ["127.0.0.1"]
    assert found["txt"] == {
        "system": report["hostname"],
        "process": "les02-flow-test",
        "interface": "virtual",
        "channel": "zc",
        "bitrate": "500000",
        "port": str(port),
    }
    assert report["source_frame"] == [0x123, "c0ffee"]
    cli = report["cli"]
    assert cli["rc"] == 0, cli
    assert [(r["name"], r["host"], r["port"]) for r in cli["rows"]] == [(name, "127.0.0.1", port)]
    assert cli["rows"][0]["txt"]["process"] == "les02-flow-test"
    assert report["goodbye"] == name
    assert report["after_stop"] == []


# -- the scenario, run inside the namespace ------------------------------------------------------


async def _scenario() -> dict[str, Any]:
    from zeroconf import ServiceListener, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

    from les02_flow.node import Context
    from les02_flow.nodes.ecuconnect.mdns import SERVICE_TYPE, browse, short_hostname
    from les02_flow.nodes.ecuconnect.sink import EcuconnectTcpSink, EcuconnectTcpSinkConfig
    from les02_flow.nodes.ecuconnect.source import EcuconnectSource, EcuconnectSourceConfig

    report: dict[str, Any] = {"hostname": short_hostname()}
    ctx = Context("tcp", logging.getLogger("zc.sink"))
    ctx.bus_info.update(interface="virtual", channel="zc", bitrate="500000")
    cfg = EcuconnectTcpSinkConfig(
        host="127.0.0.1",
        port=0,
        zeroconf=True,
        service_name="ECUconnect-Logger test {port}",
        process="les02-flow-test",
    )
    sink = EcuconnectTcpSink("tcp", cfg, ctx)
    await sink.start()
    assert sink.zeroconf_done is not None
    await asyncio.wait_for(sink.zeroconf_done.wait(), 20)
    report["port"] = sink.port
    report["registered"] = sink.service_name

    # every wait below is bounded and returns as soon as its condition holds; the bounds are
    # generous for a loaded machine (a window that must pass in full is named so)
    found = await browse(20.0, interfaces=["127.0.0.1"], first=True)
    report["browsed"] = [
        {"name": f.name, "port": f.port, "addresses": list(f.addresses), "txt": f.properties}
        for f in found
    ]

    # a source that discovers the logger by name and receives a frame
    src_cfg = EcuconnectSourceConfig(
        discover=True,
        service_name="ECUconnect-Logger test",
        zeroconf_interfaces=["127.0.0.1"],
        retry_initial=0.1,
        retry_max=0.5,
    )
    source = EcuconnectSource("remote", src_cfg, Context("remote", logging.getLogger("zc.src")))
    got: list[can.Message] = []
    source.build(None)["out"].subscribe(got.append)
    await source.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while sink.client_count < 1 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    sink.consume(can.Message(arbitration_id=0x123, is_extended_id=False, data=b"\xc0\xff\xee"))
    while not got and loop.time() < deadline:
        await asyncio.sleep(0.01)
    report["source_frame"] = [got[0].arbitration_id, got[0].data.hex()] if got else None
    await source.stop()

    # the real CLI, in this namespace too. `discover` listens for the whole --timeout window:
    # 2 s is plenty on a quiet machine; a loaded one (a starved process misses the answers)
    # gets a longer window, only when the shorter one found nothing
    for window in ("2", "6", "15"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "les02_flow.cli",
            "discover",
            "--json",
            "--timeout",
            window,
            "--interface",
            "127.0.0.1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        try:
            rows = json.loads(out.decode() or "[]")
        except ValueError:
            rows = out.decode()
        report["cli"] = {"rc": proc.returncode, "rows": rows, "stderr": err.decode()[-2000:]}
        if not (proc.returncode == 1 and rows == [] and b"found within" in err):
            break

    # goodbye: a browser that already knows the service sees it removed
    removed = asyncio.Event()
    added = asyncio.Event()
    gone: list[str] = []

    class Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            loop.call_soon_threadsafe(added.set)

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            pass

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            gone.append(name[: -len(SERVICE_TYPE) - 1])
            loop.call_soon_threadsafe(removed.set)

    azc = AsyncZeroconf(interfaces=["127.0.0.1"])
    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, listener=Listener())
    await asyncio.wait_for(added.wait(), 30)  # it knows the service
    await sink.stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(removed.wait(), 30)
    report["goodbye"] = gone[0] if gone else None
    await browser.async_cancel()
    await azc.async_close()
    report["after_stop"] = [f.name for f in await browse(1.5, interfaces=["127.0.0.1"])]
    return report


def _inside() -> int:
    if os.environ.get("ECU_NETNS_READY") != "1":
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "set", "lo", "multicast", "on"],
            ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"],
        ):
            subprocess.run(cmd, check=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    report = asyncio.run(_scenario())
    print(REPORT + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--inside"]:
    sys.exit(_inside())
