"""The ``les02-flow`` command line.

Every command lives in a module of :mod:`les02_flow.commands` with a ``register(subparsers)``
function and an ``ORDER`` number (the order of ``--help``); they build their options from
:mod:`les02_flow.cliargs`. Adding a command is adding a module there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .clilog import CliLog, flush_logs
from .registry import RegistryError

__all__ = ["build_parser", "main", "quiet_closed_pipes"]


def _command_modules() -> list[Any]:
    from . import commands

    found = [
        importlib.import_module(info.name)
        for info in pkgutil.iter_modules(commands.__path__, commands.__name__ + ".")
    ]
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


EPILOG = """\
examples:
  les02-flow run flows/default.yaml                      serve the simulated LES02 on ws://localhost:8765
  les02-flow run flows/default.yaml --set ws.port=9000   override one node's config
  les02-flow validate flows/*.yaml                       check flows, every error with FILE:LINE:COL
  les02-flow graph flows/default.yaml --format dot       draw the pipeline
  les02-flow nodes ws_sink                               document one node type
  les02-flow tap --types position_sample                 print the live event stream
  les02-flow sim --interface socketcan --channel vcan0   put simulated LES02 traffic on a bus
  les02-flow run flows/default.yaml --watch              re-deploy live when the file changes
  les02-flow record s.log -i socketcan -c can0           record a bus (candump -L format)
  les02-flow replay s.log --flow flows/default.yaml      run a recording through a flow
  les02-flow test flows/                                 run the flow tests (*_test.yaml)
  les02-flow canlogger -i socketcan -c can0              serve a bus to CANcorder (ECUconnect)
  les02-flow rides data/rides.sqlite --since 2h          list detected rides
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="les02-flow",
        description="Run YAML flows of reactive nodes over CAN bus data (LES02 elevator, "
        "ECUconnect).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"les02-flow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = CliLog(getattr(args, "log_level", None) or "INFO", getattr(args, "log_file", None))
    output.install()  # the run's one process-wide logging change; closed below
    try:
        code: int = args.func(args)
    except RegistryError as exc:
        flush_logs()
        print(f"les02-flow: node registry: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        flush_logs()
        print(f"les02-flow: {exc}", file=sys.stderr)
        return 1
    finally:
        output.close()
        quiet_closed_pipes()
    return code


def quiet_closed_pipes() -> None:
    """When the reader of stdout or stderr went away (``les02-flow replay x.log | head``),
    point that descriptor at /dev/null so Python's flush at exit says no "Broken pipe" (the
    recipe of the :mod:`signal` docs). A process-wide change, so it is made here, at the end
    of the command line's run, and not by the node that noticed the closed pipe (``debug``).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
        except (OSError, ValueError):  # closed: nothing more can be written anyway
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
