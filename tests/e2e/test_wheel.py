"""A non-editable install ships the built-in flows: ``les02-flow canlogger`` and ``uds-sim``
find their flow files as package data, not next to a source checkout (issue 15 item 8); the
web console's page comes with it, and setuptools does not warn that it is absent from `packages`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_builtin_flows_and_commands_find_them(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert "absent from the `packages` configuration" not in build.stderr, build.stderr
    wheel = next(tmp_path.glob("les02_flow-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "les02_flow/flows/canlogger.yaml" in names
        assert "les02_flow/flows/uds-mock.yaml" in names
        for page in ("index.html", "app.js", "style.css", "favicon.svg"):
            assert f"les02_flow/nodes/web/static/{page}" in names
        zf.extractall(site)
    probe = (
        "from les02_flow.commands.canlogger import flow_path\n"
        "from les02_flow.commands.uds_sim import FLOW_FILE\n"
        "from les02_flow.compiler import compile_file\n"
        "for p in (flow_path(), FLOW_FILE):\n"
        "    compile_file(str(p), [])\n"
        "    print(p)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,  # not the checkout: nothing may come from ROOT/flows
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    found = run.stdout.split()
    assert len(found) == 2 and all(p.startswith(str(site)) for p in found), found
