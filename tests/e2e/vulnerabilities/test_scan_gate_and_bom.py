"""Through the real apiserver: images scanned by real trivy after admission queued them, an
image over the policy's severity denied, a clean signed one admitted, and its workload's AI-BOM
kept by the operator, collected by ``muster bom`` and valid CycloneDX 1.6."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.cli import common
from muster.kernel import crds, scopes
from muster.platform import controlplane
from muster.vulnerabilities.rules import scans as vulnerabilities
from tests import kubeclients, peers, trivydb
from tests.boms import schema_errors
from tests.commandline import muster
from tests.e2e.images.test_image_admission import (
    compiled_condition,
    create_policy,
    delete_policy,
    eventually,
)
from tests.e2e.vulnerabilities.conftest import SELECT_LABEL
from tests.integration import docblocks
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("scan_operator")]


def documented(doc: str) -> docblocks.Block:
    """The ``kubectl get`` sample of ``doc`` that this module compares with real output."""
    samples = docblocks.named("real", "tests/e2e/vulnerabilities/test_scan_gate_and_bom.py")
    assert {sample.doc for sample in samples} == {"docs/bom.md", "docs/vulnerabilities.md"}
    (sample,) = [sample for sample in samples if sample.doc == doc]
    return sample


@pytest.fixture(scope="module")
def images(
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Tag references of a vulnerable and a clean image, both signed by alice."""
    workdir = tmp_path_factory.mktemp("vulns-e2e-images")
    tag = uuid.uuid4().hex[:8]
    found = {}
    for name, packages in (
        ("app", {"libplanted": "1.0-1", "safe": "2.0-1"}),
        ("clean", {"safe": "2.0-1"}),
    ):
        files = trivydb.debian_image_files(packages)
        digest = peers.push_image(registry, f"vulns-e2e/{name}", tag, files=files, workdir=workdir)
        sign_v3(signers["alice"], f"{registry.host}/vulns-e2e/{name}@{digest}")
        found[name] = registry.ref(f"vulns-e2e/{name}", tag)
        found[f"{name}-digest"] = digest
    return found


@pytest.fixture(scope="module")
def policy(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
) -> Iterator[str]:
    name = f"e2e-vulns-{uuid.uuid4().hex[:6]}"
    create_policy(
        control_plane,
        name,
        {
            "images": [f"{registry.host}/vulns-e2e/**"],
            "namespaceSelector": {
                "matchExpressions": [{"key": SELECT_LABEL, "operator": "Exists"}]
            },
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
            "vulnerabilities": {"maxSeverity": "MEDIUM", "whenUnscanned": "deny"},
        },
    )
    condition = compiled_condition(control_plane, name)
    assert condition["status"] == "True", condition
    yield name
    delete_policy(control_plane, name)


def create_pod(plane: controlplane.ControlPlane, namespace: str, name: str, image: str) -> Any:
    with kubeclients.admin(plane) as api:
        return client.CoreV1Api(api).create_namespaced_pod(namespace, kubeclients.pod(name, image))


def denial(plane: controlplane.ControlPlane, namespace: str, image: str) -> str:
    with pytest.raises(client.ApiException) as raised:
        create_pod(plane, namespace, f"p-{uuid.uuid4().hex[:6]}", image)
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body)["message"])


def stored_scan(plane: controlplane.ControlPlane, digest: str) -> dict[str, Any] | None:
    with kubeclients.admin(plane) as api:
        try:
            found: dict[str, Any] = client.CustomObjectsApi(api).get_cluster_custom_object(
                crds.GROUP, crds.VERSION, "imagescans", vulnerabilities.scan_name(digest)
            )
        except client.ApiException as error:
            assert error.status == 404
            return None
    return found if found.get("status", {}).get("scannedAt") else None


def policy_events(plane: controlplane.ControlPlane, policy: str, reason: str) -> str | None:
    """``kubectl describe imagepolicy`` when it lists an Event with ``reason``, else None."""
    described = controlplane.kubectl(plane, "describe", "imagepolicy", policy).stdout
    return described if reason in described else None


def labels(mode: str) -> dict[str, str]:
    """Judged by this suite's operator in ``mode``, opted in (so it keeps the BOMs there), and
    left alone by the session operator (it honours the opt-out label; ours selects by label)."""
    return {SELECT_LABEL: mode, scopes.ENFORCE_LABEL: mode, scopes.OPT_OUT_LABEL: "true"}


def run_bom(*argv: str) -> int:
    code, _, err = muster("bom", *argv)
    assert code in (0, common.EXIT_ERROR), err
    if code:
        raise common.CommandError(err)  # what it printed, for the callers that wait on it
    return code


