"""The commands that start on every pod start or CI call import only what they use.

Not a timing test: each command runs in a fresh interpreter and the test reads which modules
it imported, so a heavy import added to an argument parser fails here on any machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from muster.cli import COMMANDS, build_parser, main

pytestmark = pytest.mark.unit

# Runs ``muster ARGS...`` in this interpreter, then prints the names of the modules loaded.
_PROBE = """
import json, sys
from muster.cli import main
try:
    code = main(sys.argv[1:])
finally:
    sys.stdout.flush()
    sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""
HEAVY = ("kopf", "kubernetes", "muster.boms", "muster.admission", "muster.app", "sigstore")


def _modules(*argv: str) -> tuple[int, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=False
    )
    marker = done.stderr.rindex("MODULES ")
    loaded = set(json.loads(done.stderr[marker + len("MODULES ") :]))
    return done.returncode, loaded, done.stdout


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


@pytest.mark.parametrize(
    "argv",
    [
        ("model", "verify", "--help"),
        ("image", "verify", "--help"),
        ("check", "--help"),
        ("--version",),
    ],
)
def test_help_imports_no_heavy_module(argv: tuple[str, ...]) -> None:
    code, loaded, out = _modules(*argv)
    assert code == 0
    assert out.startswith(("usage: muster", "muster "))
    assert _heavy(loaded) == []


def test_model_verify_by_digest_imports_no_heavy_module(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 1024)
    code, _, digest = _modules("model", "digest", str(tmp_path))
    assert code == 0
    code, loaded, out = _modules("model", "verify", str(tmp_path), "--digest", digest.strip())
    assert code == 0, out
    assert out.startswith(f"OK {tmp_path}")
    assert _heavy(loaded) == []  # no cluster client, no Sigstore: a digest is all it needs


def test_the_command_table_names_what_each_module_registers() -> None:
    # main() imports only COMMANDS[argv[0]]: a module registering another command, or in
    # another order, would change what ``muster --help`` lists.
    parser = build_parser()
    actions = parser._actions
    (subcommands,) = (a for a in actions if isinstance(a, argparse._SubParsersAction))
    assert list(subcommands.choices) == list(COMMANDS)


def test_one_command_parses_as_with_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["model", "verify", "m", "--digest", "sha256:" + "0" * 64, "--workers", "3"]
    alone = build_parser(("model",)).parse_args(argv)
    every = build_parser().parse_args(argv)
    assert vars(alone).keys() == vars(every).keys()
    assert {k: v for k, v in vars(alone).items() if k != "handler"} == {
        k: v for k, v in vars(every).items() if k != "handler"
    }
    assert main(["model", "verify", "--help"]) == 0
    assert "--hashing-algorithm" in capsys.readouterr().out


# What ``muster check`` and ``muster image verify`` must not import: the cluster client and
# kopf (they judge files), the sigstore library and CEL (a policy without bundles, trusted roots
# or conditions needs neither), and the areas that only read what the gates decided.
_NOT_FOR_JUDGING = ("kopf", "kubernetes", "sigstore", "sigstore_models", "cel", "prompt_toolkit")
_NOT_JUDGED = ("muster.boms", "muster.drift", "muster.guards", "muster.reports")
_STATIC_PASS = """\
apiVersion: muster.dev/v1alpha1
kind: ImagePolicy
metadata: {name: pass-all}
spec:
  images: ["registry.invalid/**"]
  authorities: [{static: {action: pass}}]
"""
_IMAGE = "registry.invalid/app@sha256:" + "0" * 64


def _judging_imports(loaded: set[str]) -> list[str]:
    """The modules of ``loaded`` that judging files must not need (rules of other areas are
    pure and allowed: the settings read their defaults)."""
    return sorted(
        m
        for m in loaded
        if m.split(".")[0] in _NOT_FOR_JUDGING
        or (m.startswith(tuple(f"{a}." for a in _NOT_JUDGED)) and ".rules" not in m)
        or m in ("muster.app.runtime", "muster.app.areas")
        # nor a web server: the webhook's, the metrics' and the scan relay's serve nothing here
        or m in ("aiohttp.web", "muster.admission.server", "muster.vulnerabilities.relay")
        or m.startswith("aiohttp.web_")
    )


def test_check_imports_only_the_gates_it_judges_with(tmp_path: Path) -> None:
    # A real run through the whole pipeline: every gate is built and judges the pod (a digest
    # and a static-pass policy need no registry), and the answer is admission's.
    (tmp_path / "policy.yaml").write_text(_STATIC_PASS)
    (tmp_path / "pod.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"containers": [{"name": "web", "image": _IMAGE}]},
            }
        )
    )
    code, loaded, out = _modules(
        "check", str(tmp_path / "pod.yaml"), f"--policy={tmp_path / 'policy.yaml'}"
    )
    assert code == 0, out
    assert "Pod shop/web: admitted" in out
    assert "[ImagePassedUnsigned]" in out  # the image gate judged it
    assert {"muster.gpu.gate", "muster.models.gate", "muster.images.gate"} <= loaded
    assert _judging_imports(loaded) == []


def test_image_verify_imports_neither_kopf_nor_sigstore_nor_cel(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(_STATIC_PASS)
    code, loaded, out = _modules(
        "image", "verify", _IMAGE, f"--policy={tmp_path / 'policy.yaml'}", "--format=json"
    )
    assert code == 0, out
    assert json.loads(out)["verified"] is True
    assert "muster.images.verifier" in loaded  # the verifier ran, with its formats
    assert _judging_imports(loaded) == []
    assert _heavy(loaded) == []


# The modules whose pydantic models a command may load without validating with them: each
# model builds its validator on first use (``defer_build``), so loading them compiles none.
_SPEC_MODULES = (
    "muster.images.rules.policies",
    "muster.images.rules.scanrules",
    "muster.signatures.rules.sources",
    "muster.kernel.selectors",
    "muster.kernel.denials",
    "muster.kernel.licences",
    "muster.gpu.rules.policies",
    "muster.models.rules.registry",
    "muster.models.rules.provenance",
    "muster.datasets.rules.registry",
)
_BUILT_PROBE = """
import importlib, json, sys
import pydantic
models = [
    v
    for name in sys.argv[1:]
    for v in vars(importlib.import_module(name)).values()
    if isinstance(v, type) and issubclass(v, pydantic.BaseModel) and v.__module__ == name
]
built = sorted(m.__name__ for m in models if m.__pydantic_complete__)
print(json.dumps({"models": len(models), "built": built}))
"""


def test_loading_the_spec_models_builds_no_validator() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BUILT_PROBE, *_SPEC_MODULES],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(done.stdout)
    assert found["models"] >= 30  # the probe saw the models it judges
    # DriverRules is built when the module loads: GPUStackPolicySpec's defaults are instances.
    assert found["built"] == ["DriverRules"]
