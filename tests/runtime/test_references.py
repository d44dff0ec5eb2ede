"""What the docs and the code point at exists: every relative link (and its #anchor) in README,
docs/ and bench/ resolves, and every repo path named in the package, tests or bench is a file
or directory of the repo (examples of a user's own files are listed below, on purpose)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench/RESULTS.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: a path inside the repo named in code or text: docs/x.md, flows/x.yaml, tests/.../x.py, ...
REPO_PATH = re.compile(
    r"(?<![\w/.$-])((?:docs|tests|bench|flows|examples)/[\w./-]+\.(?:py|md|yaml|jsonl|log|dbc|png))"
)
#: paths that stand for the user's own files in examples (documented as such where they appear)
EXAMPLE_PATHS = {"tests/data/x.jsonl", "flows/broken.yaml"}
#: the flow-test tutorial's example project (docs/testing-flows.md builds it step by step)
EXAMPLE_PREFIXES = ("flows/shaft-a", "flows/golden/shaft-a", "flows/broken_test")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    return {
        _slug(m.group(1))
        for line in md.read_text(encoding="utf-8").splitlines()
        if (m := re.match(r"#+\s+(.*)", line))
    }


def _links(md: Path) -> list[tuple[int, str]]:
    found, in_code = [], False
    for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        if not in_code:
            found += [(n, m.group(1)) for m in LINK.finditer(line)]
    return found


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for md in MARKDOWN:
        for n, target in _links(md):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            where = f"{md.relative_to(ROOT)}:{n}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where} (no heading #{anchor})")
    assert broken == [], "\n".join(broken)


def test_the_link_check_sees_a_broken_link_and_a_broken_anchor(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("# Top\n[a](missing.md) [b](#top) [c](#nowhere)\n```\n[d](in-code.md)\n```\n")
    assert _links(md) == [(2, "missing.md"), (2, "#top"), (2, "#nowhere")]
    assert _anchors(md) == {"top"}


def test_every_repo_path_named_in_code_and_docs_exists() -> None:
    sources = [
        *ROOT.glob("runtime/**/*.py"),
        *ROOT.glob("nodes/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
        *ROOT.glob("bench/**/*.py"),
        *MARKDOWN,
    ]
    missing = []
    for path in sorted(set(sources) - {Path(__file__).resolve()}):  # this file names examples
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in REPO_PATH.finditer(line):
                named = m.group(1).rstrip(".")
                if named in EXAMPLE_PATHS or named.startswith(EXAMPLE_PREFIXES):
                    continue
                if not (ROOT / named).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{n}: {named}")
    assert missing == [], "\n".join(missing)


def test_nothing_points_at_documents_outside_the_repo() -> None:
    """The design notes and seed documents this project was built from are not in the repo;
    neither is the machine it was developed on."""
    outside = re.compile(r"DESIGN(?:\.md)? ?§|\bseeds?/\d|/work/(?:main|shared|wt)/")
    sources = [
        *ROOT.glob("runtime/**/*.py"),
        *ROOT.glob("nodes/**/*.py"),
        *ROOT.glob("bench/**/*.py"),
    ]
    sources += [*ROOT.glob("tests/**/*.py"), *MARKDOWN, ROOT / "pyproject.toml", ROOT / "Makefile"]
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted(set(sources) - {Path(__file__).resolve()})
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert found == [], "\n".join(found)
