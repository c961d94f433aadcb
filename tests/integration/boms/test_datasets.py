"""The AI-BOM of a pod using a Model trained on a Dataset derived from another, against a real API
server: the Datasets, their digests (verified or declared), licences with the decisions of the
policies selecting the namespace, revocation through lineage and the dependencies, read back
from the stored WorkloadBOM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from muster.app import runtime
from muster.boms import keeper as keeping
from muster.datasets.rules import registry as datasetregistry
from muster.datasets.rules import resources as datasetresources
from muster.kernel import crds, scopes
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, kubeapi, kubesetup
from tests import kubeclients
from tests.boms import schema_errors
from tests.integration import docblocks

pytestmark = pytest.mark.integration

API = f"/apis/{crds.GROUP}/{crds.VERSION}"
MODEL_DIGEST = "sha256:" + "2e" * 32
CLEAN = "sha256:" + "c1" * 32
RAW = "sha256:" + "a0" * 32
EVAL = "sha256:" + "e1" * 32
CONFIG = "sha256:" + "cf" * 32
LAYER = "sha256:" + "1a" * 32
MODELPACK_CONFIG = (
    Path(__file__).resolve().parents[2] / "fixtures/models/modelpack/config-example.json"
)


@pytest.fixture(autouse=True)
def dataset_crds(control_plane: controlplane.ControlPlane) -> None:
    """The Dataset kinds, whether or not the datasets area is in the catalog yet."""
    with contextlib.closing(kubesetup.api_client(control_plane.kubeconfig)) as api:
        for crd in (datasetresources.dataset(), datasetresources.dataset_policy()):
            kubesetup.apply_custom_resource_definition(api, crd)


def props(component: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in component.get("properties", []):
        found.setdefault(item["name"], []).append(item["value"])
    return found


async def test_a_pod_using_a_model_trained_on_derived_data_gets_the_datasets_in_its_bom(
    control_plane: controlplane.ControlPlane, services: runtime.Services
) -> None:
    kube = services.kube
    suffix = uuid.uuid4().hex[:6]
    # Cluster-scoped policies select only this test's namespace.
    selector = {"matchLabels": {"bom-datasets": suffix}}
    namespace = kubeclients.namespace(
        control_plane, "bom-data", {scopes.ENFORCE_LABEL: "true", "bom-datasets": suffix}
    )
    # Named as in docs/bom.md's excerpts, plus a suffix (Datasets are cluster-scoped).
    raw, clean = f"support-raw-{suffix}", f"support-clean-{suffix}"
    evaluation, model = f"support-eval-{suffix}", f"support-bot-{suffix}"
    data_rules, model_rules = f"dataset-licences-{suffix}", f"model-licences-{suffix}"
    created: list[str] = []

    async def make(plural: str, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        made = await kube.create(f"{API}/{plural}", body)
        created.append(f"{API}/{plural}/{name}")
        return made

    try:
        await make(
            "datasetpolicies",
            "DatasetPolicy",
            data_rules,
            {"namespaceSelector": selector, "mode": "warn", "licenses": {"deny": ["CC-BY-NC-*"]}},
        )
        await make(
            "modelpolicies",
            "ModelPolicy",
            model_rules,
            {"namespaceSelector": selector, "mode": "warn", "licenses": {"allow": ["Apache-2.0"]}},
        )
        await make(
            "datasets",
            "Dataset",
            raw,
            {
                "digest": RAW,
                "license": "CC-BY-NC-4.0",
                "sources": ["s3://acme/support/raw"],
                "revoked": True,
                "revocationReason": "consent withdrawn",
            },
        )
        made = await make(
            "datasets",
            "Dataset",
            clean,
            {
                "digest": CLEAN,
                "license": "Apache-2.0 AND CC-BY-4.0",
                "sources": ["hf://datasets/acme/support@9f1c2e"],
                "lineage": {
                    "parents": [raw],
                    "transformation": {"description": "deduplicated, PII removed"},
                },
            },
        )
        # The operator's verdict on this spec (no operator runs here: written as it would).
        await kube.patch(
            f"{API}/datasets/{clean}/status",
            {
                "status": {
                    "conditions": [
                        {
                            "type": "SignatureVerified",
                            "status": "True",
                            "reason": "Verified",
                            "message": "verified",
                            "lastTransitionTime": "2026-06-01T00:00:00Z",
                            "observedGeneration": made["metadata"]["generation"],
                        }
                    ]
                }
            },
        )
        await make("datasets", "Dataset", evaluation, {"digest": EVAL, "license": "MIT"})
        made = await make(
            "models",
            "Model",
            model,
            {
                "digest": MODEL_DIGEST,
                "ociReference": f"bom-data.example/models/chat@{LAYER}",
                "license": "Apache-2.0",
                "datasets": [{"name": clean, "digest": CLEAN}, {"name": "internal notes"}],
            },
        )
        # What the models controller writes for a ModelPack artifact (the spec's own example).
        await kube.patch(
            f"{API}/models/{model}/status",
            {
                "status": {
                    "observedGeneration": made["metadata"]["generation"],
                    "modelPack": {
                        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
                        "configDigest": CONFIG,
                        "config": json.loads(MODELPACK_CONFIG.read_text()),
                        "configReduced": False,
                        "layers": [
                            {
                                "mediaType": "application/vnd.cncf.model.weight.v1.raw",
                                "digest": LAYER,
                                "size": 4096,
                                "title": "model.safetensors",
                            }
                        ],
                        "layerCount": 1,
                    },
                }
            },
        )
        pod = {
            "metadata": {
                "name": "server",
                "namespace": namespace,
                "annotations": {
                    modelregistry.MODELS_ANNOTATION: json.dumps(
                        [{"name": model, "digest": MODEL_DIGEST}]
                    ),
                    datasetregistry.DATASETS_ANNOTATION: json.dumps(
                        [{"name": evaluation, "digest": EVAL}]
                    ),
                },
            },
            "spec": {"containers": [{"name": "main", "image": "bom-data.example/server:v1"}]},
        }
        assert await keeping.write(services, pod) == "pod-server"
        stored = await kube.get(keeping.bom_path(namespace, "pod-server"))
    finally:
        for path in reversed(created):
            with contextlib.suppress(kubeapi.ApiError):
                await kube.delete(path)
    bom = json.loads(stored["spec"]["document"])
    assert schema_errors(bom) is None
    components = {c["bom-ref"]: c for c in bom["components"]}
    depends = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    clean_ref, raw_ref = f"dataset:{clean}@{CLEAN}", f"dataset:{raw}@{RAW}"
    eval_ref = f"dataset:{evaluation}@{EVAL}"

    chat = components[f"model:{model}"]
    assert chat["licenses"] == [{"expression": "Apache-2.0"}]
    assert props(chat)["muster:licence:decision"] == ["allowed"]
    assert props(chat)["muster:licence:policy"] == [model_rules]
    # (merged dependencies are sorted)
    assert depends[f"model:{model}"] == sorted([clean_ref, "dataset:internal notes@unpinned"])
    assert chat["modelCard"]["modelParameters"]["modelArchitecture"] == "transformer"
    assert props(chat["modelCard"])["muster:modelpack:param-size"] == ["8b"]
    assert props(chat)["muster:modelpack:config-digest"] == [CONFIG]
    [layer] = chat["components"]
    assert (layer["name"], layer["hashes"]) == (
        "model.safetensors",
        [{"alg": "SHA-256", "content": "1a" * 32}],
    )
    assert depends[clean_ref] == [raw_ref]
    assert eval_ref in depends[f"workload:{namespace}/Pod/server"]

    derived = components[clean_ref]
    assert derived["type"] == "data"
    assert derived["hashes"] == [{"alg": "SHA-256", "content": "c1" * 32}]
    assert derived["licenses"] == [{"expression": "Apache-2.0 AND CC-BY-4.0"}]
    assert derived["externalReferences"] == [
        {"type": "distribution", "url": "hf://datasets/acme/support@9f1c2e"}
    ]
    found = props(derived)
    assert found["muster:digest"] == ["verified"]
    assert found["muster:licence:decision"] == ["allowed"]
    assert found["muster:revoked"] == ["False"]
    assert found["muster:revoked-through"] == [raw]
    assert derived["pedigree"]["ancestors"][0]["name"] == raw
    assert derived["pedigree"]["notes"] == "deduplicated, PII removed"

    parent = components[raw_ref]
    assert parent["hashes"] == [{"alg": "SHA-256", "content": "a0" * 32}]
    found = props(parent)
    assert found["muster:digest"] == ["unverified"]
    assert found["muster:revoked"] == ["True"]
    assert found["muster:licence:decision"] == ["refused"]
    assert found["muster:licence:rule"] == [f"{data_rules}: deny CC-BY-NC-*"]

    used = props(components[eval_ref])
    assert used["muster:licence:decision"] == ["allowed"]
    assert used["muster:digest"] == ["unverified"]
    unregistered = props(components["dataset:internal notes@unpinned"])
    assert unregistered["muster:dataset-registered"] == ["False"]

    # docs/bom.md's excerpts are this document's text.
    real = json.dumps(bom["components"])
    replacements = {"support-clean": clean, "support-raw": raw, "dataset-licences": data_rules}
    excerpts = docblocks.named("real", "tests/integration/boms/test_datasets.py")
    assert len(excerpts) == 2
    for excerpt in excerpts:
        assert docblocks.matches(excerpt, real, replacements) == ""


async def test_a_revoked_parent_reaches_the_bom_of_a_running_pod_without_a_pod_event(
    control_plane: controlplane.ControlPlane, services: runtime.Services
) -> None:
    kube = services.kube
    suffix = uuid.uuid4().hex[:6]
    # Opted out as well: another installation in the session (the e2e suites' operator) leaves
    # it alone, while BOMs are kept in every opted-in namespace whatever the opt-out label says.
    namespace = kubeclients.namespace(
        control_plane, "bom-revoke", {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true"}
    )
    parent, child = f"origin-{suffix}", f"derived-{suffix}"
    paths = [f"{API}/datasets/{parent}", f"{API}/datasets/{child}"]
    keeper = keeping.Keeper(services, kube, debounce=0.1)
    keeper.start()
    try:
        first = await kube.create(
            f"{API}/datasets",
            {
                "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
                "kind": "Dataset",
                "metadata": {"name": parent},
                "spec": {"digest": RAW},
            },
        )
        await kube.create(
            f"{API}/datasets",
            {
                "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
                "kind": "Dataset",
                "metadata": {"name": child},
                "spec": {"digest": CLEAN, "lineage": {"parents": [parent]}},
            },
        )
        # A pod as the dataset gate leaves it (label and annotation).
        await kube.create(
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "metadata": {
                    "name": "reader",
                    "labels": {datasetregistry.USES_DATASETS_LABEL: "true"},
                    "annotations": {
                        datasetregistry.DATASETS_ANNOTATION: json.dumps(
                            [{"name": child, "digest": CLEAN}]
                        )
                    },
                },
                "spec": {"containers": [{"name": "main", "image": "bom-revoke.example/r:v1"}]},
            },
        )
        pod = await kube.get(f"/api/v1/namespaces/{namespace}/pods/reader")
        assert await keeping.write(services, pod) == "pod-reader"

        def derived(stored: dict[str, Any]) -> dict[str, list[str]]:
            components = json.loads(stored["spec"]["document"])["components"]
            return props(next(c for c in components if c["name"] == child))

        stored = await kube.get(keeping.bom_path(namespace, "pod-reader"))
        assert "muster:revoked-through" not in derived(stored)
        # The watch's first sight notes nothing; a pod count in the status is no change.
        assert await keeper.registry_changed("datasets", None, first) == 0
        counted = {**first, "status": {"pods": 3}}
        assert await keeper.registry_changed("datasets", "MODIFIED", counted) == 0
        revoked = await kube.patch(
            f"{API}/datasets/{parent}",
            {"spec": {"revoked": True, "revocationReason": "licence withdrawn"}},
        )
        assert await keeper.registry_changed("datasets", "MODIFIED", revoked) >= 1
        await asyncio.wait_for(keeper.drained(), timeout=30)
        stored = await kube.get(keeping.bom_path(namespace, "pod-reader"))
        assert derived(stored)["muster:revoked-through"] == [parent]
        assert derived(stored)["muster:revoked-through-reason"] == ["licence withdrawn"]
    finally:
        await keeper.stop()
        for path in paths:
            with contextlib.suppress(kubeapi.ApiError):
                await kube.delete(path)
