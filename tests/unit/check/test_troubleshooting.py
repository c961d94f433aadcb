"""Every reason a gate can give is explained in docs/troubleshooting.md."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CAMEL = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+$")
# Calls whose arguments carry a reason (besides any ``reason=`` keyword).
REASON_CALLS = {"Reason", "_finding", "Decision", "_failure", "Finding"}
NOT_DENIALS = {"Verified"}  # a decision's reason when it passes


def _constants(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and CAMEL.match(node.value):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _constants(node.body)
        yield from _constants(node.orelse)


def reasons_in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "operator" / "muster").rglob("*.py"):
        if "cli" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "reason":
                        found.update(_constants(keyword.value))
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in REASON_CALLS:
                    for argument in node.args[:3]:
                        found.update(_constants(argument))
            elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "reason" for target in node.targets
            ):
                found.update(_constants(node.value))
    return found - NOT_DENIALS


def test_the_scan_finds_the_reasons_of_every_gate() -> None:
    found = reasons_in_code()
    assert {"ImageNotPinned", "ImageNotSigned", "NoCompliantNode", "ModelNotApproved"} <= found


def test_every_reason_is_explained() -> None:
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    explained = set(re.findall(r"^\| `([A-Za-z]+)` \|", text, flags=re.MULTILINE))
    assert sorted(reasons_in_code() - explained) == []
