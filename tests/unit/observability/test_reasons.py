"""The declared reasons (the pipeline's and each area's: ``muster.app.areas.reasons()``) are
exactly the reasons the code reports.

A reason reaches an Event or the ``reason`` label of ``muster_violations`` through a few
carriers: a ``Finding``, a ``Notice``, a failed image ``Decision``, a vulnerability
``Violation``, or a ``reason=`` argument (an Event body posted directly). The source is read with
``ast`` rather than run, so every branch counts, including the rare ones no test reaches:

* a string literal in a carrier's reason slot (positional or ``reason=``) counts, and so does
  each branch of a conditional expression there;
* a name there is looked up in the enclosing function, then the module (``reason = "A" if x
  else "B"``, ``REASON = "PodDrifted"``), and a subscript of a module-level dict counts all its
  string values (``_EVENT_REASONS[state]``);
* a function with a ``reason`` parameter that hands it on to a carrier is a carrier too (the
  many ``_finding(...)`` helpers), found to a fixed point;
* anything else there (``decision.reason``, a parameter) passes on a reason made elsewhere and
  is not counted; ``Decision(True, ...)`` is a pass, never reported.

A new kind of carrier (a class holding a reason under another name) must be added to
``CARRIERS`` below.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import muster
from muster.app import areas

pytestmark = pytest.mark.unit

PACKAGE = Path(muster.__file__).parent
# Classes whose instances carry a reportable reason, and the reason's positional index.
CARRIERS = {
    "Finding": 1,
    "Notice": 3,
    "Decision": 1,
    "Violation": 0,
    "EnvFlag": 1,
    "Verdict": 1,  # an image's attestations, handed on as a Decision
}
# A GPU-stack ``Reason`` (a node compliance code, shown on the Node) becomes a finding reason
# only when it comes from these functions (``reason.code`` in gpupods' policy findings).
ROUTED = {"workload_cuda_allowed": ("Reason", 0)}


def _constants(node: ast.AST | None, scopes: list[dict[str, ast.AST]]) -> set[str]:
    if node is None:
        return set()
    if isinstance(node, ast.Constant):
        return {node.value} if isinstance(node.value, str) else set()
    if isinstance(node, ast.IfExp):
        return _constants(node.body, scopes) | _constants(node.orelse, scopes)
    if isinstance(node, ast.Name):
        for scope in scopes:
            if node.id in scope:
                return _constants(scope[node.id], scopes[1:])
        return set()
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        for scope in scopes:
            table = scope.get(node.value.id)
            if isinstance(table, ast.Dict):
                return {
                    v.value
                    for v in table.values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                }
    return set()


def _assignments(body: list[ast.stmt]) -> dict[str, ast.AST]:
    found: dict[str, ast.AST] = {}
    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, node.value)
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                found.setdefault(node.target.id, node.value)
    return found


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


class Carriers:
    """Reason positions: the carrier classes, and helper functions per module (several
    modules have a ``_finding`` helper, each with its own signature)."""

    def __init__(self) -> None:
        self.local: dict[int, dict[str, int]] = {}
        self.shared: dict[str, int] = dict(CARRIERS)

    def position(self, module: int, call: ast.Call) -> int | None:
        name = _callee(call) or ""
        local = self.local.get(module, {})
        if isinstance(call.func, ast.Name) and name in local:
            return local[name]
        return self.shared.get(name)

    def argument(self, module: int, call: ast.Call) -> ast.AST | None:
        for keyword in call.keywords:
            if keyword.arg == "reason":
                return keyword.value
        position = self.position(module, call)
        if position is not None and position < len(call.args):
            return call.args[position]
        return None


def _trees() -> list[ast.Module]:
    return [ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _carriers(trees: list[ast.Module]) -> Carriers:
    """The carrier classes plus every function that hands its ``reason`` parameter on."""
    carriers = Carriers()
    changed = True
    while changed:
        changed = False
        for module, tree in enumerate(trees):
            local = carriers.local.setdefault(module, {})
            for function in _functions(tree):
                names = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
                if function.name in local or "reason" not in names:
                    continue
                hands_on = any(
                    isinstance(node, ast.Call)
                    and carriers.position(module, node) is not None
                    and isinstance(arg := carriers.argument(module, node), ast.Name)
                    and arg.id == "reason"
                    for node in ast.walk(function)
                )
                if hands_on:
                    offset = 1 if names[0] in ("self", "cls") else 0
                    local[function.name] = names.index("reason") - offset
                    if not function.name.startswith("_"):  # public: called from elsewhere
                        carriers.shared.setdefault(function.name, local[function.name])
                    changed = True
    return carriers


def _passed(call: ast.Call) -> bool:
    first = call.args[0] if call.args else None
    passed = next((k.value for k in call.keywords if k.arg == "passed"), first)
    return _callee(call) == "Decision" and isinstance(passed, ast.Constant) and passed.value is True


@functools.cache
def emitted() -> frozenset[str]:
    trees = _trees()
    carriers = _carriers(trees)
    found: set[str] = set()
    for module, tree in enumerate(trees):
        globals_ = _assignments(tree.body)
        # Each call's innermost enclosing function: outer functions start on earlier lines,
        # so walking by line number lets inner ones overwrite them.
        enclosing: dict[ast.AST, dict[str, ast.AST]] = {}
        for function in sorted(_functions(tree), key=lambda f: f.lineno):
            scope = _assignments(function.body)
            for node in ast.walk(function):
                enclosing[node] = scope
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _passed(node):
                continue
            argument = carriers.argument(module, node)
            if argument is not None:
                found |= _constants(argument, [enclosing.get(node, {}), globals_])
        for function in _functions(tree):
            if function.name not in ROUTED:
                continue
            carrier, position = ROUTED[function.name]
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and _callee(node) == carrier:
                    found |= _constants(node.args[position], [])
    return frozenset(found)


def test_reasons_lists_exactly_what_the_code_reports() -> None:
    reported = emitted()
    listed = set(areas.reasons())
    assert not reported - listed, f"reported but not in REASONS: {sorted(reported - listed)}"
    assert not listed - reported, f"in REASONS but never reported: {sorted(listed - reported)}"


def test_the_scan_finds_reasons_through_every_kind_of_carrier() -> None:
    reported = emitted()
    # A literal in a Finding, a helper's argument, a conditional, a Decision, a module
    # constant, a dict of Event reasons, a local variable: each way is seen.
    for reason in (
        "ImageNotPinned",  # Finding(reason="...") in pinning
        "DeadlineExceeded",  # _failure(gate, "DeadlineExceeded", ...) in admissions
        "ImageNotScanned",  # a conditional in a Violation
        "SignatureNotTrusted",  # Decision(False, "...")
        "PodDrifted",  # reason=REASON, a module constant
        "GPUStackNonCompliant",  # _EVENT_REASONS[state]
        "ModelDigestChanged",  # reason = "..." if ... else "..." in a function
        "LdPreloadInGPUImage",  # an EnvFlag, handed on as flag.reason
        "CudaNotAllowed",  # a routed GPU-stack Reason
    ):
        assert reason in reported, reason
    assert "Verified" not in reported  # Decision(True, "Verified"): a pass
    assert "Compiled" not in reported  # a status condition's reason, not an Event's
    assert "DriverDenied" not in reported  # a node compliance code, not a finding's reason
