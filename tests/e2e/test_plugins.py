"""Third-party node types through the `les02_flow.nodes` entry-point group (a real dist-info)."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

Cli = Callable[..., subprocess.CompletedProcess[str]]

PLUGIN = '''\
from __future__ import annotations
from typing import Any
from pydantic import Field
from les02_flow.node import Kind, Node, NodeConfig


class ShoutConfig(NodeConfig):
    times: int = Field(default=1, description="how often")


class Shout(Node[ShoutConfig]):
    """Prints SHOUT for each event (test plugin)."""

    type_name = "{name}"
    config_model = ShoutConfig
    input_kind = Kind.ANY

    def consume(self, message: Any) -> None:
        print("SHOUT", flush=True)
'''


def make_plugin(root: Path, type_name: str) -> dict[str, str]:
    (root / "les02_shout.py").write_text(PLUGIN.replace("{name}", type_name))
    info = root / "les02_shout-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: les02-shout\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[les02_flow.nodes]\nshout = les02_shout:Shout\n")
    return {"PYTHONPATH": str(root)}


def test_plugin_node_type_is_listed_and_validates(cli: Cli, tmp_path: Path) -> None:
    env = make_plugin(tmp_path, "shout")
    listing = cli("nodes", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "shout" in listing.stdout
    flow = tmp_path / "f.yaml"
    flow.write_text(
        textwrap.dedent(
            """\
            version: 1
            nodes:
              bus: {type: can_source, channel: plugin-test, wires: [loud]}
              loud: {type: shout, times: 2}
            """
        )
    )
    assert cli("validate", str(flow), env=env).returncode == 0
    bad = cli("validate", str(flow), "--set", "loud.times=x", env=env)
    assert "node 'loud': 'times'" in bad.stderr


def test_duplicate_type_name_is_an_error_naming_both(cli: Cli, tmp_path: Path) -> None:
    env = make_plugin(tmp_path, "debug")
    result = cli("nodes", env=env)
    assert result.returncode == 2
    assert "node type 'debug' is registered twice" in result.stderr
    assert "built-in les02_flow.nodes.debug:Debug" in result.stderr
    assert "entry point 'shout' (les02_shout:Shout) of les02-shout" in result.stderr
