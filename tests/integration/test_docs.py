"""Every fenced block in the docs is an exercised example, or says why it is not.

The markers are described in ``tests/integration/docblocks.py``; in short, ``yaml
title=examples/NAME.yaml`` files (parsed, their ``muster.dev`` objects dry-run against the real
apiserver with Muster's CRDs, workflow files' ``muster check`` lines parsed), ``sh test exit=N``
``muster`` commands (run; an optional following ``text output`` block is the exact output),
``sh cluster exit=N`` ``kubectl``/``helm`` lines (run against the real control plane), ``sh parse``
``muster`` lines (parsed by the real command line); ``text illustration: REASON`` for what is no
example (a transcript, a diagram) and, rarely, ``untested: REASON``. A block with none of
them fails the suite, so no example escapes these checks.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from muster import cli
from muster.adapters import controlplane, localoperator
from muster.cli import check
from tests import paths, peers
from tests.checkcli import muster_check
from tests.integration import docblocks
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

GUIDES = (
    "docs/getting-started.md",
    "docs/concepts.md",
    "docs/operations.md",
    "docs/troubleshooting.md",
)
blocks = docblocks.blocks


def documented() -> list[str]:
    return list(docblocks.PAGES)


def examples(doc: str) -> list[docblocks.Block]:
    return [b for b in blocks(doc) if b.kind == "example"]


def run_muster(argv: list[str]) -> tuple[int, str, str]:
    """``muster ARGV`` in-process (``check`` through its own parser until the CLI wires it)."""
    if argv and argv[0] == "check":
        return muster_check(*argv[1:])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _commands(block: docblocks.Block, program: str | tuple[str, ...]) -> list[list[str]]:
    programs = (program,) if isinstance(program, str) else program
    found = list(docblocks.command_lines(block))
    for argv in found:
        assert argv[0] in programs, f"{block.where}: a {block.kind} block runs {programs}: {argv}"
    assert found, f"{block.where}: no command in a {block.kind} block"
    return found


def write_examples(doc: str, folder: Path) -> None:
    for example in examples(doc):
        target = folder / example.info["title"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example.body)
        parsed = [d for d in yaml.safe_load_all(example.body) if d is not None]
        assert parsed, f"{example.where}: empty example"


def test_every_block_is_a_tested_example_or_says_why_not() -> None:
    unmarked, orphans, unreasoned = [], [], []
    for doc in documented():
        found = blocks(doc)
        for index, block in enumerate(found):
            if block.kind is None:
                unmarked.append(f"{block.where} ```{block.lang}{block.raw_info}")
            elif block.kind == "output" and (index == 0 or found[index - 1].kind != "test"):
                orphans.append(block.where)
            elif block.kind in ("untested", "illustration") and len(block.reason) < 10:
                unreasoned.append(block.where)
    assert unmarked == [], "fenced blocks neither tested nor marked untested: with a reason"
    assert orphans == [], "text output blocks must follow a sh test block"
    assert unreasoned == [], "untested: and illustration: need a reason"


def test_the_marker_parser_sees_every_fence() -> None:
    everything = [b for doc in documented() for b in blocks(doc)]
    opening = sum(
        1
        for doc in documented()
        for line in (docblocks.ROOT / doc).read_text().splitlines()
        if line.lstrip().startswith("```")
    )
    assert opening == 2 * len(everything)
    # Examples the suite cannot run stay rare.
    assert sum(b.kind == "untested" for b in everything) * 5 < len(everything)


def test_make_targets_and_test_files_the_untested_blocks_name_exist() -> None:
    """What an ``untested:`` block runs or points to is still checked to exist."""
    makefile = (docblocks.ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = []
    for doc in documented():
        for block in blocks(doc):
            if block.kind != "untested":
                continue
            for path in re.findall(r"tests/[\w/.-]+", block.reason):
                assert (docblocks.ROOT / path).exists(), f"{block.where}: no {path}"
            for argv in (line.split() for line in block.body.splitlines()):
                if argv[:1] == ["make"]:
                    named.append(argv[1])
                    assert argv[1] in targets, f"{block.where}: no make target {argv[1]}"
    assert {"demo", "test", "bench"} <= set(named)


def test_every_guide_example_is_a_titled_example() -> None:
    untitled = [
        b.where for doc in GUIDES for b in blocks(doc) if b.lang == "yaml" and b.kind != "example"
    ]
    assert untitled == []
    assert sum(len(examples(doc)) for doc in GUIDES) >= 6


@pytest.mark.parametrize("doc", documented())
def test_examples_parse_and_commands_give_the_documented_answers(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_examples(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    found = blocks(doc)
    for index, block in enumerate(found):
        if block.kind != "test":
            continue
        expected = int(block.info.get("exit", "0"))
        output = ""
        for argv in _commands(block, "muster"):
            code, output, err = run_muster(argv[1:])
            assert code == expected, f"{block.where}: {shlex.join(argv)} -> {code}\n{err}"
        following = found[index + 1] if index + 1 < len(found) else None
        if following is not None and following.kind == "output":
            assert output.strip() == following.body.strip(), f"{following.where}: output differs"


@pytest.mark.parametrize("doc", documented())
def test_muster_commands_that_need_peers_parse(doc: str) -> None:
    for block in blocks(doc):
        if block.kind == "parse":
            for argv in _commands(block, "muster"):
                error = docblocks.parse_muster(argv[1:])
                assert error == "", f"{block.where}: {shlex.join(argv)}: {error}"


def _check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muster", exit_on_error=False)
    check.register(parser.add_subparsers())
    return parser


@pytest.mark.parametrize("doc", documented())
def test_workflow_examples_call_muster_check_correctly(doc: str) -> None:
    for example in examples(doc):
        documents = list(yaml.safe_load_all(example.body))
        workflow = documents[0] if len(documents) == 1 else None
        if not isinstance(workflow, dict) or "jobs" not in workflow:
            continue
        lines = [
            line.strip()
            for job in workflow["jobs"].values()
            for step in job["steps"]
            for line in str(step.get("run", "")).splitlines()
            if line.strip().startswith("muster check")
        ]
        assert lines, f"{example.where}: a workflow without muster check"
        for line in lines:
            argv = shlex.split(line.split(">")[0])[1:]
            args = _check_parser().parse_args(argv)
            assert args.files


@pytest.fixture(scope="module")
def crds_installed(control_plane: controlplane.ControlPlane) -> controlplane.ControlPlane:
    localoperator.install_crds(control_plane)
    return control_plane


@pytest.mark.parametrize("doc", documented())
def test_custom_resources_in_examples_pass_the_apiserver_schema(
    doc: str, crds_installed: controlplane.ControlPlane
) -> None:
    for example in examples(doc):
        objects = [
            d
            for d in yaml.safe_load_all(example.body)
            if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("muster.dev/")
        ]
        for obj in objects:
            result = controlplane.kubectl(
                crds_installed,
                "apply",
                "--dry-run=server",
                "-f",
                "-",
                check=False,
                input_=yaml.safe_dump(obj),
            )
            assert result.returncode == 0, f"{example.where}: {obj['kind']}: {result.stderr}"


@pytest.fixture(scope="module")
def chart_crds_installed(crds_installed: controlplane.ControlPlane) -> controlplane.ControlPlane:
    """The chart's CRDs as the docs install them (kopf's peering CRD too, which ``muster run``
    without --peering ignores), so that deleting them can be dry-run."""
    controlplane.kubectl(crds_installed, "apply", "-f", str(docblocks.ROOT / "charts/muster/crds"))
    return crds_installed


def _ensure_namespace(plane: controlplane.ControlPlane, name: str) -> None:
    found = controlplane.kubectl(plane, "get", "namespace", name, check=False)
    if found.returncode != 0:
        controlplane.kubectl(plane, "create", "namespace", name)


@pytest.mark.parametrize(
    "doc", [d for d in documented() if any(b.kind == "cluster" for b in blocks(d))]
)
def test_kubectl_and_helm_commands_run_against_a_real_cluster(
    doc: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chart_crds_installed: controlplane.ControlPlane,
) -> None:
    plane = chart_crds_installed
    write_examples(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    for folder in ("charts", "manifests"):
        (tmp_path / folder).symlink_to(docblocks.ROOT / folder)
    root = paths.shared(
        "sigstore", "sigstore-python", "embedded-trust", "prod", "trusted_root.json"
    )
    shutil.copy(root, tmp_path / "trusted_root.json")
    for block in blocks(doc):
        if block.kind != "cluster":
            continue
        expected = int(block.info.get("exit", "0"))
        for argv in _commands(block, ("kubectl", "helm")):
            if argv[0] == "helm":
                result = peers.run_tool(
                    "helm", *docblocks.helm_args(argv, rendering.KUBE_VERSION), check=False
                )
            else:
                for namespace in docblocks.namespaces_named(argv):
                    _ensure_namespace(plane, namespace)
                result = controlplane.kubectl(plane, *docblocks.kubectl_args(argv), check=False)
            assert result.returncode == expected, (
                f"{block.where}: {shlex.join(argv)} -> {result.returncode}\n{result.stderr}"
            )
