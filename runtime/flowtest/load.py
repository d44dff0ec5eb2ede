"""Finding and reading test files: YAML with locations, validated by :mod:`.model`.

Every problem is a :class:`~les02_flow.flowfile.FlowError` at ``FILE:LINE:COL``, collected
(never raised one at a time), so a test file is reported like a flow file.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from les02_flow.flowfile import FlowDocument, FlowError, Location, load_flow

from .model import (
    CountBound,
    Expectation,
    FlowTest,
    InlineFrame,
    Target,
    TestFile,
    TestInput,
)

__all__ = [
    "LoadedTestFile",
    "find_test_files",
    "is_test_file",
    "is_test_file_name",
    "load_test_file",
    "locate",
]

Path_ = tuple[str | int, ...]

#: test files in a directory: NAME_test.yaml / NAME_test.yml
SUFFIXES = ("_test.yaml", "_test.yml")


def _known_keys(models: Iterable[type[BaseModel]]) -> list[str]:
    keys: set[str] = {"field", "op", "value"}
    for m in models:
        for name, info in m.model_fields.items():
            keys.add(info.alias or name)
    return sorted(keys)


KNOWN_KEYS = _known_keys(
    [TestFile, FlowTest, TestInput, Target, Expectation, CountBound, InlineFrame]
)


@dataclass
class LoadedTestFile:
    """A test file read and validated; ``model`` is None when it has errors.

    ``tests`` holds the tests that are valid on their own, by their index in the file, so
    that their errors against the flow can be reported together with the others.
    """

    path: str
    doc: FlowDocument
    model: TestFile | None
    flow_path: str | None
    errors: list[FlowError] = field(default_factory=list)
    tests: dict[int, FlowTest] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).parent

    def where(self, path: Path_, key: bool = False) -> Location:
        return self.doc.where(path, key=key)

    def test_path(self, index: int) -> Path_:
        return ("tests", index)


def is_test_file_name(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


def find_test_files(paths: Sequence[str]) -> tuple[list[str], list[FlowError]]:
    """Test files named by ``paths``: a test file itself, a flow (its ``NAME_test.yaml``), or a
    directory (every ``*_test.yaml``/``*_test.yml`` below it, sorted)."""
    found: list[str] = []
    errors: list[FlowError] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(_walk(p))
            if not files:
                errors.append(
                    FlowError(Location(raw), "no test files (*_test.yaml) in this directory")
                )
            found.extend(str(f) for f in files)
        elif not p.exists():
            errors.append(FlowError(Location(raw), "no such file or directory"))
        elif is_test_file_name(p) or _has_tests_key(p):
            found.append(raw)
        else:
            beside = [p.with_name(p.stem + s) for s in SUFFIXES]
            hit = next((b for b in beside if b.is_file()), None)
            if hit is None:
                errors.append(
                    FlowError(
                        Location(raw),
                        f"not a test file, and there is no {beside[0].name} beside it "
                        "(a test file has a top-level 'tests' list)",
                    )
                )
            else:
                found.append(str(hit))
    unique: list[str] = []
    for f in found:
        if f not in unique:
            unique.append(f)
    return unique, errors


def _walk(top: Path) -> list[Path]:
    """``*_test.yaml`` files below ``top``; hidden directories (``.venv``, ``.git``) and
    caches are not searched."""
    out: list[Path] = []
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP]
        out.extend(Path(root) / f for f in files if f.endswith(SUFFIXES))
    return out


_SKIP = frozenset({"node_modules", "__pycache__", "build"})


def _has_tests_key(path: Path) -> bool:
    doc = load_flow(path, env={})
    return isinstance(doc.data, dict) and "tests" in doc.data and "nodes" not in doc.data


def is_test_file(path: str) -> bool:
    """A flow test file: named ``*_test.yaml`` or a mapping with ``tests`` and no ``nodes``."""
    p = Path(path)
    return p.is_file() and (is_test_file_name(p) or _has_tests_key(p))


def yaml_path(doc: FlowDocument, base: Path_, loc: Sequence[Any]) -> Path_:
    """The YAML path of a pydantic error location below ``base``: steps the YAML does not
    have (a union member, the list a single mapping was wrapped in) are skipped."""
    path: Path_ = tuple(base)
    for step in loc:
        candidate = (*path, step)
        if candidate in doc.values or candidate in doc.keys:
            path = candidate
    return path


def locate(doc: FlowDocument, base: Path_, loc: Sequence[Any], key: bool = False) -> Location:
    """The position of the closest value (or key) of a pydantic error location."""
    path = yaml_path(doc, base, loc)
    return doc.where(path, key=key and path != tuple(base))


def _message(err: Any, known: Sequence[str], dotted: str) -> tuple[str, bool]:
    """A readable message for one pydantic error, and whether it is about a key."""
    kind = err["type"]
    loc = [s for s in err["loc"] if isinstance(s, str)]
    name = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{name}'{hint}", True
    if kind == "missing":
        return f"missing required key '{name}'", False
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    given = err.get("input")
    if kind in ("value_error", "assertion_error"):
        return (f"'{dotted}': {msg}" if dotted else msg), False
    shown = repr(given)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return (f"'{dotted}': {msg} (got {shown})" if dotted else f"{msg} (got {shown})"), False


def validation_errors(
    doc: FlowDocument, base: Path_, exc: ValidationError, prefix: str = ""
) -> list[FlowError]:
    out: list[FlowError] = []
    for err in exc.errors():
        path = yaml_path(doc, base, err["loc"])
        dotted = ".".join(str(s) for s in path[len(base) :])
        msg, about_key = _message(err, KNOWN_KEYS, dotted)
        if err["type"] == "missing":
            where = locate(doc, base, err["loc"][:-1])
        else:
            where = doc.where(path, key=about_key and path != tuple(base))
        out.append(FlowError(where, prefix + msg))
    return out


def load_test_file(path: str) -> LoadedTestFile:
    """Read and validate one test file; problems land in ``errors`` (never raised)."""
    doc = load_flow(path)
    loaded = LoadedTestFile(path=path, doc=doc, model=None, flow_path=None)
    errors = loaded.errors
    errors.extend(doc.errors)
    data = doc.data
    if errors:
        return loaded
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        errors.append(
            FlowError(
                doc.where(()),
                "a test file must be a mapping with a 'tests' list "
                "(see docs/testing-flows.md, les02-flow schema --tests)",
            )
        )
        return loaded
    # Each test is validated on its own, so one bad test does not hide the errors of others
    # and every message names its test.
    tests_ok: list[FlowTest] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(data["tests"]):
        base: Path_ = ("tests", i)
        label = raw.get("name") if isinstance(raw, dict) else None
        prefix = f"test '{label}': " if isinstance(label, str) and label else f"test {i + 1}: "
        try:
            test = FlowTest.model_validate(raw)
        except ValidationError as exc:
            errors.extend(validation_errors(doc, base, exc, prefix))
            continue
        if test.name in names:
            errors.append(
                FlowError(
                    doc.where((*base, "name")),
                    f"{prefix}duplicate test name (first at line "
                    f"{doc.where(('tests', names[test.name], 'name')).line})",
                )
            )
        names.setdefault(test.name, i)
        tests_ok.append(test)
        loaded.tests[i] = test
    head = {k: v for k, v in data.items() if k != "tests"}
    if not data["tests"]:
        errors.append(FlowError(doc.where(("tests",)), "'tests' is empty: add at least one test"))
    # the other top-level keys, checked with stand-ins when every test had errors
    stand_in = tests_ok or [FlowTest.model_construct()]
    model: TestFile | None = None
    try:
        model = TestFile.model_validate({**head, "tests": stand_in})
    except ValidationError as exc:
        errors.extend(validation_errors(doc, (), exc))
    if model is None:
        return loaded
    if not errors:
        loaded.model = model
    flow = model.flow
    if flow is None:
        p = Path(path)
        stem = p.name
        for suffix in SUFFIXES:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        else:
            errors.append(
                FlowError(
                    doc.where(()),
                    "no 'flow:' and the file is not named NAME_test.yaml beside NAME.yaml: "
                    "say which flow it tests with flow: PATH",
                )
            )
            return loaded
        candidates = [p.with_name(stem + ext) for ext in (".yaml", ".yml")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            errors.append(
                FlowError(
                    doc.where(()),
                    f"no flow {candidates[0].name} beside this test file "
                    "(or say which flow it tests with flow: PATH)",
                )
            )
            return loaded
        loaded.flow_path = str(hit)
    else:
        target = Path(path).parent / flow
        if not target.is_file():
            errors.append(
                FlowError(doc.where(("flow",)), f"flow file '{flow}' not found ({target})")
            )
            return loaded
        loaded.flow_path = str(target)
    return loaded
