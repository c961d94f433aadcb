"""The mutating webhooks' ``may-mutate`` condition names every field the gates' MUTATE phases
read (the real apiserver evaluates it in tests/integration/test_mutation_conditions.py)."""

from __future__ import annotations

import pytest

from muster.app import webhookconfigs
from muster.gpu.rules import pods as gpupods
from muster.kernel import pods, trainerpods
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry

pytestmark = pytest.mark.unit


def test_only_the_mutating_webhooks_carry_it() -> None:
    mutating = webhookconfigs.mutating("https://h:1", "Q0E=", own_namespace="m")["webhooks"]
    validating = webhookconfigs.validating("https://h:1", "Q0E=", own_namespace="m")["webhooks"]
    assert [hook["matchConditions"] for hook in mutating] == [
        [{"name": "may-mutate", "expression": webhookconfigs.MAY_MUTATE}]
    ] * len(mutating)
    assert all("matchConditions" not in hook for hook in validating)


def test_every_container_list_the_image_gate_pins_is_looked_at() -> None:
    for field, _ in pods._CONTAINER_LISTS:
        assert f"object.spec.{field}.exists(c, !has(c.image) || !c.image.contains('@')" in (
            webhookconfigs.MAY_MUTATE
        ), field


def test_what_the_gpu_and_model_gates_look_for_is_covered() -> None:
    condition = webhookconfigs.MAY_MUTATE
    # GPU gate: resource names and node label keys; the condition checks the wider prefix.
    assert all(p.startswith("nvidia.com/") for p in gpupods._GPU_RESOURCE_PREFIXES)
    assert gpupods._NVIDIA_LABEL_PREFIX == "nvidia.com/"
    assert "c.resources.limits.exists(r, r.startsWith('nvidia.com/'))" in condition
    assert "c.resources.requests.exists(r, r.startsWith('nvidia.com/'))" in condition
    assert "object.spec.nodeSelector.exists(k, k.startsWith('nvidia.com/'))" in condition
    assert "has(object.spec.affinity.nodeAffinity)" in condition
    assert "size(object.spec.resourceClaims) > 0" in condition
    # Model gate: image and claim volumes, STORAGE_URI, storage-uri annotations, declarations.
    assert "has(v.image) || has(v.persistentVolumeClaim)" in condition
    assert "e.name == 'STORAGE_URI'" in condition
    assert modelgate.OCI_SCHEME == "oci://"  # the gate's value test; the condition is wider
    assert f"k == '{modelregistry.MODEL_VOLUMES_ANNOTATION}'" in condition
    assert "k.matches('(?i)(storage-uri|storageuri|sourceuri)$')" in condition
    # Model and dataset gates: a TrainJob's trainer pods, found by the label the gates read.
    assert f"'{trainerpods.JOBSET_NAME_LABEL}' in object.metadata.labels" in condition


def test_anything_but_a_plain_pod_is_always_sent() -> None:
    first = webhookconfigs.MAY_MUTATE_PARTS[:3]
    assert first == (
        "request.resource.group != ''",
        "request.resource.resource != 'pods'",
        "(has(request.subResource) && request.subResource != '')",
    )
