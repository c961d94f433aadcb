"""``muster image verify`` against the real registry: exit 0 / 1 / 2 and admission's messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.platform import processes
from tests import peers
from tests.commandline import muster
from tests.integration.images.conftest import Signer, sign_v2

pytestmark = pytest.mark.integration


def run_cli(*argv: str) -> tuple[int, str, str]:
    return muster(*argv)


def write_policy(path: Path, name: str, spec: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "muster.dev/v1alpha1",
                "kind": "ImagePolicy",
                "metadata": {"name": name},
                "spec": spec,
            }
        )
    )
    return path


@pytest.fixture
def signed_image(registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path) -> str:
    digest = peers.push_image(registry, "cli/signed", "v1", workdir=tmp_path)
    sign_v2(signers["alice"], f"{registry.host}/cli/signed@{digest}")
    return registry.ref("cli/signed", "v1")


def test_signed_image_exits_0(
    registry: peers.Registry, signers: dict[str, Signer], signed_image: str, tmp_path: Path
) -> None:
    secret_key = tmp_path / "alice.pub"
    secret_key.write_text(signers["alice"].pem)
    policy = write_policy(
        tmp_path / "p.yaml",
        "alice",
        {
            "images": [f"{registry.host}/cli/**"],
            "authorities": [
                {
                    "name": "alice",
                    "key": {"secretRef": {"namespace": "k", "name": "s", "key": "pub"}},
                }
            ],
        },
    )
    code, out, _ = run_cli(
        "image",
        "verify",
        signed_image,
        f"--policy={policy}",
        f"--material=Secret/k/s/pub={secret_key}",
        f"--insecure-registry={registry.host}",
        "--format=json",
    )
    assert code == 0, out
    report = json.loads(out)
    assert report["verified"] is True
    assert report["digest"].startswith("sha256:")
    assert report["policies"][0]["signers"] == ["alice"]


def test_rejection_exits_1_and_warn_mode_exits_0(
    registry: peers.Registry, signers: dict[str, Signer], signed_image: str, tmp_path: Path
) -> None:
    spec = {
        "images": [f"{registry.host}/cli/**"],
        "authorities": [{"name": "bob", "key": {"data": signers["bob"].pem}}],
    }
    enforce = write_policy(tmp_path / "enforce.yaml", "bob-only", spec)
    code, out, _ = run_cli(
        "image",
        "verify",
        signed_image,
        f"--policy={enforce}",
        f"--insecure-registry={registry.host}",
    )
    assert code == 1
    assert out.startswith(f"FAIL: image '{signed_image}' is rejected by ImagePolicy 'bob-only': ")
    assert "signed by 0 of 1 required authorities (bob:" in out
    warn = write_policy(tmp_path / "warn.yaml", "bob-warn", {**spec, "mode": "warn"})
    code, out, _ = run_cli(
        "image", "verify", signed_image, f"--policy={warn}", f"--insecure-registry={registry.host}"
    )
    assert code == 0
    assert out.startswith("WARNING: image ")


def test_bad_input_and_registry_errors_exit_2(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ImagePolicy\nspec:\n  images: []\n")
    code, _, err = run_cli("image", "verify", "ghcr.io/a/b:v1", f"--policy={bad}")
    assert code == 2
    assert "images: Tuple should have at least 1 item" in err
    missing = write_policy(
        tmp_path / "missing.yaml",
        "needs-root",
        {
            "images": ["**"],
            "authorities": [
                {
                    "keyless": {
                        "identities": [{"issuer": "https://i", "subject": "s"}],
                        "trustedRoot": {"namespace": "sigstore", "name": "root"},
                    }
                }
            ],
        },
    )
    code, _, err = run_cli("image", "verify", "ghcr.io/a/b:v1", f"--policy={missing}")
    assert code == 2
    assert "--material ConfigMap/sigstore/root/trusted_root.json=FILE" in err
    down = f"127.0.0.1:{processes.free_port()}"
    policy = write_policy(
        tmp_path / "p.yaml",
        "alice",
        {"images": ["**"], "authorities": [{"key": {"data": signers["alice"].pem}}]},
    )
    code, out, _ = run_cli(
        "image", "verify", f"{down}/a/b:v1", f"--policy={policy}", f"--insecure-registry={down}"
    )
    assert code == 2
    assert out.startswith("ERROR: ") and "cannot resolve the tag" in out
    code, _, err = run_cli("image", "verify", "Not A Ref", f"--policy={policy}")
    assert code == 2
    assert "muster: error: image 'Not A Ref'" in err


def test_an_image_no_policy_covers_exits_1_unless_allowed(
    registry: peers.Registry, signers: dict[str, Signer], signed_image: str, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "p.yaml",
        "others",
        {
            "images": [f"{registry.host}/others/**"],
            "authorities": [{"key": {"data": signers["alice"].pem}}],
        },
    )
    aliased = signed_image.replace("127.0.0.1:", "localhost:", 1)
    code, out, _ = run_cli("image", "verify", aliased, "--policy", str(policy))
    assert code == 1
    assert out.startswith(f"FAIL: image '{aliased}' (localhost:")
    assert (
        f"is not covered by any ImagePolicy given (patterns: {registry.host}/others/** (others))"
        in out
    )
    code, out, _ = run_cli(
        "image",
        "verify",
        aliased,
        "--policy",
        str(policy),
        "--uncovered-images",
        "warn",
        "--format",
        "json",
    )
    assert code == 0
    assert json.loads(out) | {"image": None} == {
        "image": None,
        "verified": False,
        "covered": False,
        "reason": "ImageNotCovered",
        "uncovered": "warn",
        "policies": [],
    }
    code, out, _ = run_cli(
        "image", "verify", aliased, "--policy", str(policy), "--uncovered-images", "allow"
    )
    assert (code, out.split(":")[0]) == (0, "OK")
    # A static pass says so and asks no registry.
    passing = write_policy(
        tmp_path / "pass.yaml",
        "vendors",
        {"images": [f"{registry.host}/cli/**"], "authorities": [{"static": {"action": "pass"}}]},
    )
    code, out, _ = run_cli("image", "verify", signed_image, "--policy", str(passing))
    assert code == 0
    assert "no signature needed: ImagePolicy 'vendors' passes the images it covers" in out


# Runs ``muster ARGS...`` in a fresh interpreter and prints the modules it loaded.
_PROBE = """
import json, sys
from muster.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def test_a_key_signed_image_is_verified_without_sigstore_cel_or_kopf(
    registry: peers.Registry, signers: dict[str, Signer], signed_image: str, tmp_path: Path
) -> None:
    # ``muster image verify`` starts on every CI call: a legacy key signature needs neither the
    # sigstore library (bundles, trusted roots), CEL (conditions) nor the operator's kopf and
    # cluster client. A new process, as CI runs it, with a real signature from the registry.
    policy = write_policy(
        tmp_path / "p.yaml",
        "alice",
        {
            "images": [f"{registry.host}/cli/**"],
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    )
    argv = [
        sys.executable, "-c", _PROBE, "image", "verify", signed_image,
        f"--policy={policy}", f"--insecure-registry={registry.host}", "--format=json",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["policies"][0]["signers"] == ["alice"]
    loaded = json.loads(done.stderr[done.stderr.rindex("MODULES ") + len("MODULES ") :])
    assert "muster.signatures.rules.cosign" in loaded  # the signature was checked here
    heavy = ("kopf", "kubernetes", "sigstore", "sigstore_models", "cel")
    assert sorted(m for m in loaded if m.split(".")[0] in heavy) == []
    assert sorted(m for m in loaded if m.startswith("muster.app")) == []
