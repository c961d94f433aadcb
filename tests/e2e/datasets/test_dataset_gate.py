"""The dataset gate through the real apiserver and a real ``muster run``: every way a workload
uses a Dataset (an OCI artifact as an image volume, a labelled PVC, a declared volume, a
TrainJob's dataset initializer), created by a tenant with ordinary rights; licences judged as
SPDX expressions, revocation through lineage, warn mode, and the model gate's patch beside it."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from muster.datasets.rules import registry as datasetregistry
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane
from muster.signatures.rules.verifiers import verifier_container
from tests import kubeclients, peers, tenants, workloadkinds
from tests.e2e import workloads
from tests.e2e.datasets.conftest import NAMESPACE_LABELS, SUITE_LABEL, VERIFIER_IMAGE
from tests.e2e.workloads import GROUP, VERSION, eventually, image_volume, registered
from tests.e2e.workloads import mounting_pod as pod

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("datasets_operator")]

RUN = uuid.uuid4().hex[:6]
MODE_LABEL = "e2e.muster.dev/datasets-policy"  # which of this module's policies selects
DENIED_LICENCES = ["CC-BY-NC-*", "GPL-*"]
HF = "hf://datasets/acme/corpus@0123456789abcdef0123456789abcdef01234567"


def digest(seed: str) -> str:
    return "sha256:" + (seed * 64)[:64]


@pytest.fixture(scope="module", autouse=True)
def policies(objects: Any) -> Iterator[None]:
    """An enforcing and a warning DatasetPolicy, each selecting namespaces by MODE_LABEL."""
    names = []
    for mode in ("enforce", "warn"):
        name = f"e2e-datasets-{mode}-{RUN}"
        kubeclients.create_cluster_object(
            objects,
            "datasetpolicies",
            "DatasetPolicy",
            name,
            {
                "namespaceSelector": {"matchLabels": {SUITE_LABEL: "datasets", MODE_LABEL: mode}},
                "mode": mode,
                "licenses": {"deny": DENIED_LICENCES},
            },
        )
        names.append(name)
    yield
    for name in names:
        objects.delete_cluster_custom_object(GROUP, VERSION, "datasetpolicies", name)


@pytest.fixture(scope="module")
def datasets(objects: Any) -> Iterator[Callable[[str, dict[str, Any]], str]]:
    """Register a Dataset (name suffixed with this run), wait until the operator indexed it."""
    made: list[str] = []

    def register(name: str, spec: dict[str, Any]) -> str:
        full = f"{name}-{RUN}"
        made.append(full)
        registered(objects, "datasets", "Dataset", full, spec)
        return full

    yield register
    for name in reversed(made):
        with contextlib.suppress(client.ApiException):
            objects.delete_cluster_custom_object(GROUP, VERSION, "datasets", name)


def namespace(plane: controlplane.ControlPlane, mode: str = "enforce") -> tenants.Tenant:
    name = kubeclients.namespace(plane, "datasets", {**NAMESPACE_LABELS, MODE_LABEL: mode})
    return tenants.tenant(plane, name)


def pvc_volume(name: str, claim: str) -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim}}


def declared(**volumes: str) -> dict[str, str]:
    return {datasetregistry.DATASET_VOLUMES_ANNOTATION: json.dumps(volumes)}


def create(tenant: tenants.Tenant, body: dict[str, Any]) -> tuple[Any, list[str]]:
    """The created pod, and the warnings the apiserver passed on."""
    with contextlib.closing(tenant.api()) as api:
        return workloads.create_pod_warned(api, tenant.namespace, body)


def denial(tenant: tenants.Tenant, body: dict[str, Any]) -> str:
    with contextlib.closing(tenant.api()) as api:
        return workloads.denial(api, tenant.namespace, body)


def claim(tenant: tenants.Tenant, name: str, labels: dict[str, str]) -> None:
    with contextlib.closing(tenant.api()) as api:
        core: Any = client.CoreV1Api(api)
        core.create_namespaced_persistent_volume_claim(
            tenant.namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )


def named_datasets(created: Any) -> list[tuple[str, str]]:
    annotations = created.metadata.annotations or {}
    return datasetregistry.decode_datasets_annotation(
        annotations.get(datasetregistry.DATASETS_ANNOTATION)
    )


@pytest.fixture(scope="module")
def pushed(registry: peers.Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two dataset artifacts in the test registry: name -> pinned reference."""
    workdir = tmp_path_factory.mktemp("dataset-artifacts")
    refs = {}
    for name in ("corpus", "stranger"):
        pinned = peers.push_image(
            registry,
            f"datasets/{name}-{RUN}",
            "v1",
            files={"data/train.jsonl": f'{{"text": "{name}"}}\n'.encode()},
            workdir=workdir,
        )
        refs[name] = f"{registry.host}/datasets/{name}-{RUN}@{pinned}"
    return refs


