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

#: Limits of a flow file (docs/flows.md, "Limits"). A flow is a small hand-written file; these
#: bounds keep a hostile or broken one (an alias bomb, a 50 MB file, 10,000 levels of
#: nesting) from taking seconds of CPU, gigabytes of memory or the interpreter's stack.
MAX_FLOW_BYTES = 1024 * 1024
#: deepest nesting of mappings/sequences
MAX_DEPTH = 64
#: aliases (``*name``) in one file
MAX_ALIASES = 1000
#: values (scalars, mappings, sequences) after expanding aliases and merge keys
MAX_VALUES = 100_000
#: ``${...}`` nested inside a default or message
MAX_SUBSTITUTION_DEPTH = 8
#: digits of an integer (Python's own limit for str -> int is 4300)
MAX_INT_DIGITS = 4300
MERGE_TAG = "tag:yaml.org,2002:merge"


class _LimitExceeded(Exception):
    """A flow file limit was exceeded at ``mark`` (a YAML mark)."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader whose composer counts nesting depth and aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def _mark(self) -> Any:
        return self.peek_event().start_mark  # type: ignore[no-untyped-call]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitExceeded(
                    self._mark(),
                    f"more than {MAX_ALIASES} YAML aliases in one flow (an alias bomb?)",
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitExceeded(
                    self._mark(),
                    f"nested more than {MAX_DEPTH} levels deep",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str) -> Node | None:
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


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


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMS = "use ${VAR}, ${VAR:-default} or ${VAR:?message} (and $${ for a literal ${)"


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``; ``$${`` is a literal ``${``.

    Defaults and messages may themselves contain ``${...}`` (``${A:-${B:-b}}``), expanded
    only when used, nested at most :data:`MAX_SUBSTITUTION_DEPTH` deep. The value of a
    variable is never expanded again. Anything else that starts with ``${`` (an unterminated
    reference, a bad name, a shell form like ``${A-x}``) is an error, never kept literally.
    Returns the text and the problems found.

    >>> substitute("${A}-${B:-b}-$${C}", {"A": "a"})
    ('a-b-${C}', [])
    >>> substitute("${A:-${B:-${C}}}", {"C": "c"})
    ('c', [])
    >>> substitute("${NOPE}", {})[1]
    ["environment variable 'NOPE' is not set (use ${NOPE:-default} for a default)"]
    >>> substitute("${X:?set ${Y:-it}}", {})[1]
    ["environment variable 'X' is not set: set it"]
    """
    problems: list[str] = []
    out, _ = _expand(text, 0, env, problems, 0, top=True)
    return out, problems


def _expand(
    text: str, pos: int, env: Mapping[str, str], problems: list[str], depth: int, *, top: bool
) -> tuple[str, int]:
    """Expand from ``pos`` up to the end (``top``) or to the ``}`` closing an argument;
    returns the text and the position after it (after the ``}`` for an argument)."""
    parts: list[str] = []
    n = len(text)
    start = pos
    while pos < n:
        c = text[pos]
        if c == "$" and text.startswith("$${", pos):
            parts.append(text[start:pos] + "${")
            pos += 3
            start = pos
        elif c == "$" and text.startswith("${", pos):
            parts.append(text[start:pos])
            value, pos = _reference(text, pos, env, problems, depth)
            parts.append(value)
            start = pos
        elif c == "}" and not top:
            parts.append(text[start:pos])
            return "".join(parts), pos + 1
        else:
            pos += 1
    if not top:
        raise _Unterminated
    parts.append(text[start:])
    return "".join(parts), n


class _Unterminated(Exception):
    pass


