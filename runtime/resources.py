"""Files shipped inside the package, found with :mod:`importlib.resources` so that they are
there in every kind of install (editable, wheel, system package), not only in a checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["builtin_flow"]


def builtin_flow(name: str) -> Path:
    """The path of a built-in flow (``flows/NAME`` of the source tree, installed as package
    data of ``les02_flow.flows``), e.g. ``builtin_flow("canlogger.yaml")``.

    >>> builtin_flow("canlogger.yaml").name
    'canlogger.yaml'
    """
    ref = resources.files("les02_flow.flows") / name
    path = Path(str(ref))  # plain files in every install this project supports (no zips)
    if not path.is_file():
        raise FileNotFoundError(f"built-in flow {name!r} is not installed ({path})")
    return path
