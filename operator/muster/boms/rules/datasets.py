"""Datasets in the AI-BOM: CycloneDX ``data`` components with their lineage.

One component per Dataset object the BOM names: those a pod uses directly (its
``muster.dev/datasets`` annotation, written by the dataset gate), those its Models were trained
on (``Model.spec.datasets`` naming a Dataset) and their lineage ancestors. Each carries:

- ``version``/``hashes``: the Dataset's OMS root digest; ``muster:digest`` says ``verified``
  only when its SignatureVerified condition was written for this spec (else ``unverified``: the
  digest is as declared);
- ``externalReferences``: its sources and OCI reference; ``licenses``: its SPDX expression, with
  the decision of the DatasetPolicies selecting the namespace (``muster:licence:*``);
- ``muster:revoked`` and, when an ancestor is revoked, ``muster:revoked-through``;
- lineage: a dependency on each parent, ``pedigree.ancestors`` (its parents, without bom-refs:
  they are components of their own, with their own pedigree) and the transformation as
  ``pedigree.notes`` and ``muster:lineage:transformation*`` properties. Listing only the
  parents keeps the document linear in the lineage graph (a chain of n Datasets listing every
  ancestor would grow as n squared).

A Dataset object that does not validate, or a parent that does not exist, is still a component,
marked so (``muster:dataset-valid``, ``muster:dataset-registered``), so a reader sees the gap.
Pure: the Dataset objects are read by the keeper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pydantic

from muster.boms.rules import licensing, modelpacks
from muster.datasets.rules import lineage
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import licences, messages

__all__ = ["DatasetFacts", "Datasets", "component_parts", "parents_of"]


def parents_of(dataset: Mapping[str, Any] | None) -> list[str]:
    """The parents a Dataset object names (read even when the rest of its spec is invalid, so
    its lineage is followed all the same)."""
    spec = (dataset or {}).get("spec")
    found = spec.get("lineage") if isinstance(spec, Mapping) else None
    parents = found.get("parents") if isinstance(found, Mapping) else None
    return [p for p in parents if isinstance(p, str) and p] if isinstance(parents, list) else []


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """The Dataset objects a pod's BOM names, by name (None: no such Dataset), and the names the
    pod's ``muster.dev/datasets`` annotation lists."""

    objects: Mapping[str, Mapping[str, Any] | None] = dataclasses.field(default_factory=dict)
    used: tuple[str, ...] = ()


@dataclasses.dataclass
class Datasets:
    """The Dataset objects as an index (the lineage rules read it) and the refs they get."""

    index: datasetregistry.DatasetIndex
    invalid: dict[str, str]  # name -> why its spec does not validate
    missing: set[str]  # named, not found

    @classmethod
    def of(cls, facts: DatasetFacts) -> Datasets:
        index = datasetregistry.DatasetIndex()
        invalid: dict[str, str] = {}
        missing: set[str] = set()
        for name, dataset in sorted(facts.objects.items()):
            if dataset is None:
                missing.add(name)
                continue
            try:
                index.put_dataset(
                    datasetregistry.parse_dataset(
                        name,
                        dataset.get("spec") or {},
                        dataset.get("status") or {},
                        generation=(dataset.get("metadata") or {}).get("generation"),
                    )
                )
            except (pydantic.ValidationError, ValueError) as error:
                invalid[name] = messages.first_error(error)
                index.invalid[f"Dataset/{name}"] = invalid[name]
        return cls(index=index, invalid=invalid, missing=missing)

    def registered(self, name: str) -> bool:
        """Whether ``name`` is a Dataset object (valid or not)."""
        return name in self.index.datasets or name in self.invalid

    def ref(self, name: str) -> str:
        entry = self.index.by_name(name)
        if entry is not None:
            return f"dataset:{name}@{entry.spec.digest}"
        return f"dataset:{name}@{'invalid' if name in self.invalid else 'missing'}"


