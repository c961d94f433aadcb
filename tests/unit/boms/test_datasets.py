"""Datasets, lineage, licence decisions and ModelPack configs in the AI-BOM (pure builder)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from muster.boms.rules import cyclonedx as boms
from muster.boms.rules import modelpacks
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import licences
from muster.models.rules import registry as modelregistry
from tests.boms import schema_errors

pytestmark = pytest.mark.unit

MODEL_DIGEST = "sha256:" + "2e" * 32
CLEAN = "sha256:" + "c1" * 32
RAW = "sha256:" + "a0" * 32
EVAL = "sha256:" + "e1" * 32
CONFIG = "sha256:" + "cf" * 32
CODE = "sha256:" + "0d" * 32
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "models" / "modelpack"


def dataset(
    name: str,
    digest: str,
    *,
    license: str | None = None,
    parents: tuple[str, ...] = (),
    verified: bool = False,
    revoked: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"digest": digest, **extra}
    if license:
        spec["license"] = license
    if parents:
        spec["lineage"] = {
            "parents": list(parents),
            "transformation": {
                "description": "deduplicated, PII removed",
                "codeReference": "git+https://git.example/etl@4f2a",
                "digest": CODE,
            },
        }
    if revoked:
        spec["revoked"] = True
        spec["revocationReason"] = "consent withdrawn"
    conditions = [
        # Written for generation 3: counts only while the object is at generation 3.
        {"type": "SignatureVerified", "status": "True", "observedGeneration": 3}
    ]
    return {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, "generation": 3 if verified else 4},
        "spec": spec,
        "status": {"conditions": conditions},
    }


def model(license: str = "Apache-2.0", model_pack: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "conditions": [{"type": "SignatureVerified", "status": "True", "observedGeneration": 1}],
    }
    if model_pack is not None:
        status["modelPack"] = model_pack
    return {
        "metadata": {"name": "chat", "generation": 1},
        "spec": {
            "digest": MODEL_DIGEST,
            "license": license,
            "datasets": [
                {"name": "chat-clean", "digest": CLEAN},
                {"name": "internal notes", "license": "LicenseRef-internal"},
            ],
            "training": {"framework": "pytorch 2.6"},
        },
        "status": status,
    }


def pod() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "server",
            "namespace": "ml",
            "annotations": {
                modelregistry.MODELS_ANNOTATION: json.dumps(
                    [{"name": "chat", "digest": MODEL_DIGEST}]
                ),
                datasetregistry.DATASETS_ANNOTATION: json.dumps(
                    [{"name": "eval-set", "digest": EVAL}]
                ),
            },
        },
        "spec": {"containers": [{"name": "c", "image": "r.example/a:1"}]},
    }


def rules() -> boms.LicenceRules:
    return boms.LicenceRules(
        datasets=(("data-rules", licences.LicencePolicy(deny=("CC-BY-NC-*",))),),
        models=(("model-rules", licences.LicencePolicy(allow=("Apache-2.0", "MIT"))),),
    )


def objects(**changes: dict[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    found: dict[str, dict[str, Any] | None] = {
        "chat-clean": dataset(
            "chat-clean",
            CLEAN,
            license="apache-2.0 and CC-BY-4.0",
            parents=("chat-raw",),
            verified=True,
            sources=["hf://datasets/acme/chat@9f1c2e", "s3://acme/chat/clean"],
            description="support chats, cleaned",
        ),
        "chat-raw": dataset("chat-raw", RAW, license="CC-BY-NC-4.0"),
        "eval-set": dataset(
            "eval-set", EVAL, license="MIT", ociReference=f"r.example/data/eval@{EVAL}"
        ),
    }
    found.update(changes)
    return found


def build(
    facts: boms.PodFacts,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, list[str]]]:
    bom = boms.document(
        "ml/Pod/server",
        [boms.pod_components(facts)],
        timestamp="2026-06-01T00:00:00Z",
        version="0.1.0",
        serial=uuid.UUID(int=1),
    )
    assert schema_errors(bom) is None
    components = {c["bom-ref"]: c for c in bom["components"]}
    refs = [c["bom-ref"] for c in bom["components"]]
    assert len(refs) == len(set(refs))
    depends = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    return bom, components, depends


def facts(
    datasets: dict[str, dict[str, Any] | None] | None = None,
    licence_rules: boms.LicenceRules | None = None,
    model_: dict[str, Any] | None = None,
) -> boms.PodFacts:
    return boms.PodFacts(
        pod=pod(),
        images=[],
        models=[("chat", model_ or model())],
        datasets=boms.DatasetFacts(
            objects=objects() if datasets is None else datasets, used=("eval-set",)
        ),
        licences=rules() if licence_rules is None else licence_rules,
    )


def props(component: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in component.get("properties", []):
        found.setdefault(item["name"], []).append(item["value"])
    return found


def test_datasets_are_data_components_with_digest_licence_decision_and_lineage() -> None:
    _, components, depends = build(facts())
    clean = components[f"dataset:chat-clean@{CLEAN}"]
    assert clean["type"] == "data"
    assert clean["version"] == CLEAN
    assert clean["hashes"] == [{"alg": "SHA-256", "content": "c1" * 32}]
    assert clean["licenses"] == [{"expression": "Apache-2.0 AND CC-BY-4.0"}]
    assert clean["externalReferences"] == [
        {"type": "distribution", "url": "hf://datasets/acme/chat@9f1c2e"},
        {"type": "distribution", "url": "s3://acme/chat/clean"},
    ]
    assert clean["data"][0]["contents"] == {"url": "hf://datasets/acme/chat@9f1c2e"}
    found = props(clean)
    assert found["muster:digest"] == ["verified"]
    assert found["muster:signature-verified"] == ["True"]
    assert found["muster:licence:decision"] == ["allowed"]
    assert found["muster:licence:policy"] == ["data-rules"]
    assert found["muster:lineage:parent"] == ["chat-raw"]
    assert found["muster:lineage:transformation"] == ["deduplicated, PII removed"]
    assert found["muster:lineage:transformation-code"] == ["git+https://git.example/etl@4f2a"]
    assert found["muster:lineage:transformation-digest"] == [CODE]
    assert found["muster:revoked"] == ["False"]
    assert clean["pedigree"] == {
        "ancestors": [
            {
                "type": "data",
                "name": "chat-raw",
                "version": RAW,
                "hashes": [{"alg": "SHA-256", "content": "a0" * 32}],
            }
        ],
        "notes": "deduplicated, PII removed",
    }
    raw = components[f"dataset:chat-raw@{RAW}"]
    found = props(raw)
    # Its condition was written for generation 3, the object is at 4: the digest is declared.
    assert found["muster:digest"] == ["unverified"]
    assert found["muster:signature-verified"] == ["False"]
    assert raw["hashes"] == [{"alg": "SHA-256", "content": "a0" * 32}]
    assert found["muster:licence:decision"] == ["refused"]
    assert found["muster:licence:rule"] == ["data-rules: deny CC-BY-NC-*"]
    assert found["muster:licence:refused"] == ["CC-BY-NC-4.0"]
    assert "pedigree" not in raw
    # Lineage: the model on its datasets, a dataset on its parents, the workload on what it uses.
    assert depends["model:chat"] == [
        f"dataset:chat-clean@{CLEAN}",
        "dataset:internal notes@unpinned",
    ]
    assert depends[f"dataset:chat-clean@{CLEAN}"] == [f"dataset:chat-raw@{RAW}"]
    assert depends[f"dataset:chat-raw@{RAW}"] == []
    assert f"dataset:eval-set@{EVAL}" in depends["workload:ml/Pod/server"]
    evaluation = components[f"dataset:eval-set@{EVAL}"]
    assert evaluation["externalReferences"] == [
        {"type": "distribution", "url": f"oci://r.example/data/eval@{EVAL}"}
    ]


def test_a_free_text_training_dataset_stays_marked_unregistered() -> None:
    _, components, _ = build(facts())
    notes = components["dataset:internal notes@unpinned"]
    found = props(notes)
    assert found["muster:dataset-registered"] == ["False"]
    assert notes["licenses"] == [{"expression": "LicenseRef-internal"}]
    assert found["muster:licence:decision"] == ["allowed"]  # deny CC-BY-NC-* only
    assert props(components[f"dataset:chat-clean@{CLEAN}"])["muster:dataset-registered"] == ["True"]


def test_the_model_licence_is_an_expression_with_the_model_policies_decision() -> None:
    _, components, _ = build(facts())
    chat = components["model:chat"]
    assert chat["licenses"] == [{"expression": "Apache-2.0"}]
    found = props(chat)
    assert found["muster:licence:decision"] == ["allowed"]
    assert found["muster:licence:policy"] == ["model-rules"]
    assert chat["modelCard"]["modelParameters"]["datasets"] == [
        {"ref": f"dataset:chat-clean@{CLEAN}"},
        {"ref": "dataset:internal notes@unpinned"},
    ]
    # A licence outside the allow list is refused, naming the rule.
    _, components, _ = build(facts(model_=model(license="CC-BY-NC-4.0")))
    found = props(components["model:chat"])
    assert found["muster:licence:decision"] == ["refused"]
    assert found["muster:licence:rule"] == ["model-rules: not in allow [Apache-2.0, MIT]"]
    assert found["muster:licence:refused"] == ["CC-BY-NC-4.0"]


def test_a_model_whose_stored_spec_no_longer_validates_is_recorded_as_invalid() -> None:
    broken = model()
    broken["spec"]["ociReference"] = "r.example/models/chat:latest"  # not pinned
    _, components, depends = build(facts(model_=broken))
    chat = components["model:chat"]
    found = props(chat)
    assert found["muster:model-valid"] == ["False"]
    assert found["muster:model-invalid"][0].startswith("ociReference:")
    assert chat["version"] == MODEL_DIGEST
    # The rest of the BOM is still there: the dataset the pod uses directly.
    assert f"dataset:eval-set@{EVAL}" in depends["workload:ml/Pod/server"]


def test_without_policies_the_licences_are_unjudged() -> None:
    _, components, _ = build(facts(licence_rules=boms.LicenceRules()))
    assert props(components["model:chat"])["muster:licence:decision"] == ["unjudged"]
    assert props(components[f"dataset:chat-raw@{RAW}"])["muster:licence:decision"] == ["unjudged"]
    assert "muster:licence:policy" not in props(components[f"dataset:chat-raw@{RAW}"])


def test_a_revoked_ancestor_taints_its_descendants() -> None:
    revoked = dataset("chat-raw", RAW, license="CC-BY-NC-4.0", revoked=True)
    _, components, _ = build(facts(objects(**{"chat-raw": revoked})))
    raw = props(components[f"dataset:chat-raw@{RAW}"])
    assert raw["muster:revoked"] == ["True"]
    assert raw["muster:revocation-reason"] == ["consent withdrawn"]
    assert "muster:revoked-through" not in raw
    clean = props(components[f"dataset:chat-clean@{CLEAN}"])
    assert clean["muster:revoked"] == ["False"]
    assert clean["muster:revoked-through"] == ["chat-raw"]
    assert clean["muster:revoked-through-reason"] == ["consent withdrawn"]


def test_missing_and_invalid_parents_and_cycles_are_recorded_not_followed_forever() -> None:
    found = objects(
        **{
            "chat-raw": dataset("chat-raw", RAW, parents=("crawl", "broken", "chat-clean")),
            "crawl": None,
            "broken": {"metadata": {"name": "broken"}, "spec": {"digest": "md5:1"}},
        }
    )
    _, components, depends = build(facts(found))
    assert depends[f"dataset:chat-raw@{RAW}"] == [
        "dataset:broken@invalid",
        f"dataset:chat-clean@{CLEAN}",
        "dataset:crawl@missing",
    ]
    crawl = props(components["dataset:crawl@missing"])
    assert crawl["muster:dataset-registered"] == ["False"]
    broken = props(components["dataset:broken@invalid"])
    assert broken["muster:dataset-registered"] == ["True"]
    assert broken["muster:dataset-valid"] == ["False"]
    assert broken["muster:dataset-invalid"][0].startswith("digest:")
    problems = props(components[f"dataset:chat-clean@{CLEAN}"])["muster:lineage:problem"]
    assert any("cycle" in problem for problem in problems)
    assert any("'crawl'" in problem for problem in problems)
    # The pedigree lists the parents (their own are in their components).
    pedigree = components[f"dataset:chat-raw@{RAW}"]["pedigree"]["ancestors"]
    assert [a["name"] for a in pedigree] == ["crawl", "broken", "chat-clean"]
    assert pedigree[2]["version"] == CLEAN
    assert "version" not in pedigree[0]


def test_a_long_lineage_stays_linear_in_size() -> None:
    chain = {
        f"d{index}": dataset(f"d{index}", f"sha256:{index:064x}", parents=(f"d{index + 1}",))
        for index in range(256)
    }
    chain["d256"] = None
    parts = boms.pod_components(
        boms.PodFacts(
            pod=pod(), images=[], models=[], datasets=boms.DatasetFacts(chain, used=("d0",))
        )
    )
    text = json.dumps(parts)
    assert len([c for c in parts["components"] if c["type"] == "data"]) == 257
    assert len(text) < boms.MAX_DOCUMENT_CHARS // 2, len(text)


def model_pack(layers: int = 2) -> dict[str, Any]:
    # The model-spec's own example config.
    config = json.loads((FIXTURES / "config-example.json").read_text())
    config["config"]["capabilities"]["nested"] = {"ignored": "not a scalar"}
    return {
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "configDigest": CONFIG,
        "config": config,
        "layers": [
            {
                "mediaType": "application/vnd.cncf.model.weight.v1.raw",
                "digest": "sha256:" + f"{index:064x}",
                "size": 1000 + index,
                "title": f"model-{index:05d}.safetensors",
            }
            for index in range(layers)
        ],
    }


def test_a_modelpack_model_carries_its_config_and_layers() -> None:
    _, components, _ = build(facts(model_=model(model_pack=model_pack())))
    chat = components["model:chat"]
    card = chat["modelCard"]
    assert card["modelParameters"]["modelArchitecture"] == "transformer"
    assert card["modelParameters"]["architectureFamily"] == "xyz3"
    assert card["modelParameters"]["inputs"] == [{"format": "text"}]
    assert card["modelParameters"]["outputs"] == [{"format": "text"}, {"format": "image"}]
    found = props(card)
    assert found["muster:modelpack:name"] == ["xyz-3-8B-Instruct"]
    assert found["muster:modelpack:format"] == ["pt"]
    assert found["muster:modelpack:param-size"] == ["8b"]
    assert found["muster:modelpack:precision"] == ["float16"]
    assert found["muster:modelpack:quantization"] == ["gptq"]
    assert found["muster:modelpack:license"] == ["Apache-2.0"]
    assert found["muster:modelpack:datasets-url"] == ["https://www.xyz.com/datasets/"]
    assert found["muster:modelpack:capability:reasoning"] == ["true"]
    assert found["muster:modelpack:capability:tool-usage"] == ["false"]
    assert found["muster:modelpack:capability:knowledge-cutoff"] == ["2024-05-21T00:00:00Z"]
    assert found["muster:modelpack:capability:language"] == ["en", "zh"]
    assert not any("ignored" in value for values in found.values() for value in values)
    assert props(chat)["muster:modelpack:config-digest"] == [CONFIG]
    first, _ = chat["components"]
    assert first == {
        "type": "file",
        "bom-ref": f"model:chat/layer:sha256:{0:064x}",
        "name": "model-00000.safetensors",
        "version": f"sha256:{0:064x}",
        "hashes": [{"alg": "SHA-256", "content": f"{0:064x}"}],
        "mime-type": "application/vnd.cncf.model.weight.v1.raw",
        "properties": [
            {
                "name": "muster:modelpack:media-type",
                "value": "application/vnd.cncf.model.weight.v1.raw",
            },
            {"name": "muster:modelpack:size", "value": "1000"},
        ],
    }


def test_modelpack_layers_are_bounded() -> None:
    pack = model_pack(layers=200)
    pack["layerCount"] = 250  # the status lists 200 and counts them all
    pack["configReduced"] = True
    _, components, _ = build(facts(model_=model(model_pack=pack)))
    chat = components["model:chat"]
    assert len(chat["components"]) == modelpacks.MAX_LAYERS
    found = props(chat)
    assert found["muster:modelpack:layers"] == ["250"]
    assert found["muster:modelpack:layers-not-listed"] == [str(250 - modelpacks.MAX_LAYERS)]
    assert found["muster:modelpack:config-reduced"] == ["true"]


def test_a_modelpack_status_written_for_an_earlier_spec_is_left_out() -> None:
    stale = model(model_pack=model_pack())
    stale["metadata"]["generation"] = 2  # ociReference changed since the status was written
    _, components, _ = build(facts(model_=stale))
    chat = components["model:chat"]
    assert "components" not in chat
    assert not any(name.startswith("muster:modelpack") for name in props(chat))


def test_a_policy_that_could_not_be_read_is_named_beside_the_decision() -> None:
    unread = boms.LicenceRules(
        datasets=rules().datasets, unreadable_datasets=("broken-rules",), unreadable_models=("x",)
    )
    _, components, _ = build(facts(licence_rules=unread))
    found = props(components[f"dataset:chat-clean@{CLEAN}"])
    assert found["muster:licence:decision"] == ["allowed"]
    assert found["muster:licence:policy-unreadable"] == ["broken-rules"]
    found = props(components["model:chat"])
    assert found["muster:licence:decision"] == ["unjudged"]
    assert found["muster:licence:policy-unreadable"] == ["x"]
