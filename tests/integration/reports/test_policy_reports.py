"""PolicyReports through the real apiserver, with the policy working group's own CRDs: what a
drift pass finds becomes a namespace's report, a fixed pod's failure goes at the next pass, a
pass that finds the same writes nothing, reports are bounded, audit reports a namespace that has
not opted in without an Event, and nothing is written (or broken) while the CRDs are absent."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client

from muster.admission import server
from muster.app import areas, localoperator, runtime
from muster.drift import area as drift_area
from muster.drift import controller as drift_handlers
from muster.drift.rules import passes as drift
from muster.images import gate as imagegate
from muster.images.rules import policies as imagepolicies
from muster.kernel import crds, findings, gates, jsonpatches, scopes, selectors, subjects
from muster.models import controllers as models
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, events, kubeapi, kubesetup, registries
from muster.reports import keeper as reportkeeper
from muster.reports.rules import policyreports as reports
from tests import kubeclients, paths, peers
from tests.apiwaits import eventually, served

pytestmark = pytest.mark.integration

RULES = drift_area.rules(areas.GATES)
GROUP, VERSION = crds.GROUP, crds.VERSION
SUITE = "muster.dev/integration-reports"
IMAGE = "registry.example/reports/trainer@sha256:" + "ab" * 32
DIGEST = "sha256:" + "cd" * 32
CRDS = paths.FIXTURES / "crds" / "wg-policy-prototypes-v1alpha2"
REPORTS = f"/apis/{reports.GROUP}/{reports.VERSION}"


def _crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted(CRDS.glob("*.yaml"))]


@pytest.fixture
async def services(
    control_plane: controlplane.ControlPlane, registry: peers.Registry
) -> AsyncIterator[runtime.Services]:
    localoperator.install_crds(control_plane)
    settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(),
        registry=registries.RegistrySettings(insecure_registries=frozenset({registry.host})),
        model_verifier_image="registry.example/muster/muster@sha256:" + "5e" * 32,
        uncovered_images=imagepolicies.Uncovered.ALLOW,
        # Only this suite's namespaces: whatever else runs on the shared control plane is left
        # alone, and it leaves ours alone (muster.dev/ignore on the opted-in ones).
        namespace_selector=selectors.LabelSelector.model_validate({"matchLabels": {SUITE: "yes"}}),
    )
    kube = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    found = runtime.Services(
        settings=settings, kube=kube, registries=registries.RegistryClient(settings.registry)
    )
    found.events = events.EventRecorder(kube)

    try:
        plurals = ("models", "modelpolicies", "imagepolicies", "imagescans")
        await served(kube, *plurals, what="Muster's custom resources served")
        runtime.build_pipeline(found)
        yield found
    finally:
        await imagegate.area_for(found).verifier.close()
        await found.close()


async def install_report_crds(plane: controlplane.ControlPlane, kube: kubeapi.KubeApi) -> None:
    with contextlib.closing(kubesetup.api_client(plane.kubeconfig)) as api:
        for crd in _crds():
            kubesetup.apply_custom_resource_definition(api, crd)

    async def served() -> bool:
        try:
            await kube.get(f"{REPORTS}/policyreports")
            await kube.get(f"{REPORTS}/clusterpolicyreports")
        except kubeapi.ApiError:
            return False
        return True

    await eventually(served, "the PolicyReport CRDs served")


def controller_with_keeper(
    services: runtime.Services, *, audit: bool = False, max_results: int = 1000
) -> tuple[drift_handlers.DriftController, reportkeeper.ReportKeeper]:
    controller = drift_handlers.DriftController(services, rules=RULES, interval=300)
    keeper = reportkeeper.ReportKeeper(services, max_results=max_results)
    keeper.attach(controller, audit=audit)
    return controller, keeper


async def report_of(services: runtime.Services, namespace: str) -> dict[str, Any] | None:
    try:
        return await services.kube.get(
            f"{REPORTS}/namespaces/{namespace}/policyreports/{reports.NAME}"
        )
    except kubeapi.ApiError as error:
        if error.status == 404:
            return None
        raise


def results_by_pod(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for result in report["results"]:
        (resource,) = result["resources"]
        found.setdefault(resource["name"], []).append(result)
    return found


def create_pod(plane: controlplane.ControlPlane, namespace: str, pod: dict[str, Any]) -> None:
    with kubeclients.admin(plane) as api:
        client.CoreV1Api(api).create_namespaced_pod(namespace, pod)  # type: ignore[no-untyped-call]


async def admit(
    services: runtime.Services,
    plane: controlplane.ControlPlane,
    namespace: str,
    pod: dict[str, Any],
) -> None:
    """What the mutating webhook would do (the Model's verifier init container), then create."""
    pod["metadata"]["namespace"] = namespace
    pipeline = services.areas[drift_handlers.PIPELINE_AREA]
    subject = subjects.from_review(
        drift.pod_review(pod), mode=findings.Mode.ENFORCE, own_namespace="muster-system"
    )
    assert subject is not None
    results = await pipeline.evaluate(subject, gates.Phase.MUTATE)
    create_pod(plane, namespace, jsonpatches.apply(pod, [op for r in results for op in r.patch]))


def delete_pod(plane: controlplane.ControlPlane, namespace: str, name: str) -> None:
    with kubeclients.admin(plane) as api:
        client.CoreV1Api(api).delete_namespaced_pod(  # type: ignore[no-untyped-call]
            name, namespace, grace_period_seconds=0
        )


def model_pod(name: str, model: str) -> dict[str, Any]:
    pod: dict[str, Any] = kubeclients.pod(name, IMAGE)
    pod["metadata"]["annotations"] = {
        modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": model})
    }
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/m"}]
    return pod


@contextlib.contextmanager
def cluster_objects(plane: controlplane.ControlPlane) -> Iterator[list[tuple[str, str]]]:
    """Muster objects created in the block (plural, name), deleted after it."""
    made: list[tuple[str, str]] = []
    try:
        yield made
    finally:
        with kubeclients.admin(plane) as api:
            objects = client.CustomObjectsApi(api)
            for plural, name in reversed(made):
                with contextlib.suppress(client.ApiException):
                    objects.delete_cluster_custom_object(GROUP, VERSION, plural, name)


def by_name(*namespaces: str) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(namespaces)}
        ]
    }


