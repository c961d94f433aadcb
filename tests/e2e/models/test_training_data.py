"""What Models were trained on, and strict volume mode, through the real apiserver, webhooks and
a real ``muster run``: a Model trained on a revoked Dataset (itself or through its lineage) is
refused and tainted (Events on the Model and its pods, the gauge, drift), requireApprovedDatasets
refuses an unregistered training dataset, and ``volumes: declaredOnly`` refuses a tenant's data
volumes that no Model, Dataset or not-model-data mark accounts for."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.kernel import datamarks
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane
from tests import kubeclients, tenants
from tests.e2e.models.conftest import NAMESPACE_LABELS, SUITE_LABEL
from tests.e2e.workloads import (
    GROUP,
    VERSION,
    create_pod,
    denial,
    eventually,
    mounting_pod,
    observed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("models_operator")]

WEIGHTS = "sha256:" + "1f" * 32
DATA = "sha256:" + "2e" * 32
# Which of this module's ModelPolicies selects a namespace.
SCENARIO = "muster.dev/e2e-training-data"


# The operator's watches of Models and Datasets, and the drift pass, are given this long.
WAIT = 45.0


@pytest.fixture(scope="module", autouse=True)
def policies(objects: Any) -> Iterator[dict[str, str]]:
    """One ModelPolicy per scenario, each selecting the suite's namespaces of its scenario."""
    run = uuid.uuid4().hex[:6]
    specs: dict[str, dict[str, Any]] = {
        "lineage": {},
        "approved-data": {"requireApprovedDatasets": True},
        "strict": {"volumes": "declaredOnly"},
    }
    names = {scenario: f"e2e-training-{scenario}-{run}" for scenario in specs}
    for scenario, spec in specs.items():
        selector = {"matchLabels": {SUITE_LABEL: "models", SCENARIO: scenario}}
        kubeclients.create_cluster_object(
            objects,
            "modelpolicies",
            "ModelPolicy",
            names[scenario],
            {"namespaceSelector": selector, **spec},
        )
    yield names
    for name in names.values():
        objects.delete_cluster_custom_object(GROUP, VERSION, "modelpolicies", name)


def _namespace(plane: controlplane.ControlPlane, scenario: str) -> str:
    return kubeclients.namespace(plane, "training", {**NAMESPACE_LABELS, SCENARIO: scenario})


def _dataset(objects: Any, name: str, **spec: Any) -> None:
    kubeclients.create_cluster_object(
        objects, "datasets", "Dataset", name, {"digest": DATA, **spec}
    )
    observed(objects, "datasets", name, WAIT)


def _model(objects: Any, name: str, *trained_on: str) -> None:
    kubeclients.create_cluster_object(
        objects,
        "models",
        "Model",
        name,
        {"digest": WEIGHTS, "datasets": [{"name": each} for each in trained_on]},
    )
    observed(objects, "models", name, WAIT)


def _using(name: str, model: str) -> dict[str, Any]:
    """A pod using ``model`` through a declared volume (its verifier is added by the webhook)."""
    return mounting_pod(
        name,
        [{"name": "weights", "emptyDir": {}}],
        {modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"weights": model})},
    )


def _events(plane: controlplane.ControlPlane, namespace: str, reason: str) -> list[Any]:
    with kubeclients.admin(plane) as api:
        events_api: Any = client.EventsV1Api(api)
        return [e for e in events_api.list_namespaced_event(namespace).items if e.reason == reason]


