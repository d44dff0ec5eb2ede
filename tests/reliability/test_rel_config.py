"""Hostile or broken flow files fail with a located error, never a traceback, a hang or a
misread value (issue 14, items 4, 5 and 10).

Each case failed on the code before issue 14: nesting >= 330 levels and a chain of >= 996
nodes raised RecursionError, an environment value of > 4,300 digits raised ValueError, a
317-byte alias bomb took 8 s and 364 MB, `${A:-${B}}` produced a literal `${B` path, `port:
true` became port 1, `.inf` passed validation, the merge key `<<` failed at 1:1 and `--set`
could not pass a list.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from les02_flow.compiler import MAX_NODES, compile_document, compile_file
from les02_flow.flowfile import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_FLOW_BYTES,
    FlowDocument,
    FlowErrors,
    apply_sets,
    load_flow,
    load_flow_text,
)
from les02_flow.nodes.can_source import CanSourceConfig
from les02_flow.nodes.les02.sim import Les02SimConfig

DEFAULT = Path(__file__).resolve().parents[2] / "flows" / "default.yaml"


def errors_of(text: str, env: dict[str, str] | None = None, sets: Sequence[str] = ()) -> list[str]:
    doc = load_flow_text(text, "f.yaml", env or {})
    if doc.data is not None:
        apply_sets(doc, sets)
    try:
        compile_document(doc)
    except FlowErrors as exc:
        return [str(e) for e in exc.errors]
    return []


@pytest.mark.parametrize("depth", [330, 5000])
def test_deep_nesting_is_a_located_error(depth: int) -> None:
    flow = "version: 1\nnodes:\n  a: " + "[" * depth + "]" * depth + "\n"
    assert errors_of(flow) == [f"f.yaml:3:{3 + MAX_DEPTH + 1}: nested more than 64 levels deep"]
    levels = min(depth, 400)  # block style: 400 levels are already 160 kB
    block = "version: 1\nnodes:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(levels))
    (err,) = errors_of(block + "  " * (levels + 1) + "x: 1\n")
    assert err.startswith("f.yaml:") and err.endswith("nested more than 64 levels deep")


def _chain(n: int, *, cycle: bool = False) -> str:
    lines = ["version: 1", "nodes:", "  bus: {type: can_source, wires: [d0]}"]
    for i in range(n):
        nxt = f"d{i + 1}" if i < n - 1 else ("d0" if cycle else "end")
        lines.append(f"  d{i}: {{type: delay, seconds: 0.01, wires: [{nxt}]}}")
    lines.append("  end: {type: debug}")
    return "\n".join(lines) + "\n"


def test_long_chains_compile_and_their_cycles_are_found_without_recursion() -> None:
    t0 = time.monotonic()
    assert errors_of(_chain(1100)) == []  # before: RecursionError from 996 nodes on
    errs = errors_of(_chain(1100, cycle=True))
    assert len(errs) == 1 and errs[0].startswith("f.yaml:4:3: node 'd0': cycle: d0 -> d1 -> ")
    assert time.monotonic() - t0 < 60  # linear, not rounds x nodes (was 20 s for 2,000)
    nodes = {f"d{i}": {"type": "debug"} for i in range(MAX_NODES + 1)}
    with pytest.raises(FlowErrors) as exc:
        compile_document(FlowDocument("big.yaml", {"version": 1, "nodes": nodes}))
    assert str(exc.value) == "big.yaml:1:1: the flow has 2,001 nodes; the limit is 2,000"


def test_env_value_with_too_many_digits_is_an_error_not_a_traceback() -> None:
    flow = DEFAULT.read_text().replace("port: 8765", "port: ${BIG}")
    assert "${BIG}" in flow
    (err,) = errors_of(flow, {"BIG": "9" * 5000})
    assert "node 'ws': 'port':" in err and "(5,002 characters)" in err
    (err,) = errors_of(flow.replace("${BIG}", "9" * 5000))
    assert err.endswith("node 'ws': integer with 5000 digits (at most 4300)")
    (err,) = errors_of(DEFAULT.read_text(), sets=[f"ws.port={'9' * 5000}"])
    assert "node 'ws': 'port':" in err


BOMB = (
    "version: 1\nnodes:\n  x: {type: debug}\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
)


def test_alias_bombs_and_huge_files_are_refused_quickly(tmp_path: Path) -> None:
    t0 = time.monotonic()
    (err,) = errors_of(BOMB)
    assert "the flow expands to more than 100000 values" in err
    many = (
        "version: 1\nx-a: &a 1\nnodes:\n  x: {type: debug, label: ["
        + ", ".join(["*a"] * (MAX_ALIASES + 1))
        + "]}\n"
    )
    (err,) = errors_of(many)
    assert f"more than {MAX_ALIASES} YAML aliases" in err
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("version: 1\nnodes:\n  x: {type: debug}\n")
        fh.write("#" * (50 * 1024 * 1024) + "\n")  # 50 MB
    doc = load_flow(big)
    assert [str(e) for e in doc.errors] == [
        f"{big}:1:1: the flow file is {big.stat().st_size:,} bytes; "
        f"the limit is {MAX_FLOW_BYTES:,} bytes"
    ]
    assert time.monotonic() - t0 < 20  # before: 8 s and 364 MB for the bomb alone


def test_nested_variables_expand_or_fail_clearly() -> None:
    flow = DEFAULT.read_text()
    assert "channel: ${LES02_CAN_CHANNEL:-les02}" in flow
    nested = flow.replace("${LES02_CAN_CHANNEL:-les02}", "${CH_A:-${CH_B:-fallback}}")
    doc = load_flow_text(nested, "f.yaml", {"CH_B": "from-b"})
    assert doc.errors == []
    assert doc.data["nodes"]["bus"]["channel"] == "from-b"
    (err,) = errors_of(
        flow.replace("${LES02_CAN_CHANNEL:-les02}", "${NEEDED:?${HINT}}"), {"HINT": "set it"}
    )
    assert err.endswith("environment variable 'NEEDED' is not set: set it")
    for bad in ("${HOME/data}", "${A-x}", "${A:-x"):
        (err,) = errors_of(flow.replace("${LES02_CAN_CHANNEL:-les02}", f"'{bad}'"), {"HOME": "/h"})
        assert "node 'bus'" in err and ("unsupported" in err or "unterminated" in err), err


def test_booleans_are_not_numbers_and_numbers_are_finite() -> None:
    flow = DEFAULT.read_text()
    (err,) = errors_of(flow, sets=["ws.port=true"])  # before: ws bound port 1
    assert err == "--set ws.port=true: node 'ws': 'port': expected a number, got the boolean true"
    errs = errors_of(flow, sets=["ws.ping_interval=.inf", "sim.floors_mm=[0, .nan]"])
    assert any("'ping_interval': must be a finite number, got inf" in e for e in errs), errs
    assert any("'floors_mm.1': must be a finite number, got nan" in e for e in errs), errs
    # booleans still work where booleans are meant
    assert errors_of(flow, sets=["ws.disabled=true", "sim.silent_when_stopped=true"]) == []


def test_yaml_merge_key_works_as_documented() -> None:
    flow = """version: 1
