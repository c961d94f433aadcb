"""Fenced blocks of the docs, what each one is marked as, and how its commands are run.

Every fenced block of ``docs/*.md``, the README and the chart's README carries a marker in its
info string:

- ```` ```yaml title=examples/NAME.yaml ````: a file (it must parse; its ``muster.dev`` objects go
  through a server-side dry run; the page's commands run in a folder holding it);
- ```` ```sh test exit=N ````: ``muster`` command lines run in-process, each must exit N;
- ```` ```text output ````: right after a ``sh test`` block, the last command's exact output;
- ```` ```sh cluster exit=N ````: ``kubectl`` and ``helm`` lines run against the real control
  plane with Muster's CRDs (mutating kubectl verbs as server-side dry runs, ``helm install`` and
  ``helm upgrade`` as ``helm template``), each must exit N;
- ```` ```sh parse ````: ``muster`` lines that need a registry, a model or a cluster: they must
  parse as arguments of the real command line (so a renamed command or flag fails);
- ```` ```text illustration: REASON ````: not an example at all (a transcript, a diagram, the
  shape of a message, measured numbers);
- ```` ```LANG untested: REASON ````: an example the suite cannot run (it needs running pods, or
  takes minutes); kept rare, and the reason names what covers it instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from muster import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = (
    *sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")),
    "README.md",
    "charts/muster/README.md",
)
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
KINDS = ("example", "test", "output", "cluster", "parse", "illustration", "untested")
# kubectl verbs that change the cluster: run as server-side dry runs, the cluster is shared.
MUTATING = frozenset({"apply", "create", "delete", "label", "annotate", "patch", "replace"})


@dataclasses.dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    raw_info: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def info(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for word in self.raw_info.split():
            key, _, value = word.partition("=")
            found[key] = value
        return found

    @property
    def kind(self) -> str | None:
        """What the block is marked as (one of ``KINDS``), or None when it is not marked."""
        info = self.info
        if "untested:" in self.raw_info:
            return "untested"
        if self.lang == "text" and "illustration:" in self.raw_info:
            return "illustration"
        if self.lang == "yaml" and info.get("title", "").strip():
            return "example"
        if self.lang == "sh":
            for kind in ("test", "cluster", "parse"):
                if kind in info:
                    return kind
        if self.lang == "text" and "output" in info:
            return "output"
        return None

    @property
    def reason(self) -> str:
        for marker in ("untested:", "illustration:"):
            if marker in self.raw_info:
                return self.raw_info.partition(marker)[2].strip()
        return ""


def blocks(doc: str) -> list[Block]:
    text = (ROOT / doc).read_text()
    found = []
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(doc, line, match["lang"], match["info"], body))
    return found


def command_lines(block: Block) -> Iterator[list[str]]:
    """The block's command lines as argv lists: comments dropped, ``\\`` continuations joined."""
    joined = block.body.replace("\\\n", " ")
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        argv = shlex.split(line, comments=True)
        for operator in ("|", "&", "&&", ";"):
            assert operator not in argv, f"{block.where}: no shell pipelines in examples: {line}"
        if ">" in argv:  # a redirection of stdout to a file: not part of the command
            argv = argv[: argv.index(">")]
        yield argv


def parse_muster(argv: list[str]) -> str:
    """Parse ``muster ARGV`` with the real command line; '' when it parses, else the error."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = cli.build_parser().parse_args(argv)
        except SystemExit as exit_:
            return err.getvalue().strip() or f"exit {exit_.code}"
    if getattr(args, "handler", None) is None:
        return "no such command"
    return ""


def namespaces_named(argv: list[str]) -> list[str]:
    """The namespaces a ``kubectl`` line works in or on (they must exist for a dry run)."""
    names = []
    if argv[1:3] in (["label", "namespace"], ["annotate", "namespace"]) and len(argv) > 3:
        names.append(argv[3])
    for index, word in enumerate(argv):
        if word in ("-n", "--namespace") and index + 1 < len(argv):
            names.append(argv[index + 1])
        elif word.startswith("--namespace="):
            names.append(word.partition("=")[2])
    return names


def kubectl_args(argv: list[str]) -> list[str]:
    """A documented ``kubectl`` line's arguments, mutating verbs as server-side dry runs."""
    args = argv[1:]
    if MUTATING.intersection(args):
        args = [*args, "--dry-run=server"]
    return args


def helm_args(argv: list[str], kube_version: str) -> list[str]:
    """A documented ``helm install|upgrade`` line as the ``helm template`` it renders."""
    assert len(argv) > 1, f"helm without a command: {argv}"
    assert argv[1] in ("install", "upgrade", "template"), (
        f"only helm install/upgrade/template can be tested without a running release: {argv}"
    )
    return ["template", *argv[2:], "--kube-version", kube_version]
