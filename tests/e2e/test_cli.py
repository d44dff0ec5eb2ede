"""The CLI as a user runs it: a subprocess per command."""

from __future__ import annotations

import argparse
import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from les02_flow.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
Cli = Callable[..., subprocess.CompletedProcess[str]]

COMMANDS = ("run", "validate", "graph", "nodes", "schema", "tap", "sim")
BUILTINS = (
    "les02_sim",
    "can_source",
    "les02_parse",
    "ws_sink",
    "debug",
    "ride_detect",
    "ride_store",
    "file_recorder",
    "replay_source",
    "ecuconnect_tcp_sink",
    "ecuconnect_source",
    "uds_sim",
    # -- operator palette (issue 18) --
    "filter",
    "switch",
    "change",
    "deadband",
    "throttle",
    "batch",
    "delay",
    "dbc_decode",
    # -- mqtt fleet (issue 20) --
    "mqtt_sink",
    "mqtt_source",
    # -- web console (issue 17) --
    "web_console",
)


def test_help_lists_every_command_with_examples(cli: Cli) -> None:
    top = cli("--help")  # the installed entry point, once; every command's help in-process
    assert top.returncode == 0
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    assert set(COMMANDS) <= set(subparsers.choices)
    for command, parser in subparsers.choices.items():
        assert command in top.stdout
        text = parser.format_help()
        assert "examples:" in text and f"les02-flow {command}" in text, command


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "--speed", "0"], "must be > 0"),
        (["sim", "--duration", "-1"], "must be > 0"),
        (["replay", "x.log", "--speed", "inf"], "finite"),
        (["uds-sim", "--tester-id", "0x800"], "not an 11-bit CAN id"),
        (["uds-sim", "--speed", "0"], "must be > 0"),
        (["canlogger", "--port", "70000"], "not a TCP port"),
        (["run", "f.yaml", "--stats-interval", "nan"], "finite"),
    ],
)
def test_value_parsers_reject_bad_values_alike(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_options_accept_a_zero_stats_interval() -> None:
    args = build_parser().parse_args(["run", "f.yaml", "--stats-interval", "0"])
    assert args.stats_interval == 0.0


def test_shipped_flows_validate(cli: Cli) -> None:
    paths = [*(ROOT / "flows").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")]
    flows = sorted(str(p.relative_to(ROOT)) for p in paths)
    result = cli("validate", *flows)
    assert result.returncode == 0, result.stderr
    for flow in flows:
        assert f"{flow}: ok" in result.stdout


BROKEN = """\
version: 1
nodes:
  sim: {type: les02_sim, channel: ${LES02_TEST_UNSET_CH}}
  bus:
    type: can_sorce
    wires: [parse]
  parse:
    type: les02_parse
    colour: red
    wires:
      out: [ws, nowhere]
      bogus: [debug]
  ws:
    type: ws_sink
    port: not-a-port
  raw:
    type: can_source
    wires: [ws]
  debug: {type: debug}
  debug: {type: debug}
  loop1: {type: les02_parse, wires: {invalid: [debug]}}
"""


def test_validate_reports_every_error_with_its_line(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN.replace("${LES02_TEST_UNSET_CH}", "'${LES02_TEST_UNSET_CH}'"))
    result = cli("validate", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    p = str(path)
    expected = [
        f"{p}:3:35: node 'sim': environment variable 'LES02_TEST_UNSET_CH' is not set",
        f"{p}:5:11: node 'bus': unknown node type 'can_sorce' (did you mean 'can_source'?)",
        f"{p}:9:5: node 'parse': unknown config key 'colour' for les02_parse",
        f"{p}:11:17: node 'parse': wire to missing node 'nowhere'",
        f"{p}:12:7: node 'parse': les02_parse has no output port 'bogus'",
        f"{p}:15:11: node 'ws': 'port': Input should be a valid integer",
        f"{p}:18:13: node 'raw': kind mismatch: port 'out' carries frame messages but 'ws' "
        "(ws_sink) takes event",
        f"{p}:20:3: node 'debug': duplicate node id 'debug' (first defined at line 19)",
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), (want, lines)
    assert lines[-1] == f"{len(lines) - 1} errors"


def test_validate_cycle_and_missing_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1
            nodes:
              a: {type: les02_parse, wires: {invalid: [b]}}
              b: {type: les02_parse, wires: {invalid: [a]}}
            """
        )
    )
    result = cli("validate", str(path), str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert f"{path}:3:3: node 'a': cycle: a -> b -> a" in result.stderr
    assert "missing.yaml: cannot read flow file: No such file or directory" in result.stderr


def test_run_with_an_invalid_flow_starts_nothing(cli: Cli, free_port: int) -> None:
    result = cli("run", "flows/default.yaml", "--set", "ws.port=-5", timeout=30)
    assert result.returncode == 1
    assert "--set ws.port=-5: node 'ws': 'port'" in result.stderr
    assert "starting" not in result.stderr


def test_graph_formats(cli: Cli) -> None:
    mermaid = cli("graph", "flows/default.yaml")
    assert mermaid.returncode == 0
    assert mermaid.stdout.startswith("flowchart LR\n")
    assert "  parse -->|invalid: frame| debug" in mermaid.stdout
    dot = cli("graph", "flows/default.yaml", "--format", "dot")
    assert dot.stdout.startswith('digraph "les02-default" {')
    assert '"bus" -> "parse" [label="out: frame"];' in dot.stdout


def test_nodes_lists_and_documents(cli: Cli) -> None:
    listing = cli("nodes")
    assert listing.returncode == 0
    for name in BUILTINS:
        assert name in listing.stdout
    one = cli("nodes", "ws_sink")
    assert one.stdout.startswith("## `ws_sink`")
    assert "| `port` | int" in one.stdout
    wrong = cli("nodes", "ws_snk")
    assert wrong.returncode == 1
    assert "unknown node type 'ws_snk' (did you mean 'ws_sink'?)" in wrong.stderr


def test_docs_nodes_md_is_current(cli: Cli) -> None:
    generated = cli("nodes", "--markdown").stdout
    current = (ROOT / "docs" / "nodes.md").read_text()
    assert generated == current, "docs/nodes.md is stale: run `make docs`"


def test_schema_has_a_branch_per_type_and_accepts_shipped_flows(cli: Cli) -> None:
    result = cli("schema")
    schema = json.loads(result.stdout)
    branches = schema["properties"]["nodes"]["additionalProperties"]["oneOf"]
    assert sorted(b["properties"]["type"]["const"] for b in branches) == sorted(BUILTINS)
    validator = jsonschema.Draft202012Validator(schema)
    for path in [*(ROOT / "flows").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")]:
        if path.name.endswith("_test.yaml"):
            continue  # a flow test file: `schema --tests` (tests/e2e/test_flow_tests_cli.py)
        validator.validate(yaml.safe_load(path.read_text()))
    bad: dict[str, Any] = {"version": 1, "nodes": {"ws": {"type": "ws_sink", "prot": 1}}}
    assert list(validator.iter_errors(bad))


def test_sim_command_runs_a_finite_simulation(cli: Cli) -> None:
    result = cli(
        "sim",
        "--interface",
        "virtual",
        "--channel",
        "cli-sim-test",
        "--trips",
        "1",
        "--speed",
        "50",
        "--seed",
        "3",
        "--stats-interval",
        "0",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "all sources finished" in result.stderr
    assert "stats sim out=" in result.stderr


def test_tap_without_a_server_fails_clearly(cli: Cli, free_port: int) -> None:
    result = cli("tap", f"ws://127.0.0.1:{free_port}", timeout=30)
    assert result.returncode == 1
    assert f"ws://127.0.0.1:{free_port}" in result.stderr


def test_piping_to_head_ends_quietly(cli_cmd: list[str]) -> None:
    """``les02-flow replay x.log | head -1``: no "Broken pipe" and no error per message."""
    proc = subprocess.Popen(
        [*cli_cmd, "replay", str(ROOT / "examples" / "les02-rides.log"), "--speed", "max"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip()  # what head reads
    proc.stdout.close()  # head exits
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Broken pipe" not in err and "BrokenPipeError" not in err, err
    assert "not printing any more" in err


def test_validate_warns_about_unwired_outputs_and_sinks_without_input(
    cli: Cli, tmp_path: Path
) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "version: 1\nnodes:\n"
        "  bus: {type: can_source, channel: warn-test, wires: [parse]}\n"
        "  parse: {type: les02_parse}\n"
        "  lonely: {type: debug}\n"
        "  off: {type: debug, disabled: true}\n"
    )
    res = cli("validate", str(flow))
    assert res.returncode == 0, res.stderr  # warnings, not errors
    assert f"{flow}:4:3: node 'parse': warning: its output is wired nowhere" in res.stderr
    assert f"{flow}:5:3: node 'lonely': warning: nothing is wired into it" in res.stderr
    assert "'off'" not in res.stderr and "'bus'" not in res.stderr
