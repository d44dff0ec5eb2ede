"""Suite-wide setup. flows/default.yaml's web console listens on ${LES02_CONSOLE_PORT:-1880};
tests that run the default flow (often in parallel with other test runs on this machine) get a
free port instead of the fixed 1880."""

from __future__ import annotations

import os

os.environ.setdefault("LES02_CONSOLE_PORT", "0")