def _gauge(operator: localoperator.LocalOperator) -> float:
    name = "muster_pods_using_models_trained_on_revoked_data"
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def test_a_model_trained_on_revoked_data_is_refused_and_tainted_through_lineage(
    control_plane: controlplane.ControlPlane,
    objects: Any,
    models_operator: localoperator.LocalOperator,
) -> None:
    plane = control_plane
    run = uuid.uuid4().hex[:6]
    leaked, raw, derived = f"leaked-{run}", f"crawl-{run}", f"instructions-{run}"
    _dataset(objects, leaked, revoked=True, revocationReason="holds personal data")
    _dataset(objects, raw)
    _dataset(objects, derived, lineage={"parents": [raw]})
    on_leaked, on_derived = f"on-leaked-{run}", f"on-derived-{run}"
    _model(objects, on_leaked, leaked)
    _model(objects, on_derived, derived)
    namespace = _namespace(plane, "lineage")

    with kubeclients.admin(plane) as api:
        message = denial(api, namespace, _using("refused", on_leaked))
        assert "[ModelTrainingDataRevoked]" in message
        assert (
            f"Model {on_leaked!r} was trained on Dataset {leaked!r}, which is revoked: holds "
            "personal data" in message
        )
        create_pod(api, namespace, _using("trainer", on_derived))
    eventually(
        lambda: (
            objects.get_cluster_custom_object(GROUP, VERSION, "models", on_derived)["status"].get(
                "pods"
            )
            == 1
        ),
        "the Model's pod count",
        WAIT,
    )
    before = _gauge(models_operator)

    # Revoking the parent taints the derived Dataset, the Model trained on it and its pod.
    objects.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "datasets",
        raw,
        {"spec": {"revoked": True, "revocationReason": "licence withdrawn"}},
    )
    through = (
        f"Dataset {derived!r}, which is revoked through lineage: its ancestor {raw!r} is "
        "revoked: licence withdrawn"
    )

    def on_pod() -> list[Any]:
        # (The denial of the "refused" pod above was reported with the same reason.)
        return [
            e
            for e in _events(plane, namespace, "ModelTrainingDataRevoked")
            if e.regarding.kind == "Pod" and e.regarding.name == "trainer"
        ]

    eventually(on_pod, "an Event on the pod", WAIT)
    time.sleep(2)  # a repeated announcement would show by now
    events = on_pod()
    assert len(events) == 1, [(e.note, e.series) for e in events]
    [event] = events
    assert event.type == "Warning"
    assert f"Model {on_derived!r} used by this pod was trained on {through}" in event.note

    def on_model() -> list[Any]:
        return [
            e
            for e in _events(plane, "default", "ModelTrainingDataRevoked")
            if e.regarding.kind == "Model" and e.regarding.name == on_derived
        ]

    [model_event] = eventually(on_model, "an Event on the Model", WAIT)
    assert f"1 running pod(s) use it: {namespace}/trainer" in model_event.note
    assert through in model_event.note
    eventually(lambda: _gauge(models_operator) >= before + 1, "the gauge counting the pod", WAIT)

    # The drift pass re-runs the model gate on the running pod and finds the same.
    drifted = eventually(
        lambda: [
            e
            for e in _events(plane, namespace, "PodDrifted")
            if e.regarding.name == "trainer" and "[models]" in e.note
        ],
        "a PodDrifted Event",
        timeout=90.0,
    )
    assert f"Model {on_derived!r} was trained on {through}" in drifted[0].note

    # New pods using the Model are refused, naming the revoked ancestor.
    with kubeclients.admin(plane) as api:
        message = denial(api, namespace, _using("late", on_derived))
    assert "[ModelTrainingDataRevoked]" in message
    assert through in message


def test_require_approved_datasets_refuses_a_model_trained_on_unregistered_data(
    control_plane: controlplane.ControlPlane, objects: Any
) -> None:
    run = uuid.uuid4().hex[:6]
    registered, unregistered = f"curated-{run}", f"scraped-forum-{run}"
    _dataset(objects, registered)
    approved, unapproved = f"approved-data-{run}", f"unapproved-data-{run}"
    _model(objects, approved, registered)
    _model(objects, unapproved, registered, unregistered)
    namespace = _namespace(control_plane, "approved-data")
    with kubeclients.admin(control_plane) as api:
        message = denial(api, namespace, _using("unapproved", unapproved))
        assert "[ModelTrainingDataNotApproved]" in message
        assert f"training dataset {unregistered!r} names no registered Dataset" in message
        created = create_pod(api, namespace, _using("approved", approved))
    assert [c.name for c in created.spec.init_containers] == ["muster-verify-weights"]


