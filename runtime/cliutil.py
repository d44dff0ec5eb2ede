"""The command line's shared pieces, by concern (kept importable from here for command
modules written against it):

* :mod:`les02_flow.cliargs` -- ``add_command``, the value parsers (``positive_float``, ...),
  ``--set`` / run / bus options, flags to overrides;
* :mod:`les02_flow.clirun` -- compiling with printed errors, running and re-deploying a flow;
* :mod:`les02_flow.clilog` -- logging from a writer thread.
"""

from __future__ import annotations

from . import cliargs, clilog, clirun
from .cliargs import *  # noqa: F403
from .clilog import *  # noqa: F403
from .clirun import *  # noqa: F403

__all__ = [*cliargs.__all__, *clilog.__all__, *clirun.__all__]
