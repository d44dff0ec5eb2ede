"""Benchmarks for les02-flow (``make bench``); results are appended to ``bench/RESULTS.md``."""

import os

# flows/default.yaml's web console would take the fixed port 1880; benchmarks run it on a free one
os.environ.setdefault("LES02_CONSOLE_PORT", "0")


def py_spy() -> str:
    """The py-spy executable for ``--profile`` (the ``profile`` extra: ``.venv/bin/pip install
    -e '.[profile]'``); exits with that hint when it is not installed."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit(
            "--profile needs py-spy: .venv/bin/pip install -e '.[profile]' (or pip install py-spy)"
        )
    return found
