"""Reading a flow file: YAML with line/column tracking, ``${VAR}`` substitution, ``--set``.

Nothing here knows node types; :mod:`les02_flow.compiler` validates the document. Errors are
collected, never raised one at a time: :func:`load_flow` returns a :class:`FlowDocument` whose
``errors`` list the problems found while reading (YAML syntax, duplicate keys, unset
variables, bad ``--set``), each with its :class:`Location`.

Exceptions (one tree for the whole flow layer)::

    FlowError                  one problem at a location (a value, not raised alone)
    FlowErrors(Exception)      raised with every FlowError found, by load/compile callers
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "FlowDocument",
    "FlowError",
    "FlowErrors",
    "Location",
    "load_flow",
    "load_flow_text",
    "parse_set",
]

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    """Where a value came from: ``file:line:col`` (1-based), or a pseudo-file like ``--set``."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True)
class FlowError:
    """One problem, printed as ``FILE:LINE:COL: node 'ID': message``."""

    location: Location
    message: str
    node_id: str | None = None

    def __str__(self) -> str:
        where = f"node '{self.node_id}': " if self.node_id is not None else ""
        return f"{self.location}: {where}{self.message}"

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.location.file, self.location.line, self.location.col, self.message)


class FlowErrors(Exception):
    """Every error found in a flow; ``str()`` is one error per line."""

    def __init__(self, errors: Sequence[FlowError]) -> None:
        self.errors = sorted(errors, key=lambda e: e.sort_key)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass
class FlowDocument:
    """A flow file's data with the location of every value and every mapping key."""

    path: str
    data: Any
    values: dict[Path_, Location] = field(default_factory=dict)
    keys: dict[Path_, Location] = field(default_factory=dict)
    errors: list[FlowError] = field(default_factory=list)
    #: paths whose value is already known to be wrong (no follow-up errors for them)
    poisoned: set[Path_] = field(default_factory=set)

    def where(self, path: Path_, *, key: bool = False) -> Location:
        """Location of the value at ``path`` (or of its key), else of the closest parent."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), Location(self.path, 1, 1))


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``; ``$${`` is a literal ``${``.

    Returns the text and the problems found (unset variables).

    >>> substitute("${A}-${B:-b}-$${C}", {"A": "a"})
    ('a-b-${C}', [])
    >>> substitute("${NOPE}", {})[1]
    ["environment variable 'NOPE' is not set (use ${NOPE:-default} for a default)"]
    """
    problems: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op == ":-":
            return value if value else (arg or "")
        if value is None or (op == ":?" and not value):
            if op == ":?":
                problems.append(f"environment variable '{name}' is not set: {arg or 'required'}")
            else:
                problems.append(
                    f"environment variable '{name}' is not set "
                    f"(use ${{{name}:-default}} for a default)"
                )
            return ""
        return value

    return _VAR.sub(repl, text), problems


def _loc(doc: FlowDocument, node: Node) -> Location:
    mark = node.start_mark
    return Location(doc.path, mark.line + 1, mark.column + 1)


