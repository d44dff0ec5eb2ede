"""Fixtures for the reliability suite: a registry with the ``collect`` sink, process probes."""

from __future__ import annotations

import os
from typing import Any

import pytest

from les02_flow.registry import Registry
from les02_flow.testing import Collect, registry_with


@pytest.fixture
def collected() -> dict[str, list[Any]]:
    """What each ``collect`` node received, by node id (emptied for each test)."""
    Collect.received.clear()
    return Collect.received


@pytest.fixture
def registry() -> Registry:
    return registry_with()


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
def probes() -> tuple[Any, Any]:
    """``(fd_count(pid="self"), rss_kib(pid="self"))`` readers from /proc."""
    return fd_count, rss_kib