def test_vulnerable_image_denied_after_its_scan_and_clean_one_gets_a_bom(
    control_plane: controlplane.ControlPlane,
    images: dict[str, str],
    policy: str,
    tmp_path: Path,
) -> None:
    namespace = kubeclients.namespace(control_plane, "vulns", labels("enforce"))

    # Not scanned yet: denied, and admission queued the digest (the tag was pinned first).
    message = denial(control_plane, namespace, images["app"])
    assert "not scanned yet" in message
    scan = eventually(
        lambda: stored_scan(control_plane, images["app-digest"]), "the ImageScan", timeout=120
    )
    assert scan["status"]["counts"]["HIGH"] == 1
    assert scan["spec"]["digest"] == images["app-digest"]
    # docs/vulnerabilities.md shows what `kubectl get imagescans` prints for such a scan
    printed = controlplane.kubectl(control_plane, "get", "imagescans", scan["metadata"]["name"])
    sample = documented("docs/vulnerabilities.md")
    assert docblocks.table_differences(sample, printed.stdout) == ""

    message = denial(control_plane, namespace, images["app"])
    assert "CVE-2099-0001 (HIGH, libplanted 1.0-1)" in message
    assert policy in message
    # A bare pod has no owner: the platform team finds the denial on the ImagePolicy too.
    described = eventually(
        lambda: policy_events(control_plane, policy, "VulnerabilitiesAboveThreshold"),
        "a VulnerabilitiesAboveThreshold Event on the ImagePolicy",
    )
    assert "CVE-2099-0001" in described

    # The clean image: denied until scanned, then admitted, pinned to the verified digest.
    denial(control_plane, namespace, images["clean"])
    eventually(
        lambda: stored_scan(control_plane, images["clean-digest"]), "the clean scan", timeout=120
    )
    created = create_pod(control_plane, namespace, "trainer", images["clean"])
    pinned = created.spec.containers[0].image
    assert pinned == f"{images['clean']}@{images['clean-digest']}"

    def stored_bom() -> dict[str, Any] | None:
        with kubeclients.admin(control_plane) as api:
            try:
                found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
                    crds.GROUP, crds.VERSION, namespace, "workloadboms", "pod-trainer"
                )
            except client.ApiException as error:
                assert error.status == 404
                return None
        return found

    stored = eventually(stored_bom, "the workload's WorkloadBOM", timeout=60)
    assert stored["spec"]["kind"] == "Pod"
    # docs/bom.md shows what `kubectl get workloadboms -A` prints
    sample = documented("docs/bom.md")
    rows = controlplane.kubectl(control_plane, "get", "workloadboms", "-A").stdout.splitlines()
    ours = [rows[0], *(line for line in rows[1:] if line.split()[0] == namespace)]
    assert len(ours) == 2, rows
    assert docblocks.table_differences(sample, "\n".join(ours)) == ""
    assert schema_errors(json.loads(stored["spec"]["document"])) is None

    output = tmp_path / "bom.json"
    kubeconfig = str(control_plane.kubeconfig)
    assert (
        run_bom("pod", f"{namespace}/trainer", "--kubeconfig", kubeconfig, "-o", str(output)) == 0
    )
    bom = json.loads(output.read_text())
    assert schema_errors(bom) is None
    assert bom["specVersion"] == "1.6"
    containers = [c for c in bom["components"] if c["type"] == "container"]
    assert [c["version"] for c in containers] == [images["clean-digest"]]
    assert {"name": "muster:signer", "value": "alice"} in containers[0]["properties"]
    assert {"name": "muster:image-policy", "value": policy} in containers[0]["properties"]
    assert "vulnerabilities" not in bom  # the clean image has none

    namespace_bom = tmp_path / "namespace.json"
    assert (
        run_bom("namespace", namespace, "--kubeconfig", kubeconfig, "-o", str(namespace_bom)) == 0
    )
    assert schema_errors(json.loads(namespace_bom.read_text())) is None
    print(f"--- BOM of pod {namespace}/trainer ---\n{output.read_text()}")


def test_in_warn_mode_the_vulnerable_image_runs_and_its_bom_lists_the_findings(
    control_plane: controlplane.ControlPlane,
    images: dict[str, str],
    policy: str,
    tmp_path: Path,
) -> None:
    eventually(lambda: stored_scan(control_plane, images["app-digest"]), "the scan", timeout=120)
    namespace = kubeclients.namespace(control_plane, "vulns-warn", labels("warn"))
    created = create_pod(control_plane, namespace, "legacy", images["app"])
    assert created.spec.containers[0].image.endswith(f"@{images['app-digest']}")
    output = tmp_path / "bom.json"
    kubeconfig = str(control_plane.kubeconfig)

    def collected() -> dict[str, Any] | None:
        try:
            run_bom(
                "workload", f"{namespace}/Pod/legacy", "--kubeconfig", kubeconfig, "-o", str(output)
            )
        except common.CommandError:  # not written yet: the CLI says so, and we wait
            return None
        return dict(json.loads(output.read_text()))

    bom = eventually(collected, "the BOM of the warned pod", timeout=60)
    assert schema_errors(bom) is None
    [image] = [c for c in bom["components"] if c["type"] == "container"]
    assert image["version"] == images["app-digest"]
    found = {(v["id"], v["ratings"][0]["severity"]) for v in bom["vulnerabilities"]}
    assert found == {("CVE-2099-0001", "high"), ("CVE-2099-0002", "low")}
    assert all(v["affects"] == [{"ref": image["bom-ref"]}] for v in bom["vulnerabilities"])
    print(f"--- BOM of pod {namespace}/legacy ---\n{output.read_text()}")
