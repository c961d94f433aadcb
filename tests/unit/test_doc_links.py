"""Every relative link of the docs, the README and the chart's README reaches a file that
exists and, when it names one, a heading of that file (GitHub's anchor for it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGES = (
    *sorted(ROOT.glob("docs/*.md")),
    ROOT / "README.md",
    ROOT / "charts/muster/README.md",
)
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps only its text
    text = re.sub(r"[^\w\- ]", "", text.lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", page.read_text()))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_anchors_are_the_ones_github_makes() -> None:
    assert anchor("Namespace guard and the tenant model") == "namespace-guard-and-the-tenant-model"
    assert anchor("Cluster scope and Muster's trust anchors") == (
        "cluster-scope-and-musters-trust-anchors"
    )
    assert anchor("4. Exemptions are reasoned, authorised and always audited") == (
        "4-exemptions-are-reasoned-authorised-and-always-audited"
    )
    assert anchor("`muster check` in CI") == "muster-check-in-ci"


def test_every_relative_link_resolves_to_a_file_and_heading() -> None:
    broken = []
    for page in PAGES:
        for target in links(page):
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif fragment and file.suffix == ".md" and fragment not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert broken == []


def test_the_check_sees_the_links() -> None:
    """The pages link to each other (so a pattern that matched nothing would fail here)."""
    assert sum(len(links(page)) for page in PAGES) > 40
    assert any("#" in target for page in PAGES for target in links(page))
