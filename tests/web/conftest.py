"""Fixtures for the web console tests: a flow running in a thread of its own (its own event
loop, the real engine and nodes), and one headless Chromium shared by the browser tests."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from les02_flow.compiler import CompiledFlow, compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import load_flow_text
from les02_flow.node import Kind, Node, NodeConfig
from les02_flow.registry import Registry, default_registry

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1600,1120",
)


class LastEventsConfig(NodeConfig):
    pass


class LastEvents(Node[LastEventsConfig]):
    """Keeps the last event of each (type, channel) (test sink)."""

    type_name = "last_events"
    config_model = LastEventsConfig
    input_kind = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {}

    def __init__(self, node_id: str, config: LastEventsConfig, ctx: Any) -> None:
        super().__init__(node_id, config, ctx)
        self.last: dict[tuple[str, str], dict[str, Any]] = {}
        self.ride_ends: list[dict[str, Any]] = []

    def consume(self, message: Any) -> None:
        payload = message.get("payload", {})
        self.last[(message["type"], str(payload.get("channel", "")))] = message
        if message["type"] == "ride_end":
            self.ride_ends.append(message)


def registry() -> Registry:
    reg = default_registry(plugins=False)
    reg.register(LastEvents, "tests")
    return reg


class RunningFlow:
    """A flow run by the real :class:`Engine` on an event loop in a background thread."""

    def __init__(self, text: str, env: Mapping[str, str] | None = None) -> None:
        self.registry = registry()
        self.env = dict(env or {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine: Engine = self.call(self._make(self.compile(text)))

    def compile(self, text: str) -> CompiledFlow:
        doc = load_flow_text(textwrap.dedent(text), "console-test.yaml", env=self.env)
        return compile_document(doc, self.registry)

    async def _make(self, flow: CompiledFlow) -> Engine:
        return Engine(flow)

    def call(self, coro: Any, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return self.call(run())

    def start(self) -> RunningFlow:
        self.call(self.engine.start())
        return self

    def apply(self, text: str) -> Any:
        return self.call(self.engine.apply(self.compile(text)))

    def node(self, node_id: str) -> Any:
        return self.engine.nodes[node_id]

    def stop(self) -> None:
        try:
            self.call(self.engine.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def get(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP GET to 127.0.0.1:port (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(port: int, path: str, headers: Mapping[str, str] | None = None) -> Any:
    status, _, body = get(port, path, headers)
    assert status == 200, (status, body[:300])
    return json.loads(body)


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``cond`` until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- Chromium ----------------------------------------------------------------------------------


def chromium_missing() -> str | None:
    """Why headless Chromium cannot run here, or ``None``."""
    if not (shutil.which("chromedriver") or Path(CHROMEDRIVER).exists()):
        return "chromedriver is not installed (apt-get install chromium chromium-driver)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def start_chromium() -> tuple[Any, str]:
    """A fresh headless Chromium (own profile directory, returned for cleanup)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="les02-chromium-")
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(shutil.which("chromedriver") or CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver, profile


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for all browser tests. Missing Chromium fails in CI."""
    reason = chromium_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"headless Chromium is required in CI: {reason}")
        pytest.skip(reason)
    driver, profile = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    """Save a screenshot as a test artifact (build/test-artifacts/NAME.png)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
