"""The public API is exactly what les02_flow.__all__ lists, and the install layout is namespaced."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import tomllib
from pathlib import Path

import les02_flow
from les02_flow import events

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "ENTRY_POINT_GROUP",
    "CompiledFlow",
    "CompiledNode",
    "Context",
    "Counters",
    "Engine",
    "FlowDocument",
    "FlowError",
    "FlowErrors",
    "Kind",
    "Location",
    "Node",
    "NodeConfig",
    "NodeStartError",
    "Registry",
    "RegistryError",
    "__version__",
    "compile_document",
    "compile_file",
    "default_registry",
    "load_flow",
    "load_flow_text",
    # les02_flow.events: Event, make_event, encode_event, PROTO_VERSION, KNOWN_TYPES and the
    # typed events (one envelope and one payload TypedDict per type)
    *events.__all__,
}


def test_public_api_is_exactly_all() -> None:
    assert set(les02_flow.__all__) == EXPECTED
    for name in les02_flow.__all__:
        assert hasattr(les02_flow, name), name
    public = {n for n in vars(les02_flow) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(les02_flow, n)).__name__ == "module"}
    assert public - modules - {"annotations"} == EXPECTED - {"__version__"}


def test_version_matches_distribution() -> None:
    assert les02_flow.__version__ == importlib.metadata.version("les02-flow")


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, top in config["package-dir"].items():  # runtime, nodes, flows
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    # data-only packages (the web console's page): listed, with package data, no Python
    data = {name for name in config["package-data"] if name not in found}
    assert data <= listed, f"package data of unlisted packages: {data - listed}"
    assert found | data == listed, f"pyproject packages differ: missing {found - listed}"
    for name in listed - data:
        importlib.import_module(name)


def test_nothing_named_runtime_or_nodes_is_installed() -> None:
    dist = importlib.metadata.distribution("les02-flow")
    top = (dist.read_text("top_level.txt") or "").split()
    assert "runtime" not in top and "nodes" not in top
    for mod in ("runtime", "nodes"):
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        assert spec is None or str(ROOT) not in str(spec.origin or spec.submodule_search_locations)
