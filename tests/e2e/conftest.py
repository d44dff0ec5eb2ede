"""Fixtures for running the real `les02-flow` command in subprocesses."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "les02-flow"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("les02-flow")
    return [found] if found else [sys.executable, "-m", "les02_flow.cli"]


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `les02-flow ARGS...` to completion (cwd = repository root)."""

    def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> Any:
        return subprocess.run(
            [*_cli(), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )

    return run


@pytest.fixture
def cli_cmd() -> list[str]:
    return _cli()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
