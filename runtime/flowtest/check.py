"""Checking expectations against captured messages, and saying clearly what is wrong.

Each failed check is a :class:`Failure`: a one-line message and detail lines that show the
messages involved (message numbers are 1-based positions in what the port carried), which
condition did not hold and what the field's value was, and for golden files the first
differences field by field.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from les02_flow.conditions import MISSING, Condition, all_of
from les02_flow.flowfile import Location

from .golden import (
    brief,
    event_differences,
    frame_differences,
    message_key,
    read_golden,
    show,
    summarize,
    write_golden,
)
from .model import Expectation
from .plan import Probe

__all__ = ["Failure", "check_expectation", "describe_match"]

#: differences / messages shown per failure before "... N more"
SHOW = 3


@dataclass
class Failure:
    """One check that did not hold."""

    location: Location  #: the expectation in the test file
    probe: Probe
    check: str  #: count, every, contains, ordered, none_of, equals_file
    message: str
    details: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    failures: list[Failure] = field(default_factory=list)
    #: golden files written by --update, with their message counts
    updated: list[tuple[Path, int]] = field(default_factory=list)


Numbered = list[tuple[int, Any]]


def describe_match(conds: Sequence[Condition]) -> str:
    """``'ride_end'`` for a type match, else ``payload.direction eq 'up' and ...``."""
    if not conds:
        return "any message"
    if len(conds) == 1 and conds[0].field == "type" and conds[0].op == "eq":
        return repr(conds[0].value)
    return " and ".join(c.describe() for c in conds)


def _value(v: Any) -> str:
    if v is MISSING:
        return "missing"
    if isinstance(v, bytes | bytearray):
        return bytes(v).hex().upper()
    try:
        text = json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(conds: Sequence[Condition], message: Any) -> list[str]:
    """The conditions ``message`` fails, each with the value it has."""
    out = []
    for c in conds:
        if not c.compile()(message):
            out.append(
                f"{c.field} is {_value(c.resolve(message))}, wanted {c.op} {_value(c.value)}"
            )
    return out


def _at(n: int, message: Any) -> str:
    return f"#{n + 1}: {brief(message)}"


def _ref(n: int, message: Any) -> str:
    """``#12 (ride_end, ts 1767225608.132)``: which message, briefly."""
    if isinstance(message, dict) and "type" in message:
        return f"#{n + 1} ({message['type']}, ts {message.get('ts')!r})"
    return f"#{n + 1} ({show(message, 80)})"


def _selection(exp: Expectation) -> tuple[str, Callable[[Any], bool]]:
    preds: list[Callable[[Any], bool]] = []
    words: list[str] = []
    if exp.type is not None:
        wanted = frozenset(exp.type)
        preds.append(lambda m: isinstance(m, dict) and m.get("type") in wanted)
        words.append(" or ".join(repr(t) for t in exp.type))
    if exp.where:
        preds.append(all_of(exp.where))
        words.append(f"where {describe_match(exp.where)}")
    if not preds:
        return "", lambda m: True
    return " ".join(words), (lambda m: all(p(m) for p in preds))


def check_expectation(
    exp: Expectation,
    probe: Probe,
    messages: Sequence[Any],
    where: Callable[[str, int | None], Location],
    base_dir: Path,
    *,
    update: bool = False,
) -> Outcome:
    """Every check of ``exp`` on the messages the probe captured."""
    out = Outcome()
    what, select = _selection(exp)
    chosen: Numbered = [(i, m) for i, m in enumerate(messages) if select(m)]
    noun = f"{what} message" if what else "message"

    def fail(check: str, message: str, details: list[str], entry: int | None = None) -> None:
        out.failures.append(Failure(where(check, entry), probe, check, message, details))

    def context() -> list[str]:
        verb = "received" if probe.port is None else "carried"
        return [f"{probe.label()} {verb} {len(messages):,} message(s); {summarize(messages)}"]

    if exp.count is not None and not exp.count.accepts(len(chosen)):
        details = context()
        if chosen:
            first = "" if len(chosen) <= SHOW else f" (the first {SHOW})"
            details.append(f"the {len(chosen)} selected{first}:")
            details.extend("  " + _at(i, m) for i, m in chosen[:SHOW])
        fail(
            "count", f"count: expected {exp.count.describe()} {noun}(s), got {len(chosen)}", details
        )

    if exp.every is not None:
        preds = all_of(exp.every)
        bad = [(i, m) for i, m in chosen if not preds(m)]
        if bad:
            details = [f"{len(bad)} of {len(chosen)} selected message(s) fail; the first:"]
            for i, m in bad[:SHOW]:
                details.append("  " + _at(i, m))
                details.extend("      " + why for why in explain(exp.every, m))
            if len(bad) > SHOW:
                details.append(f"  ... {len(bad) - SHOW} more")
            fail("every", f"every {noun} must match {describe_match(exp.every)}", details)

    for k, conds in enumerate(exp.contains):
        pred = all_of(conds)
        if not any(pred(m) for _, m in chosen):
            details = context()
            near = _closest(conds, chosen)
            if near is not None:
                i, m, why = near
                details.append(f"closest: {_at(i, m)}")
                details.extend("    " + w for w in why)
            fail(
                "contains",
                f"contains[{k + 1}]: no {noun} matches {describe_match(conds)}",
                details,
                k,
            )

    if exp.ordered:
        _check_ordered(exp.ordered, chosen, noun, fail)

    for k, conds in enumerate(exp.none_of):
        pred = all_of(conds)
        hits = [(i, m) for i, m in chosen if pred(m)]
        if hits:
            details = [_at(i, m) for i, m in hits[:SHOW]]
            if len(hits) > SHOW:
                details.append(f"... {len(hits) - SHOW} more")
            fail(
                "none_of",
                f"none_of[{k + 1}]: {len(hits)} {noun}(s) match {describe_match(conds)}",
                details,
                k,
            )

    if exp.equals_file is not None:
        path = base_dir / exp.equals_file
        actual = [m for _, m in chosen]
        if update:
            try:
                golden_now, _ = read_golden(path) if path.is_file() else ([], [])
                same = path.is_file() and [message_key(m) for m in golden_now] == [
                    message_key(m) for m in actual
                ]
            except (OSError, ValueError):
                same = False
            if not same:
                write_golden(path, actual)
                out.updated.append((path, len(actual)))
        else:
            _check_golden(path, exp.equals_file, chosen, fail)
    return out


