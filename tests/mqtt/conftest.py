"""A private mosquitto per test (generated config, free 127.0.0.1 port); tests FAIL when
mosquitto is missing (.ci/run installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from les02_flow.nodes.mqtt.broker import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()