def test_an_image_volume_holding_a_registered_artifact_is_admitted_and_annotated(
    plane: controlplane.ControlPlane,
    datasets: Callable[[str, dict[str, Any]], str],
    pushed: dict[str, str],
) -> None:
    name = datasets(
        "oci-corpus",
        {"digest": digest("a1"), "ociReference": pushed["corpus"], "license": "CC-BY-4.0"},
    )
    tenant = namespace(plane)
    created, _ = create(tenant, pod("oci", [image_volume("corpus", pushed["corpus"])]))
    assert named_datasets(created) == [(name, digest("a1"))]
    assert created.metadata.labels[datasetregistry.USES_DATASETS_LABEL] == "true"
    assert not created.spec.init_containers  # content-addressed: nothing to re-measure
    # An artifact declared as a Dataset that it is not: denied, naming volume and reference.
    message = denial(
        tenant,
        pod("stranger", [image_volume("corpus", pushed["stranger"])], declared(corpus=name)),
    )
    assert 'image volume "corpus"' in message
    assert pushed["stranger"] in message
    assert "[DatasetNotApproved]" in message


def test_a_labelled_pvc_gets_the_verifier_and_an_unregistered_one_is_denied(
    plane: controlplane.ControlPlane, datasets: Callable[[str, dict[str, Any]], str]
) -> None:
    name = datasets("pvc-corpus", {"digest": digest("b2"), "license": "MIT"})
    tenant = namespace(plane)
    claim(tenant, "corpus", {datasetregistry.DATASET_PVC_KEY: name})
    created, _ = create(tenant, pod("pvc", [pvc_volume("data", "corpus")]))
    assert named_datasets(created) == [(name, digest("b2"))]
    (verifier,) = created.spec.init_containers
    expected = verifier_container("data", digest("b2"), VERIFIER_IMAGE)
    assert (verifier.name, verifier.image, verifier.args) == (
        expected["name"],
        expected["image"],
        expected["args"],
    )
    claim(tenant, "unknown", {datasetregistry.DATASET_PVC_KEY: f"nobody-{RUN}"})
    message = denial(tenant, pod("unknown", [pvc_volume("data", "unknown")]))
    assert 'volume "data" (PVC "unknown")' in message
    assert f"Dataset 'nobody-{RUN}' is not registered" in message
    assert "[DatasetNotApproved]" in message


def test_a_declared_volume_gets_the_verifier_and_a_declared_missing_volume_is_denied(
    plane: controlplane.ControlPlane, datasets: Callable[[str, dict[str, Any]], str]
) -> None:
    name = datasets("nfs-corpus", {"digest": digest("c3")})
    tenant = namespace(plane)
    nfs = {"name": "shared", "nfs": {"server": "nfs.example", "path": "/corpus"}}
    created, _ = create(tenant, pod("declared", [nfs], declared(shared=name)))
    assert [c.name for c in created.spec.init_containers] == [
        verifier_container("shared", digest("c3"), VERIFIER_IMAGE)["name"]
    ]
    assert named_datasets(created) == [(name, digest("c3"))]
    message = denial(tenant, pod("ghost", [nfs], declared(ghost=name)))
    assert 'volume "ghost"' in message and "[DatasetVolumeUnknown]" in message
    message = denial(
        tenant, pod("broken", [nfs], {datasetregistry.DATASET_VOLUMES_ANNOTATION: "["})
    )
    assert "[DatasetVolumesInvalid]" in message


