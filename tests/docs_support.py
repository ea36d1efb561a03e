"""README.md and docs/*.md as data: their fenced code blocks, links and headings.

A shell block (```sh, ```bash, ```shell) may be preceded by an HTML comment, invisible once
rendered, that the docs tests read: ``<!-- doc-test: expect "TEXT" -->`` (the block's output,
stdout and stderr together, must contain TEXT when it runs; the quotes, " or ', are not part
of it).

Which blocks run, and how: a block that names ``dli-cancel``, or that publishes or pulls with
``gcloud pubsub``, runs for real against the local stack (tests/e2e/test_docs_examples.py);
every ``gcloud`` command of every shell block is parsed offline by the real gcloud.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.gcloud_support import script_gcloud_calls

REPO = Path(__file__).resolve().parent.parent
SHELL_LANGUAGES = {"sh", "bash", "shell"}
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!-- doc-test: expect (?P<text>.+?) -->\s*$")
_DLI_CANCEL = re.compile(r"(?:^|[\s(|;&])(?:\S*/)?dli-cancel(?:\s|$)")
_HEADING = re.compile(r"^(?P<hashes>#{1,6}) (?P<title>.+?)\s*$")
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    expect: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{name(self.path)}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    def gcloud_calls(self) -> list[list[str]]:
        return list(script_gcloud_calls(self.text))

    def names_dli_cancel(self) -> bool:
        return any(
            _DLI_CANCEL.search(line)
            for line in self.text.splitlines()
            if not line.strip().startswith("#")
        )


def runs_against_the_emulator(argv: list[str]) -> bool:
    """gcloud calls the docs tests run for real: publishing, pulling, and creating pull
    subscriptions (IAM, push endpoints and everything else the emulator cannot do are only
    parsed)."""
    if argv[:3] == ["pubsub", "topics", "publish"] or argv[:3] == [
        "pubsub",
        "subscriptions",
        "pull",
    ]:
        return True
    return argv[:3] == ["pubsub", "subscriptions", "create"] and not any(
        a.startswith("--push-") for a in argv
    )


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    expect: list[str] = []
    while index < len(lines):
        line = lines[index]
        marker = _MARKER.match(line)
        if marker:
            expect.append(_unquoted(marker.group("text")))
            index += 1
            continue
        opening = _FENCE.match(line)
        if not opening:
            if line.strip():
                expect = []
            index += 1
            continue
        indent, fence = len(opening.group("indent")), opening.group("fence")
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        language = (opening.group("info").strip().split() or [""])[0]
        found.append(Block(path, index - len(body), language, "\n".join(body) + "\n", expect))
        expect = []
        index += 1
    return found


def _unquoted(text: str) -> str:
    """The marker's text, without one pair of surrounding quotes (' or ")."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def prose(path: Path) -> list[str]:
    """The lines outside code blocks."""
    inside, kept = False, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return kept


def headings(path: Path) -> list[tuple[int, str]]:
    return [
        (len(m.group("hashes")), m.group("title"))
        for line in prose(path)
        if (m := _HEADING.match(line))
    ]


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def links(path: Path) -> list[str]:
    return [m.group("target") for line in prose(path) for m in _LINK.finditer(line)]