def _reference(
    text: str, pos: int, env: Mapping[str, str], problems: list[str], depth: int
) -> tuple[str, int]:
    """One ``${...}`` at ``pos``; returns its value and the position after it."""
    m = _NAME.match(text, pos + 2)
    end = text.find("}", pos)
    if m is None:
        shown = text[pos : end + 1] if end >= 0 else text[pos : pos + 20]
        problems.append(f"invalid variable reference {shown!r}: {_FORMS}")
        return "", (end + 1 if end >= 0 else len(text))
    name = m.group(0)
    after = m.end()
    value = env.get(name)
    if text.startswith("}", after):
        if value is None:
            problems.append(
                f"environment variable '{name}' is not set (use ${{{name}:-default}} for a default)"
            )
            return "", after + 1
        return value, after + 1
    op = text[after : after + 2]
    if end < 0:
        problems.append(f"unterminated '{text[pos : pos + 20]}': missing '}}' ({_FORMS})")
        return "", len(text)
    if op not in (":-", ":?"):
        shown = text[pos : end + 1] if end >= 0 else text[pos:]
        problems.append(f"unsupported variable form {shown!r}: {_FORMS}")
        return "", (end + 1 if end >= 0 else len(text))
    if depth >= MAX_SUBSTITUTION_DEPTH:
        problems.append(f"variables nested more than {MAX_SUBSTITUTION_DEPTH} levels deep")
        return "", len(text)
    used = not value  # unset or empty: the default / the message is needed
    inner: list[str] = []
    try:
        arg, nxt = _expand(text, after + 2, env, inner, depth + 1, top=False)
    except _Unterminated:
        problems.append(f"unterminated '${{{name}{op}...': missing '}}' ({_FORMS})")
        return "", len(text)
    if op == ":-":
        if used:
            problems.extend(inner)
            return arg, nxt
        return value or "", nxt
    if used:
        problems.extend(inner)
        problems.append(f"environment variable '{name}' is not set: {arg or 'required'}")
        return "", nxt
    return value or "", nxt


def _loc(doc: FlowDocument, node: Node) -> Location:
    mark = node.start_mark
    return Location(doc.path, mark.line + 1, mark.column + 1)


