"""Drift and the model gate's cache metrics, with the operator's real gates against the real
apiserver: a pod admitted with an approved Model drifts when the Model is revoked, a pod that
still passes does not, and the model index's look-ups are counted as hits and misses."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
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
from tests import kubeclients, paths
from tests.apiwaits import eventually, served

pytestmark = pytest.mark.integration
# What the drift pass re-runs and ignores, as the areas declare it.
RULES = drift_area.rules(areas.GATES)

GROUP, VERSION = crds.GROUP, crds.VERSION
SUITE = "muster.dev/integration-drift"
IMAGE = "registry.example/drift/trainer@sha256:" + "ab" * 32
DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
async def services(control_plane: controlplane.ControlPlane) -> AsyncIterator[runtime.Services]:
    localoperator.install_crds(control_plane)
    settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(),
        model_verifier_image="registry.example/muster/muster@sha256:" + "5e" * 32,
        # Models are what drift here; the test's image is covered by no ImagePolicy.
        uncovered_images=imagepolicies.Uncovered.ALLOW,
        # Like a second installation whose webhooks select its own namespaces: whatever other
        # operator runs on this shared control plane leaves ours alone (muster.dev/ignore).
        namespace_selector=selectors.LabelSelector.model_validate({"matchLabels": {SUITE: "yes"}}),
    )
    kube = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    found = runtime.Services(
        settings=settings, kube=kube, registries=registries.RegistryClient(settings.registry)
    )
    found.events = events.EventRecorder(kube)

    try:
        plurals = ("models", "modelpolicies", "imagepolicies", "gpustackpolicies")
        await served(kube, *plurals, what="Muster's custom resources served")
        yield found
    finally:
        await imagegate.area_for(found).verifier.close()
        await found.close()


def delete(plane: controlplane.ControlPlane, plural: str, name: str) -> None:
    with kubeclients.admin(plane) as api:
        client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, plural, name)


def body(name: str, model: str | None) -> dict[str, Any]:
    pod: dict[str, Any] = kubeclients.pod(name, IMAGE)
    if model is not None:
        pod["metadata"]["annotations"] = {
            modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": model})
        }
        pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/m"}]
    return pod


async def admit(
    pipeline: Any, namespace: str, pod: dict[str, Any], plane: controlplane.ControlPlane
) -> None:
    """What the webhooks would do: mutate, validate (must pass), then create."""
    pod["metadata"]["namespace"] = namespace
    for phase in (gates.Phase.MUTATE, gates.Phase.VALIDATE):
        subject = subjects.from_review(
            drift.pod_review(pod), mode=findings.Mode.ENFORCE, own_namespace="muster-system"
        )
        assert subject is not None
        results = await pipeline.evaluate(subject, phase)
        if phase is gates.Phase.MUTATE:
            pod = jsonpatches.apply(pod, [op for result in results for op in result.patch])
        else:
            verdict = gates.verdict(subject, results)
            assert verdict.allowed and not verdict.warnings, verdict
    with kubeclients.admin(plane) as api:
        core: Any = client.CoreV1Api(api)
        core.create_namespaced_pod(namespace, pod)


def cache(services: runtime.Services, result: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "muster_verification_cache_requests_total", {"cache": "models", "result": result}
    )
    return value or 0.0


def drifted(services: runtime.Services, check: str) -> float:
    value = services.metrics.registry.get_sample_value("muster_drifted_pods", {"check": check})
    assert value is not None
    return value


async def test_a_revoked_model_makes_its_pod_drift_and_the_model_index_counts_lookups(
    control_plane: controlplane.ControlPlane, services: runtime.Services
) -> None:
    plane = control_plane
    run = uuid.uuid4().hex[:6]
    labels = {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true", SUITE: "yes"}
    namespace = kubeclients.namespace(plane, "drift", labels)
    policy, model = f"drift-{run}", f"drift-model-{run}"
    kubeclients.create_muster_object(
        plane,
        "modelpolicies",
        "ModelPolicy",
        policy,
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
    )
    kubeclients.create_muster_object(plane, "models", "Model", model, {"digest": DIGEST})
    try:
        pipeline = runtime.build_pipeline(services)
        assert services.areas[drift_handlers.PIPELINE_AREA] is pipeline
        catalog = models._controller(services).catalog
        catalog.min_reload_interval = 0.0

        # The model index: the first look-up lists Models (a miss), the next is from memory.
        await admit(pipeline, namespace, body("uses-model", model), plane)
        assert (cache(services, "miss"), cache(services, "hit")) == (1, 1)
        # A Model the index does not know forces a re-list: a miss more.
        unknown = body("unknown", f"nobody-{run}")
        unknown["metadata"]["namespace"] = namespace
        subject = subjects.from_review(
            drift.pod_review(unknown), mode=findings.Mode.ENFORCE, own_namespace="x"
        )
        assert subject is not None
        await pipeline.evaluate(subject, gates.Phase.VALIDATE, checks=frozenset({"models"}))
        assert (cache(services, "miss"), cache(services, "hit")) == (2, 2)

        await admit(pipeline, namespace, body("no-model", None), plane)
        controller = drift_handlers.DriftController(services, rules=RULES, interval=300)
        assert await controller.active()  # no peering: this process runs the controllers

        # Nothing changed yet: nothing drifted.
        totals = await controller.run_pass()
        assert totals == {"image-signature": 0, "gpu-stack": 0, "models": 0, "datasets": 0}

        revoke = {"spec": {"revoked": True, "revocationReason": "leaked data"}}
        with kubeclients.admin(plane) as api:
            client.CustomObjectsApi(api).patch_cluster_custom_object(
                GROUP, VERSION, "models", model, revoke
            )
        catalog.max_age = 0.0  # no watches in this test: read the Models at each look-up
        totals = await controller.run_pass()
        assert totals == {"image-signature": 0, "gpu-stack": 0, "models": 1, "datasets": 0}
        assert drifted(services, "models") == 1
        assert drifted(services, "image-signature") == 0

        async def on_pods() -> list[dict[str, Any]]:
            assert services.events is not None
            await services.events.drain()
            found = await services.kube.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
            return [e for e in found.get("items", []) if e.get("reason") == drift.REASON]

        [event] = await eventually(on_pods, "a PodDrifted Event")
        assert event["regarding"]["kind"] == "Pod"
        assert event["regarding"]["name"] == "uses-model"
        assert event["regarding"]["uid"]
        assert event["type"] == "Warning"
        assert "[models]" in event["note"] and "leaked data" in event["note"], event["note"]

        # Another pass: the same Event, its series counting.
        await controller.run_pass()

        async def counted() -> list[dict[str, Any]]:
            found = await on_pods()
            return [e for e in found if (e.get("series") or {}).get("count") == 2]

        [again] = await eventually(counted, "the Event's series.count at 2")
        assert again["metadata"]["name"] == event["metadata"]["name"]
        assert len(await on_pods()) == 1
    finally:
        delete(plane, "models", model)
        delete(plane, "modelpolicies", policy)


async def test_only_the_replica_kopf_peering_puts_in_charge_runs_drift_passes(
    control_plane: controlplane.ControlPlane, services: runtime.Services
) -> None:
    crd = yaml.safe_load(
        (paths.REPO / "charts/muster/crds/clusterkopfpeerings.kopf.dev.yaml").read_text()
    )
    with contextlib.closing(kubesetup.api_client(control_plane.kubeconfig)) as api:
        kubesetup.apply_custom_resource_definition(api, crd)
    name = f"drift-peering-{uuid.uuid4().hex[:6]}"
    now = datetime.datetime.now(datetime.UTC)
    # As kopf writes it: one entry per live replica, with its priority and when it was seen.
    peers = {
        "other-replica": {"priority": 50, "lifetime": 60, "lastseen": now.isoformat()},
        "gone-replica": {
            "priority": 90,
            "lifetime": 60,
            "lastseen": (now - datetime.timedelta(minutes=5)).isoformat(),
        },
    }

    async def create() -> bool:
        try:
            await services.kube.create(
                "/apis/kopf.dev/v1/clusterkopfpeerings",
                {
                    "apiVersion": "kopf.dev/v1",
                    "kind": "ClusterKopfPeering",
                    "metadata": {"name": name},
                    "status": peers,
                },
            )
        except kubeapi.ApiError as error:
            if error.status == 404:  # the CRD is being established
                return False
            raise
        return True

    await eventually(create, "the peering object")
    try:
        # This replica's own entry is in the status too, as kopf keeps it; 50 ties the other.
        for priority, expected in ((10, False), (50, False), (51, True), (70, True)):
            own = {"priority": priority, "lifetime": 60, "lastseen": now.isoformat()}
            await services.kube.patch(
                f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}", {"status": {"this-replica": own}}
            )
            settings = dataclasses.replace(services.settings, peering=name, priority=priority)
            services.settings = settings
            controller = drift_handlers.DriftController(services, rules=RULES, interval=300)
            assert await controller.active() is expected, priority
        # A peering object that cannot be read: no pass (never two replicas at once).
        services.settings = dataclasses.replace(services.settings, peering=f"{name}-missing")
        assert not await drift_handlers.DriftController(
            services, rules=RULES, interval=300
        ).active()
    finally:
        await services.kube.delete(f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}")
