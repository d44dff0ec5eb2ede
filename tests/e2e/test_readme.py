"""The README shows the default flow as it is: its "A flow" block equals flows/default.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _normalise(value: Any) -> Any:
    """Scalars compared as text (``port: 1880`` in one, ``"1880"`` in the other, the same)."""
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return str(value)


def test_readme_flow_is_flows_default_yaml() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A flow", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None, "README's 'A flow' section has no yaml block"
    shown = yaml.safe_load(block.group(1))
    actual = yaml.safe_load((ROOT / "flows" / "default.yaml").read_text(encoding="utf-8"))
    assert _normalise(shown) == _normalise(actual), (
        "README.md 'A flow' differs from flows/default.yaml: update the README block"
    )