def _resolve_plain(text: str) -> Any:
    """Type a plain scalar produced by substitution the way YAML would have (8765 -> int)."""
    if len(text) > MAX_INT_DIGITS and text.strip().lstrip("+-").isdigit():
        return text  # too many digits to be a number: a string (validation says so)
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):
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
        #: values built so far (aliases and merge keys count each time they are expanded)
        self.count = 0
        #: expand ${...} in scalars (not for --set values: the shell did that)
        self.substitute = True

    def build(self, node: Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _LimitExceeded(
                node.start_mark,
                f"the flow expands to more than {MAX_VALUES} values "
                "(YAML aliases or merge keys repeating large parts?)",
            )
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
            pairs = [(k, v) for k, v in node.value if not _is_merge(k)]
            merges = [v for k, v in node.value if _is_merge(k)]
            if merges:
                out = self._merged(node, merges, path)
            for key_node, value_node in pairs:
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

    def _merged(self, node: MappingNode, merges: list[Node], path: Path_) -> dict[Any, Any]:
        """The keys ``<<: *base`` (or ``<<: [*a, *b]``) brings in: explicit keys of the
        mapping override them, and of a list the earlier mappings win (YAML merge key)."""
        sources: list[Node] = []
        for m in merges:
            sources.extend(m.value if isinstance(m, SequenceNode) else [m])
        out: dict[Any, Any] = {}
        here = self.doc.values.get(path)
        for src in reversed(sources):
            if not isinstance(src, MappingNode):
                self.doc.errors.append(
                    FlowError(
                        _loc(self.doc, src),
                        "'<<' (merge key) takes a mapping or a list of mappings, e.g. "
                        "'<<: *defaults'",
                        _node_of(path),
                    )
                )
                continue
            value = self.build(src, path)
            if isinstance(value, dict):
                out.update(value)
        if here is not None:
            self.doc.values[path] = here
        return out

    def _build_scalar(self, node: Node, path: Path_) -> Any:
        assert isinstance(node, ScalarNode)
        if (
            node.tag == "tag:yaml.org,2002:int"
            and len(node.value) > MAX_INT_DIGITS
            and node.value.lstrip("+-").isdigit()
        ):
            self.doc.errors.append(
                FlowError(
                    _loc(self.doc, node),
                    f"integer with {len(node.value)} digits (at most {MAX_INT_DIGITS})",
                    _node_of(path),
                )
            )
            self.doc.poisoned.add(path)
            return None
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:  # e.g. !!int abc
            problem = getattr(exc, "problem", None) or str(exc)
            self.doc.errors.append(
                FlowError(_loc(self.doc, node), f"invalid YAML value: {problem}", _node_of(path))
            )
            self.doc.poisoned.add(path)
            return None
        if isinstance(value, str) and "$" in value and self.substitute:
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


def _is_merge(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == MERGE_TAG


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
    size = len(text.encode("utf-8", "replace")) if len(text) * 4 > MAX_FLOW_BYTES else 0
    if size > MAX_FLOW_BYTES:
        doc.errors.append(
            FlowError(
                Location(path, 1, 1),
                f"the flow file is {size:,} bytes; the limit is {MAX_FLOW_BYTES:,} bytes",
            )
        )
        return doc
    try:
        root = _compose(text)
    except _LimitExceeded as exc:
        doc.errors.append(FlowError(_mark_loc(path, exc.mark), exc.message))
        return doc
    except RecursionError:  # not reached with MAX_DEPTH; never a traceback
        doc.errors.append(FlowError(Location(path, 1, 1), "the flow is nested too deeply"))
        return doc
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
    except _LimitExceeded as exc:
        doc.errors.append(FlowError(_mark_loc(path, exc.mark), exc.message))
        doc.data = None
    except yaml.YAMLError as exc:  # e.g. a bad !!tag
        doc.errors.append(FlowError(Location(path, 1, 1), f"invalid YAML: {exc}"))
    return doc


def _mark_loc(path: str, mark: Any) -> Location:
    if mark is None:
        return Location(path, 1, 1)
    return Location(path, mark.line + 1, mark.column + 1)


def load_flow(path: str | Path, env: Mapping[str, str] | None = None) -> FlowDocument:
    """Read and parse a flow file; an unreadable file is one error, not an exception."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_FLOW_BYTES:  # checked before reading: a 50 MB file is not read
                doc = FlowDocument(path=name, data=None)
                doc.errors.append(
                    FlowError(
                        Location(name, 1, 1),
                        f"the flow file is {size:,} bytes; the limit is {MAX_FLOW_BYTES:,} bytes",
                    )
                )
                return doc
            text = fh.read(MAX_FLOW_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc = FlowDocument(path=name, data=None)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        doc.errors.append(FlowError(Location(name), f"cannot read flow file: {reason}"))
        return doc
    return load_flow_text(text, name, env)


def parse_set(item: str) -> tuple[list[str], Any]:
    """Split ``node.key=value`` (or ``node.key.sub=value``); the value is typed as YAML: a
    plain scalar (``9000`` a number, ``true`` a boolean, anything else a string) or a flow
    sequence/mapping (``[0, 3000]``, ``{can_id: 0x80}``).

    >>> parse_set("ws.port=9000")
    (['ws', 'port'], 9000)
    >>> parse_set("bus.channel=can0")
    (['bus', 'channel'], 'can0')
    >>> parse_set("sim.floors_mm=[0, 3000.5]"), parse_set("rides.wires=[ws]")
    ((['sim', 'floors_mm'], [0, 3000.5]), (['rides', 'wires'], ['ws']))
    """
    target, sep, raw = item.partition("=")
    parts = target.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ValueError(f"--set {item!r}: expected NODE.KEY=VALUE, e.g. --set ws.port=9000")
    raw = raw.strip()
    if raw[:1] in ("[", "{"):
        return parts, _flow_value(item, raw)
    return parts, _resolve_plain(raw)


def _flow_value(item: str, raw: str) -> Any:
    """A ``--set`` value written as a YAML flow sequence or mapping (``[0, 3000]``,
    ``{can_id: 0x80}``), read with the flow file's rules (plain data, limits)."""
    doc = FlowDocument(path="--set", data=None)
    try:
        root = _compose(raw)
        if root is None:
            return None
        builder = _Builder(doc, {})
        builder.substitute = False  # the shell has expanded the command line already
        value = builder.build(root, ())
    except _LimitExceeded as exc:
        raise ValueError(f"--set {item!r}: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ValueError(
            f"--set {item!r}: invalid YAML value: {problem} "
            "(lists are written [a, b], mappings {key: value})"
        ) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"--set {item!r}: invalid YAML value: {exc}") from None
    if doc.errors:
        raise ValueError(f"--set {item!r}: {doc.errors[0].message}")
    return value


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
