"""Benchmarks for les02-flow (``make bench``); results are appended to ``bench/RESULTS.md``."""

import os

# flows/default.yaml's web console would take the fixed port 1880; benchmarks run it on a free one
os.environ.setdefault("LES02_CONSOLE_PORT", "0")
