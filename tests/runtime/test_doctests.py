"""Every docstring example in the installed package runs and is right."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import les02_flow

NODES = importlib.import_module("les02_flow.nodes")
MODULES = {"les02_flow", "les02_flow.nodes"}
for path, prefix in ((les02_flow.__path__, "les02_flow."), (NODES.__path__, "les02_flow.nodes.")):
    MODULES.update(info.name for info in pkgutil.walk_packages(path, prefix))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