def test_a_trainjobs_dataset_initializer_must_download_a_registered_source(
    plane: controlplane.ControlPlane, datasets: Callable[[str, dict[str, Any]], str]
) -> None:
    workloadkinds.install_crds(plane)
    datasets("hf-corpus", {"digest": digest("d4"), "sources": [HF], "license": "Apache-2.0"})
    tenant = namespace(plane)

    with contextlib.closing(tenant.api()) as api:

        def create_job(name: str, uri: str) -> Any:
            body = workloadkinds.downloading_trainjob(name, "dataset", uri)
            return workloadkinds.create_trainjob(api, tenant.namespace, body)

        created = create_job("approved", HF)
        assert created["spec"]["initializer"]["dataset"]["storageUri"] == HF
        other = "hf://datasets/acme/other@0123456789abcdef0123456789abcdef01234567"
        with pytest.raises(client.ApiException) as raised:
            create_job("other", other)
    assert raised.value.status == 403, raised.value.body
    message = json.loads(raised.value.body or "{}")["message"]
    assert "storage URI of the dataset initializer" in message
    assert other in message and "[DatasetNotApproved]" in message


@pytest.mark.parametrize(
    ("licence", "refused"),
    [
        ("Apache-2.0 AND CC-BY-NC-4.0", "CC-BY-NC-4.0 is not allowed (deny CC-BY-NC-*)"),
        ("MIT OR CC-BY-NC-4.0", None),
        (
            "GPL-2.0-only WITH Classpath-exception-2.0",
            "GPL-2.0-only WITH Classpath-exception-2.0 is not allowed (deny GPL-*)",
        ),
        ("Apache-2.0 WITH LLVM-exception", None),
    ],
)
def test_licences_are_judged_as_spdx_expressions(
    plane: controlplane.ControlPlane,
    datasets: Callable[[str, dict[str, Any]], str],
    licence: str,
    refused: str | None,
) -> None:
    seed = uuid.uuid4().hex[:2]
    name = datasets(
        f"licensed-{uuid.uuid4().hex[:4]}", {"digest": digest(seed), "license": licence}
    )
    tenant = namespace(plane)
    nfs = {"name": "data", "nfs": {"server": "nfs.example", "path": "/d"}}
    body = pod("licensed", [nfs], declared(data=name))
    if refused is None:
        created, _ = create(tenant, body)
        assert named_datasets(created) == [(name, digest(seed))]
        return
    message = denial(tenant, body)
    assert 'volume "data"' in message
    assert f"Dataset {name!r} is licensed {licence!r}: {refused}" in message
    assert "[DatasetLicenseNotAllowed]" in message


def test_a_revoked_parent_denies_its_childs_pods(
    plane: controlplane.ControlPlane,
    objects: Any,
    datasets: Callable[[str, dict[str, Any]], str],
) -> None:
    parent = datasets("raw", {"digest": digest("e5")})
    child = datasets("clean", {"digest": digest("f6"), "lineage": {"parents": [parent]}})
    tenant = namespace(plane)
    nfs = {"name": "data", "nfs": {"server": "nfs.example", "path": "/d"}}
    create(tenant, pod("before", [nfs], declared(data=child)))
    objects.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "datasets",
        parent,
        {"spec": {"revoked": True, "revocationReason": "personal data found"}},
    )
    eventually(
        lambda: (
            (
                objects.get_cluster_custom_object(GROUP, VERSION, "datasets", child).get("status")
                or {}
            ).get("revokedThrough")
            == parent
        ),
        "the child's revokedThrough",
    )
    message = denial(tenant, pod("after", [nfs], declared(data=child)))
    assert (
        f"Dataset {child!r} is revoked through lineage: its ancestor {parent!r} is revoked: "
        "personal data found"
    ) in message
    assert "[DatasetRevoked]" in message


