"""Re-deploys (run --watch / SIGHUP) keep working when an edit removes a node that a --set
override names: the override is dropped with a warning instead of vetoing every later edit."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest

from les02_flow.clirun import Reload, _load_and_compile, serve
from les02_flow.compiler import CompiledFlow, compile_file


def test_an_override_for_a_removed_node_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "version: 1\nnodes:\n"
        "  bus: {type: can_source, channel: watch-test, wires: [show]}\n"
        "  show: {type: debug}\n"
    )
    reload = Reload(str(flow), ["store.path=x.sqlite", "show.rate_limit=3"], watch=True)
    with caplog.at_level(logging.WARNING, "les02_flow"):
        result = _load_and_compile(reload)
    assert isinstance(result, CompiledFlow), result
    assert result.nodes["show"].config.model_dump()["rate_limit"] == 3
    assert "--set store.path=x.sqlite: node 'store' is no longer in" in caplog.text


def _tiny_flow(tmp_path: Path) -> CompiledFlow:
    rec = tmp_path / "s.log"
    rec.write_text("(1.000000) can0 080#00000100\n(1.001000) can0 081#00000200\n")
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "version: 1\nnodes:\n"
        f"  bus: {{type: replay_source, path: '{rec}', speed: max, wires: [show]}}\n"
        "  show: {type: debug, stream: log}\n"
    )
    return compile_file(str(flow), [])


def test_serve_freezes_the_heap_only_when_the_caller_asks(tmp_path: Path) -> None:
    """``gc.freeze`` is a process-wide change: ``serve`` makes it only with ``settle=True``,
    which the command line's ``run_flow`` passes; a library caller's heap is left alone."""
    flow = _tiny_flow(tmp_path)
    before = gc.get_freeze_count()
    try:
        assert asyncio.run(serve(flow, 0.0)) == 0
        assert gc.get_freeze_count() == before
        assert asyncio.run(serve(flow, 0.0, settle=True)) == 0
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