# --- first in this module: the CRDs are not installed yet -----------------------------------


async def test_nothing_is_written_while_the_crds_are_absent_and_it_is_said_once(
    control_plane: controlplane.ControlPlane,
    services: runtime.Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with contextlib.closing(kubesetup.api_client(control_plane.kubeconfig)) as api:
        extensions: Any = client.ApiextensionsV1Api(api)
        for crd in _crds():
            with contextlib.suppress(client.ApiException):
                extensions.delete_custom_resource_definition(crd["metadata"]["name"])

    async def gone() -> bool:
        try:
            await services.kube.get(f"{REPORTS}/policyreports")
        except kubeapi.ApiError as error:
            return error.status == 404
        return False

    await eventually(gone, "the PolicyReport CRDs removed")
    labels = {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true", SUITE: "yes"}
    namespace = kubeclients.namespace(control_plane, "reports-absent", labels)
    create_pod(control_plane, namespace, kubeclients.pod("plain", IMAGE))
    controller, keeper = controller_with_keeper(services)
    with caplog.at_level(logging.WARNING, logger="muster.reports"):
        for _ in range(2):
            await controller.run_pass()
    assert keeper.writes == 0
    said = [r for r in caplog.records if "PolicyReport CRDs" in r.getMessage()]
    assert len(said) == 1, said
    assert "not installed" in said[0].getMessage()
    # Installed later: the next pass writes, with nothing else to do.
    await install_report_crds(control_plane, services.kube)
    await controller.run_pass()
    report = await report_of(services, namespace)
    assert report is not None
    assert [r["result"] for r in report["results"]] == ["pass"]


async def test_a_namespace_report_follows_drift_and_scans(
    control_plane: controlplane.ControlPlane, services: runtime.Services
) -> None:
    plane = control_plane
    await install_report_crds(plane, services.kube)
    run = uuid.uuid4().hex[:6]
    labels = {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true", SUITE: "yes"}
    namespace = kubeclients.namespace(plane, "reports", labels)
    policy, model, images = f"reports-{run}", f"reports-model-{run}", f"reports-scan-{run}"
    scan = f"sha256-{'ab' * 32}"
    with cluster_objects(plane) as made:
        kubeclients.create_muster_object(
            plane, "modelpolicies", "ModelPolicy", policy, {"namespaceSelector": by_name(namespace)}
        )
        made.append(("modelpolicies", policy))
        kubeclients.create_muster_object(plane, "models", "Model", model, {"digest": DIGEST})
        made.append(("models", model))
        # An ImagePolicy that lets the image in unsigned but rules its vulnerabilities, and the
        # image's stored scan: one CRITICAL finding, over its HIGH threshold.
        kubeclients.create_muster_object(
            plane,
            "imagepolicies",
            "ImagePolicy",
            images,
            {
                "images": ["registry.example/reports/**"],
                "namespaceSelector": by_name(namespace),
                "authorities": [{"static": {"action": "pass"}}],
                "vulnerabilities": {"maxSeverity": "HIGH"},
            },
        )
        made.append(("imagepolicies", images))
        await services.kube.create(
            f"/apis/{GROUP}/{VERSION}/imagescans",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ImageScan",
                "metadata": {"name": scan},
                "spec": {"digest": "sha256:" + "ab" * 32, "image": IMAGE},
            },
        )
        made.append(("imagescans", scan))
        await services.kube.patch(
            f"/apis/{GROUP}/{VERSION}/imagescans/{scan}/status",
            {
                "status": {
                    "scannedAt": "2026-01-01T00:00:00Z",
                    "counts": {"CRITICAL": 1, "HIGH": 0, "MEDIUM": 2, "LOW": 0, "UNKNOWN": 0},
                    "findings": [
                        {
                            "id": "CVE-2026-0001",
                            "package": "openssl",
                            "installedVersion": "3.0.0",
                            "fixedVersion": "3.0.1",
                            "severity": "CRITICAL",
                        }
                    ],
                }
            },
        )
        await admit(services, plane, namespace, model_pod("uses-model", model))
        create_pod(plane, namespace, kubeclients.pod("plain", IMAGE))
        catalog = models._controller(services).catalog
        catalog.min_reload_interval = 0.0
        catalog.max_age = 0.0  # no watches here: read the Models at each look-up
        controller, keeper = controller_with_keeper(services)

        # Nothing drifted: each pod passes drift and fails the ImagePolicy's threshold.
        await controller.run_pass()
        report = await report_of(services, namespace)
        assert report is not None
        assert report["metadata"]["labels"] == reports.MANAGED_BY
        assert report["summary"] == {"pass": 2, "fail": 2, "warn": 0, "error": 0, "skip": 0}
        pods = results_by_pod(report)
        assert sorted(pods) == ["plain", "uses-model"]
        for name, results in pods.items():
            assert {r["result"] for r in results} == {"pass", "fail"}, name
            (vulnerable,) = [r for r in results if r["result"] == "fail"]
            assert vulnerable["policy"] == f"ImagePolicy/{images}"
            assert vulnerable["rule"] == "VulnerabilitiesAboveThreshold"
            assert vulnerable["severity"] == "critical"
            assert vulnerable["category"] == "vulnerabilities"
            assert vulnerable["source"] == "muster"
            assert "CVE-2026-0001" in vulnerable["message"]
            assert vulnerable["properties"]["digest"] == "sha256:" + "ab" * 32
            assert vulnerable["resources"][0]["kind"] == "Pod"
            assert vulnerable["resources"][0]["namespace"] == namespace
            assert vulnerable["resources"][0]["uid"]
            assert set(vulnerable["timestamp"]) == {"seconds", "nanos"}
        cluster = await services.kube.get(f"{REPORTS}/clusterpolicyreports/{reports.NAME}")
        assert cluster["summary"]["fail"] >= 2 and cluster["summary"]["pass"] >= 2

        # The same findings again: nothing is written.
        writes, version = keeper.writes, report["metadata"]["resourceVersion"]
        await controller.run_pass()
        assert keeper.writes == writes
        again = await report_of(services, namespace)
        assert again is not None and again["metadata"]["resourceVersion"] == version

        # The Model is revoked: its pod fails drift under the ModelPolicy's check.
        revoke = {"spec": {"revoked": True, "revocationReason": "leaked data"}}
        with kubeclients.admin(plane) as api:
            client.CustomObjectsApi(api).patch_cluster_custom_object(
                GROUP, VERSION, "models", model, revoke
            )
        totals = await controller.run_pass()
        assert totals["models"] == 1
        report = await report_of(services, namespace)
        assert report is not None
        drifted = [r for r in results_by_pod(report)["uses-model"] if r["category"] == "models"]
        assert [r["result"] for r in drifted] == ["fail"]
        assert "leaked data" in drifted[0]["message"]
        assert report["summary"]["pass"] == 1  # only plain passes drift now
        unchanged = {r["message"]: r["timestamp"] for r in results_by_pod(report)["plain"]}
        assert unchanged == {r["message"]: r["timestamp"] for r in pods["plain"]}

        # Fixed (the revocation withdrawn): its failure is gone at the next pass.
        with kubeclients.admin(plane) as api:
            client.CustomObjectsApi(api).patch_cluster_custom_object(
                GROUP, VERSION, "models", model, {"spec": {"revoked": False}}
            )
        await controller.run_pass()
        report = await report_of(services, namespace)
        assert report is not None
        assert not [r for r in report["results"] if r["category"] == "models"]
        assert report["summary"]["pass"] == 2

        # No pod left: the namespace's report goes.
        delete_pod(plane, namespace, "uses-model")
        delete_pod(plane, namespace, "plain")

        async def no_pods() -> bool:
            found = await services.kube.get(f"/api/v1/namespaces/{namespace}/pods")
            return not found.get("items")

        await eventually(no_pods, "the pods deleted")
        await controller.run_pass()
        assert await report_of(services, namespace) is None


async def test_a_report_lists_at_most_its_bound_and_says_how_many_it_left_out(
    control_plane: controlplane.ControlPlane, services: runtime.Services
) -> None:
    await install_report_crds(control_plane, services.kube)
    labels = {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true", SUITE: "yes"}
    namespace = kubeclients.namespace(control_plane, "reports-bound", labels)
    for number in range(5):
        create_pod(control_plane, namespace, kubeclients.pod(f"p{number}", IMAGE))
    controller, _ = controller_with_keeper(services, max_results=3)
    await controller.run_pass()
    report = await report_of(services, namespace)
    assert report is not None
    assert len(report["results"]) == 3
    assert report["summary"]["pass"] == 5
    assert report["metadata"]["annotations"] == {reports.OMITTED_ANNOTATION: "2"}


def _public_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


async def test_audit_reports_what_enforcement_would_deny_in_a_namespace_not_opted_in(
    control_plane: controlplane.ControlPlane,
    services: runtime.Services,
    registry: peers.Registry,
    tmp_path: Path,
) -> None:
    plane = control_plane
    await install_report_crds(plane, services.kube)
    run = uuid.uuid4().hex[:6]
    digest = peers.push_image(registry, f"reports/unsigned-{run}", "v1", workdir=tmp_path)
    image = f"{registry.host}/reports/unsigned-{run}@{digest}"
    audited = kubeclients.namespace(plane, "reports-audit", {SUITE: "yes"})
    opted_in = kubeclients.namespace(
        plane,
        "reports-enforced",
        {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true", SUITE: "yes"},
    )
    ignored = kubeclients.namespace(
        plane, "reports-ignored", {scopes.OPT_OUT_LABEL: "true", SUITE: "yes"}
    )
    policy = f"reports-signed-{run}"
    with cluster_objects(plane) as made:
        kubeclients.create_muster_object(
            plane,
            "imagepolicies",
            "ImagePolicy",
            policy,
            {
                "images": [f"{registry.host}/reports/**"],
                "namespaceSelector": by_name(audited, opted_in, ignored),
                "authorities": [{"name": "release", "key": {"data": _public_key_pem()}}],
            },
        )
        made.append(("imagepolicies", policy))
        for namespace in (audited, opted_in, ignored):
            create_pod(plane, namespace, kubeclients.pod("unsigned", image))
        controller, _ = controller_with_keeper(services, audit=True)
        totals = await controller.run_pass()
        # Only the opted-in namespace's pod counts as drift.
        assert totals["image-signature"] == 1
        assert (
            services.metrics.registry.get_sample_value(
                "muster_drifted_pods", {"check": "image-signature"}
            )
            == 1
        )

        report = await report_of(services, audited)
        assert report is not None
        (result,) = report["results"]
        assert result["result"] == "warn"
        assert result["properties"] == {reports.AUDIT_PROPERTY: "true"}
        assert result["policy"] == f"ImagePolicy/{policy}"
        assert result["category"] == "image-signature"
        assert result["message"].startswith("would be denied if the namespace opted in: ")
        assert image in result["message"]
        enforced = await report_of(services, opted_in)
        assert enforced is not None
        (failed,) = enforced["results"]
        assert failed["result"] == "fail" and "properties" not in failed
        assert failed["rule"] == result["rule"]
        assert await report_of(services, ignored) is None  # opted out: never judged

        assert services.events is not None
        await services.events.drain()

        async def drifted_events(namespace: str) -> list[dict[str, Any]]:
            found = await services.kube.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
            return [e for e in found.get("items", []) if e.get("reason") == drift.REASON]

        assert await eventually(lambda: drifted_events(opted_in), "the opted-in pod's Event")
        assert await drifted_events(audited) == []