def test_warn_mode_admits_with_a_warning(
    plane: controlplane.ControlPlane, datasets: Callable[[str, dict[str, Any]], str]
) -> None:
    name = datasets("nc-corpus", {"digest": digest("07"), "license": "CC-BY-NC-4.0"})
    tenant = namespace(plane, "warn")
    nfs = {"name": "data", "nfs": {"server": "nfs.example", "path": "/d"}}
    created, warnings = create(tenant, pod("warned", [nfs], declared(data=name)))
    (warning,) = [w for w in warnings if "DatasetLicenseNotAllowed" in w]
    assert 'volume "data"' in warning and "deny CC-BY-NC-*" in warning
    # Refused data is not re-measured, but the pod still names it: revocation finds it.
    assert not created.spec.init_containers
    assert named_datasets(created) == [(name, digest("07"))]


def test_a_model_and_a_dataset_volume_both_get_their_verifier_and_annotation(
    plane: controlplane.ControlPlane,
    objects: Any,
    datasets: Callable[[str, dict[str, Any]], str],
) -> None:
    """No init containers, no annotations: both gates add /spec/initContainers and
    /metadata/annotations, and the pod that comes out has both verifiers and both names."""
    name = datasets("both-corpus", {"digest": digest("18")})
    model = f"both-model-{RUN}"
    kubeclients.create_cluster_object(objects, "models", "Model", model, {"digest": digest("29")})
    policy = f"e2e-datasets-models-{RUN}"
    kubeclients.create_cluster_object(
        objects,
        "modelpolicies",
        "ModelPolicy",
        policy,
        {"namespaceSelector": {"matchLabels": {MODE_LABEL: "both"}}},
    )
    try:
        workloads.observed(objects, "models", model)
        tenant = namespace(plane, "both")
        # This module's DatasetPolicies select enforce and warn namespaces: one of its own.
        both = {**DATASET_POLICY_BOTH, "metadata": {"name": f"e2e-datasets-both-{RUN}"}}
        objects.create_cluster_custom_object(GROUP, VERSION, "datasetpolicies", both)
        try:
            claim(tenant, "weights", {modelregistry.MODEL_PVC_KEY: model})
            claim(tenant, "corpus", {datasetregistry.DATASET_PVC_KEY: name})
            body = pod("both", [pvc_volume("weights", "weights"), pvc_volume("data", "corpus")])
            created = eventually(
                lambda: _created_when_indexed(tenant, body), "the policies indexed"
            )
            names = [c.name for c in created.spec.init_containers]
            assert sorted(names) == sorted(
                [
                    verifier_container("weights", digest("29"), VERIFIER_IMAGE)["name"],
                    verifier_container("data", digest("18"), VERIFIER_IMAGE)["name"],
                ]
            )
            annotations = created.metadata.annotations
            assert json.loads(annotations[modelregistry.MODELS_ANNOTATION]) == [
                {"name": model, "digest": digest("29")}
            ]
            assert named_datasets(created) == [(name, digest("18"))]
            assert created.metadata.labels[modelregistry.USES_MODELS_LABEL] == "true"
            assert created.metadata.labels[datasetregistry.USES_DATASETS_LABEL] == "true"
        finally:
            objects.delete_cluster_custom_object(
                GROUP, VERSION, "datasetpolicies", both["metadata"]["name"]
            )
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "modelpolicies", policy)
        objects.delete_cluster_custom_object(GROUP, VERSION, "models", model)


DATASET_POLICY_BOTH: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "DatasetPolicy",
    "spec": {"namespaceSelector": {"matchLabels": {MODE_LABEL: "both"}}},
}


def _created_when_indexed(tenant: tenants.Tenant, body: dict[str, Any]) -> Any:
    """The pod, once both gates know the policies just made (until then it is created without
    their marks, so it is deleted and tried again)."""
    created, _ = create(tenant, body)
    labels = created.metadata.labels or {}
    if (
        labels.get(modelregistry.USES_MODELS_LABEL) == "true"
        and labels.get(datasetregistry.USES_DATASETS_LABEL) == "true"
    ):
        return created
    with contextlib.closing(tenant.api()) as api:
        core: Any = client.CoreV1Api(api)
        core.delete_namespaced_pod(
            body["metadata"]["name"], tenant.namespace, grace_period_seconds=0
        )
        eventually(
            lambda: _gone(core, tenant.namespace, body["metadata"]["name"]), "the pod deleted"
        )
    return None


def _gone(core: Any, namespace_: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace_)
    except client.ApiException as error:
        return bool(error.status == 404)
    return False
