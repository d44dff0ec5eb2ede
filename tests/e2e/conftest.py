"""Fixtures for running the real `les02-flow` command in subprocesses."""

from __future__ import annotations

import argparse
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
def command_help() -> Callable[[str], str]:
    """``les02-flow COMMAND --help``'s text, made in this process: what ``--help`` prints is
    the command's parser's help (test_cli.py runs the installed entry point's ``--help`` once;
    a process per command's help adds only interpreter start-ups)."""
    from les02_flow.cli import build_parser

    def text(command: str) -> str:
        subparsers = next(
            a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
        )
        return str(subparsers.choices[command].format_help())

    return text


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
