"""The dataset controllers against a real apiserver: Dataset and DatasetPolicy status, signatures
made with the real model_signing library, lineage, and revocation Events and gauge.

Watch events are handed to the controller as kopf would hand them: the object as the apiserver
stores it, read back after each change.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.datasets import controllers
from muster.datasets.rules import registry
from muster.kernel import crds
from muster.platform import controlplane
from tests import datasetfiles, kubeclients
from tests.apiwaits import eventually
from tests.integration.datasets.conftest import INSTANCE, SUITE
from tests.integration.datasets.stored import API, create, delete, watched

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "da" * 32


def _names(*parts: str) -> list[str]:
    suffix = uuid.uuid4().hex[:6]
    return [f"{part}-{suffix}" for part in parts]


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [c for c in body["status"]["conditions"] if c["type"] == kind]
    assert found["observedGeneration"] == body["metadata"]["generation"]
    return dict(found)


def said(body: dict[str, Any], kind: str) -> tuple[str, str, str]:
    found = condition(body, kind)
    return found["status"], found["reason"], found["message"]


async def test_malformed_licence_cycle_and_self_reference_do_not_compile(
    controller: controllers.DatasetController,
) -> None:
    bad, itself, first, second = _names("bad-licence", "itself", "first", "second")
    try:
        body = await create(controller, bad, {"digest": DIGEST, "license": "Apache-2.0 AND"})
        status, reason, message = said(body, "Compiled")
        assert (status, reason) == ("False", "InvalidLicense")
        assert message.startswith("license: ")
        assert "'Apache-2.0 AND' is not a valid SPDX licence expression" in message
        assert controller.catalog.index.by_name(bad) is None  # never approved

        body = await create(
            controller, itself, {"digest": DIGEST, "lineage": {"parents": [itself]}}
        )
        assert said(body, "Compiled") == (
            "False",
            "SelfReference",
            f"Dataset {itself!r} names itself as a parent",
        )
        assert said(body, "LineageResolved")[:2] == ("False", "LineageInvalid")

        # First names a parent that does not exist yet: it compiles, its lineage is unresolved.
        body = await create(controller, first, {"digest": DIGEST, "lineage": {"parents": [second]}})
        assert said(body, "Compiled")[:2] == ("True", "Compiled")
        assert said(body, "LineageResolved") == (
            "False",
            "ParentMissing",
            f"parent {second!r} is not a registered Dataset",
        )
        # Second closes the cycle: both stop compiling, though first's spec did not change.
        body = await create(controller, second, {"digest": DIGEST, "lineage": {"parents": [first]}})
        assert said(body, "Compiled") == (
            "False",
            "LineageCycle",
            f"lineage cycle: {second} -> {first} -> {second}",
        )
        stored = await controller.kube.get(f"{API}/datasets/{first}")
        assert said(stored, "Compiled") == (
            "False",
            "LineageCycle",
            f"lineage cycle: {first} -> {second} -> {first}",
        )
        # The status is written once per change: the same event again writes nothing.
        again = await watched(controller, first)
        assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
        # Breaking the cycle compiles both again.
        await controller.kube.patch(f"{API}/datasets/{second}", {"spec": {"lineage": None}})
        body = await watched(controller, second)
        assert said(body, "Compiled")[:2] == ("True", "Compiled")
        assert said(body, "LineageResolved") == ("True", "Resolved", "no parents")
        stored = await controller.kube.get(f"{API}/datasets/{first}")
        assert said(stored, "LineageResolved") == (
            "True",
            "Resolved",
            "1 ancestor(s), all registered, none revoked",
        )
    finally:
        await delete(controller.kube, bad, itself, first, second)


async def test_signature_made_with_model_signing_verifies_and_a_wrong_key_does_not(
    controller: controllers.DatasetController, tmp_path: Path
) -> None:
    dataset = datasetfiles.make_dataset(tmp_path / "corpus")
    private, public = datasetfiles.key_pair(tmp_path, "data-team")
    _, other = datasetfiles.key_pair(tmp_path, "someone-else")
    digest = datasetfiles.sign(dataset, tmp_path / "model.sig", private)
    bundle = (tmp_path / "model.sig").read_text()
    signed, wrong, unsigned = _names("signed", "wrong-key", "unsigned")
    try:
        body = await create(
            controller,
            signed,
            {"digest": digest, "signature": {"bundle": bundle, "publicKey": public.read_text()}},
        )
        status, reason, message = said(body, "SignatureVerified")
        assert (status, reason) == ("True", "Verified"), message
        assert message.startswith("signed by ")
        entry = controller.catalog.index.by_name(signed)
        assert entry is not None and entry.signature_verified

        body = await create(
            controller,
            wrong,
            {"digest": digest, "signature": {"bundle": bundle, "publicKey": other.read_text()}},
        )
        status, reason, message = said(body, "SignatureVerified")
        assert (status, reason) == ("False", "SignatureInvalid"), message
        entry = controller.catalog.index.by_name(wrong)
        assert entry is not None and not entry.signature_verified

        body = await create(controller, unsigned, {"digest": digest})
        assert said(body, "SignatureVerified") == (
            "False",
            "NoSignature",
            "the Dataset names no signature",
        )
        # A new generation is checked again: another digest is not what was signed.
        await controller.kube.patch(f"{API}/datasets/{signed}", {"spec": {"digest": DIGEST}})
        body = await watched(controller, signed)
        assert body["metadata"]["generation"] == 2
        assert said(body, "SignatureVerified") == (
            "False",
            "DigestMismatch",
            f"the signature signs {digest}, the Dataset says {DIGEST}",
        )
    finally:
        await delete(controller.kube, signed, wrong, unsigned)


async def test_a_dataset_policy_with_bad_input_says_so_in_its_status(
    controller: controllers.DatasetController,
) -> None:
    (name,) = _names("policy")
    path = f"{API}/datasetpolicies/{name}"
    await controller.kube.create(
        f"{API}/datasetpolicies",
        {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": "DatasetPolicy",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {"matchLabels": {SUITE: "none"}},
                "licenses": {"deny": ["CC-BY-NC-*"]},
            },
        },
    )
    try:
        await controller.policy_event("ADDED", await controller.kube.get(path))
        body = await controller.kube.get(path)
        assert said(body, "Compiled")[:2] == ("True", "Compiled")
        # A licence pattern that is no SPDX id: the schema cannot tell, the policy check can.
        await controller.kube.patch(path, {"spec": {"licenses": {"deny": ["Not a licence!"]}}})
        await controller.policy_event("MODIFIED", await controller.kube.get(path))
        body = await controller.kube.get(path)
        status, reason, message = said(body, "Compiled")
        assert (status, reason) == ("False", "InvalidSpec")
        assert message.startswith("licenses.deny")
        assert message.endswith("; its last valid version stays in force")
        kept = controller.catalog.index.policies[name]
        assert kept.licenses.deny == ("CC-BY-NC-*",)
    finally:
        await controller.kube.delete(path)


async def test_revoking_a_parent_reaches_the_child_and_the_pods_using_it(
    control_plane: controlplane.ControlPlane, controller: controllers.DatasetController
) -> None:
    judged = kubeclients.namespace(control_plane, "ds-revoke", {SUITE: "yes"})
    elsewhere = kubeclients.namespace(control_plane, "ds-other")
    parent, child, unrelated = _names("raw", "clean", "unrelated")
    kube = controller.kube
    try:
        await create(controller, parent, {"digest": DIGEST, "license": "CC-BY-4.0"})
        await create(controller, child, {"digest": DIGEST, "lineage": {"parents": [parent]}})
        await create(controller, unrelated, {"digest": DIGEST})
        uids = {}
        for namespace, pod, uses in (
            (judged, "trainer", [child]),
            (judged, "bystander", [unrelated]),
            (elsewhere, "trainer", [child]),  # another installation reports on this one
        ):
            made = await kube.create(
                f"/api/v1/namespaces/{namespace}/pods",
                {
                    **kubeclients.pod(pod, "registry.example/train@sha256:" + "ab" * 32),
                    "metadata": {
                        "name": pod,
                        "labels": {registry.USES_DATASETS_LABEL: "true"},
                        "annotations": {
                            registry.DATASETS_ANNOTATION: registry.encode_datasets_annotation(
                                [
                                    registry.DatasetEntry(n, registry.DatasetSpec(digest=DIGEST))
                                    for n in uses
                                ]
                            )
                        },
                    },
                },
            )
            uids[f"{namespace}/{pod}"] = made["metadata"]["uid"]
            await controller.pod_event("ADDED", made)
        assert controller.revoked_pods() == 0
        assert (await kube.get(f"{API}/datasets/{child}"))["status"]["pods"] == 2

        await kube.patch(
            f"{API}/datasets/{parent}",
            {"spec": {"revoked": True, "revocationReason": "consent withdrawn"}},
        )
        body = await watched(controller, parent)
        assert body["status"]["revoked"] is True
        assert "revokedThrough" not in body["status"]  # revoked itself, not through lineage
        stored = await kube.get(f"{API}/datasets/{child}")
        assert stored["status"]["revoked"] is True
        assert stored["status"]["revokedThrough"] == parent
        assert said(stored, "LineageResolved") == (
            "False",
            "AncestorRevoked",
            f"through lineage: {parent} revoked: consent withdrawn",
        )
        untouched = (await kube.get(f"{API}/datasets/{unrelated}"))["status"]
        assert untouched["revoked"] is False and "revokedThrough" not in untouched
        # Two pods use the child; the gauge counts both, whoever reports on them.
        assert controller.revoked_pods() == 2
        sample = controller.metrics.registry.get_sample_value("muster_pods_using_revoked_datasets")
        assert sample == 2

        async def revoked_events(namespace: str) -> list[dict[str, Any]]:
            found = await kube.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
            return [
                e
                for e in found.get("items", [])
                if e["reason"] == controllers.REVOKED and e.get("reportingInstance") == INSTANCE
            ]

        async def on(name: str) -> list[dict[str, Any]]:
            return [e for e in await revoked_events("default") if e["regarding"]["name"] == name]

        (on_parent,) = await eventually(lambda: on(parent), "the Event on the revoked Dataset")
        assert on_parent["type"] == "Warning"
        assert on_parent["note"] == f"Dataset {parent!r} is revoked: consent withdrawn"
        (on_child,) = await eventually(lambda: on(child), "the Event on the descendant")
        assert on_child["regarding"]["kind"] == "Dataset"
        assert on_child["note"] == (
            f"Dataset {child!r} is revoked through lineage: {parent} revoked: consent withdrawn;"
            f" 1 running pod(s) use it: {judged}/trainer"
        )
        (on_pod,) = await eventually(lambda: revoked_events(judged), "the Event on the pod")
        assert on_pod["regarding"]["uid"] == uids[f"{judged}/trainer"]
        assert on_pod["note"] == (
            f"Dataset {child!r} used by this pod is revoked through lineage: {parent} revoked: "
            "consent withdrawn"
        )
        assert await revoked_events(elsewhere) == []
        assert await on(unrelated) == []

        # Once revoked stays said once: the same state again (a restart, a resync) adds nothing.
        await watched(controller, parent)
        await watched(controller, child)
        await controller.recorder.drain()
        assert len(await on(child)) == 1 and len(await revoked_events(judged)) == 1
        # The pod goes away: the gauge follows.
        with kubeclients.admin(control_plane) as api:
            client.CoreV1Api(api).delete_namespaced_pod("trainer", judged, grace_period_seconds=0)
        await controller.pod_event(
            "DELETED", {"metadata": {"namespace": judged, "name": "trainer"}}
        )
        assert controller.revoked_pods() == 1
    finally:
        await delete(kube, parent, child, unrelated)


async def test_bad_input_never_crashes_a_handler(
    controller: controllers.DatasetController,
) -> None:
    (ghost,) = _names("ghost")
    # Objects as no apiserver would store them, and one that does not exist (its status
    # write is refused with 404): each handler logs and goes on.
    await controller.dataset_event(
        "MODIFIED",
        {"metadata": {"name": ghost, "generation": 1}, "spec": ["a", "list"], "status": "x"},
    )
    assert controller.catalog.index.invalid[f"Dataset/{ghost}"].startswith("digest: ")
    await controller.dataset_event("MODIFIED", {"metadata": "nothing", "spec": None})
    await controller.dataset_event("DELETED", {"metadata": {"name": ghost}})
    assert f"Dataset/{ghost}" not in controller.catalog.index.invalid
    await controller.policy_event("MODIFIED", {"metadata": {"name": ghost}, "spec": {"mode": 3}})
    assert controller.catalog.index.invalid[f"DatasetPolicy/{ghost}"].startswith("mode: ")
    assert ghost not in controller.catalog.index.policies
    for marks in (
        {registry.DATASETS_ANNOTATION: "{not json"},
        "x",
        {registry.DATASETS_ANNOTATION: 5},
    ):
        await controller.pod_event(
            "ADDED", {"metadata": {"namespace": "n", "name": ghost, "annotations": marks}}
        )
        assert controller.usage["n/" + ghost] == ()
