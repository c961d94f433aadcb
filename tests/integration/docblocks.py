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
- ```` ```sh peers exit=N ````: ``muster`` lines that need a registry, a model or a cluster: the
  docs test provides them and runs each line in-process (each must exit N), after replacing the
  placeholders the page uses by what the test made (``PLACEHOLDERS`` lists them, and where a
  plain-HTTP test registry stands for ``registry.example`` the line gets ``--insecure-registry``);
- ```` ```sh parse ````: ``muster`` lines that must at least parse as arguments of the real
  command line (so a renamed command or flag fails);
- ```` ```text real=tests/PATH.py ````: real output of Muster (a denial message, a transcript of
  the demo, ``kubectl get`` columns); the named test produces that output through the real code
  path and compares the block with it by :func:`matches` (the normalisation is documented
  there);
- ```` ```LANG by=tests/PATH.py ````: commands the named test reads from the page and runs (they
  need a fresh control plane or a chart install of their own, which the docs test does not make);
- ```` ```text illustration: REASON ````: not an example at all (a diagram, measured numbers);
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
KINDS = (
    "example",
    "test",
    "output",
    "cluster",
    "peers",
    "parse",
    "real",
    "delegated",
    "illustration",
    "untested",
)
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
        if self.lang == "text" and info.get("real", "").startswith("tests/"):
            return "real"
        if info.get("by", "").startswith("tests/"):
            return "delegated"
        if self.lang == "yaml" and info.get("title", "").strip():
            return "example"
        if self.lang == "sh":
            for kind in ("test", "cluster", "peers", "parse"):
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


def commands(block: Block) -> Iterator[tuple[list[str], str | None]]:
    """The block's command lines as argv lists, each with the file its stdout is redirected to
    (``> FILE``) or None: comments dropped, ``\\`` continuations joined."""
    joined = block.body.replace("\\\n", " ")
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        argv = shlex.split(line, comments=True)
        for operator in ("|", "&", "&&", ";"):
            assert operator not in argv, f"{block.where}: no shell pipelines in examples: {line}"
        if ">" in argv:  # a redirection of stdout to a file: not part of the command
            target = argv[argv.index(">") + 1 :]
            assert len(target) == 1, f"{block.where}: one file after >: {line}"
            yield argv[: argv.index(">")], target[0]
        else:
            yield argv, None


def command_lines(block: Block) -> Iterator[list[str]]:
    """The block's command lines as argv lists (see :func:`commands`)."""
    for argv, _ in commands(block):
        yield argv


# The placeholders of ``sh peers`` lines, and what the docs test puts in their place.
PLACEHOLDERS = {
    "registry.example": "a folder of the test's plain-HTTP registry (HOST:PORT/docs-peers); "
    "the line gets --insecure-registry HOST:PORT",
    "ghcr.io": "the same folder, where a page's image and its policy name ghcr.io/acme",
    "sha256:<digest>": "the digest of the image the test pushed there",
    "/models/<volume>": "a model directory the test wrote",
    "<oms-digest>": "that model's OMS root digest as model_signing signed it",
    "~/.kube/prod": "the kubeconfig of the test's control plane (also $KUBECONFIG)",
    "trainer-7d9f-abcde": "the pod the ReplicaSet controller made for the test's ReplicaSet "
    "trainer-7d9f",
}

# ``muster`` commands that talk to a registry and take --insecure-registry.
_REGISTRY_COMMANDS = (["image", "verify"], ["gpu", "check"], ["check"])


def substitute(argv: list[str], replacements: dict[str, str], registry: str | None) -> list[str]:
    """A documented ``muster`` line with the page's placeholders replaced (``PLACEHOLDERS``)."""
    unknown = set(replacements) - set(PLACEHOLDERS)
    assert not unknown, f"replacements the docs do not list: {unknown}"
    result = []
    for word in argv:
        for old, new in replacements.items():
            word = word.replace(old, new)
        result.append(word)
    if registry is not None and any(argv[1 : 1 + len(c)] == c for c in _REGISTRY_COMMANDS):
        result += ["--insecure-registry", registry]
    return result


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


def named(kind: str, test: str) -> list[Block]:
    """The ``real=TEST`` or ``by=TEST`` blocks (``kind`` "real" or "delegated") of every page."""
    key = {"real": "real", "delegated": "by"}[kind]
    return [
        block
        for doc in PAGES
        for block in blocks(doc)
        if block.kind == kind and block.info[key] == test
    ]


# What a documented transcript or message may differ in from the real output, token by token:
# a digest shortened or elided in the docs (``sha256:9df4...``, ``sha256:...``) stands for any
# digest; a loopback port for any port; an Event's age (``1s``) for any age; ``...`` inside a
# line for any text on that line. Whitespace in the docs stands for any whitespace or none
# (the docs wrap long lines where the terminal does not). Everything else is literal.
_ELIDED_DIGEST = re.compile(r"sha256:[0-9a-f]*\.\.\.")
_LOOPBACK = re.compile(r"127\.0\.0\.1:\d+")
_AGE = re.compile(r"\d+[smh]")
_ANY_TEXT = "..."


def _token(word: str) -> str:
    if _AGE.fullmatch(word):
        return r"\d+[smh]"
    pattern, position = [], 0
    special = re.compile(f"{_ELIDED_DIGEST.pattern}|{_LOOPBACK.pattern}|{re.escape(_ANY_TEXT)}")
    for found in special.finditer(word):
        pattern.append(re.escape(word[position : found.start()]))
        text = found.group()
        if text.startswith("sha256:"):
            pattern.append(r"sha256:[0-9a-f]{64}")
        elif text.startswith("127."):
            pattern.append(r"127\.0\.0\.1:\d+")
        else:
            pattern.append(r"[^\n]*?")
        position = found.end()
    pattern.append(re.escape(word[position:]))
    return "".join(pattern)


def shape(documented: str, replacements: dict[str, str] | None = None) -> re.Pattern[str]:
    """The documented text as a pattern for the real output (see the normalisation above);
    ``replacements`` map a literal of the docs (a path, a placeholder host) to the real one."""
    for old, new in (replacements or {}).items():
        documented = documented.replace(old, new)
    return re.compile(r"\s*".join(_token(word) for word in documented.split()))


def matches(block: Block, real: str, replacements: dict[str, str] | None = None) -> str:
    """'' when the block's text appears in ``real`` (normalised), else what to look at."""
    if shape(block.body, replacements).search(real):
        return ""
    # Name the first documented line that no longer matches, to make drift easy to fix.
    lines = block.body.strip().splitlines()
    for end in range(1, len(lines) + 1):
        if not shape("\n".join(lines[:end]), replacements).search(real):
            line = lines[end - 1].strip()
            return f"{block.where}: from line {end} on, {line!r} differs from:\n{real}"
    return f"{block.where}: differs from:\n{real}"


# ``kubectl get`` samples: the header must be the real one, and every documented row must have
# the shape of the real rows, cell by cell (a count, a time, an age, a digest name, an image by
# digest, or a word), since a test cluster's objects have other names and numbers.
_CELLS = (
    ("count", re.compile(r"\d+")),
    ("time", re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")),
    ("age", re.compile(r"\d+[smhd]\d*[smh]?")),
    ("digest name", re.compile(r"sha256-[0-9a-f]+(\.\.\.)?")),
    ("image by digest", re.compile(r"\S+@sha256:[0-9a-f]+(\.\.\.)?")),
)


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _shape(cell: str) -> str:
    return next((name for name, pattern in _CELLS if pattern.fullmatch(cell)), "word")


def table_differences(block: Block, real: str) -> str:
    """'' when the block is a ``kubectl get`` table shaped like ``real``, else what differs."""
    documented = [line for line in block.body.splitlines() if line.strip()]
    printed = [line for line in real.splitlines() if line.strip()]
    if _cells(documented[0]) != _cells(printed[0]):
        return f"{block.where}: columns {_cells(documented[0])}, kubectl prints {printed[0]!r}"
    shapes = {tuple(_shape(cell) for cell in _cells(row)) for row in printed[1:]}
    if len(shapes) != 1:
        return f"{block.where}: the real rows differ in shape: {printed}"
    for row in documented[1:]:
        if {tuple(_shape(cell) for cell in _cells(row))} != shapes:
            return f"{block.where}: {row!r} is not shaped like the real rows: {printed[1:]}"
    return ""


def census() -> str:
    """How many blocks of each kind the docs hold, and every one not run or compared, with its
    reason: ``python -m tests.integration.docblocks``."""
    found = [block for doc in PAGES for block in blocks(doc)]
    counts = {kind: sum(block.kind == kind for block in found) for kind in KINDS}
    executed = sum(counts[k] for k in ("test", "cluster", "peers", "delegated"))
    compared = counts["output"] + counts["real"]
    lines = [
        f"{len(found)} blocks: {executed} executed, {compared} compared with real output, "
        f"{counts['example']} example files checked, {counts['parse']} only parsed, "
        f"{counts['illustration']} illustrations, {counts['untested']} untested",
        *(f"  {kind}: {count}" for kind, count in counts.items()),
    ]
    for block in found:
        if block.kind in ("illustration", "untested", "parse"):
            lines.append(f"{block.kind:>12} {block.where}: {block.reason or '(parsed only)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(census())
