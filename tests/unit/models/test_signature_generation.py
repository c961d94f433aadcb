"""A Model's SignatureVerified condition vouches for the spec it was written for, no other:
a stale status (or one forged before the spec changed) does not approve a changed spec."""

from __future__ import annotations

from typing import Any

import pytest

from muster.boms.rules import cyclonedx as boms
from muster.models import gate as modeladmission
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
STRICT = modelregistry.ModelPolicySpec(requireSignature=True)
USE = modelgate.ModelUse("declaredVolume", "w", "bert")


def status(condition_generation: object, *, verified: str = "True", top: object = None) -> Any:
    condition: dict[str, Any] = {"type": "SignatureVerified", "status": verified}
    if condition_generation is not None:
        condition["observedGeneration"] = condition_generation
    found: dict[str, Any] = {"conditions": [condition]}
    if top is not None:
        found["observedGeneration"] = top
    return found


@pytest.mark.parametrize(
    ("found", "generation", "verified"),
    [
        (status(3), 3, True),
        (status(2), 3, False),  # written for the previous spec
        (status(4), 3, False),  # claims a spec that does not exist yet
        (status(None, top=3), 3, False),  # no generation of its own: vouches for nothing
        (status(3, verified="False"), 3, False),
        (status("3"), 3, False),
        (status(3), None, False),  # an object without metadata.generation
        (status(3), "3", False),
        ({}, 3, False),
        ("True", 3, False),
        ({"conditions": "SignatureVerified"}, 3, False),
    ],
)
def test_a_signature_condition_counts_only_for_its_generation(
    found: Any, generation: object, verified: bool
) -> None:
    assert modelregistry.signature_verified(found, generation) is verified
    if isinstance(found, dict):  # what the index holds for such a Model
        entry = modelregistry.parse_model("bert", {"digest": OMS}, found, generation=generation)
        assert entry.signature_verified is verified


def test_the_gate_refuses_a_model_verified_for_an_older_spec() -> None:
    for generation, finding in ((2, None), (3, "ModelSignatureNotVerified")):
        entry = modelregistry.parse_model("bert", {"digest": OMS}, status(2), generation=generation)
        index = modelregistry.Index()
        index.put_model(entry)
        match = modelgate.judge_use(USE, index, STRICT)
        assert (match.finding.reason if match.finding else None) == finding, generation


def test_the_catalog_indexes_with_the_generation() -> None:
    # Fed as the operator's watch feeds it; nothing listens there, so no call may be made.
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    catalog = modeladmission.ModelCatalog(kube, max_age=float("inf"))
    assert catalog.model_changed("bert", {"digest": OMS}, status(1), 1) is None
    assert catalog.index.models["bert"].signature_verified
    # The spec changes (generation 2) while the status still speaks of generation 1.
    assert catalog.model_changed("bert", {"digest": OMS, "format": "gguf"}, status(1), 2) is None
    assert not catalog.index.models["bert"].signature_verified


def test_the_operator_rewrites_a_status_not_written_for_this_generation() -> None:
    current = status(3, top=3)
    current["conditions"].append({"type": "Compiled", "status": "True", "observedGeneration": 3})
    assert modelregistry.status_is_current(current, 3)
    # Written by an older operator, without the Compiled condition: rewritten once.
    assert not modelregistry.status_is_current(status(3, top=3), 3)
    assert not modelregistry.status_is_current(status(2, top=3), 3)
    # Written by an older operator, without the condition's own generation: rewritten once.
    assert not modelregistry.status_is_current(status(None, top=3), 3)
    assert not modelregistry.status_is_current(status(3), 3)
    assert not modelregistry.status_is_current({}, 3)


def test_the_bom_reports_a_stale_verification_as_not_verified() -> None:
    def verified(generation: int) -> str:
        model = {
            "metadata": {"name": "bert", "generation": generation},
            "spec": {"digest": OMS},
            "status": status(2),
        }
        facts = boms.PodFacts(
            pod={"metadata": {"name": "p", "namespace": "ml"}},
            images=[],
            models=[("bert", model)],
        )
        parts = boms.pod_components(facts)
        (component,) = [c for c in parts["components"] if c["bom-ref"] == "model:bert"]
        (value,) = [
            p["value"] for p in component["properties"] if p["name"] == "muster:signature-verified"
        ]
        return str(value)

    assert verified(2) == "True"
    assert verified(3) == "False"
