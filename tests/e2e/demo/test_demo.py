"""``muster dev up --demo``: a newcomer's first minutes, end to end, then ``dev down``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from muster.cli import common
from muster.platform import controlplane, processes
from tests.checkcli import muster_check
from tests.e2e import devcli
from tests.integration import docblocks

pytestmark = pytest.mark.e2e


def _make_demo() -> list[str]:
    """The README's and the guide's ``make demo``, as the muster command its recipe runs (the
    recipe's one-time set-up aside)."""
    lines = [
        argv
        for block in docblocks.named("delegated", "tests/e2e/demo/test_demo.py")
        for argv in docblocks.command_lines(block)
    ]
    assert lines == [["make", "demo"], ["make", "demo"]], lines
    makefile = (docblocks.ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t@?(.+)$", makefile, re.M)
    assert recipe is not None
    words = recipe[1].split()
    assert words[0] == "$(VENV)/muster", words
    return words[1:]


def test_demo_walks_through_every_gate_and_dev_down_leaves_nothing(tmp_path: Path) -> None:
    env = {"MUSTER_DEV_DIR": str(tmp_path / "dev")}
    # --format=json: the steps as data, with the text output as "transcript"
    up = devcli.muster(*_make_demo(), "--format=json", env=env, timeout=300)
    state = controlplane.ControlPlaneState.load(tmp_path / "dev")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        info = json.loads(up.stdout)
        assert set(state.pids) >= {"etcd", "kube-apiserver", "registry", "muster-operator"}
        assert {"registry", "metrics", "webhook"} <= set(state.ports)
        steps = {step["name"]: step for step in info["walkthrough"]}
        registry = info["registry"]
        # images: the unsigned pod is denied with the admission message; the signed one pinned
        assert steps["unsigned"]["outcome"] == "denied"
        assert (
            "is rejected by ImagePolicy 'demo-signed': no signature found"
            in (steps["unsigned"]["output"])
        )
        assert steps["signed"]["outcome"] == "admitted"
        assert steps["signed"]["shown"].startswith(f"{registry}/demo/app:v1@sha256:")
        # GPU stack: steered away from non-compliant nodes; denied on the end-of-life A100
        assert steps["cuda-steered"]["outcome"] == "admitted"
        affinity = json.loads(steps["cuda-steered"]["shown"])
        expressions = affinity["nodeSelectorTerms"][0]["matchExpressions"]
        assert {
            "key": "muster.dev/gpu-stack",
            "operator": "NotIn",
            "values": ["non-compliant", "unknown"],
        } in expressions
        assert steps["cuda-on-a100"]["outcome"] == "denied"
        assert "node gpu-a100 is non-compliant" in steps["cuda-on-a100"]["output"]
        assert "R450" in steps["cuda-on-a100"]["output"]
        # models: the unknown one denied, the approved one admitted with its verifier
        assert steps["mystery-model"]["outcome"] == "denied"
        assert "Model 'mystery' is not registered" in steps["mystery-model"]["output"]
        assert steps["approved-model"]["outcome"] == "admitted"
        assert steps["approved-model"]["shown"] == "muster-verify-weights"
        # datasets: a research-only licence denied by the namespace's DatasetPolicy
        assert steps["research-data"]["outcome"] == "denied"
        denial = " ".join(steps["research-data"]["output"].split())
        assert "CC-BY-NC-4.0" in denial and "CC-BY-NC-*" in denial, denial
        assert denial.endswith("[DatasetLicenseNotAllowed]"), denial
        # strict volumes: weights on a hostPath are neither a Model nor a Dataset
        assert steps["unseen-weights"]["outcome"] == "denied"
        denial = " ".join(steps["unseen-weights"]["output"].split())
        assert 'volume "weights"' in denial and "hostPath" in denial, denial
        assert denial.endswith("[VolumeNotDeclared]"), denial
        # revoking the crawl taints the Model fine-tuned on instructions derived from it
        assert steps["revoke-web-crawl-2024"]["outcome"] == "admitted"
        assert (
            "dataset.muster.dev/web-crawl-2024 configured"
            in (steps["revoke-web-crawl-2024"]["output"])
        )
        assert steps["tuned-model"]["outcome"] == "denied"
        denial = " ".join(steps["tuned-model"]["output"].split())
        assert "tuned-demo" in denial and "web-crawl-2024" in denial, denial
        assert "poisoned samples found (demo)" in denial, denial
        assert denial.endswith("[ModelTrainingDataRevoked]"), denial
        # the transcripts in the getting-started guide are this run's text output (normalised)
        transcript = "\n".join(info["transcript"])
        workdir = (tmp_path / "dev").resolve()
        assert transcript.startswith(f"==> starting etcd and kube-apiserver in {workdir}\n")
        documented = docblocks.named("real", "tests/e2e/demo/test_demo.py")
        assert len(documented) == 4  # three in the getting-started guide, one in datasets.md
        home = {"~/.local/state/muster/dev": str(workdir)}
        assert [docblocks.matches(block, transcript, home) for block in documented] == [""] * 4
        # muster check against the demo cluster's policies gives kubectl's message, offline
        pod = tmp_path / "unsigned.yaml"
        pod.write_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: unsigned, namespace: demo}\n"
            f"spec:\n  containers:\n    - {{name: main, image: '{registry}/demo/unsigned:v1'}}\n"
        )
        code, out, err = muster_check(
            "--kubeconfig", info["kubeconfig"], "--insecure-registry", registry, str(pod)
        )
        assert code == common.EXIT_FAIL, err
        message = out.splitlines()[1].strip()
        assert message.startswith('muster: container "main": image ')
        assert steps["unsigned"]["output"].endswith(message)
    finally:
        down = devcli.muster("dev", "down", "--format=json", env=env, timeout=300)
    assert down.returncode == 0, down.stderr
    assert set(json.loads(down.stdout)["stopped"]) == set(state.pids)
    assert not (tmp_path / "dev").exists()
    assert [name for name, pid in state.pids.items() if devcli.alive(pid)] == []
    assert [name for name, port in state.ports.items() if processes.port_is_open(port)] == []