# Volume kinds that can hold data, each as a tenant would write it.
DATA_VOLUMES: dict[str, dict[str, Any]] = {
    "hostPath": {"hostPath": {"path": "/srv/weights"}},
    "nfs": {"nfs": {"server": "nfs.example", "path": "/exports/weights"}},
    "csi": {"csi": {"driver": "blob.csi.azure.com", "volumeAttributes": {"container": "w"}}},
    "ephemeral": {
        "ephemeral": {
            "volumeClaimTemplate": {
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                }
            }
        }
    },
    "image": {"image": {"reference": "registry.example/who/weights@sha256:" + "3d" * 32}},
}


def _claim(api: client.ApiClient, namespace: str, name: str, labels: dict[str, str]) -> None:
    core: Any = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def test_strict_mode_refuses_a_tenants_data_volumes_nothing_accounts_for(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = _namespace(control_plane, "strict")
    tenant = tenants.tenant(control_plane, namespace)
    with kubeclients.admin(control_plane) as api:
        # The platform's mark: only namespace managers may set it, so the admin labels it.
        _claim(api, namespace, "scratch", {datamarks.NOT_MODEL_DATA_LABEL: "true"})
    with contextlib.closing(tenant.api()) as api:
        _claim(api, namespace, "plain", {})
        volumes = {
            **DATA_VOLUMES,
            "persistentVolumeClaim": {"persistentVolumeClaim": {"claimName": "plain"}},
        }
        for kind, source in volumes.items():
            name = f"data-{kind.lower()}"
            message = denial(api, namespace, mounting_pod(name, [{"name": name, **source}], {}))
            assert f'volume "{name}"' in message, message
            if kind == "image":
                # An image volume is a model use where a ModelPolicy selects: not a Model.
                assert "[ModelNotApproved]" in message, message
            else:
                assert f"is a volume of kind {kind} that is neither" in message, message
                assert "[VolumeNotDeclared]" in message, message
        # What holds no data, and the claim the platform marked, pass.
        allowed = mounting_pod(
            "scratch-only",
            [
                {"name": "tmp", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "settings", "optional": True}},
                {"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch"}},
            ],
            {},
        )
        assert create_pod(api, namespace, allowed).metadata.name == "scratch-only"
        # A claim that does not exist carries no mark.
        message = denial(
            api,
            namespace,
            mounting_pod(
                "gone", [{"name": "gone", "persistentVolumeClaim": {"claimName": "nope"}}], {}
            ),
        )
        assert 'PVC "nope" does not exist' in message, message


def test_a_dataset_policy_alone_asks_the_model_gate_for_strict_mode(
    control_plane: controlplane.ControlPlane, objects: Any
) -> None:
    name = f"e2e-training-dataset-strict-{uuid.uuid4().hex[:6]}"
    selector = {"matchLabels": {SUITE_LABEL: "models", SCENARIO: "dataset-strict"}}
    kubeclients.create_cluster_object(
        objects,
        "datasetpolicies",
        "DatasetPolicy",
        name,
        {"namespaceSelector": selector, "volumes": "declaredOnly"},
    )
    try:
        namespace = _namespace(control_plane, "dataset-strict")
        with kubeclients.admin(control_plane) as api:

            def refused() -> str | None:
                # The DatasetPolicy reaches the operator's catalog through its watch.
                try:
                    create_pod(api, namespace, mounting_pod("host", [{"name": "host", **host}], {}))
                except client.ApiException as error:
                    return str(json.loads(error.body or "{}")["message"])
                return None

            host = DATA_VOLUMES["hostPath"]
            message = eventually(refused, "the DatasetPolicy in force", WAIT)
            assert 'volume "host": is a volume of kind hostPath that is neither' in message, message
            assert f"DatasetPolicy {name} admits only declared data volumes" in message, message
            # No ModelPolicy selects the namespace: an unknown image is no model use judged
            # here, so strict mode names it.
            image = DATA_VOLUMES["image"]
            message = denial(api, namespace, mounting_pod("image", [{"name": "img", **image}], {}))
            assert 'volume "img": is a volume of kind image that is neither' in message, message
            assert "[VolumeNotDeclared]" in message and "ModelNotApproved" not in message
            assert (
                create_pod(
                    api, namespace, mounting_pod("tmp", [{"name": "tmp", "emptyDir": {}}], {})
                ).metadata.name
                == "tmp"
            )
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "datasetpolicies", name)