def _resolve_plain(text: str) -> Any:
    """Type a plain scalar produced by substitution the way YAML would have (8765 -> int)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text


#: the only YAML tags a flow may use (explicitly or implicitly): plain data, never objects
SAFE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq", "merge")
)


class _Builder:
    def __init__(self, doc: FlowDocument, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.env = env
        self.constructor = SafeConstructor()
        #: collections being built (an alias to one of them is a cycle)
        self._active: set[int] = set()

    def build(self, node: Node, path: Path_) -> Any:
        self.doc.values[path] = _loc(self.doc, node)
        if not self._tag_ok(node, path):
            return None
        if isinstance(node, (MappingNode, SequenceNode)):
            if id(node) in self._active:  # e.g. `&a [*a]`: an alias inside itself
                self.doc.errors.append(
                    FlowError(_loc(self.doc, node), "recursive YAML alias", _node_of(path))
                )
                self.doc.poisoned.add(path)
                return None
            self._active.add(id(node))
            try:
                return self._build_collection(node, path)
            finally:
                self._active.discard(id(node))
        return self._build_scalar(node, path)

    def _build_collection(self, node: MappingNode | SequenceNode, path: Path_) -> Any:
        if isinstance(node, MappingNode):
            out: dict[Any, Any] = {}
            first: dict[Any, Location] = {}
            for key_node, value_node in node.value:
                key = self.build_key(key_node, path)
                key_loc = _loc(self.doc, key_node)
                if key in first:
                    what = "node id" if path == ("nodes",) else "key"
                    self.doc.errors.append(
                        FlowError(
                            key_loc,
                            f"duplicate {what} '{key}' (first defined at line {first[key].line})",
                            node_id=str(key) if path == ("nodes",) else None,
                        )
                    )
                    continue
                first[key] = key_loc
                self.doc.keys[(*path, key)] = key_loc
                out[key] = self.build(value_node, (*path, key))
            return out
        return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]

    def _build_scalar(self, node: Node, path: Path_) -> Any:
        assert isinstance(node, ScalarNode)
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:  # e.g. !!int abc
            problem = getattr(exc, "problem", None) or str(exc)
            self.doc.errors.append(
                FlowError(_loc(self.doc, node), f"invalid YAML value: {problem}", _node_of(path))
            )
            self.doc.poisoned.add(path)
            return None
        if isinstance(value, str) and "$" in value:
            text, problems = substitute(value, self.env)
            for p in problems:
                self.doc.errors.append(FlowError(_loc(self.doc, node), p, _node_of(path)))
                self.doc.poisoned.add(path)
            if text != value:
                return _resolve_plain(text) if node.style is None else text
        return value

    def _tag_ok(self, node: Node, path: Path_) -> bool:
        """Reject every tag but plain data (``!!python/object``, ``!custom``...), located."""
        if node.tag in SAFE_TAGS:
            return True
        self.doc.errors.append(
            FlowError(
                _loc(self.doc, node),
                f"YAML tag '{node.tag}' is not allowed: a flow file is plain data "
                "(no objects, no code; node types come from the registry)",
                _node_of(path),
            )
        )
        self.doc.poisoned.add(path)
        return False

    def build_key(self, node: Node, path: Path_) -> Any:
        if not isinstance(node, ScalarNode):
            self.doc.errors.append(FlowError(_loc(self.doc, node), "mapping keys must be scalars"))
            return f"<complex key at line {node.start_mark.line + 1}>"
        if not self._tag_ok(node, path):
            return f"<tagged key at line {node.start_mark.line + 1}>"
        key = self.constructor.construct_object(node)
        return key if isinstance(key, (str, int, float, bool)) else str(key)


def _node_of(path: Path_) -> str | None:
    if len(path) >= 2 and path[0] == "nodes":
        return str(path[1])
    return None


def load_flow_text(
    text: str, path: str = "<flow>", env: Mapping[str, str] | None = None
) -> FlowDocument:
    """Parse flow YAML text; never raises for bad input (problems land in ``errors``)."""
    doc = FlowDocument(path=path, data=None)
    env = os.environ if env is None else env
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path, 1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        doc.errors.append(FlowError(loc, f"invalid YAML: {problem}"))
        return doc
    except yaml.YAMLError as exc:
        doc.errors.append(FlowError(Location(path, 1, 1), f"invalid YAML: {exc}"))
        return doc
    if root is None:
        doc.values[()] = Location(path, 1, 1)
        doc.data = None
        return doc
    try:
        doc.data = _Builder(doc, env).build(root, ())
    except yaml.YAMLError as exc:  # e.g. a bad !!tag
        doc.errors.append(FlowError(Location(path, 1, 1), f"invalid YAML: {exc}"))
    return doc


def load_flow(path: str | Path, env: Mapping[str, str] | None = None) -> FlowDocument:
    """Read and parse a flow file; an unreadable file is one error, not an exception."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc = FlowDocument(path=name, data=None)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        doc.errors.append(FlowError(Location(name), f"cannot read flow file: {reason}"))
        return doc
    return load_flow_text(text, name, env)


def parse_set(item: str) -> tuple[list[str], Any]:
    """Split ``node.key=value`` (or ``node.key.sub=value``); the value is typed as YAML.

    >>> parse_set("ws.port=9000")
    (['ws', 'port'], 9000)
    >>> parse_set("bus.channel=can0")
    (['bus', 'channel'], 'can0')
    """
    target, sep, raw = item.partition("=")
    parts = target.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ValueError(f"--set {item!r}: expected NODE.KEY=VALUE, e.g. --set ws.port=9000")
    return parts, _resolve_plain(raw.strip())


def apply_sets(doc: FlowDocument, sets: Sequence[str]) -> None:
    """Apply ``--set`` overrides to the document; problems are added to ``doc.errors``."""
    for item in sets:
        loc = Location(f"--set {item}")
        try:
            parts, value = parse_set(item)
        except ValueError as exc:
            doc.errors.append(FlowError(loc, str(exc)))
            continue
        nodes = doc.data.get("nodes") if isinstance(doc.data, dict) else None
        if not isinstance(nodes, dict) or parts[0] not in nodes:
            known = ", ".join(map(str, nodes)) if isinstance(nodes, dict) else "none"
            doc.errors.append(
                FlowError(loc, f"no node '{parts[0]}' in the flow (nodes: {known})", parts[0])
            )
            continue
        target: Any = nodes[parts[0]]
        path: Path_ = ("nodes", parts[0])
        for key in parts[1:-1]:
            if not isinstance(target, dict):
                break
            target = target.setdefault(key, {})
            path = (*path, key)
        if not isinstance(target, dict):
            doc.errors.append(FlowError(loc, f"cannot set '{'.'.join(parts)}'", parts[0]))
            continue
        target[parts[-1]] = value
        path = (*path, parts[-1])
        doc.values[path] = loc
        doc.keys[path] = loc