def _closest(conds: Sequence[Condition], chosen: Numbered) -> tuple[int, Any, list[str]] | None:
    """The message that fails the fewest of ``conds`` (at least one must hold)."""
    if len(conds) < 2:
        return None
    best: tuple[int, Any, list[str]] | None = None
    for i, m in chosen:
        why = explain(conds, m)
        if len(why) < len(conds) and (best is None or len(why) < len(best[2])):
            best = (i, m, why)
            if len(why) == 1:
                break
    return best


def _check_ordered(
    entries: Sequence[Sequence[Condition]],
    chosen: Numbered,
    noun: str,
    fail: Callable[..., None],
) -> None:
    preds = [all_of(c) for c in entries]
    found: list[tuple[int, Any]] = []
    pos = 0
    for k, pred in enumerate(preds):
        hit = next(((j, i, m) for j, (i, m) in enumerate(chosen[pos:], pos) if pred(m)), None)
        if hit is None:
            details = []
            for n, (i, m) in enumerate(found):
                details.append(f"entry {n + 1} ({describe_match(entries[n])}) matched {_ref(i, m)}")
            after = f" after message #{found[-1][0] + 1}" if found else ""
            earlier = next(((i, m) for i, m in chosen[:pos] if pred(m)), None)
            if earlier is not None:
                details.append(f"it does occur earlier (out of order): {_ref(*earlier)}")
            else:
                details.append(f"no {noun} matches it at all")
            fail(
                "ordered",
                f"ordered: entry {k + 1} of {len(entries)} ({describe_match(entries[k])}) not "
                f"found{after}",
                details,
                k,
            )
            return
        j, i, m = hit
        found.append((i, m))
        pos = j + 1


def _check_golden(
    path: Path,
    name: str,
    chosen: Numbered,
    fail: Callable[..., None],
) -> None:
    if not path.is_file():
        fail(
            "equals_file",
            f"equals_file: golden file {name} does not exist",
            [f"the output has {len(chosen):,} message(s); run with --update to write it"],
        )
        return
    try:
        golden, problems = read_golden(path)
    except (OSError, ValueError) as exc:
        fail("equals_file", f"equals_file: cannot read {name}: {exc}", [])
        return
    actual = [m for _, m in chosen]
    a_keys = [message_key(m) for m in golden]
    b_keys = [message_key(m) for m in actual]
    if a_keys == b_keys and not problems:
        return
    details: list[str] = [f"golden: {p}" for p in problems[:SHOW]]
    matcher = difflib.SequenceMatcher(None, a_keys, b_keys, autojunk=False)
    shown = 0
    differences = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        pairs = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        differences += max(i2 - i1, j2 - j1)
        for k in range(pairs):
            if shown >= SHOW:
                break
            shown += 1
            g, a = golden[i1 + k], actual[j1 + k]
            n = chosen[j1 + k][0]
            frames = isinstance(g, can.Message) and isinstance(a, can.Message)
            what = f" ({a['type']})" if isinstance(a, dict) and "type" in a else ""
            details.append(f"message #{n + 1}{what} differs from golden line {i1 + k + 1}:")
            diffs = frame_differences(g, a) if frames else event_differences(g, a)
            details.extend("    " + d for d in diffs[:8])
            if len(diffs) > 8:
                details.append(f"    ... {len(diffs) - 8} more field(s)")
            if frames or not diffs:  # the lines say it best (for events: the fields do)
                details.append(f"  - golden {show(g)}")
                details.append(f"  + output {show(a)}")
        for k in range(i1 + pairs, i2):
            if shown >= SHOW:
                break
            shown += 1
            details.append(f"golden line {k + 1} is missing from the output:")
            details.append(f"  - golden {show(golden[k])}")
        for k in range(j1 + pairs, j2):
            if shown >= SHOW:
                break
            shown += 1
            n = chosen[k][0]
            details.append(f"message #{n + 1} is not in the golden file:")
            details.append(f"  + output {show(actual[k])}")
    if differences > shown:
        details.append(f"... {differences - shown} more difference(s)")
    details.append("if the new output is right: run again with --update to rewrite the golden file")
    fail(
        "equals_file",
        f"equals_file {name}: {differences} difference(s) "
        f"(golden {len(golden):,} message(s), output {len(actual):,})",
        details,
    )