def _ancestor(entry: datasetregistry.DatasetEntry | None, name: str) -> dict[str, Any]:
    ancestor: dict[str, Any] = {"type": "data", "name": name}
    if entry is not None:
        ancestor["version"] = entry.spec.digest
        if (found := modelpacks.hashes(entry.spec.digest)) is not None:
            ancestor["hashes"] = found
    return ancestor


def component_parts(
    name: str,
    datasets: Datasets,
    parents: list[str],
    policies: tuple[tuple[str, licences.LicencePolicy], ...],
    unreadable: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(component, dependency on its parents) of the Dataset ``name``."""
    ref = datasets.ref(name)
    dependency = {"ref": ref, "dependsOn": sorted({datasets.ref(p) for p in parents})}
    entry = datasets.index.by_name(name)
    if entry is None:
        properties = [
            {"name": "muster:dataset-registered", "value": str(datasets.registered(name))}
        ]
        if name in datasets.invalid:
            properties.append({"name": "muster:dataset-valid", "value": "False"})
            properties.append({"name": "muster:dataset-invalid", "value": datasets.invalid[name]})
        properties += [{"name": "muster:lineage:parent", "value": p} for p in parents]
        properties += licensing.decision_properties(None, policies, unreadable)
        return {"type": "data", "bom-ref": ref, "name": name, "properties": properties}, dependency
    spec = entry.spec
    component: dict[str, Any] = {
        "type": "data",
        "bom-ref": ref,
        "name": name,
        "version": spec.digest,
    }
    if (found := modelpacks.hashes(spec.digest)) is not None:
        component["hashes"] = found
    if spec.description:
        component["description"] = spec.description
    if (choice := licensing.licence_choice(spec.license)) is not None:
        component["licenses"] = choice
    references = [{"type": "distribution", "url": source} for source in spec.sources]
    if spec.oci_reference:
        references.append({"type": "distribution", "url": f"oci://{spec.oci_reference}"})
    if references:
        component["externalReferences"] = references
    data: dict[str, Any] = {"type": "dataset", "name": name}
    if spec.sources:
        data["contents"] = {"url": spec.sources[0]}
    if spec.description:
        data["description"] = spec.description
    component["data"] = [data]
    properties = [
        {"name": "muster:dataset-registered", "value": "True"},
        {"name": "muster:digest-kind", "value": "oms-root"},
        # The digest is what the signature vouched for only when it verified for this spec.
        {
            "name": "muster:digest",
            "value": "verified" if entry.signature_verified else "unverified",
        },
        {"name": "muster:signature-verified", "value": str(entry.signature_verified)},
        {"name": "muster:revoked", "value": str(spec.revoked)},
    ]
    if spec.revoked and spec.revocation_reason:
        properties.append({"name": "muster:revocation-reason", "value": spec.revocation_reason})
    through = lineage.revoked_through(name, datasets.index)
    if through is not None and through[0] != name:
        properties.append({"name": "muster:revoked-through", "value": through[0]})
        if through[1]:
            properties.append({"name": "muster:revoked-through-reason", "value": through[1]})
    properties += [{"name": "muster:lineage:parent", "value": p} for p in parents]
    properties += [
        {"name": "muster:lineage:problem", "value": problem}
        for problem in lineage.problems(name, datasets.index)
    ]
    transformation = spec.lineage.transformation if spec.lineage is not None else None
    if transformation is not None:
        for suffix, value in (
            ("", transformation.description),
            ("-code", transformation.code_reference),
            ("-digest", transformation.digest),
        ):
            if value:
                properties.append(
                    {"name": f"muster:lineage:transformation{suffix}", "value": value}
                )
    properties += licensing.decision_properties(spec.license, policies, unreadable)
    component["properties"] = properties
    ancestors = [p for p in dict.fromkeys(parents) if p != name]
    if ancestors or (transformation is not None and transformation.description):
        pedigree: dict[str, Any] = {}
        if ancestors:
            pedigree["ancestors"] = [_ancestor(datasets.index.by_name(a), a) for a in ancestors]
        if transformation is not None and transformation.description:
            pedigree["notes"] = transformation.description
        component["pedigree"] = pedigree
    return component, dependency
