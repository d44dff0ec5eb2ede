"""Re-deploys (run --watch / SIGHUP) keep working when an edit removes a node that a --set
override names: the override is dropped with a warning instead of vetoing every later edit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from les02_flow.clirun import Reload, _load_and_compile
from les02_flow.compiler import CompiledFlow


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