x-bus: &bus {interface: virtual, channel: les02-merge}
nodes:
  sim: {type: les02_sim, <<: *bus}
  bus:
    <<: *bus
    type: can_source
    channel: explicit-wins
    wires: [dbg]
  dbg: {type: debug}
"""
    doc = load_flow_text(flow, "m.yaml", {})
    assert doc.errors == []
    compiled = compile_document(doc)
    sim, bus = compiled.nodes["sim"].config, compiled.nodes["bus"].config
    assert isinstance(sim, Les02SimConfig) and sim.channel == "les02-merge"
    assert isinstance(bus, CanSourceConfig) and bus.channel == "explicit-wins"
    (err,) = errors_of(flow.replace("<<: *bus}", "<<: 3}"))
    assert "'<<' (merge key) takes a mapping" in err


def test_set_takes_yaml_flow_values(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(DEFAULT.read_text())
    flow = compile_file(path, ["sim.floors_mm=[0, 3000, 6500.5]", "rides.wires=[ws]"])
    sim = flow.nodes["sim"].config
    assert isinstance(sim, Les02SimConfig) and list(sim.floors_mm) == [0, 3000, 6500.5]
    assert flow.nodes["rides"].wires == {"out": ["ws"]}
    with pytest.raises(FlowErrors) as exc:
        compile_file(
            path, ["sim.floors_mm=[0, 3000", "sim.floors_mm=[!!python/object:os.system x]"]
        )
    text = str(exc.value)
    assert "--set 'sim.floors_mm=[0, 3000': invalid YAML value" in text
    assert "YAML tag 'tag:yaml.org,2002:python/object:os.system' is not allowed" in text


def test_cli_prints_located_errors_for_hostile_flows(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nnodes:\n  a: " + "[" * 1000 + "]" * 1000 + "\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    exe = Path(sys.executable).parent / "les02-flow"
    proc = subprocess.run(
        [str(exe), "validate", str(deep), str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{deep}:3:68: nested more than 64 levels deep" in proc.stderr
    assert f"{bomb}:" in proc.stderr and "more than 100000 values" in proc.stderr
