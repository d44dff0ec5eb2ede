"""Fixtures for the reliability suite: a registry with a collecting sink, process probes."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pytest

from les02_flow.node import Kind, Node, NodeConfig
from les02_flow.registry import Registry, default_registry

#: what each ``rel_collect`` node received, by node id
COLLECTED: dict[str, list[Any]] = {}


class RelCollect(Node[NodeConfig]):
    """Keeps every message it receives in ``COLLECTED[node id]`` (test sink)."""

    type_name: ClassVar[str] = "rel_collect"
    input_kind: ClassVar[Kind | None] = Kind.ANY

    def consume(self, message: Any) -> None:
        COLLECTED.setdefault(self.node_id, []).append(message)


@pytest.fixture
def collected() -> dict[str, list[Any]]:
    COLLECTED.clear()
    return COLLECTED


@pytest.fixture
def registry() -> Registry:
    return default_registry().extended(RelCollect, origin="tests")


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
