"""Every relative link in README.md and docs/*.md resolves: the file exists, and a #anchor names a heading of the
target page (GitHub's anchors: the heading's text in lower case, punctuation dropped, spaces as hyphens, a
repeated heading suffixed -1, -2, ...). Links to the web are not checked (the tests run offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+(?:\([^()\s]*\))?)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The page without fenced code blocks (kept as blank lines) and inline code spans."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: rendered text, lower case, only letters, digits, '_', '-' and spaces kept,
    spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in "_- ")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    found |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def links(page: Path) -> list[tuple[int, str]]:
    text = prose(page.read_text())
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)]


def test_slug_matches_github() -> None:
    assert slug("The soft committee (claim 4)") == "the-soft-committee-claim-4"
    assert slug("Beyond the paper: the committee's accuracy at one small model's latency") == \
        "beyond-the-paper-the-committees-accuracy-at-one-small-models-latency"
    assert slug("The CPU results: claims 1-3") == "the-cpu-results-claims-1-3"
    assert slug("Set-up (a fresh machine, Python 3.11)") == "set-up-a-fresh-machine-python-311"
    assert slug("`tinylm serve` and [ONNX](x.md)") == "tinylm-serve-and-onnx"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.name}:{line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}:{line}: {target} (no heading with anchor #{anchor} in {dest.name})")
    assert not broken, "\n".join(broken)


def test_no_heading_names_an_issue() -> None:
    named = [f"{page.name}: {h}" for page in PAGES for h in HEADING.findall(FENCE.sub("", page.read_text()))
             if re.search(r"\bissues?\s+\d+", h, re.I)]
    assert not named, named


def test_readme_is_a_front_door() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 300
