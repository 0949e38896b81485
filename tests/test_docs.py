"""The documentation's links: every relative link of the README, docs/, the examples' READMEs and
the model card reaches a file of the repository, and every `#anchor` a heading of its page."""

import functools
import re

import pytest
from conftest import REPO

DOCUMENTS = sorted(
    path.relative_to(REPO).as_posix()
    for pattern in ("README.md", "docs/*.md", "examples/*/README.md", "lenet_tf/pretrained/*/MODEL_CARD.md")
    for path in REPO.glob(pattern)
)
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)


def prose(path):
    """The Markdown of `path` without its fenced code blocks (a link there is code, not a link)."""
    return CODE_BLOCK.sub("", path.read_text(encoding="utf-8"))


def relative_links(path):
    """`(target, file, anchor)` of every inline link of `path` to this repository: the target as
    written, the file it reaches (`path` itself for a bare `#anchor`) and its anchor, if any."""
    for target in INLINE_LINK.findall(prose(path)):
        if re.match(r"[a-z]+:", target):  # https:, mailto: and the like
            continue
        file, _, anchor = target.partition("#")
        yield target, (path.parent / file if file else path), anchor


@functools.cache  # a page is read once, not once per link to it
def heading_anchors(path):
    """The anchors GitHub gives the headings of `path`: the text without its markup, lower case,
    punctuation dropped, spaces as hyphens, and `-1`, `-2`, ... after a repeated one."""
    anchors, seen = set(), {}
    for heading in HEADING.findall(prose(path)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        anchor = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        anchors.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)
        seen[anchor] = seen.get(anchor, 0) + 1
    return anchors


def test_the_documents_are_found():
    assert {"README.md", "docs/performance.md", "docs/training.md"} <= set(DOCUMENTS)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_relative_link_reaches_a_file(document):
    missing = [target for target, file, _ in relative_links(REPO / document) if not file.exists()]
    assert not missing, f"{document} links to files that do not exist: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_anchor_names_a_heading_of_its_page(document):
    broken = [
        target
        for target, file, anchor in relative_links(REPO / document)
        if anchor and file.suffix == ".md" and file.exists() and anchor not in heading_anchors(file)
    ]
    assert not broken, f"{document} links to headings that do not exist: {broken}"
